"""The engine adapter: one DiWA training run (pre-training, linear probing or one fine-tuning member) as a Task.

The task keeps the checkpoint with the best training-domain validation score (checked every ``select_every`` steps)
and, optionally, the running moving average of the weights (MA baseline). Both travel in the engine's checkpoints
(:meth:`DiwaTask.state_dict`), so that a killed run resumes exactly.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from frugalvision.engine import LoopConfig, Task
from frugalvision.engine.sampler import EpochOrder
from frugalvision.errors import ConfigError
from frugalvision.methods.diwa.averaging import MovingAverage, buffer_keys
from frugalvision.methods.diwa.model import DiwaNet
from frugalvision.methods.diwa.splits import domain_batch_order, training_domain_val

__all__ = ["DiwaTask", "predict"]


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (logits, targets) of ``model`` on ``dataset`` in eval mode (the model's train flag is restored)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits, targets = [], []
    for inputs, labels in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        logits.append(model(inputs.to(device)).float().cpu())
        targets.append(torch.as_tensor(labels))
    model.train(was_training)
    return torch.cat(logits), torch.cat(targets)


class DiwaTask(Task):
    """ERM over several training domains (one batch of ``per_domain`` from each, concatenated), DomainBed style.

    Args:
        build_net: returns a fresh network (a :class:`DiwaNet`, or any module when ``dropout`` is 0 and the
            featurizer trains).
        train_sets: in-split of each training domain.
        val_sets: out-split of each training domain (deterministic eval transform; used for model selection).
        eval_sets: named sets the engine evaluates at the end (e.g. the test domain).
        per_domain: batch size per training domain.
        max_steps: the run's step count (the final step is always a selection point).
        init_state: shared initialisation theta_0 (None: the network's random init).
        lr: Adam learning rate.
        weight_decay: coupled L2 weight decay.
        dropout: feature-dropout rate.
        train_featurizer: False freezes the featurizer (linear probing: only the head trains).
        select_every: check the training-domain val every N steps and keep the best weights (0: keep the final).
        ma_start: the official ``ma_start_iter`` of the moving average (None: no MA). The official ``MA`` aliases
            the live weights before it, so it returns (2 w_s + w_{s+1} + ... + w_T) / (T - s + 2); with the alias
            fixed it is the plain mean of w_{s-1} .. w_T, which is what this task tracks (w_k: weights after k
            steps).
        eval_batch_size: batch size of the validation passes.
    """

    def __init__(
        self,
        build_net: Callable[[], DiwaNet],
        train_sets: Sequence[Dataset],
        val_sets: Sequence[Dataset] = (),
        eval_sets: dict[str, Dataset] | None = None,
        *,
        per_domain: int,
        max_steps: int,
        init_state: dict[str, torch.Tensor] | None = None,
        lr: float = 5e-5,
        weight_decay: float = 0.0,
        dropout: float = 0.0,
        train_featurizer: bool = True,
        select_every: int = 0,
        ma_start: int | None = None,
        eval_batch_size: int = 512,
    ) -> None:
        self.build_net = build_net
        self.train_sets = list(train_sets)
        self.val_sets = list(val_sets)
        self.eval_sets = dict(eval_sets or {})
        self.per_domain = per_domain
        self.max_steps = max_steps
        self.init_state = init_state
        self.lr, self.weight_decay, self.dropout = lr, weight_decay, dropout
        self.train_featurizer = train_featurizer
        self.select_every = select_every
        self.ma_start = ma_start
        self.eval_batch_size = eval_batch_size
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_score = float("-inf")
        self.best_step = -1
        self.moving_average: MovingAverage | None = None
        self.val_history: list[tuple[int, float]] = []

    @property
    def batch_size(self) -> int:
        """Global batch size the loop must use: ``per_domain`` x number of training domains."""
        return self.per_domain * len(self.train_sets)

    def loop(self, seed: int, **changes: Any) -> LoopConfig:
        """A LoopConfig for this run: constant learning rate (no warm-up), the task's steps and batch size."""
        fields: dict[str, Any] = {
            "max_steps": self.max_steps,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": 0.0,
            "schedule": "constant",
            "seed": seed,
            "log_every": max(1, self.max_steps // 10),
        }
        fields.update(changes)
        return LoopConfig(**fields)

    # ------------------------------------------------------------------ Task hooks
    def build_model(self) -> nn.Module:
        """The network at theta_0, with this run's dropout; featurizer frozen for linear probing."""
        model = self.build_net()
        if self.init_state is not None:
            model.load_state_dict(self.init_state)
        if hasattr(model, "set_dropout"):
            model.set_dropout(self.dropout)
        elif self.dropout:
            raise ConfigError(f"dropout={self.dropout} needs a DiwaNet (set_dropout); use 0 for another model")
        if not self.train_featurizer:
            if not hasattr(model, "featurizer"):
                raise ConfigError("linear probing needs a model with a .featurizer; wrap it in DiwaNet")
            for parameter in model.featurizer.parameters():
                parameter.requires_grad_(False)
        self.moving_average = None
        if self.ma_start is not None:  # the official MA with its alias fixed: mean of w_{start-1} .. w_T
            self.moving_average = MovingAverage(max(self.ma_start - 1, 0), buffers=buffer_keys(model))
            self.moving_average.update(model.state_dict(), 0)  # w_0 counts only when ma_start <= 1
        self.best_state, self.best_score, self.best_step, self.val_history = None, float("-inf"), -1, []
        return model

    def build_optimizer(self, model: nn.Module, loop: LoopConfig) -> torch.optim.Optimizer:
        """Adam with coupled L2 weight decay on every trainable parameter (DomainBed ERM)."""
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.Adam(params, lr=loop.lr, weight_decay=self.weight_decay)

    def train_dataset(self) -> Dataset:
        """Concatenation of the training domains' in-splits."""
        return ConcatDataset(self.train_sets)

    def batch_order(self) -> EpochOrder | None:
        """One batch of ``per_domain`` from each training domain per step."""
        return domain_batch_order([len(s) for s in self.train_sets], self.per_domain)

    def training_step(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean cross-entropy over the concatenated minibatch."""
        inputs, targets = batch
        loss = nn.functional.cross_entropy(model(inputs), targets)
        return loss, {}

    def on_step_end(self, model: nn.Module, step: int) -> None:
        """Update the moving average and track the best checkpoint by training-domain validation."""
        if self.moving_average is not None:
            self.moving_average.update(model.state_dict(), step)
        if self.select_every and self.val_sets and (step % self.select_every == 0 or step == self.max_steps):
            score = self.validate(model)[0]
            self.val_history.append((step, score))
            if score > self.best_score:
                self.best_score, self.best_step = score, step
                self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        elif not self.select_every and step == self.max_steps:
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            self.best_step = step

    def eval_datasets(self) -> dict[str, Dataset]:
        """The named evaluation sets."""
        return self.eval_sets

    # ------------------------------------------------------------------ helpers
    def validate(self, model: nn.Module) -> tuple[float, float]:
        """(mean per-domain val accuracy, merged val accuracy) of ``model`` on the training domains' hold-outs."""
        correct = []
        for dataset in self.val_sets:
            logits, targets = predict(model, dataset, self.eval_batch_size)
            correct.append(logits.argmax(-1) == targets)
        return training_domain_val(correct)

    def state_dict(self) -> dict[str, Any]:
        """The side state the engine saves in each checkpoint: best weights and score, MA sums, val history."""
        state: dict[str, Any] = {
            "best_score": self.best_score,
            "best_step": self.best_step,
            "val_history": [list(entry) for entry in self.val_history],
        }
        if self.best_state is not None:
            state["best"] = {k: v.detach().cpu().clone() for k, v in self.best_state.items()}
        if self.moving_average is not None:
            state["ma"] = self.moving_average.to_tensors()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the engine calls this when resuming)."""
        self.best_score = float(state.get("best_score", float("-inf")))
        self.best_step = int(state.get("best_step", -1))
        self.val_history = [(int(s), float(v)) for s, v in state.get("val_history", [])]
        self.best_state = dict(state["best"]) if "best" in state else None
        if self.moving_average is not None and "ma" in state:
            self.moving_average.load_tensors(state["ma"])

    def best_model(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` holding the best-by-validation weights (the final ones when nothing was selected)."""
        out = copy.deepcopy(model)
        if self.best_state is not None:
            out.load_state_dict(self.best_state)
        return out
