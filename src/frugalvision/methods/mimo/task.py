"""Thin engine adapter: a MIMO network (or a single network, M = 1) trained with the :class:`MixMo` plug-in."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from frugalvision.engine import LoopConfig, Task
from frugalvision.methods.mimo.model import MimoNetwork
from frugalvision.methods.mimo.plugin import MixMo

__all__ = ["MimoTask"]


class MimoTask(Task):
    """Training of one MIMO-type network through the engine (SGD with nesterov momentum 0.9, as MixMo).

    The engine's batch holds the *unique* images of a rank (``loop.batch_size`` = processed samples / b); the
    plug-in repeats them b times and permutes them per input. The optimiser's weight decay applies to every
    parameter (plain SGD L2, as MixMo's penalty), not only to weight matrices.

    Args:
        model_fn: builds a fresh :class:`MimoNetwork`.
        train_set: (image in [0, 1], label) training set.
        mixer: the mixing plug-in.
        normalise: applied to the augmented images.
    """

    def __init__(
        self,
        model_fn: Callable[[], MimoNetwork],
        train_set: Dataset,
        mixer: MixMo,
        normalise: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.model_fn, self.train_set, self.mixer, self.normalise = model_fn, train_set, mixer, normalise
        self.max_steps = 1

    def build_model(self) -> nn.Module:
        """A fresh MIMO network."""
        return self.model_fn()

    def build_optimizer(self, model: nn.Module, loop: LoopConfig) -> torch.optim.Optimizer:
        """SGD, nesterov momentum 0.9, weight decay on every parameter."""
        self.max_steps = loop.max_steps
        return torch.optim.SGD(
            model.parameters(), lr=loop.lr, momentum=0.9, nesterov=True, weight_decay=loop.weight_decay
        )

    def train_dataset(self) -> Dataset:
        """The training set (unique images)."""
        return self.train_set

    def training_step(
        self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The plug-in's loss at ``step / max_steps`` of training."""
        images, labels = batch
        return self.mixer.training_loss(model, images, labels, step / self.max_steps, self.normalise)
