"""Weight and learning-rate ramps of the semi-supervised frameworks, as pure functions of the step."""

from __future__ import annotations

import math

__all__ = ["cosine_rampdown", "fixmatch_lr_factor", "linear_rampup", "sigmoid_rampup"]


def sigmoid_rampup(current: float, length: float) -> float:
    """Mean Teacher's consistency ramp-up ``exp(-5 (1 - t/T)^2)`` with ``t`` clipped to ``[0, T]`` (1 when T = 0)."""
    if length <= 0:
        return 1.0
    phase = 1.0 - min(max(current, 0.0), length) / length
    return math.exp(-5.0 * phase * phase)


def linear_rampup(current: float, length: float) -> float:
    """``t / T`` clipped to ``[0, 1]`` (1 when T = 0)."""
    if length <= 0:
        return 1.0
    return min(max(current, 0.0), length) / length


def cosine_rampdown(current: float, length: float) -> float:
    """Mean Teacher's learning-rate ramp-down ``0.5 (cos(pi t / T) + 1)`` for ``0 <= t <= T``."""
    if not 0.0 <= current <= length:
        raise ValueError(f"cosine_rampdown needs 0 <= current ({current}) <= length ({length})")
    return 0.5 * (math.cos(math.pi * current / length) + 1.0)


def fixmatch_lr_factor(step: int, total: int) -> float:
    """FixMatch's learning-rate factor ``cos(7 pi t / (16 T))`` with ``t / T`` clipped to ``[0, 1]``."""
    progress = min(max(step / max(total, 1), 0.0), 1.0)
    return math.cos(7.0 * math.pi * progress / 16.0)
