"""Learning-rate schedules as pure functions of the step (exactly resumable, no scheduler state)."""

from __future__ import annotations

import math

import torch


def warmup_cosine_lr(
    step: int,
    *,
    max_steps: int,
    lr: float,
    warmup_steps: int = 0,
    warmup_start_lr: float = 0.0,
    min_lr: float = 0.0,
    schedule: str = "cosine",
    poly_power: float = 0.9,
    milestones: tuple[int, ...] = (),
    gamma: float = 0.1,
) -> float:
    """Learning rate at optimiser step ``step`` (0-based).

    Linear warm-up from ``warmup_start_lr`` to ``lr`` over ``warmup_steps``, then one of:
    ``cosine`` (decay to ``min_lr`` at ``max_steps``), ``constant`` (flat at ``lr``), ``poly`` (DeepLab's
    ``min_lr + (lr - min_lr) * (1 - t / max_steps) ** poly_power``, ``t`` counted from step 0 as in ADVENT) or
    ``step`` (``lr * gamma ** k`` after the ``k``-th of ``milestones``, in optimiser steps).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return warmup_start_lr + (lr - warmup_start_lr) * step / warmup_steps
    if schedule == "constant":
        return lr
    if schedule == "poly":
        return min_lr + (lr - min_lr) * max(0.0, 1.0 - step / max_steps) ** poly_power
    if schedule == "step":
        return lr * gamma ** sum(step >= milestone for milestone in milestones)
    decay_steps = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group, honouring an optional per-group ``lr_scale``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
