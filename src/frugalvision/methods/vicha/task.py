"""ViCHA's engine adapter: pre-training with a momentum model and queues, zero-shot retrieval evaluation.

The EMA runs after each optimiser step; momentum weights and queues are saved in the checkpoint's task state, so a
resumed run continues exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from frugalvision.engine import LoopConfig, Task, default_optimizer
from frugalvision.methods.vicha.data import collate_batch
from frugalvision.methods.vicha.functional import ema_update
from frugalvision.methods.vicha.model import Batch, ViCHAModel, momentum_copy
from frugalvision.methods.vicha.objectives import FeatureQueue, ObjectiveConfig, gather_keys
from frugalvision.metrics import bidirectional_retrieval

__all__ = ["OfficialSchedule", "ViCHATask", "official_lr", "retrieval_scores"]


@dataclass(frozen=True)
class OfficialSchedule:
    """The official pre-training schedule (spec V2): timm cosine stepped once per epoch with a warm-up prefix.

    Attributes:
        steps_per_epoch: optimiser steps per epoch.
        epochs: epochs of the cosine (11 for 1M, 30 for 4M).
        lr: peak [1e-4].
        min_lr: cosine floor [1e-5] (the last epoch runs at about 1.18e-5: the floor is never reached).
        warmup_lr: warm-up start [1e-5].
        warmup_steps: warm-up iterations [2000], in stairs of ``warmup_every`` [100] iterations.
        warmup_every: iterations per warm-up stair.
    """

    steps_per_epoch: int
    epochs: int = 11
    lr: float = 1e-4
    min_lr: float = 1e-5
    warmup_lr: float = 1e-5
    warmup_steps: int = 2000
    warmup_every: int = 100


def official_lr(step: int, s: OfficialSchedule) -> float:
    """Learning rate of optimiser step ``step`` under :class:`OfficialSchedule` (a pure function of the step)."""
    epoch, index = divmod(step, s.steps_per_epoch)
    if epoch == 0:
        stairs = s.warmup_steps // s.warmup_every
        stair = 0 if index == 0 else min(stairs, (index - 1) // s.warmup_every)
        if stair < stairs:
            return s.warmup_lr + (s.lr - s.warmup_lr) * stair / stairs
        return s.lr
    return s.min_lr + 0.5 * (s.lr - s.min_lr) * (1 + math.cos(math.pi * epoch / s.epochs))


def retrieval_scores(image_feat: Tensor, text_feat: Tensor) -> dict[str, float]:
    """Zero-shot retrieval from paired features: TR (image -> text) and IR (text -> image) R@1/5/10, their means."""
    metrics = bidirectional_retrieval(image_feat.float() @ text_feat.float().T, names=("tr", "ir"))
    flat = {f"{d}_r{k}": metrics[d][f"R@{k}"] for d in ("tr", "ir") for k in (1, 5, 10)}
    flat["r1_mean"] = (flat["tr_r1"] + flat["ir_r1"]) / 2
    flat["r_mean"] = sum(v for k, v in flat.items() if k != "r1_mean") / 6
    return flat


class ViCHATask(Task):
    """Pre-train a :class:`ViCHAModel` (the model's parts decide the objectives) and evaluate zero-shot retrieval.

    Args:
        model_fn: builds a fresh online model.
        train_set: training pairs (:class:`~.data.CaptionDataset` in training mode).
        eval_sets: named evaluation pairs (evaluation mode).
        objectives: loss settings.
        queue_size: momentum-feature queue length [65,536].
        momentum: EMA decay of the momentum model [0.995].
        alpha: distillation weight [0.4].
        alpha_ramp_steps: alpha ramps linearly from 0 over these steps (official: the first epoch).
        schedule: the official per-epoch schedule, or None for the engine's per-step schedule.
    """

    def __init__(
        self,
        model_fn: Callable[[], ViCHAModel],
        train_set: Dataset,
        eval_sets: dict[str, Dataset] | None,
        objectives: ObjectiveConfig,
        queue_size: int = 65536,
        momentum: float = 0.995,
        alpha: float = 0.4,
        alpha_ramp_steps: int = 0,
        schedule: OfficialSchedule | None = None,
    ) -> None:
        objectives.validate()
        self.model_fn = model_fn
        self.train_set = train_set
        self.eval_sets = eval_sets or {}
        self.objectives = objectives
        self.queue_size = queue_size
        self.decay = momentum
        self.alpha = alpha
        self.alpha_ramp_steps = alpha_ramp_steps
        self.schedule = schedule
        self.momentum: ViCHAModel | None = None
        self.queue: FeatureQueue | None = None
        self._optimizer: torch.optim.Optimizer | None = None

    def build_model(self) -> nn.Module:
        """Fresh online model, its momentum copy (identical weights, no gradients) and randomly filled queues."""
        model = self.model_fn()
        self.momentum = momentum_copy(model)
        self.queue = FeatureQueue(self.queue_size, model.cfg.embed_dim)
        return model

    def build_optimizer(self, model: nn.Module, loop: LoopConfig) -> torch.optim.Optimizer:
        """AdamW, weight decay on weight matrices only (timm's ``create_optimizer`` as in the official code)."""
        self._optimizer = default_optimizer(model, loop)
        return self._optimizer

    def train_dataset(self) -> Dataset:
        """Training pairs."""
        return self.train_set

    def collate(self):
        """Stack images, pad captions and concept strings."""
        return collate_batch

    def alpha_at(self, step: int) -> float:
        """Distillation weight of a step: the official linear ramp over the first epoch, then constant."""
        if self.alpha_ramp_steps <= 0:
            return self.alpha
        return self.alpha * min(1.0, step / self.alpha_ramp_steps)

    def _place(self, reference: Tensor, dtype: torch.dtype) -> tuple[ViCHAModel, FeatureQueue]:
        assert self.momentum is not None and self.queue is not None, "build_model must run first"
        if self.queue.image.device != reference.device:
            self.queue.to(reference.device)
            self.momentum.to(reference.device)
        if next(self.momentum.parameters()).dtype != dtype:
            self.momentum.to(dtype=dtype)
        return self.momentum, self.queue

    def training_step(self, model: nn.Module, batch: Batch, step: int) -> tuple[Tensor, dict[str, float]]:
        """All objectives on this rank's batch; the gathered momentum features then enter the queues."""
        momentum, queue = self._place(batch.images, next(model.parameters()).dtype)
        if self.schedule is not None and self._optimizer is not None:
            for group in self._optimizer.param_groups:  # the engine's per-step value is replaced before the step
                group["lr"] = official_lr(step, self.schedule) * group.get("lr_scale", 1.0)
        alpha = self.alpha_at(step)
        out = model(batch, momentum, queue, alpha, self.objectives)
        queue.push(gather_keys(out.image_feat_m, True), gather_keys(out.text_feat_m, True))
        return out.loss, {**out.logs, "alpha": alpha}

    def on_step_end(self, model: nn.Module, step: int) -> None:
        """EMA of the momentum model after the optimiser step."""
        assert self.momentum is not None
        ema_update(self.momentum, model, self.decay)

    def state_dict(self) -> dict[str, Any]:
        """Momentum weights and queues (saved with each checkpoint)."""
        assert self.momentum is not None and self.queue is not None
        cpu = lambda state: {k: v.detach().cpu().clone() for k, v in state.items()}  # noqa: E731
        return {"momentum": cpu(self.momentum.state_dict()), "queue": cpu(self.queue.state_dict())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the momentum weights and queues of a checkpoint."""
        if not state:
            return
        assert self.momentum is not None and self.queue is not None
        self.momentum.load_state_dict(state["momentum"])
        self.queue.load_state_dict(state["queue"])

    def eval_datasets(self) -> dict[str, Dataset]:
        """Held-out pairs."""
        return self.eval_sets

    @torch.no_grad()
    def eval_step(self, model: nn.Module, batch: Batch) -> dict[str, Tensor]:
        """Contrastive image and text features of each pair (concepts: every stored one)."""
        image_feat, text_feat = model(batch)
        return {"image_feat": image_feat.float(), "text_feat": text_feat.float()}

    def eval_metrics(self, outputs: dict[str, Tensor]) -> dict[str, float]:
        """Zero-shot retrieval R@K both ways (:func:`retrieval_scores`)."""
        return retrieval_scores(outputs["image_feat"], outputs["text_feat"])
