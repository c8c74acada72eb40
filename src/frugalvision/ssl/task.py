"""The engine adapter: any framework of :mod:`frugalvision.ssl.frameworks` with any plug-in, on any model and data.

The engine iterates the **unlabeled** set (``loop.batch_size`` unlabeled images per device and step, in its
resumable, DDP-sharded order); each step draws ``batch_size / mu`` labeled images without replacement from the
labeled set with the global RNG, which the engine reseeds from (seed, rank, step): runs resume exactly and every arm
of a seed sees the same labeled batches. Evaluation uses the framework's evaluated model (Mean Teacher's teacher, or
the engine's weight EMA when ``loop.ema_decay > 0``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

from frugalvision.engine import LoopConfig, Task
from frugalvision.errors import ConfigError
from frugalvision.ssl.frameworks import Framework
from frugalvision.ssl.mixing import MixPlugin

__all__ = ["SemiSupervisedTask", "as_batch"]


def as_batch(item: Any) -> dict[str, torch.Tensor]:
    """A collated dataset batch as a dict with ``"image"`` and ``"label"`` (tuples ``(image, label)`` are accepted)."""
    if isinstance(item, Mapping):
        return dict(item)
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return {"image": item[0], "label": torch.as_tensor(item[1])}
    raise ConfigError("datasets must yield (image, label) pairs or dicts with 'image' and 'label'; fix the dataset")


class SemiSupervisedTask(Task):
    """Train ``model_fn()`` with a semi-supervised framework and a mixing plug-in through the engine.

    Args:
        model_fn: builds the classifier (``images -> logits``, or a pair of logits for Mean Teacher's two heads).
        labeled: labeled dataset (``(image, label)`` or dicts; images float ``[C, H, W]`` in ``[0, 1]``).
        unlabeled: unlabeled dataset (its labels, if any, are only used for logging pseudo-label accuracy).
        framework: :class:`Supervised`, :class:`MeanTeacher` or :class:`FixMatch` (a fresh instance per run).
        plugin: mixing plug-in (None, MixUp, CutMix, SemanticMix).
        eval_sets: named evaluation datasets.
        init_state: weights to start from (e.g. a supervised warm-up), loaded before the framework's setup.
        preprocess: optional function applied to every batch's images on the device before the framework sees
            them (e.g. normalisation is better placed inside the model; this hook exists for format conversion).
    """

    def __init__(
        self,
        model_fn: Callable[[], nn.Module],
        labeled: Dataset,
        unlabeled: Dataset,
        framework: Framework,
        plugin: MixPlugin = None,
        eval_sets: dict[str, Dataset] | None = None,
        init_state: Mapping[str, torch.Tensor] | None = None,
        preprocess: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
    ) -> None:
        if len(labeled) == 0 or len(unlabeled) == 0:
            raise ConfigError("the labeled and unlabeled sets must both be non-empty; check the split")
        self.model_fn = model_fn
        self.labeled = labeled
        self.unlabeled = unlabeled
        self.framework = framework
        self.plugin = plugin
        self.eval_sets = dict(eval_sets or {})
        self.init_state = dict(init_state) if init_state is not None else None
        self.preprocess = preprocess
        self._optimizer: torch.optim.Optimizer | None = None
        self._base_lr = 0.0
        self._total_steps = 1

    def loop(self, labeled_batch: int, **changes: Any) -> LoopConfig:
        """A LoopConfig with ``batch_size = mu * labeled_batch`` unlabeled images and the framework's eval EMA."""
        fields: dict[str, Any] = {"batch_size": self.framework.mu * labeled_batch, "ema_decay": self.framework.eval_ema}
        if self.framework.lr_schedule != "engine":
            fields["schedule"] = "constant"
        fields.update(changes)
        return replace(LoopConfig(), **fields)

    # ------------------------------------------------------------------ Task hooks
    def build_model(self) -> nn.Module:
        """The classifier (from ``init_state`` when given), and the framework's per-run state."""
        model = self.model_fn()
        if self.init_state is not None:
            model.load_state_dict(self.init_state)
        self.framework.setup(model)
        return model

    def build_optimizer(self, model: nn.Module, loop: LoopConfig) -> torch.optim.Optimizer:
        """The framework's optimiser (SGD + Nesterov) at the loop's learning rate and weight decay.

        Raises:
            ConfigError: the framework schedules its own learning rate but the loop's schedule is not constant.
        """
        if self.framework.lr_schedule != "engine" and (loop.schedule != "constant" or loop.warmup_steps):
            raise ConfigError(
                f"{self.framework.name} sets its own learning-rate schedule ({self.framework.lr_schedule}); use "
                "loop.schedule='constant' without warm-up (SemiSupervisedTask.loop() does)"
            )
        self._optimizer = self.framework.build_optimizer(model, loop.lr, loop.weight_decay)
        self._base_lr, self._total_steps = loop.lr, loop.max_steps
        return self._optimizer

    def train_dataset(self) -> Dataset:
        """The unlabeled set (the engine's batches are unlabeled batches)."""
        return self.unlabeled

    def _labeled_batch(self, count: int, device: torch.device) -> dict[str, torch.Tensor]:
        count = min(count, len(self.labeled))
        index = torch.randperm(len(self.labeled))[:count].tolist()
        batch = as_batch(default_collate([self.labeled[i] for i in index]))
        return {k: v.to(device) for k, v in batch.items()}

    def training_step(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Draw the labeled batch, then the framework's loss."""
        if self.framework.lr_schedule != "engine" and self._optimizer is not None:
            factor = self.framework.lr_factor(step, self._total_steps)
            for group in self._optimizer.param_groups:  # after the engine's constant lr: a pure function of step
                group["lr"] = self._base_lr * factor * group.get("lr_scale", 1.0)
        unlabeled = as_batch(batch)
        device = unlabeled["image"].device
        labeled = self._labeled_batch(max(1, len(unlabeled["image"]) // self.framework.mu), device)
        if self.preprocess is not None:
            labeled, unlabeled = self.preprocess(labeled), self.preprocess(unlabeled)
        return self.framework.loss(model, labeled, unlabeled, step, self.plugin)

    def on_step_end(self, model: nn.Module, step: int) -> None:
        """The framework's hook (Mean Teacher's teacher update)."""
        self.framework.after_step(model, step)

    def state_dict(self) -> dict[str, Any]:
        """The framework's state (the teacher), saved in checkpoints."""
        return self.framework.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the framework's state on resume."""
        self.framework.load_state_dict(state)

    def eval_datasets(self) -> dict[str, Dataset]:
        """The named evaluation sets."""
        return self.eval_sets

    @torch.no_grad()
    def eval_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """Logits of the evaluated model (Mean Teacher's teacher, else the model the engine passes)."""
        data = as_batch(batch)
        if self.preprocess is not None:
            data = self.preprocess(data)
        evaluated = self.framework.eval_model(model) if self.framework.eval_ema == 0 else model
        was_training = evaluated.training
        evaluated.eval()
        out = evaluated(data["image"])
        evaluated.train(was_training)
        logits = out[0] if isinstance(out, tuple) else out
        return {"logits": logits.float(), "targets": data["label"]}
