"""Which data a run actually read, and which files it skipped: recorded by the loaders, read by the harness.

The loaders of this package call :func:`record_source` when they read a dataset from disk and :func:`record_skipped`
when ``skip_bad_files=True`` drops a corrupt image. The harness takes a :func:`mark` before each unit and stores what
was recorded :func:`since` it in ``unit.json`` and ``results.json`` (``data_sources``, ``skipped_files``), so that a
method gets both without code of its own. Records are per process (rank 0's are the ones written); skips met inside
DataLoader worker processes are not seen here (the default ``prefilter=True`` finds bad files in the main process).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

__all__ = ["Mark", "clear", "mark", "record_skipped", "record_source", "since"]

_LOCK = threading.Lock()
_SOURCES: list[dict[str, str]] = []
_SKIPPED: list[str] = []


@dataclass(frozen=True)
class Mark:
    """A position in the records (see :func:`mark`)."""

    sources: int
    skipped: int


def record_source(name: str, path: str | os.PathLike[str] | None = None, split: str | None = None) -> None:
    """Note that a dataset was read: its name, the folder or file it came from, and the split."""
    entry = {"name": name}
    if path is not None:
        entry["path"] = str(path)
    if split is not None:
        entry["split"] = split
    with _LOCK:
        _SOURCES.append(entry)


def record_skipped(path: str | os.PathLike[str]) -> None:
    """Note that a corrupt or truncated file was skipped."""
    with _LOCK:
        _SKIPPED.append(str(path))


def mark() -> Mark:
    """The current position of the records."""
    with _LOCK:
        return Mark(len(_SOURCES), len(_SKIPPED))


def since(start: Mark) -> tuple[list[dict[str, str]], list[str]]:
    """The sources and skipped files recorded after ``start`` (each once, in order)."""
    with _LOCK:
        sources: list[dict[str, str]] = []
        for entry in _SOURCES[start.sources :]:
            if entry not in sources:
                sources.append(dict(entry))
        return sources, list(dict.fromkeys(_SKIPPED[start.skipped :]))


def clear() -> None:
    """Forget every record (tests)."""
    with _LOCK:
        _SOURCES.clear()
        _SKIPPED.clear()
