"""One latency timer for experiments and benchmarks: arms interleaved in shuffled rounds, medians and ratios.

Timing arms one after the other lets a change in machine load (another job starting, a CPU clock change) land on
one arm only. Here every round runs each arm once, in a freshly shuffled order; the latency of an arm is the median
over rounds, and the ratio of two arms is the median of their per-round ratios (with its interquartile range).
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Timing", "interleaved_timings", "latency_ratio"]


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
