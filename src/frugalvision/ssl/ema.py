"""Exponential moving averages of weights as semi-supervised methods use them (Mean Teacher, FixMatch, MuHDi...).

Mean Teacher (CuriousAI/mean-teacher, ``update_ema_variables``) averages the **parameters** only, with the decay
clamped to ``min(1 - 1/(t + 1), alpha)`` so that the teacher is the true average of the student early on; the
teacher's BatchNorm statistics come from its own forward passes. :class:`EmaTeacher` implements that and, as
options, the two other buffer policies in use (copy the student's buffers, or average them too).
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn

__all__ = ["BufferPolicy", "EmaTeacher", "ema_update_", "mean_teacher_decay"]

BufferPolicy = Literal["own", "copy", "ema"]


def mean_teacher_decay(step: int, alpha: float) -> float:
    """Mean Teacher's decay at global step ``step`` (>= 1 after the first update): ``min(1 - 1/(step + 1), alpha)``."""
    return min(1.0 - 1.0 / (step + 1), alpha)


@torch.no_grad()
def ema_update_(target: nn.Module, source: nn.Module, decay: float, buffers: BufferPolicy = "own") -> None:
    """``target <- decay * target + (1 - decay) * source`` on the parameters, in place.

    Args:
        target: the averaged model (e.g. the teacher).
        source: the model being trained (same architecture).
        decay: weight of the old average.
        buffers: "own" leaves the target's buffers alone (Mean Teacher: the teacher's BatchNorm statistics come from
            its own forward passes), "copy" copies the source's buffers, "ema" averages floating buffers and copies
            the others (the engine's ``WeightEma``).
    """
    for averaged, current in zip(target.parameters(), source.parameters(), strict=True):
        averaged.mul_(decay).add_(current.detach().to(averaged.dtype), alpha=1.0 - decay)
    if buffers == "own":
        return
    for averaged, current in zip(target.buffers(), source.buffers(), strict=True):
        if buffers == "ema" and averaged.dtype.is_floating_point:
            averaged.mul_(decay).add_(current.to(averaged.dtype), alpha=1.0 - decay)
        else:
            averaged.copy_(current)


class EmaTeacher:
    """A frozen copy of a student updated as a moving average of its weights (Mean Teacher's teacher).

    Args:
        student: the model to average (copied at construction).
        alpha: the decay once the warm-up clamp is inactive (Mean Teacher: 0.97 for 1,000 CIFAR-10 labels, 0.99 for
            4,000; FixMatch's evaluation EMA: 0.999 without clamp).
        warmup: apply the clamp ``min(1 - 1/(t + 1), alpha)`` (Mean Teacher) or always use ``alpha``.
        buffers: buffer policy of :func:`ema_update_`.
    """

    def __init__(self, student: nn.Module, alpha: float, warmup: bool = True, buffers: BufferPolicy = "own") -> None:
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha={alpha} must lie in [0, 1)")
        self.alpha = alpha
        self.warmup = warmup
        self.buffers: BufferPolicy = buffers
        self.module = copy.deepcopy(student)
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    def decay(self, step: int) -> float:
        """The decay used by the update after optimiser step ``step`` (1 for the first update)."""
        return mean_teacher_decay(step, self.alpha) if self.warmup else self.alpha

    def update(self, student: nn.Module, step: int) -> None:
        """Move the teacher towards the student after optimiser step ``step`` (counted from 1)."""
        ema_update_(self.module, student, self.decay(step), self.buffers)

    def to(self, device: torch.device | str) -> EmaTeacher:
        """Move the teacher to ``device``; returns self."""
        self.module.to(device)
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The teacher's weights and buffers."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load the teacher's weights and buffers."""
        self.module.load_state_dict(state)
