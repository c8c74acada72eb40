"""Supervised few-label training, Mean Teacher and FixMatch, each with a mixing plug-in, as plain loss objects.

A framework turns one labeled and one unlabeled batch (dicts with ``"image"`` float ``[N, C, H, W]`` in ``[0, 1]``
and ``"label"``) into a loss, using any classifier ``model(images) -> logits``. Use it in your own loop::

    framework.setup(model)                         # e.g. Mean Teacher's teacher
    loss, logs = framework.loss(model, labeled, unlabeled, step, plugin)
    loss.backward(); optimizer.step(); optimizer.zero_grad()
    framework.after_step(model, step + 1)          # e.g. the teacher's EMA update

or through the engine with :class:`frugalvision.ssl.SemiSupervisedTask`. Every plug-in adds one term
``weight * L_mix`` to the framework's own loss, and every forward pass of a step is one concatenated batch (shared
BatchNorm statistics, as in the official FixMatch code).

Faithful to the authors' code (google-research/fixmatch, CuriousAI/mean-teacher, vikasverma1077/ICT); where they are
silent the docstrings say "ours".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from frugalvision.ssl.augment import strong_augment, weak_augment
from frugalvision.ssl.ema import BufferPolicy, EmaTeacher
from frugalvision.ssl.losses import (
    fixmatch_unlabeled_loss,
    kernel_decay_groups,
    mean_teacher_class_loss,
    soft_cross_entropy,
    softmax_mse,
    symmetric_mse,
)
from frugalvision.ssl.mixing import Batch, CutMix, MixPlugin, MixUp, SemanticMix
from frugalvision.ssl.ramps import fixmatch_lr_factor, sigmoid_rampup

__all__ = ["FixMatch", "Framework", "MeanTeacher", "Supervised", "take"]

Augment = Callable[[torch.Tensor], torch.Tensor]


def take(batch: Batch, index: torch.Tensor) -> dict[str, torch.Tensor]:
    """Rows ``index`` of every field of a dict batch."""
    return {key: value[index] for key, value in batch.items()}


def _split(logits: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    return list(torch.split(logits, sizes))


def _context_parents(unlabeled: Batch, count: int) -> dict[str, torch.Tensor]:
    """``count`` context parents from the unlabeled batch: a random permutation (drawn with replacement if short)."""
    available = len(unlabeled["image"])
    device = unlabeled["image"].device
    if available >= count:
        index = torch.randperm(available)[:count]
    else:
        index = torch.randint(available, (count,))
    return take(unlabeled, index.to(device))


def _between(plugin: MixPlugin) -> bool:
    return isinstance(plugin, (MixUp, CutMix))


@dataclass
class Framework:
    """What every framework shares: the optimiser and the hooks a training loop calls.

    Attributes:
        mu: unlabeled images per labeled image in a step (FixMatch's ``uratio``).
        momentum: SGD momentum (Nesterov).
        eval_ema: decay of the weight EMA used for evaluation (0: evaluate the raw model); Mean Teacher evaluates its
            teacher instead.
        lr_schedule: "engine" (the loop's schedule) or "cosine_7_16" (FixMatch's ``lr cos(7 pi t / (16 T))``, applied
            by the task over a constant loop schedule).
    """

    mu: int = 1
    momentum: float = 0.9
    eval_ema: float = 0.999
    lr_schedule: str = "engine"

    name = "framework"

    def setup(self, model: nn.Module) -> None:
        """Build per-run state from the initial model (called once the model is initialised)."""

    def loss(
        self, model: nn.Module, labeled: Batch, unlabeled: Batch, step: int, plugin: MixPlugin = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """One step's loss and the scalars to log."""
        raise NotImplementedError

    def after_step(self, model: nn.Module, step: int) -> None:
        """Hook after optimiser step ``step`` (counted from 1)."""

    def build_optimizer(self, model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        """SGD with Nesterov momentum; L2 decay on conv/linear kernels only (FixMatch's ``loss_wd``)."""
        return torch.optim.SGD(
            kernel_decay_groups(model, weight_decay), lr=lr, momentum=self.momentum, nesterov=self.momentum > 0
        )

    def eval_model(self, model: nn.Module) -> nn.Module:
        """The module to evaluate (the teacher for Mean Teacher; the model itself otherwise)."""
        return model

    def lr_factor(self, step: int, total: int) -> float:
        """Multiplier of the base learning rate at optimiser step ``step`` of ``total`` (``lr_schedule``)."""
        if self.lr_schedule == "cosine_7_16":
            return fixmatch_lr_factor(step, total)
        if self.lr_schedule == "engine":
            return 1.0
        raise ValueError(f"lr_schedule={self.lr_schedule!r} is invalid; use engine or cosine_7_16")

    def state_dict(self) -> dict[str, Any]:
        """Per-run state to checkpoint (tensors and plain types)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


@dataclass
class Supervised(Framework):
    """Cross-entropy on the weak view of the labeled batch (the few-label baseline; ours, with FixMatch's optimiser).

    Plug-ins: MixUp / CutMix mix the labeled batch with a permutation of itself (mixed one-hot targets); a semantic
    mix renders each labeled image into a context parent from the unlabeled batch and keeps its label.

    Attributes:
        weak: weak augmentation.
    """

    weak: Augment = weak_augment

    name = "supervised"

    def loss(
        self, model: nn.Module, labeled: Batch, unlabeled: Batch, step: int, plugin: MixPlugin = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """CE(weak(x), y) + weight * L_mix."""
        images, labels = self.weak(labeled["image"]), labeled["label"]
        parts, extra = [images], None
        if _between(plugin):
            perm = torch.randperm(len(images), device=images.device)
            mixed, lam = plugin(images, perm)
            parts.append(mixed)
        elif isinstance(plugin, SemanticMix):
            parts.append(self.weak(plugin(labeled, _context_parents(unlabeled, len(images)))))
        logits = _split(model(torch.cat(parts)), [len(p) for p in parts])
        loss = F.cross_entropy(logits[0].float(), labels)
        logs = {"loss_x": float(loss.detach())}
        if _between(plugin):
            num_classes = logits[0].shape[1]
            onehot = F.one_hot(labels, num_classes).float()
            extra = soft_cross_entropy(logits[1], lam * onehot + (1.0 - lam) * onehot[perm])
        elif isinstance(plugin, SemanticMix):
            extra = F.cross_entropy(logits[1].float(), labels)
        if extra is not None:
            loss = loss + plugin.weight * extra
            logs["loss_mix"] = float(extra.detach())
        return loss, logs


@dataclass
class MeanTeacher(Framework):
    """Mean Teacher (Tarvainen & Valpola 2017) as in CuriousAI/mean-teacher (PyTorch, CIFAR-10).

    Student and teacher see two weak views of the same minibatch (labeled + unlabeled). Loss =
    ``sum CE(labeled) / minibatch size`` + ``w(t) * softmax_mse(student, teacher)`` over the whole minibatch, with
    ``w(t) = w_max * exp(-5 (1 - t/T)^2)``, ``t`` the integer epoch. The teacher is the EMA of the student's
    parameters with decay ``min(1 - 1/(t + 1), alpha)``, runs in train mode (its BatchNorm statistics are its own)
    and is the evaluated model. Optional: two student heads tied by a logit-distance cost (model returns a pair).

    Plug-ins (an extra term weighted by ``w(t) * weight``; ours): MixUp / CutMix are ICT's mixup consistency
    (the student on the mix of two unlabeled weak views, target ``softmax(lam z_i + (1 - lam) z_j)`` of the teacher's
    logits, one ``lam`` per batch, a random permutation partner; ICT@7be7264); a semantic mix renders each unlabeled
    image into another unlabeled image's context, target the teacher's logits of the semantic parent.

    Attributes:
        alpha: EMA decay (0.97 for 1,000 CIFAR-10 labels, 0.99 for 4,000).
        consistency: w_max (100 with this softmax-MSE normalisation).
        rampup: ramp-up length in epochs.
        steps_per_epoch: optimiser steps per epoch (the ramp uses the integer epoch ``step // steps_per_epoch``).
        logit_distance_cost: weight of the two-head logit distance (0: one head; the official CIFAR runs use 0.01
            with a two-headed model).
        teacher_buffers: "own" (official), "copy" or "ema" BatchNorm statistics for the teacher.
        teacher_train_mode: run the teacher in train mode (official) or eval mode.
        weight_decay_all: decay every parameter (official ``torch.optim.SGD(model.parameters(), weight_decay=...)``)
            instead of kernels only.
        weak: the weak augmentation (applied twice, independently).
    """

    mu: int = 3
    eval_ema: float = 0.0
    alpha: float = 0.97
    consistency: float = 100.0
    rampup: float = 5.0
    steps_per_epoch: int = 1
    logit_distance_cost: float = 0.0
    teacher_buffers: BufferPolicy = "own"
    teacher_train_mode: bool = True
    weight_decay_all: bool = True
    weak: Augment = weak_augment
    teacher: EmaTeacher | None = field(default=None, repr=False)

    name = "mean_teacher"

    def setup(self, model: nn.Module) -> None:
        """The teacher starts as a copy of the initial student."""
        self.teacher = EmaTeacher(model, self.alpha, warmup=True, buffers=self.teacher_buffers)

    def consistency_weight(self, step: int) -> float:
        """``w_max * sigmoid_rampup(epoch, rampup)`` with the integer epoch ``step // steps_per_epoch``."""
        return self.consistency * sigmoid_rampup(float(step // max(self.steps_per_epoch, 1)), self.rampup)

    def _teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        assert self.teacher is not None, "call setup(model) first"
        self.teacher.to(images.device)
        self.teacher.module.train(self.teacher_train_mode)
        with torch.no_grad():
            out = self.teacher.module(images)
        return (out[0] if isinstance(out, tuple) else out).float()

    def loss(
        self, model: nn.Module, labeled: Batch, unlabeled: Batch, step: int, plugin: MixPlugin = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Class cost + w(t) consistency (+ logit distance) + w(t) * weight * L_mix."""
        n_labeled = len(labeled["image"])
        images = torch.cat([labeled["image"], unlabeled["image"]])
        labels = torch.cat([labeled["label"], torch.full_like(unlabeled["label"], -1)])
        student_view, teacher_view = self.weak(images), self.weak(images)
        parts = [student_view]
        if _between(plugin):
            perm = torch.randperm(len(images) - n_labeled, device=images.device)
            mixed, lam = plugin(student_view[n_labeled:], perm)
            parts.append(mixed)
        elif isinstance(plugin, SemanticMix):
            parts.append(self.weak(plugin(unlabeled, _context_parents(unlabeled, len(unlabeled["image"])))))
        out = model(torch.cat(parts))
        class_out, cons_out = out if isinstance(out, tuple) else (out, out)
        class_logits = _split(class_out, [len(p) for p in parts])
        cons_logits = _split(cons_out, [len(p) for p in parts])
        teacher_logits = self._teacher_logits(teacher_view)
        weight = self.consistency_weight(step)
        class_loss = mean_teacher_class_loss(class_logits[0], labels, len(images))
        consistency = softmax_mse(cons_logits[0], teacher_logits)
        loss = class_loss + weight * consistency
        logs = {"loss_class": float(class_loss.detach()), "loss_cons": float(consistency.detach())}
        logs["cons_weight"] = weight
        if isinstance(out, tuple) and self.logit_distance_cost > 0:
            distance = symmetric_mse(class_logits[0], cons_logits[0])
            loss = loss + self.logit_distance_cost * distance
            logs["loss_res"] = float(distance.detach())
        if plugin is not None:
            targets = teacher_logits[n_labeled:]
            if _between(plugin):
                targets = lam * targets + (1.0 - lam) * targets[perm]
            extra = softmax_mse(cons_logits[1], targets)
            loss = loss + weight * plugin.weight * extra
            logs["loss_mix"] = float(extra.detach())
        return loss, logs

    def after_step(self, model: nn.Module, step: int) -> None:
        """The teacher's EMA update with decay ``min(1 - 1/(step + 1), alpha)``."""
        assert self.teacher is not None, "call setup(model) first"
        self.teacher.to(next(model.parameters()).device)
        self.teacher.update(model, step)

    def build_optimizer(self, model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        """SGD with Nesterov momentum; decay on every parameter (official) or on kernels only."""
        if not self.weight_decay_all:
            return super().build_optimizer(model, lr, weight_decay)
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.SGD(params, lr=lr, momentum=self.momentum, weight_decay=weight_decay, nesterov=True)

    def eval_model(self, model: nn.Module) -> nn.Module:
        """The teacher."""
        assert self.teacher is not None, "call setup(model) first"
        return self.teacher.module

    def state_dict(self) -> dict[str, Any]:
        """The teacher's weights."""
        return {"teacher": self.teacher.state_dict()} if self.teacher is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the teacher."""
        if "teacher" in state and self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])


@dataclass
class FixMatch(Framework):
    """FixMatch (Sohn et al. 2020) as in google-research/fixmatch (``fixmatch.py``, RandAugment variant).

    One forward over ``[weak(x), weak(u), strong(u)]``; loss = ``CE(x)`` + ``lambda_u * mean(1[max p >= tau]
    CE(strong(u), argmax p))`` with ``p = stopgrad softmax`` of the weak view from the **current** model. L2 on
    kernels (SGD decay), EMA 0.999 of the weights for evaluation, lr ``0.03 cos(7 pi t / 16 T)``.

    Plug-ins (an extra term ``weight * L_mix``; ours): MixUp / CutMix mix the strong views of ``u_i`` and a permuted
    ``u_j``, target ``lam onehot(y_i) + (1 - lam) onehot(y_j)``, kept only when both pseudo-labels are confident; a
    semantic mix renders each unlabeled image into another one's context, strong view, CE with its pseudo-label and
    its mask.

    Attributes:
        threshold: confidence threshold tau.
        lambda_u: weight of the unlabeled term.
        weak: weak augmentation.
        strong: strong augmentation.
    """

    mu: int = 7
    lr_schedule: str = "cosine_7_16"
    threshold: float = 0.95
    lambda_u: float = 1.0
    weak: Augment = weak_augment
    strong: Augment = strong_augment

    name = "fixmatch"

    def loss(
        self, model: nn.Module, labeled: Batch, unlabeled: Batch, step: int, plugin: MixPlugin = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """CE(x) + lambda_u * masked pseudo-label CE + weight * L_mix."""
        u = unlabeled["image"]
        parts = [self.weak(labeled["image"]), self.weak(u), self.strong(u)]
        if _between(plugin):
            perm = torch.randperm(len(u), device=u.device)
            mixed, lam = plugin(parts[2], perm)
            parts.append(mixed)
        elif isinstance(plugin, SemanticMix):
            parts.append(self.strong(plugin(unlabeled, _context_parents(unlabeled, len(u)))))
        logits = _split(model(torch.cat(parts)), [len(p) for p in parts])
        loss_x = F.cross_entropy(logits[0].float(), labeled["label"])
        loss_u, pseudo = fixmatch_unlabeled_loss(logits[2], logits[1], self.threshold)
        loss = loss_x + self.lambda_u * loss_u
        logs = {"loss_x": float(loss_x.detach()), "loss_u": float(loss_u.detach()), "mask": float(pseudo.mask.mean())}
        known = unlabeled.get("label")
        if known is not None and bool((known >= 0).all()):
            hits = ((pseudo.labels == known).float() * pseudo.mask).sum()
            logs["pseudo_acc"] = float(hits / pseudo.mask.sum().clamp_min(1.0))
        if _between(plugin):
            onehot = F.one_hot(pseudo.labels, logits[0].shape[1]).float()
            extra = soft_cross_entropy(
                logits[3], lam * onehot + (1.0 - lam) * onehot[perm], weights=pseudo.mask * pseudo.mask[perm]
            )
        elif isinstance(plugin, SemanticMix):
            per_sample = F.cross_entropy(logits[3].float(), pseudo.labels, reduction="none")
            extra = (per_sample * pseudo.mask).mean()
        if plugin is not None:
            loss = loss + plugin.weight * extra
            logs["loss_mix"] = float(extra.detach())
        return loss, logs
