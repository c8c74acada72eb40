"""The one experiment runner: units, resume, rank-0 writing, results.json, config.yaml, figures and the summary.

Rank 0 locks the study folder for the whole run (a second run on the same ``--out`` gets one line naming the
holder). For every unit of the study, in order: on ``--resume`` a unit whose ``runs/<unit>/unit.json`` exists is
skipped (its rows are read back; a unit made with a different config is refused); otherwise the unit's folder is
cleared (a fresh run) or kept (``--resume``: training continues from its newest intact checkpoint, whose recorded
config fingerprint must match), the global RNGs are seeded from (method, unit, seed), the method's ``run_unit`` runs
on every rank, and rank 0 writes ``unit.json`` with the data sources read and the files skipped. ``config.yaml`` is
written once the run is known to start (its first training run or finished unit), so a run that fails before that
leaves the folder's previous config alone. Then the verdict is computed from all rows, and rank 0 writes
results.json and the figures and prints the summary. On ``--resume`` a study whose results.json was made with the
same config and units is not run again at all.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from frugalvision.config_io import config_to_dict, save_config
from frugalvision.errors import ConfigError, FrugalError, writing
from frugalvision.harness.config import RunConfig, apply_threads, thread_environment
from frugalvision.harness.context import Context
from frugalvision.harness.declare import Experiment, FigureInput, Study, Unit, UnitRecord, UnitResult
from frugalvision.seeding import derive_seed

__all__ = [
    "UNIT_FILE",
    "config_fingerprint",
    "fingerprint_fields",
    "print_summary",
    "run_experiment",
    "study_dir",
    "time_profile",
]

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


def config_fingerprint(fields: dict[str, Any], units: list[Unit], study: str | None) -> str:
    """sha256 of what a study's results depend on: the config's fields, the units and the study (for results.json)."""
    plan = [[u.name, u.seed, dict(u.params)] for u in units]
    text = json.dumps({"fields": fields, "units": plan, "study": study}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _default_fields(config: RunConfig) -> dict[str, Any]:
    """The fingerprint fields of the config class's defaults ({} when it cannot be built without arguments)."""
    try:
        return fingerprint_fields(type(config)())
    except Exception:  # noqa: BLE001 - a config class that needs arguments simply has no defaults to compare with
        return {}


def _check_writable(folder: Path) -> None:
    """Create ``folder`` and write a probe file in it; an unwritable folder fails before any training.

    Raises:
        OutputError: the folder cannot be created or written (one line naming it and the fix).
    """
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()


def _on_main(engine: Any, action: Callable[[], Any]) -> Any:
    """Run ``action`` on rank 0 and return its value on every rank; an error there is raised on every rank."""
    value, failure = None, None
    if engine.is_main:
        try:
            value = action()
        except FrugalError as error:
            failure = (type(error), str(error))
    failure = engine.broadcast(failure)
    if failure is not None:
        kind, message = failure
        raise kind(message)
    return engine.broadcast(value)


# ------------------------------------------------------------------------------------------------ unit records
def _save_record(folder: Path, record: UnitRecord, fields: dict[str, Any]) -> None:
    from frugalvision.report.schema import atomic_write_text

    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
        if record.arrays:
            from frugalvision.engine import save_weights

            save_weights(record.arrays, folder / UNIT_ARRAYS)
        document = {
            "unit": {"name": record.unit.name, "seed": record.unit.seed, "params": dict(record.unit.params)},
            "rows": record.rows,
            "extras": record.extras,
            "dataset": record.dataset,
            "data_sources": list(record.data_sources),
            "skipped_files": list(record.skipped_files),
            "wall_s": record.wall_s,
            "time_profile": dict(record.time_profile),
            "arrays": sorted(record.arrays),
            "config": fields,
        }
        atomic_write_text(folder / UNIT_FILE, json.dumps(document, indent=1, default=float) + "\n")


def _load_record(
    folder: Path, unit: Unit, fields: dict[str, Any], defaults: dict[str, Any] | None = None
) -> UnitRecord | None:
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
    stored = dict(document.get("config", {}))
    for key, value in (defaults or {}).items():  # a field added after the unit was made counts as its default
        stored.setdefault(key, value)
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
        unit,
        document["rows"],
        document.get("extras", {}),
        arrays,
        document.get("dataset"),
        document["wall_s"],
        tuple(document.get("data_sources", ())),
        tuple(document.get("skipped_files", ())),
        dict(document.get("time_profile", {})),
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


class _RunStart:
    """Writes config.yaml (rank 0, atomically) once the run is known to start; a fresh run drops the old results."""

    def __init__(self, config: RunConfig, out_dir: Path, is_main: bool) -> None:
        self.config, self.out_dir, self.is_main = config, out_dir, is_main
        self.started = False

    def __call__(self) -> None:
        if self.started:
            return
        self.started = True
        if not self.is_main:
            return
        with writing(self.out_dir):
            if not self.config.resume:
                (self.out_dir / "results.json").unlink(missing_ok=True)  # it described the run being replaced
            save_config(self.config, self.out_dir / "config.yaml")


def _run_one(study: Study[Any], context: Context[Any], unit: Unit, folder: Path) -> UnitRecord:
    """Run a unit on every rank (fresh or continuing) and return its record with the data it read."""
    from frugalvision.data import provenance
    from frugalvision.engine import seed_everything

    config, engine = context.config, context.engine
    if not config.resume:
        context.clear_unit(unit)
    _on_main(engine, lambda: _check_writable(folder))
    context.begin(unit)
    offsets = context.seed_offsets
    seed_everything(derive_seed(context.method, unit.name, unit.seed, *offsets))
    mark = provenance.mark()
    start = time.perf_counter()
    result = _normalized(study.run_unit(context, unit), unit)
    wall = time.perf_counter() - start
    sources, skipped = provenance.since(mark)
    skipped = list(dict.fromkeys([*skipped, *map(str, result.skipped_files)]))
    profile = context.time_profile()
    return UnitRecord(
        unit, result.rows, result.extras, result.arrays, result.dataset, wall, tuple(sources), tuple(skipped), profile
    )


def _run_units(
    study: Study[Any],
    context: Context[Any],
    units: list[Unit],
    fields: dict[str, Any],
    label: str,
    on_start: Callable[[], None] | None = None,
) -> list[UnitRecord]:
    config, engine = context.config, context.engine
    defaults = _default_fields(config) if config.resume else {}
    records: list[UnitRecord] = []
    fresh_s, fresh_done = 0.0, 0
    for index, unit in enumerate(units, start=1):
        folder = context.out_dir / "runs" / unit.id
        load = functools.partial(_load_record, folder, unit, fields, defaults)
        record = _on_main(engine, load) if config.resume else None
        skipped = record is not None
        if record is None:
            record = _run_one(study, context, unit, folder)
            if on_start is not None:
                on_start()
            if engine.is_main:
                _save_record(folder, record, fields)
            engine.barrier()
            fresh_s, fresh_done = fresh_s + record.wall_s, fresh_done + 1
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


def _finished_earlier(out_dir: Path, fingerprint: str) -> dict[str, Any] | None:
    """The study's results.json when it was made with the same config and units, else None."""
    from frugalvision.report.schema import load_results

    if not (out_dir / "results.json").is_file():
        return None
    try:
        document = load_results(out_dir)
    except FrugalError:
        return None
    return document if document.get("config_fingerprint") == fingerprint else None


def _data_fields(records: list[UnitRecord]) -> dict[str, Any]:
    """results.json's record of the data read (each source once) and the files skipped, over every unit."""
    sources: list[dict[str, Any]] = []
    skipped: list[str] = []
    for record in records:
        sources += [dict(s) for s in record.data_sources if dict(s) not in sources]
        skipped += [f for f in record.skipped_files if f not in skipped]
    return {"data_sources": sources, "skipped_files": {"count": len(skipped), "files": skipped[:100]}}


def run_experiment(experiment: Experiment[Any], config: RunConfig) -> dict[str, Any]:
    """Run the main study of an experiment, or ``config.study``; return the results document (``{}`` off rank 0).

    Raises:
        ConfigError: invalid config, unknown study, or a resume with a changed config.
        OutputError: an unwritable output folder (read-only, full, a file in the way).
        RunFolderBusyError: another run is writing the same study folder.
    """
    from frugalvision.engine import Engine
    from frugalvision.engine.runlock import RunLock

    config.validate()
    study = experiment.study(config.study)
    units = study.plan(config)
    apply_threads(config.threads)
    out_dir = study_dir(experiment, config)
    engine = Engine(config.fabric, progress=config.progress)
    engine.launch()
    lock = RunLock(out_dir)

    def take_the_folder() -> None:
        _check_writable(out_dir)
        lock.acquire()

    _on_main(engine, take_the_folder)
    try:
        return _run_locked(experiment, study, config, units, out_dir, engine)
    finally:
        if engine.is_main:
            lock.release()


def _run_locked(
    experiment: Experiment[Any],
    study: Study[Any],
    config: RunConfig,
    units: list[Unit],
    out_dir: Path,
    engine: Any,
) -> dict[str, Any]:
    from frugalvision.registry import METHODS
    from frugalvision.report.schema import environment, make_results, summarize, write_results

    fields = fingerprint_fields(config)
    fingerprint = config_fingerprint(fields, units, config.study)
    label = f"{experiment.name}{'/' + config.study if config.study else ''}"
    if config.resume:
        earlier = _on_main(engine, lambda: _finished_earlier(out_dir, fingerprint))
        if earlier is not None:
            if engine.is_main:
                for index, unit in enumerate(units, start=1):
                    print(f"  [{label} {index}/{len(units)}] {unit.name} seed {unit.seed}: finished earlier (resumed)")
                print(f"  [{label}] results.json was made with the same config and units: nothing to run")
                print_summary(earlier, out_dir)
            return earlier if engine.is_main else {}
    on_start = _RunStart(config, out_dir, engine.is_main)
    context = Context(config, engine, experiment.name, out_dir, fingerprint=fields, on_start=on_start)
    records = _run_units(study, context, units, fields, label, on_start)
    on_start()
    finish_start = time.perf_counter()
    rows = [row for record in records for row in record.rows]
    if study.finish is not None:
        from frugalvision.report.schema import _normalize_rows

        rows += _normalize_rows(study.finish(context, records))
    verdict = study.verdict(config, rows)
    document: dict[str, Any] = {}
    if engine.is_main:
        data = _data_fields(records)
        used = next((r.dataset for r in records if r.dataset), None)
        used = used or next((s["name"] for s in data["data_sources"]), None) or config.dataset
        summary = summarize(rows)
        with writing(out_dir):
            figures = _figures(study, FigureInput(config, out_dir, rows, records, summary))
        notes = study.notes(config, records) if study.notes is not None else None
        env = {**environment(str(engine.device)), **thread_environment(), "world_size": engine.world_size}
        document = make_results(
            experiment.name,
            METHODS[experiment.name].paper if experiment.name in METHODS else experiment.name,
            config.preset,
            used,
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
        document.update(data)
        document["time_profile"] = time_profile(records)
        document["config_fingerprint"] = fingerprint
        with writing(out_dir):
            write_results(document, out_dir)
        print_summary(document, out_dir)
    engine.barrier()
    return document


def time_profile(records: list[UnitRecord]) -> dict[str, float]:
    """Where the units' time went, summed over units: each phase's seconds, and ``other_s`` for the rest."""
    total = sum(record.wall_s for record in records)
    phases: dict[str, float] = {}
    for record in records:
        for phase, seconds in record.time_profile.items():
            phases[phase] = phases.get(phase, 0.0) + float(seconds)
    return {"units_s": total, **phases, "other_s": max(0.0, total - sum(phases.values()))}


def _profile_line(profile: dict[str, float]) -> str:
    total = profile.get("units_s", 0.0)
    parts = [(k[:-2], v) for k, v in profile.items() if k != "units_s" and v > 0]
    if total <= 0 or not parts:
        return ""
    return ", ".join(f"{name} {100 * seconds / total:.0f} %" for name, seconds in sorted(parts, key=lambda p: -p[1]))


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
    skipped = (document.get("skipped_files") or {}).get("count", 0)
    if skipped:
        print(f"  skipped {skipped} unreadable file(s) (skip_bad_files); listed in results.json")
    profile = _profile_line(document.get("time_profile") or {})
    if profile:
        print(f"  time: {profile}")
    print(f"  wrote {folder / 'results.json'} ({document['wall_s']:.1f} s of compute)", flush=True)
