"""``frugal bench``: every benchmark, one results.json each, and what makes a benchmark's numbers acceptable.

The framework's benchmarks (``engine``, ``startup``: :mod:`frugalvision.harness.builtin_bench`) run first, then
every registered experiment's ``benchmark=`` hook, in one process (imports are paid once), one after the other.
Each writes ``<out>/bench/<name>/results.json``::

    {"benchmark": "deit3", "kind": "method", "ratios": [<ratio rows>], "contract": {"met": true, "gaps": []},
     "details": {<everything the benchmark returned>}, "error": null, "wall_s": 41.2, "cpu_s": 70.3,
     "loadavg_before": [..], "loadavg_after": [..], "env": {"torch", "threads", "omp_wait_policy", "cpu", ...}}

The contract (what the README's performance table needs): the benchmark returns ``"ratios"``, rows made by
:func:`frugalvision.harness.timing.ratio_entry` from arms interleaved in shuffled rounds: a ratio against a named
peer, its interquartile range over rounds (at least :data:`MIN_ROUNDS`), and the threads it ran with. A benchmark
that returns ratios some other way is still run and recorded; its ``contract.gaps`` say what it lacks.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from frugalvision.errors import ConfigError

__all__ = [
    "BENCH_FOLDER",
    "FRAMEWORK_BENCHMARKS",
    "MIN_ROUNDS",
    "REQUIRED_RATIO_KEYS",
    "bench_environment",
    "contract_gaps",
    "run_benchmark",
    "run_benchmarks",
]

BENCH_FOLDER = "bench"
#: fewest interleaved rounds a ratio's spread may rest on
MIN_ROUNDS = 5
#: what every row of a benchmark's "ratios" list holds (``timing.ratio_entry`` makes them)
REQUIRED_RATIO_KEYS = (
    "name",
    "arm",
    "peer",
    "ratio",
    "ratio_q25",
    "ratio_q75",
    "arm_ms",
    "peer_ms",
    "rounds",
    "threads",
)


def _engine(out_dir: Path) -> dict[str, Any]:
    from frugalvision.harness.builtin_bench import engine_overhead

    return engine_overhead(out_dir)


def _startup(out_dir: Path) -> dict[str, Any]:
    from frugalvision.harness.builtin_bench import startup

    return startup(out_dir)


#: the framework's benchmarks, run before the methods'
FRAMEWORK_BENCHMARKS: dict[str, Callable[[Path], dict[str, Any]]] = {"engine": _engine, "startup": _startup}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bench_environment() -> dict[str, Any]:
    """The machine and the process's thread settings (torch is imported)."""
    import torch

    from frugalvision.threads import thread_policy

    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        **thread_policy(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "nice": os.nice(0) if hasattr(os, "nice") else 0,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


_SPREAD_SUFFIXES = ("_q25", "_q75", "_iqr")
_NOT_TIMES = ("macs", "mib", "params", "flops", "memory", "bytes")


def _is_time_ratio(key: str, value: Any) -> bool:
    """A number named like a ratio of two timings (``ratio``, ``*_ratio*``, ``a_over_b``, ``a_vs_b``)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or key.endswith(_SPREAD_SUFFIXES):
        return False
    named = "ratio" in key or "_over_" in key or "_vs_" in key
    return named and not any(word in key for word in _NOT_TIMES)


def _has_spread(key: str, holder: Mapping[str, Any]) -> bool:
    if f"{key}_iqr" in holder or (f"{key}_q25" in holder and f"{key}_q75" in holder):
        return True
    return key.startswith("ratio") and "ratio_q25" in holder and "ratio_q75" in holder


def _legacy_ratios(value: Any, path: str = "") -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """(path, key, holder) of every timing ratio in a nested dict (a benchmark without ``"ratios"`` rows)."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            where = f"{path}.{key}" if path else str(key)
            if _is_time_ratio(str(key), inner):
                yield where, str(key), value
            else:
                yield from _legacy_ratios(inner, where)
    elif isinstance(value, (list, tuple)):
        for index, inner in enumerate(value):
            yield from _legacy_ratios(inner, f"{path}[{index}]")


def contract_gaps(result: Mapping[str, Any]) -> list[str]:
    """What a benchmark's returned dict lacks for the performance table (empty: it meets the contract)."""
    ratios = result.get("ratios")
    if isinstance(ratios, list) and ratios:
        gaps = []
        for index, row in enumerate(ratios):
            label = row.get("name", f"ratios[{index}]") if isinstance(row, Mapping) else f"ratios[{index}]"
            if not isinstance(row, Mapping):
                gaps.append(f"{label} is not a dict (use harness.timing.ratio_entry)")
                continue
            missing = [key for key in REQUIRED_RATIO_KEYS if row.get(key) is None]
            if missing:
                gaps.append(f"{label} lacks {', '.join(missing)} (use harness.timing.ratio_entry)")
            elif int(row["rounds"]) < MIN_ROUNDS:
                gaps.append(f"{label} rests on {row['rounds']} rounds (< {MIN_ROUNDS}): no spread worth the name")
        return gaps
    found = list(_legacy_ratios(result))
    if not found:
        return ["returns no ratio at all (time arms with harness.timing.interleaved_timings, report ratio_entry rows)"]
    without_spread = [path for path, key, holder in found if not _has_spread(key, holder)]
    gaps = [
        "returns its timing ratios outside a 'ratios' list, so no row names its peer, rounds and threads "
        "(return harness.timing.benchmark_result([ratio_entry(...)]))"
    ]
    if without_spread:
        more = f" and {len(without_spread) - 4} more" if len(without_spread) > 4 else ""
        gaps.append(f"no spread (q25/q75 over rounds) found for {', '.join(without_spread[:4])}{more}")
    return gaps


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def run_benchmark(name: str, kind: str, function: Callable[[Path], dict[str, Any]], out: Path) -> dict[str, Any]:
    """Run one benchmark, record its ratios, contract gaps, time, load and environment; write its results.json.

    A benchmark that raises is recorded with its error (the others still run); torch's thread count is restored
    after each benchmark, so one that sets its own cannot change the next one's.
    """
    import torch

    from frugalvision.report.schema import atomic_write_text

    folder = out / BENCH_FOLDER / name
    folder.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    env = bench_environment()
    load_before = list(os.getloadavg())
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    error = None
    try:
        result = dict(function(folder))
    except Exception as exc:  # noqa: BLE001 - one failing benchmark is recorded, the others still run
        result = {}
        error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        traceback.print_exc()
    finally:
        torch.set_num_threads(threads)
    wall = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    gaps = contract_gaps(result) if error is None else [f"failed: {error}"]
    ratios = result.get("ratios") if isinstance(result.get("ratios"), list) else []
    document = {
        "benchmark": name,
        "kind": kind,
        "ratios": [row for row in ratios if _complete(row)],
        "contract": {"met": not gaps, "gaps": gaps},
        "details": {key: value for key, value in result.items() if key != "ratios"},
        "error": error,
        "wall_s": wall,
        "cpu_s": (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime),
        "loadavg_before": load_before,
        "loadavg_after": list(os.getloadavg()),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "env": env,
    }
    document = _jsonable(document)
    atomic_write_text(folder / "results.json", json.dumps(document, indent=2) + "\n")
    return document


def _complete(row: Any) -> bool:
    """A ratio row the performance table can show (every field, enough rounds)."""
    if not isinstance(row, Mapping) or any(row.get(key) is None for key in REQUIRED_RATIO_KEYS):
        return False
    return int(row["rounds"]) >= MIN_ROUNDS


def _method_benchmarks(methods: Sequence[str]) -> list[tuple[str, Callable[[Path], dict[str, Any]]]]:
    from frugalvision.registry import get_method

    found = []
    for method in methods:
        experiment = get_method(method).load()
        if experiment.benchmark is not None:
            found.append((method, experiment.benchmark))
    return found


def run_benchmarks(
    names: Sequence[str], out: str | os.PathLike[str], log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Run the named benchmarks (default: the framework's, then every available experiment's); return the documents.

    Raises:
        ConfigError: a name that is neither a framework benchmark nor a registered method.
    """
    from frugalvision.registry import METHODS, available_methods

    unknown = [name for name in names if name not in FRAMEWORK_BENCHMARKS and name not in METHODS]
    if unknown:
        choices = ", ".join([*FRAMEWORK_BENCHMARKS, *available_methods()])
        raise ConfigError(f"unknown benchmark {', '.join(unknown)}; choose among: {choices}")
    selected = list(names) or [*FRAMEWORK_BENCHMARKS, *available_methods()]
    plan = [(name, "framework", FRAMEWORK_BENCHMARKS[name]) for name in selected if name in FRAMEWORK_BENCHMARKS]
    methods = [name for name in selected if name not in FRAMEWORK_BENCHMARKS]
    plan += [(name, "method", function) for name, function in _method_benchmarks(methods)]
    documents = []
    for index, (name, kind, function) in enumerate(plan, start=1):
        log(f"== [{index}/{len(plan)}] bench {name}")
        document = run_benchmark(name, kind, function, Path(out))
        documents.append(document)
        for row in document["ratios"]:
            log(
                f"  {row['name']}: {row['arm']} / {row['peer']} = {row['ratio']:.3g} "
                f"[{row['ratio_q25']:.3g}, {row['ratio_q75']:.3g}] over {row['rounds']} rounds, {row['threads']} thr"
            )
        for gap in document["contract"]["gaps"]:
            log(f"  contract gap: {gap}")
        log(f"  {document['wall_s']:.1f} s, load {document['loadavg_before'][0]:.1f}")
    return documents
