"""Reusable engine tasks shared by several methods (plain PyTorch, no Lightning)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from frugalvision.engine import LoopConfig, Task


class SupervisedClassification(Task):
    """Cross-entropy training of any classifier on (image, label) datasets.

    Args:
        model_fn: builds a fresh model (called after the engine seeds the run).
        train_set: training dataset of (float image, int label).
        eval_sets: named evaluation datasets.
        label_smoothing: cross-entropy label smoothing.
        augment: optional batched augmentation applied to the image batch inside the training step.
        optimizer_fn: optional ``(model, loop) -> optimizer`` (default: AdamW, no decay on 1-D parameters).
    """

    def __init__(
        self,
        model_fn: Callable[[], nn.Module],
        train_set: Dataset,
        eval_sets: dict[str, Dataset] | None = None,
        label_smoothing: float = 0.0,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        optimizer_fn: Callable[[nn.Module, LoopConfig], torch.optim.Optimizer] | None = None,
    ) -> None:
        self.model_fn = model_fn
        self.train_set = train_set
        self.eval_sets = eval_sets or {}
        self.label_smoothing = label_smoothing
        self.augment = augment
        self.optimizer_fn = optimizer_fn

    def build_model(self) -> nn.Module:
        """Fresh model from ``model_fn``."""
        return self.model_fn()

    def build_optimizer(self, model: nn.Module, loop: LoopConfig) -> torch.optim.Optimizer:
        """``optimizer_fn`` when given, else the engine's default AdamW."""
        return self.optimizer_fn(model, loop) if self.optimizer_fn else super().build_optimizer(model, loop)

    def train_dataset(self) -> Dataset:
        """The training set."""
        return self.train_set

    def eval_datasets(self) -> dict[str, Dataset]:
        """The named evaluation sets."""
        return self.eval_sets

    def training_step(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], step: int):
        """Cross-entropy on one batch; logs the loss and the batch accuracy."""
        images, labels = batch
        if self.augment is not None:
            images = self.augment(images)
        logits = model(images)
        loss = nn.functional.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        return loss, {"train_top1": (logits.argmax(-1) == labels).float().mean().item()}

    def eval_metrics(self, outputs: dict[str, torch.Tensor]) -> dict[str, float]:
        """Top-1, NLL and ECE over a whole evaluation set."""
        from frugalvision.metrics import ece, nll, top1  # torchmetrics underneath: imported when first evaluating

        logits, targets = outputs["logits"], outputs["targets"]
        return {"top1": top1(logits, targets), "nll": nll(logits, targets), "ece": ece(logits, targets)}
