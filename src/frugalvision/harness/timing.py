"""One latency timer for experiments and benchmarks: arms interleaved in shuffled rounds, medians and ratios.

Timing arms one after the other lets a change in machine load (another job starting, a CPU clock change) land on
one arm only. Here every round runs each arm once, in a freshly shuffled order; the latency of an arm is the median
over rounds, and the ratio of two arms is the median of their per-round ratios (with its interquartile range).

A benchmark hooked into ``frugal bench`` (``Experiment(benchmark=...)``) returns its measurements as a dict; the
ratios it wants in the README's performance table go in its ``"ratios"`` list, one :func:`ratio_entry` each (a ratio
against a named peer, with its spread, rounds and threads). :func:`benchmark_result` builds that dict::

    timings = interleaved_timings({"ours": ours, "timm": peer}, rounds=15)
    return benchmark_result([ratio_entry(timings, "ours", "timm", name="train step", peer_label="timm deit3_small")])
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Timing", "benchmark_result", "interleaved_ratio", "interleaved_timings", "latency_ratio", "ratio_entry"]


@dataclass(frozen=True)
class Timing:
    """Per-round wall times of one arm.

    Attributes:
        name: the arm.
        samples_ms: one time per round (milliseconds), in round order.
    """

    name: str
    samples_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        """Median over rounds."""
        return statistics.median(self.samples_ms)


def _synchronize(device: Any) -> None:
    if getattr(device, "type", device) == "cuda":
        import torch

        torch.cuda.synchronize()


def interleaved_timings(
    arms: Mapping[str, Callable[[], Any]],
    rounds: int = 20,
    warmup: int = 3,
    seed: int = 0,
    device: Any = "cpu",
) -> dict[str, Timing]:
    """Time each callable once per round, in a shuffled order each round, after ``warmup`` untimed rounds.

    Args:
        arms: name -> zero-argument callable (e.g. ``lambda: model(x)`` under ``torch.no_grad()``).
        rounds: timed rounds.
        warmup: untimed rounds first (allocator, caches, lazy init).
        seed: seed of the round orders.
        device: "cuda" (or a CUDA device) to synchronise around each call.

    Returns:
        name -> :class:`Timing`.
    """
    if rounds < 1:
        raise ValueError(f"rounds={rounds} must be >= 1")
    rng = random.Random(seed)
    names = list(arms)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for index in range(warmup + rounds):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            _synchronize(device)
            start = time.perf_counter()
            arms[name]()
            _synchronize(device)
            if index >= warmup:
                samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: Timing(name, tuple(values)) for name, values in samples.items()}


def latency_ratio(timings: Mapping[str, Timing], arm: str, reference: str) -> dict[str, float]:
    """Median and interquartile range of the per-round ratios ``arm / reference``.

    Returns:
        ``{"ratio": median, "ratio_q25": ..., "ratio_q75": ..., "arm_ms": median ms, "reference_ms": median ms}``.
    """
    ratios = sorted(a / r for a, r in zip(timings[arm].samples_ms, timings[reference].samples_ms, strict=True))
    if len(ratios) > 1:
        q25, _, q75 = statistics.quantiles(ratios, n=4, method="inclusive")
    else:
        q25 = q75 = ratios[0]
    return {
        "ratio": statistics.median(ratios),
        "ratio_q25": q25,
        "ratio_q75": q75,
        "arm_ms": timings[arm].median_ms,
        "reference_ms": timings[reference].median_ms,
    }


def _threads() -> int | None:
    import sys

    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else None


def ratio_entry(
    timings: Mapping[str, Timing],
    arm: str,
    peer: str,
    *,
    name: str | None = None,
    arm_label: str | None = None,
    peer_label: str | None = None,
    goal: float | None = None,
    **details: Any,
) -> dict[str, Any]:
    """One row of the performance table: ``arm / peer`` from interleaved timings, with its spread and context.

    Args:
        timings: the output of :func:`interleaved_timings` holding both arms.
        arm: the measured arm (ours).
        peer: the reference arm (a named peer: timm's model, a dense baseline, a bare loop...).
        name: what is measured (default ``"<arm> vs <peer>"``).
        arm_label: a longer description of the arm for the table (default: ``arm``).
        peer_label: a longer description of the peer for the table (default: ``peer``).
        goal: the ratio the claim or issue asks for (at most this), if any.
        **details: JSON-able context kept with the row (batch size, sizes...).

    Returns:
        ``{"name", "arm", "peer", "ratio", "ratio_q25", "ratio_q75", "arm_ms", "peer_ms", "reference_ms",
        "rounds", "threads", "goal", "meets_goal", ...details}``; a ratio below 1 means the arm is faster.
    """
    ratio = latency_ratio(timings, arm, peer)
    entry: dict[str, Any] = {
        "name": name or f"{arm} vs {peer}",
        "arm": arm_label or arm,
        "peer": peer_label or peer,
        **ratio,
        "peer_ms": ratio["reference_ms"],
        "rounds": len(timings[arm].samples_ms),
        "threads": _threads(),
        "goal": goal,
        "meets_goal": None if goal is None else bool(ratio["ratio"] <= goal),
    }
    entry.update(details)
    return entry


def interleaved_ratio(
    arms: Mapping[str, Callable[[], Any]],
    arm: str,
    peer: str,
    *,
    rounds: int = 20,
    warmup: int = 3,
    seed: int = 0,
    device: Any = "cpu",
    **labels: Any,
) -> dict[str, Any]:
    """Time ``arms`` in interleaved shuffled rounds and return :func:`ratio_entry` of ``arm`` against ``peer``."""
    timings = interleaved_timings(arms, rounds=rounds, warmup=warmup, seed=seed, device=device)
    return ratio_entry(timings, arm, peer, **labels)


def benchmark_result(ratios: list[dict[str, Any]], **details: Any) -> dict[str, Any]:
    """The dict a ``benchmark=`` hook returns: its :func:`ratio_entry` rows under ``"ratios"``, then any details."""
    return {"ratios": list(ratios), **details}
