"""The one result format: ``<out>/<method>/results.json``, its builder, validator, writer and loader.

A document looks like::

    {"method": "singe", "paper": "arXiv:2207.04089", "preset": "standard", "dataset": "fashion-mnist",
     "claim": "<one sentence>",
     "rows": [{"name": "magnitude", "seed": 0, "metrics": {"top1": 0.871}}, ...],
     "summary": {"<metric>": {"<row name>": {"mean": ..., "std": ...}}},
     "verdict": "supported" | "not supported" | "inconclusive", "verdict_rule": "<rule in words>",
     "seeds": 3, "wall_s": 95.2, "env": {"torch": "...", "device": "cpu", "threads": 2, ...},
     "figures": ["fig.png"],          # optional, paths relative to the results.json folder
     "notes": "...",                  # optional
     "primary_metric": "top1",        # optional
     "study": "variants",             # optional: the study this document belongs to (absent for the main study)
     "evidence": ["..."],             # optional: the numbers that decided the verdict, one sentence each
     "comparisons": [{...}],          # optional: the paired comparisons of the verdict (harness.stats)
     "data_sources": [{...}],         # optional: datasets read (name, path, split), recorded by the data loaders
     "skipped_files": {"count": 0, "files": []},  # optional: unreadable files skipped (skip_bad_files)
     "config_fingerprint": "<sha256>"}  # optional: of the config fields and units (``--resume`` skips a match)

Metric values are floats; NaN is allowed (written as the JSON extension ``NaN`` that Python's json reads back).
"""

from __future__ import annotations

import json
import numbers
import os
import platform
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from frugalvision.errors import ConfigError, DataError

__all__ = [
    "OPTIONAL_KEYS",
    "REQUIRED_KEYS",
    "RESULTS_FILE",
    "VERDICTS",
    "ResultsDoc",
    "Row",
    "atomic_write_text",
    "environment",
    "load_results",
    "make_results",
    "summarize",
    "validate_results",
    "write_results",
]

RESULTS_FILE = "results.json"
VERDICTS: tuple[str, ...] = ("supported", "not supported", "inconclusive")

_STR = (str,)
_NUM = (int, float)
#: Required top-level keys and the JSON types their values must have.
REQUIRED_KEYS: dict[str, tuple[type, ...]] = {
    "method": _STR,
    "paper": _STR,
    "preset": _STR,
    "dataset": _STR,
    "claim": _STR,
    "rows": (list,),
    "summary": (dict,),
    "verdict": _STR,
    "verdict_rule": _STR,
    "seeds": (int,),
    "wall_s": _NUM,
    "env": (dict,),
}
#: Optional top-level keys and their types.
OPTIONAL_KEYS: dict[str, tuple[type, ...]] = {
    "figures": (list,),
    "notes": _STR,
    "primary_metric": _STR,
    "study": _STR,
    "evidence": (list,),
    "comparisons": (list,),
}


@dataclass(frozen=True)
class Row:
    """One measured configuration (a method variant or baseline) for one seed.

    Attributes:
        name: Row name, e.g. ``"magnitude"`` or ``"singe"``; rows with the same name across seeds are pooled.
        seed: Random seed of the run.
        metrics: Metric name -> value.

    """

    name: str
    seed: int
    metrics: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form ``{"name", "seed", "metrics"}``."""
        return {"name": self.name, "seed": self.seed, "metrics": dict(self.metrics)}


@dataclass
class ResultsDoc:
    """Typed view of a results document (the on-disk form is the plain dict from :meth:`to_dict`)."""

    method: str
    paper: str
    preset: str
    dataset: str
    claim: str
    rows: list[dict[str, Any]]
    summary: dict[str, dict[str, dict[str, float]]]
    verdict: str
    verdict_rule: str
    seeds: int
    wall_s: float
    env: dict[str, Any]
    figures: list[str] = field(default_factory=list)
    notes: str | None = None
    primary_metric: str | None = None
    study: str | None = None
    evidence: list[str] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready dict (optional keys only when set)."""
        doc = {key: getattr(self, key) for key in REQUIRED_KEYS}
        for key in OPTIONAL_KEYS:
            value = getattr(self, key)
            if value:
                doc[key] = list(value) if isinstance(value, list) else value
        return doc

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ResultsDoc:
        """Build from a validated dict (see :func:`validate_results`)."""
        validate_results(doc)
        keys = set(REQUIRED_KEYS) | set(OPTIONAL_KEYS)
        return cls(**{k: v for k, v in doc.items() if k in keys})


def _as_float(value: object, where: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where} is a bool; record it as 0.0/1.0 or leave it out")
    if isinstance(value, numbers.Real):
        return float(value)
    item = getattr(value, "item", None)
    if callable(item):
        try:
            out = item()
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(f"{where} is a multi-element array; record a scalar") from exc
        if isinstance(out, numbers.Real) and not isinstance(out, bool):
            return float(out)
    raise ConfigError(f"{where} must be a number (got {type(value).__name__}); record a float")


def _normalize_rows(rows: Iterable[Row | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Return rows as plain JSON dicts with float metrics, raising ConfigError on malformed rows."""
    out = []
    for i, row in enumerate(rows):
        if isinstance(row, Row):
            row = row.to_dict()
        if not isinstance(row, Mapping) or not {"name", "seed", "metrics"} <= set(row):
            raise ConfigError(f"rows[{i}] must be a Row or a dict with keys name, seed, metrics (got {row!r})")
        name, seed, metrics = row["name"], row["seed"], row["metrics"]
        if not isinstance(name, str) or not name:
            raise ConfigError(f"rows[{i}].name must be a non-empty string (got {name!r})")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ConfigError(f"rows[{i}].seed must be an int (got {seed!r})")
        if not isinstance(metrics, Mapping):
            raise ConfigError(f"rows[{i}].metrics must be a dict of metric name -> float (got {metrics!r})")
        clean = {}
        for key, value in metrics.items():
            if not isinstance(key, str):
                raise ConfigError(f"rows[{i}].metrics has a non-string key {key!r}; name metrics with strings")
            clean[key] = _as_float(value, f"rows[{i}].metrics[{key!r}]")
        out.append({"name": name, "seed": int(seed), "metrics": clean})
    return out


def summarize(rows: Iterable[Row | Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and standard deviation of every metric for every row name, pooling seeds.

    Args:
        rows: Rows (``Row`` or ``{"name", "seed", "metrics"}`` dicts); rows sharing a name are pooled.

    Returns:
        ``{metric: {row name: {"mean": m, "std": s}}}`` with the sample std (``ddof=1``) when a name has more than
        one value, else ``0.0``. Metrics and names keep their order of first appearance.

    """
    values: dict[str, dict[str, list[float]]] = {}
    for row in _normalize_rows(rows):
        for metric, value in row["metrics"].items():
            values.setdefault(metric, {}).setdefault(row["name"], []).append(value)
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for metric, by_name in values.items():
        summary[metric] = {}
        for name, vals in by_name.items():
            arr = np.asarray(vals, dtype=np.float64)
            std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
            summary[metric][name] = {"mean": float(arr.mean()), "std": std}
    return summary


#: libraries whose versions results.json records (numbers may move across their releases)
LIBRARIES = ("torchvision", "timm", "lightning", "torchmetrics", "torch-pruning", "transformers", "scikit-learn")


def library_versions() -> dict[str, str]:
    """Installed versions of :data:`LIBRARIES` (read from package metadata, nothing imported)."""
    from importlib import metadata

    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def environment(device: str | None = None) -> dict[str, Any]:
    """Describe the software and hardware a run used.

    Args:
        device: The device the run used (e.g. ``"cpu"``, ``"cuda"``); detected (CUDA if available) when None.

    Returns:
        ``{"torch", "device", "threads", "python", "platform", "numpy", "cpu_count"}``, the versions of
        :data:`LIBRARIES`, plus ``"gpu"`` (device name) on CUDA.

    """
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count() or 0,
    }
    env.update(library_versions())
    if str(device).startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
    return env


def make_results(
    method: str,
    paper: str,
    preset: str,
    dataset: str,
    claim: str,
    rows: Sequence[Row | Mapping[str, Any]],
    verdict: str,
    verdict_rule: str,
    wall_s: float,
    figures: Sequence[str | os.PathLike[str]] = (),
    notes: str | None = None,
    primary_metric: str | None = None,
    env: Mapping[str, Any] | None = None,
    study: str | None = None,
    evidence: Sequence[str] = (),
    comparisons: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Assemble a validated results document; computes ``summary``, ``seeds`` and ``env``.

    Args:
        method: Registered method name.
        paper: Paper id, e.g. ``"arXiv:2207.04089"``.
        preset: Preset the experiment ran (``"smoke"``, ``"standard"``, ``"paper"``).
        dataset: Dataset name.
        claim: One sentence: what the paper says should happen.
        rows: Per-seed measurements.
        verdict: One of ``"supported"``, ``"not supported"``, ``"inconclusive"``.
        verdict_rule: The rule that turned the numbers into the verdict, in words.
        wall_s: Wall-clock seconds of the whole experiment.
        figures: Figure paths relative to the results.json folder.
        notes: Free-form remarks.
        primary_metric: The metric the verdict is about (shown first in the report).
        env: Environment description; :func:`environment` when None.
        study: The study this document belongs to (None for the main study).
        evidence: The numbers that decided the verdict, one sentence each.
        comparisons: The verdict's paired comparisons (``Comparison.to_dict()``).

    Returns:
        The document as a plain dict, ready for :func:`write_results`.

    """
    if verdict not in VERDICTS:
        raise ConfigError(f"verdict={verdict!r} is not one of {', '.join(map(repr, VERDICTS))}; compute one of them")
    norm_rows = _normalize_rows(rows)
    if not norm_rows:
        raise ConfigError("rows is empty; record at least one row of metrics")
    if primary_metric is not None and not any(primary_metric in r["metrics"] for r in norm_rows):
        raise ConfigError(f"primary_metric={primary_metric!r} is not a metric of any row; pick a recorded metric")
    doc: dict[str, Any] = {
        "method": method,
        "paper": paper,
        "preset": preset,
        "dataset": dataset,
        "claim": claim,
        "rows": norm_rows,
        "summary": summarize(norm_rows),
        "verdict": verdict,
        "verdict_rule": verdict_rule,
        "seeds": len({r["seed"] for r in norm_rows}),
        "wall_s": _as_float(wall_s, "wall_s"),
        "env": dict(env) if env is not None else environment(),
    }
    if figures:
        doc["figures"] = [Path(f).as_posix() for f in figures]
    if notes is not None:
        doc["notes"] = notes
    if primary_metric is not None:
        doc["primary_metric"] = primary_metric
    if study:
        doc["study"] = study
    if evidence:
        doc["evidence"] = [str(e) for e in evidence]
    if comparisons:
        doc["comparisons"] = [dict(c) for c in comparisons]
    try:
        validate_results(doc, source=f"results of {method!r}")
    except DataError as exc:
        raise ConfigError(str(exc)) from None
    return doc


def validate_results(doc: Mapping[str, Any], source: str = "results") -> None:
    """Check the keys and value types of a results document.

    Args:
        doc: The document.
        source: What to call it in the error (usually the file path).

    Raises:
        DataError: naming ``source`` and the first missing or malformed key.

    """
    if not isinstance(doc, Mapping):
        raise DataError(f"{source}: top level must be a JSON object (got {type(doc).__name__})")

    def bad(key: str, why: str) -> DataError:
        return DataError(f"{source}: key {key!r} {why}; regenerate the file with the experiment that wrote it")

    for key, types in REQUIRED_KEYS.items():
        if key not in doc:
            raise bad(key, "is missing")
        if not _is_type(doc[key], types):
            raise bad(key, f"must be {_type_names(types)} (got {type(doc[key]).__name__})")
    for key, types in OPTIONAL_KEYS.items():
        if key in doc and not _is_type(doc[key], types):
            raise bad(key, f"must be {_type_names(types)} (got {type(doc[key]).__name__})")
    if doc["verdict"] not in VERDICTS:
        raise bad("verdict", f"must be one of {', '.join(map(repr, VERDICTS))} (got {doc['verdict']!r})")
    for i, row in enumerate(doc["rows"]):
        if not isinstance(row, Mapping):
            raise bad(f"rows[{i}]", "must be an object with name, seed, metrics")
        for key, types in (("name", _STR), ("seed", (int,)), ("metrics", (dict,))):
            if key not in row:
                raise bad(f"rows[{i}].{key}", "is missing")
            if not _is_type(row[key], types):
                raise bad(f"rows[{i}].{key}", f"must be {_type_names(types)}")
        for metric, value in row["metrics"].items():
            if not _is_type(value, _NUM):
                raise bad(f"rows[{i}].metrics.{metric}", f"must be a number (got {type(value).__name__})")
    for metric, by_name in doc["summary"].items():
        if not isinstance(by_name, Mapping):
            raise bad(f"summary.{metric}", "must map row names to {mean, std}")
        for name, stats in by_name.items():
            ok = isinstance(stats, Mapping) and all(_is_type(stats.get(k), _NUM) for k in ("mean", "std"))
            if not ok:
                raise bad(f"summary.{metric}.{name}", "must be an object with numeric mean and std")
    for i, fig in enumerate(doc.get("figures", [])):
        if not isinstance(fig, str) or Path(fig).is_absolute():
            raise bad(f"figures[{i}]", "must be a path relative to the results.json folder")


def _is_type(value: object, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def _type_names(types: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "an object"}
    return " or ".join(dict.fromkeys(names[t] for t in types))


def write_results(doc: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> Path:
    """Validate ``doc`` and write it to ``<out_dir>/results.json`` atomically.

    The JSON goes to a temporary file in ``out_dir`` that is fsynced and then ``os.replace``-d over the target, so
    readers never see a half-written file. Keys starting with ``_`` (in-memory annotations) are not written.

    Args:
        doc: A results document (see :func:`make_results`).
        out_dir: Folder of the method's results; created if missing.

    Returns:
        The path of the written results.json.

    """
    out = Path(out_dir)
    clean = {k: v for k, v in doc.items() if not str(k).startswith("_")}
    validate_results(clean, source=f"results for {out / RESULTS_FILE}")
    out.mkdir(parents=True, exist_ok=True)
    target = out / RESULTS_FILE
    text = json.dumps(clean, indent=2, ensure_ascii=False) + "\n"
    atomic_write_text(target, text)
    return target


def current_umask() -> int:
    """The process's file-creation mask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp's 0600 would make results unreadable to colleagues
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def replace_marked_block(path: Path, begin: str, end: str, body: str, what: str) -> Path:
    """Rewrite ``path`` (atomically) with ``body`` between its ``begin`` and ``end`` marker lines.

    Raises:
        DataError: the file lacks one of the markers (``what`` names the block in the message).
    """
    text = path.read_text(encoding="utf-8")
    if begin not in text or end not in text:
        raise DataError(f"{path}: no {what} markers; add the lines {begin!r} and {end!r}")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    atomic_write_text(path, f"{head}{begin}\n{body}\n{end}{tail}")
    return path


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a results.json.

    Args:
        path: The results.json file (or the folder that holds it).

    Returns:
        The document as a dict.

    Raises:
        DataError: naming the file and what is missing, unreadable or malformed.

    """
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILE
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{p}: no such results file; run the experiment first (frugal run <method>)") from None
    except OSError as exc:
        raise DataError(f"{p}: cannot read results file ({exc.strerror}); check permissions") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{p}: invalid JSON at line {exc.lineno} ({exc.msg}); regenerate the file") from None
    validate_results(doc, source=str(p))
    return doc
