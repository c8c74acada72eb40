"""The one experiment runner: units, resume, rank-0 writing, results.json, config.yaml, figures and the summary.

For every unit of the study, in order: on ``--resume`` a unit whose ``runs/<unit>/unit.json`` exists is skipped (its
rows are read back; a unit made with a different config is refused); otherwise the unit's folder is cleared (a fresh
run) or kept (``--resume``: training continues from its newest checkpoint), the global RNGs are seeded from
(method, unit, seed), the method's ``run_unit`` runs on every rank, and rank 0 writes ``unit.json``. Then the
verdict is computed from all rows, and rank 0 writes results.json and the figures and prints the summary.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from frugalvision.config_io import config_to_dict, save_config
from frugalvision.errors import ConfigError
from frugalvision.harness.config import RunConfig, apply_threads, thread_environment
from frugalvision.harness.context import Context
from frugalvision.harness.declare import Experiment, FigureInput, Study, Unit, UnitRecord, UnitResult
from frugalvision.seeding import derive_seed

__all__ = ["UNIT_FILE", "fingerprint_fields", "print_summary", "run_experiment", "study_dir"]

UNIT_FILE = "unit.json"
UNIT_ARRAYS = "unit.safetensors"
#: config fields that do not change what a unit computes (a finished unit stays valid when they change)
NEUTRAL_FIELDS = ("preset", "out", "seeds", "resume", "progress", "threads", "study")


def study_dir(experiment: Experiment[Any], config: RunConfig) -> Path:
    """``<out>/<method>`` for the main study, ``<out>/<method>/<study>`` for a named one."""
    base = Path(config.out) / experiment.name
    return base / config.study if config.study else base


def fingerprint_fields(config: RunConfig) -> dict[str, Any]:
    """The config as flat ``{dotted.field: value}``, without the fields that do not change a unit's result."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}{key}.", inner)
        else:
            flat[prefix[:-1]] = value

    walk("", {k: v for k, v in config_to_dict(config).items() if k not in NEUTRAL_FIELDS})
    return flat


def _check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ConfigError(
            f"cannot write to {folder} ({error.strerror or error}); pass a writable --out folder"
        ) from None


# ------------------------------------------------------------------------------------------------ unit records
def _save_record(folder: Path, record: UnitRecord, fields: dict[str, Any]) -> None:
    from frugalvision.report.schema import atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    if record.arrays:
        from frugalvision.engine import save_weights

        save_weights(record.arrays, folder / UNIT_ARRAYS)
    document = {
        "unit": {"name": record.unit.name, "seed": record.unit.seed, "params": dict(record.unit.params)},
        "rows": record.rows,
        "extras": record.extras,
        "dataset": record.dataset,
        "wall_s": record.wall_s,
        "arrays": sorted(record.arrays),
        "config": fields,
    }
    atomic_write_text(folder / UNIT_FILE, json.dumps(document, indent=1, default=float) + "\n")


def _load_record(folder: Path, unit: Unit, fields: dict[str, Any]) -> UnitRecord | None:
    """The finished unit stored in ``folder``, None when it did not finish.

    Raises:
        ConfigError: the unit was made with other config values (names the first differing fields).
    """
    path = folder / UNIT_FILE
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # a damaged record counts as unfinished: the unit runs again
    stored = document.get("config", {})
    differing = sorted(k for k in set(stored) | set(fields) if stored.get(k, "<unset>") != fields.get(k, "<unset>"))
    if differing:
        shown = ", ".join(f"{k}={stored.get(k, '<unset>')!r} (now {fields.get(k, '<unset>')!r})" for k in differing[:3])
        raise ConfigError(
            f"{path} was made with {shown}{' ...' if len(differing) > 3 else ''}; resume with the same config, or "
            "run without --resume (or with another --out) to start over"
        )
    arrays: dict[str, Any] = {}
    if document.get("arrays"):
        from frugalvision.engine import load_weights

        arrays = load_weights(folder / UNIT_ARRAYS)
    return UnitRecord(
        unit, document["rows"], document.get("extras", {}), arrays, document.get("dataset"), document["wall_s"]
    )


def _normalized(result: UnitResult, unit: Unit) -> UnitResult:
    from frugalvision.report.schema import _normalize_rows

    if not isinstance(result, UnitResult):
        raise ConfigError(f"run_unit of {unit.id} returned {type(result).__name__}; return a UnitResult")
    result.rows = _normalize_rows(result.rows)
    json.dumps(result.extras, default=float)  # fail here, not after the run, when extras cannot be saved
    return result


# ------------------------------------------------------------------------------------------------ the run
def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{seconds:.1f} s" if seconds < 90 else f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def _run_units(
    study: Study[Any], context: Context[Any], units: list[Unit], fields: dict[str, Any], label: str
) -> list[UnitRecord]:
    config, engine = context.config, context.engine
    records: list[UnitRecord] = []
    fresh_s, fresh_done = 0.0, 0
    for index, unit in enumerate(units, start=1):
        folder = context.out_dir / "runs" / unit.id
        record = _load_record(folder, unit, fields) if (config.resume and engine.is_main) else None
        skipped = engine.broadcast(record is not None)
        if skipped:
            record = engine.broadcast(record)
        else:
            if not config.resume:
                context.clear_unit(unit)
            context.begin(unit)
            from frugalvision.engine import seed_everything

            seed_everything(derive_seed(context.method, unit.name, unit.seed))
            start = time.perf_counter()
            result = _normalized(study.run_unit(context, unit), unit)
            wall = time.perf_counter() - start
            record = UnitRecord(unit, result.rows, result.extras, result.arrays, result.dataset, wall)
            if engine.is_main:
                _save_record(folder, record, fields)
            engine.barrier()
            fresh_s, fresh_done = fresh_s + wall, fresh_done + 1
        assert record is not None
        records.append(record)
        if engine.is_main:
            left = len(units) - index
            eta = f", ETA {_duration(fresh_s / fresh_done * left)}" if fresh_done and left else ""
            took = "finished earlier (resumed)" if skipped else _duration(record.wall_s)
            print(f"  [{label} {index}/{len(units)}] {unit.name} seed {unit.seed}: {took}{eta}", flush=True)
    return records


def _safe_file(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", metric).strip("_") or "metric"


def _figures(study: Study[Any], inputs: FigureInput[Any]) -> list[str]:
    from frugalvision.report.figures import bar_plot

    names: list[str] = []
    if study.primary_metric in inputs.summary:
        path = inputs.out_dir / f"{_safe_file(study.primary_metric)}.png"
        bar_plot(path, inputs.summary, study.primary_metric, f"{study.primary_metric} (mean ± std over seeds)")
        names.append(path.name)
    if study.figures is not None:
        for figure in study.figures(inputs):
            name = Path(figure).name if Path(figure).is_absolute() else Path(figure).as_posix()
            if name not in names:
                names.append(name)
    return names


def run_experiment(experiment: Experiment[Any], config: RunConfig) -> dict[str, Any]:
    """Run the main study of an experiment, or ``config.study``; return the results document (``{}`` off rank 0).

    Raises:
        ConfigError: invalid config, unknown study, an unwritable output folder, or a resume with a changed config.
    """
    from frugalvision.engine import Engine
    from frugalvision.registry import METHODS
    from frugalvision.report.schema import environment, make_results, summarize, write_results

    config.validate()
    study = experiment.study(config.study)
    units = study.plan(config)
    apply_threads(config.threads)
    out_dir = study_dir(experiment, config)
    engine = Engine(config.fabric, progress=config.progress)
    engine.launch()
    if engine.is_main:
        _check_writable(out_dir)
        save_config(config, out_dir / "config.yaml")
    engine.barrier()
    context = Context(config, engine, experiment.name, out_dir)
    fields = fingerprint_fields(config)
    label = f"{experiment.name}{'/' + config.study if config.study else ''}"
    records = _run_units(study, context, units, fields, label)
    finish_start = time.perf_counter()
    rows = [row for record in records for row in record.rows]
    if study.finish is not None:
        from frugalvision.report.schema import _normalize_rows

        rows += _normalize_rows(study.finish(context, records))
    verdict = study.verdict(config, rows)
    document: dict[str, Any] = {}
    if engine.is_main:
        summary = summarize(rows)
        figures = _figures(study, FigureInput(config, out_dir, rows, records, summary))
        notes = study.notes(config, records) if study.notes is not None else None
        env = {**environment(str(engine.device)), **thread_environment(), "world_size": engine.world_size}
        document = make_results(
            experiment.name,
            METHODS[experiment.name].paper if experiment.name in METHODS else experiment.name,
            config.preset,
            next((r.dataset for r in records if r.dataset), config.dataset),
            study.claim,
            rows,
            verdict.verdict,
            verdict.rule,
            sum(r.wall_s for r in records) + time.perf_counter() - finish_start,
            figures=figures,
            notes=notes,
            primary_metric=study.primary_metric,
            env=env,
            study=config.study,
            evidence=list(verdict.evidence),
            comparisons=[c.to_dict() for c in verdict.comparisons],
        )
        write_results(document, out_dir)
        print_summary(document, out_dir)
    engine.barrier()
    return document


def print_summary(document: dict[str, Any], folder: Path) -> None:
    """Print the verdict, the primary metric per row and where the results went (rank 0 calls this)."""
    primary = document.get("primary_metric")
    title = document["method"] + (f"/{document['study']}" if document.get("study") else "")
    print(f"[{title}] verdict: {document['verdict']}  ({document['verdict_rule']})")
    for line in document.get("evidence", [])[:4]:
        print(f"  evidence: {line}")
    if primary and primary in document.get("summary", {}):
        for row, stats in document["summary"][primary].items():
            print(f"  {row:<28} {primary} = {stats['mean']:.4f} ± {stats['std']:.4f}")
    print(f"  wrote {folder / 'results.json'} ({document['wall_s']:.1f} s of compute)", flush=True)
