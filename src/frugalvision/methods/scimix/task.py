"""The engine adapter that trains a SciMix generator (and, optionally, its discriminator and a joint classifier).

Schedules (our reading, spec §2.2): ``staged`` freezes a given classifier (the supervised warm-up) as the teacher T;
``joint`` trains a classifier on the labeled set alongside the generator, one step each per iteration, and T is the
classifier's EMA. Every generator batch holds ``labeled_batch`` labeled images (their labels) and the engine's batch
of unlabeled images (T's pseudo-labels where confident; ours: the few labels would otherwise rarely appear in a
batch). Its datasets hold images and labels only: compositing ground truth never reaches the generator.
Every part has its own optimiser behind one :class:`CompositeOptimizer` (Adam betas (0.5, 0.99) for G and D, SGD for
the joint classifier, whose learning rate is set through ``lr_scale``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, default_collate

from frugalvision.engine import CompositeOptimizer, LoopConfig, Task
from frugalvision.methods.scimix.generator import Discriminator, GeneratorConfig, SciMixGenerator
from frugalvision.methods.scimix.losses import LossWeights, discriminator_loss, generator_loss, targets_and_mask
from frugalvision.ssl import EmaTeacher, as_batch, weak_augment

__all__ = ["GeneratorModel", "GeneratorTask"]


class GeneratorModel(nn.Module):
    """The trained parts in one module whose forward computes the loss (so DDP synchronises every part's gradients).

    Args:
        config: generator architecture.
        weights: loss weights (a discriminator exists when ``weights.adv > 0``).
        classifier: the joint classifier, or None.
        image_size: image side (for the discriminator's last layer).
    """

    def __init__(
        self, config: GeneratorConfig, weights: LossWeights, classifier: nn.Module | None = None, image_size: int = 16
    ) -> None:
        super().__init__()
        self.generator = SciMixGenerator(config)
        self.weights = weights
        self.discriminator = Discriminator(config.channels, config.width * 2, image_size) if weights.adv > 0 else None
        self.classifier = classifier

    def forward(
        self,
        teacher: nn.Module,
        images: torch.Tensor,
        targets: torch.Tensor,
        mask: torch.Tensor,
        perm: torch.Tensor,
        labeled: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """L_G (+ L_D) (+ the joint classifier's CE on ``labeled``)."""
        loss, logs, mixes = generator_loss(
            self.generator, teacher, images, targets, mask, perm, self.weights, self.discriminator
        )
        if self.discriminator is not None:
            d_loss, d_logs = discriminator_loss(self.discriminator, images, mixes, self.weights.r1)
            loss, logs = loss + d_loss, {**logs, **d_logs}
        if self.classifier is not None and labeled is not None:
            c_loss = F.cross_entropy(self.classifier(labeled[0]).float(), labeled[1])
            loss, logs = loss + c_loss, {**logs, "c_loss": float(c_loss.detach())}
        return loss, logs


class GeneratorTask(Task):
    """Train ``G`` (and ``D`` when ``weights.adv > 0``) on labeled and unlabeled images.

    Args:
        config: generator architecture.
        images: unlabeled dataset of dicts with ``"image"`` and ``"label"`` (-1) only.
        weights: loss weights.
        threshold: teacher confidence for pseudo-labels (tau_g).
        schedule: "staged" or "joint".
        teacher: the frozen teacher (staged).
        classifier_fn: builds the joint classifier (joint).
        labeled: labeled dataset (``"image"``, ``"label"``); part of every generator batch, and the joint
            classifier's training set.
        labeled_batch: labeled images per step.
        classifier_lr: its SGD learning rate (momentum 0.9, Nesterov).
        teacher_ema: EMA decay of the joint teacher.
    """

    def __init__(
        self,
        config: GeneratorConfig,
        images: Dataset,
        weights: LossWeights,
        threshold: float,
        schedule: Literal["staged", "joint"] = "staged",
        teacher: nn.Module | None = None,
        classifier_fn: Callable[[], nn.Module] | None = None,
        labeled: Dataset | None = None,
        labeled_batch: int = 32,
        classifier_lr: float = 0.03,
        teacher_ema: float = 0.99,
    ) -> None:
        if schedule == "staged" and teacher is None:
            raise ValueError("the staged schedule needs a frozen teacher classifier")
        if schedule == "joint" and (classifier_fn is None or labeled is None):
            raise ValueError("the joint schedule needs classifier_fn and a labeled set")
        if labeled is not None and len(labeled) == 0:
            raise ValueError("the labeled set is empty; pass None or at least one labeled image")
        self.config = config
        self.images = images
        self.weights = weights
        self.threshold = threshold
        self.schedule = schedule
        self.frozen = teacher
        if teacher is not None:
            teacher.eval()
            for parameter in teacher.parameters():
                parameter.requires_grad_(False)
        self.classifier_fn = classifier_fn
        self.labeled = labeled
        self.labeled_batch = labeled_batch
        self.classifier_lr = classifier_lr
        self.teacher_ema = teacher_ema
        self.ema: EmaTeacher | None = None

    def build_model(self) -> nn.Module:
        """A :class:`GeneratorModel` (generator, optional discriminator, optional joint classifier)."""
        classifier = self.classifier_fn() if self.schedule == "joint" and self.classifier_fn is not None else None
        side = int(self.images[0]["image"].shape[-1])
        model = GeneratorModel(self.config, self.weights, classifier, side)
        if classifier is not None:
            self.ema = EmaTeacher(classifier, self.teacher_ema, warmup=True, buffers="ema")
        return model

    def build_optimizer(self, model: nn.Module, loop: LoopConfig) -> torch.optim.Optimizer:
        """Adam for G and D at ``loop.lr``; SGD for the joint classifier at ``classifier_lr`` (via ``lr_scale``)."""
        assert isinstance(model, GeneratorModel)
        optimizers: dict[str, torch.optim.Optimizer] = {
            "generator": torch.optim.Adam(model.generator.parameters(), lr=loop.lr, betas=(0.5, 0.99))
        }
        if model.discriminator is not None:
            optimizers["discriminator"] = torch.optim.Adam(
                model.discriminator.parameters(), lr=loop.lr, betas=(0.5, 0.99)
            )
        if model.classifier is not None:
            sgd = torch.optim.SGD(model.classifier.parameters(), lr=self.classifier_lr, momentum=0.9, nesterov=True)
            for group in sgd.param_groups:
                group["lr_scale"] = self.classifier_lr / loop.lr
            optimizers["classifier"] = sgd
        return CompositeOptimizer(optimizers)

    def train_dataset(self) -> Dataset:
        """The unlabeled images (images and labels only)."""
        return self.images

    def _teacher(self, device: torch.device) -> nn.Module:
        teacher = self.frozen if self.schedule == "staged" else self.ema.module  # type: ignore[union-attr]
        assert teacher is not None
        return teacher.to(device).eval()

    def _labeled_batch(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.labeled is None:
            return None
        index = torch.randperm(len(self.labeled))[: self.labeled_batch].tolist()
        batch = as_batch(default_collate([self.labeled[i] for i in index]))
        return batch["image"].to(device), batch["label"].to(device)

    def training_step(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Targets and mask from the labels and the teacher, then the model's loss."""
        data = as_batch(batch)
        images, labels = data["image"], data["label"]
        labeled = self._labeled_batch(images.device)
        if labeled is not None:
            images, labels = torch.cat([labeled[0], images]), torch.cat([labeled[1], labels])
        teacher = self._teacher(images.device)
        targets, mask = targets_and_mask(teacher, images, labels, self.threshold)
        perm = torch.randperm(len(images), device=images.device)
        joint = (weak_augment(labeled[0]), labeled[1]) if self.schedule == "joint" and labeled is not None else None
        loss, logs = model(teacher, images, targets, mask, perm, joint)
        return loss, {**logs, "mask": float(mask.mean())}

    def on_step_end(self, model: nn.Module, step: int) -> None:
        """The joint teacher's EMA update."""
        if self.ema is not None:
            self.ema.to(next(model.parameters()).device)
            self.ema.update(model.classifier, step)

    def state_dict(self) -> dict[str, Any]:
        """The joint teacher's weights."""
        return {"teacher": self.ema.state_dict()} if self.ema is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the joint teacher."""
        if self.ema is not None and "teacher" in state:
            self.ema.load_state_dict(state["teacher"])
