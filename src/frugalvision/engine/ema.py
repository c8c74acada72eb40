"""Exponential moving average of a model's weights (parameters and floating buffers)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightEma:
    """EMA of a module's state: ``ema <- decay * ema + (1 - decay) * weights`` after each optimiser step.

    Integer buffers (e.g. BatchNorm's ``num_batches_tracked``) are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards ``model``'s current weights."""
        source = model.state_dict()
        for key, target in self.module.state_dict().items():
            value = source[key].detach()
            if target.dtype.is_floating_point:
                target.mul_(self.decay).add_(value.to(target.dtype), alpha=1.0 - self.decay)
            else:
                target.copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Return the averaged weights."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load averaged weights."""
        self.module.load_state_dict(state)
