"""Thin engine adapter: fixed-Q or nested query-set training of a :class:`PerceiverClassifier`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from frugalvision.engine import Task
from frugalvision.methods.perceiver.augment import mix_batch
from frugalvision.methods.perceiver.functional import nested_loss, sample_widths, step_generator
from frugalvision.methods.perceiver.model import PerceiverClassifier

TrainMode = Literal["fixed", "nested"]


class PerceiverTask(Task):
    """Training of the DQS Perceiver (spec §2.3).

    Args:
        model_fn: builds a fresh :class:`PerceiverClassifier`.
        train_set: (image, label) training set.
        eval_sets: named evaluation sets (evaluated at full Q by the engine).
        train_mode: "fixed" (all Q latents, plain CE) or "nested" (sandwich widths + optional distillation).
        min_latents: Q_min of the width grid.
        num_random: random widths per step besides Q and Q_min.
        beta: distillation weight β.
        temperature: distillation temperature T.
        seed: seed of the width draws (combined with the step; identical on every rank).
        num_classes: classes of the soft targets (needed when mixing or smoothing).
        mixup_alpha: Mixup Beta(α, α) (0: off).
        cutmix_alpha: CutMix Beta(α, α) (0: off).
        label_smoothing: label smoothing of the targets.
    """

    def __init__(
        self,
        model_fn: Callable[[], PerceiverClassifier],
        train_set: Dataset,
        eval_sets: dict[str, Dataset] | None = None,
        train_mode: TrainMode = "nested",
        min_latents: int = 4,
        num_random: int = 1,
        beta: float = 0.5,
        temperature: float = 1.0,
        seed: int = 0,
        num_classes: int = 10,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        label_smoothing: float = 0.0,
    ) -> None:
        if train_mode not in ("fixed", "nested"):
            raise ValueError(f"train_mode={train_mode!r} is invalid; use fixed or nested")
        self.model_fn, self.train_set, self.eval_sets = model_fn, train_set, eval_sets or {}
        self.train_mode, self.min_latents, self.num_random = train_mode, min_latents, num_random
        self.beta, self.temperature, self.seed = beta, temperature, seed
        self.num_classes, self.mixup_alpha, self.cutmix_alpha = num_classes, mixup_alpha, cutmix_alpha
        self.label_smoothing = label_smoothing
        self.last_widths: Sequence[int] = ()

    @property
    def soft_targets(self) -> bool:
        """Whether the targets are mixed or smoothed (then they are (B, C) probabilities)."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0 or self.label_smoothing > 0

    def targets(self, images: torch.Tensor, labels: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixup/CutMix and label smoothing of the batch (drawn from (seed, step)); identity when all are off."""
        if not self.soft_targets:
            return images, labels
        generator = step_generator(self.seed + 7919, step)
        return mix_batch(
            images, labels, self.num_classes, self.mixup_alpha, self.cutmix_alpha, self.label_smoothing, generator
        )

    def build_model(self) -> nn.Module:
        """Fresh Perceiver."""
        return self.model_fn()

    def train_dataset(self) -> Dataset:
        """The training set."""
        return self.train_set

    def eval_datasets(self) -> dict[str, Dataset]:
        """The named evaluation sets."""
        return self.eval_sets

    def training_step(
        self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """CE at Q (fixed) or the nested loss over the sandwich widths of this step."""
        images, labels = batch
        images, targets = self.targets(images, labels, step)
        if self.train_mode == "fixed":
            logits = model(images)
            return F.cross_entropy(logits, targets), {"train_top1": (logits.argmax(-1) == labels).float().mean().item()}
        core = getattr(model, "module", model)
        widths = sample_widths(core.num_latents, self.min_latents, self.num_random, step_generator(self.seed, step))
        self.last_widths = widths
        logits = model(images, widths=widths)  # through the (DDP) wrapper so gradients are synchronised
        loss, logs = nested_loss(logits, targets, self.beta, self.temperature)
        logs["train_top1"] = (logits[max(logits)].argmax(-1) == labels).float().mean().item()
        return loss, logs
