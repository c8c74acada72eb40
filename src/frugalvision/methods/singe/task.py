"""The engine adapter (a fine-tuning :class:`Task`) and the entwined prune/fine-tune flowchart (spec §2.4, OURS).

Every fine-tuning goes through a *trainer*: an :class:`~frugalvision.engine.Engine` (library use, no run folder) or a
``fit(task, loop, name)`` callable (the experiment passes the harness's ``ctx.fit``: checkpoints and resume per run).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from frugalvision.engine import Engine, LoopConfig, Task, warmup_cosine_lr
from frugalvision.methods.singe import pruning as P
from frugalvision.methods.singe.data import collate_batches
from frugalvision.methods.singe.functional import Batches
from frugalvision.seeding import derive_seed

#: ``fit(task, loop, name) -> FitResult``: how a fine-tuning run is trained (``name`` tells runs of one job apart)
Fit = Callable[[Task, LoopConfig, str], Any]
Trainer = Engine | Fit


def as_fit(trainer: Trainer | None) -> Fit | None:
    """The ``fit`` callable of a trainer: an engine trains without a run folder; a callable is used as is."""
    if trainer is None or not hasattr(trainer, "fit"):
        return trainer  # type: ignore[return-value]
    engine = trainer

    def fit(task: Task, loop: LoopConfig, name: str) -> Any:
        return engine.fit(task, loop, desc=name or "fine-tune")  # type: ignore[union-attr]

    return fit


def stream_order(num_samples: int, batch_size: int, seed: int, offset_steps: int) -> Callable[[int, int], Tensor]:
    """Epoch orders that continue one global data stream from step ``offset_steps``.

    The stream is the concatenation of seeded permutations (each cut to whole batches), so fine-tuning split into
    rounds sees exactly the batches a single run of the same total length would see.
    """
    per_epoch = (num_samples // batch_size) * batch_size

    def permutation(epoch: int) -> Tensor:
        generator = torch.Generator().manual_seed(derive_seed("singe-stream", seed, epoch))
        return torch.randperm(num_samples, generator=generator)[:per_epoch]

    def order(epoch: int, _seed: int) -> Tensor:
        start = offset_steps * batch_size + epoch * per_epoch
        first = start // per_epoch
        parts = [permutation(first), permutation(first + 1)]
        offset = start - first * per_epoch
        return torch.cat(parts)[offset : offset + per_epoch]

    return order


class FinetuneTask(Task):
    """Cross-entropy training of a given model with SGD, as one slice of a longer cosine schedule.

    The engine runs ``steps`` optimiser steps with a constant base LR; the task sets each parameter group's
    ``lr_scale`` so that the LR follows one cosine over ``total_steps`` starting at step ``offset``.

    Args:
        model: the model to train (trained in place).
        train_set: (image, label) dataset.
        lr: peak learning rate.
        total_steps: length of the whole cosine schedule.
        offset: global step of this slice's first step (position in the data stream).
        batch_size: batch size (to continue the data stream).
        seed: seed of the data stream.
        momentum: SGD momentum (Nesterov).
        weight_decay: L2 weight decay.
        lr_offset: step of the cosine at this slice's first step (default: ``offset``).
        regularizer: called after the backward pass and before each optimiser step (e.g. Torch-Pruning's
            ``GroupNormPruner.regularize``, which adds the sparsity gradient to ``.grad``).
    """

    def __init__(
        self,
        model: nn.Module,
        train_set: Dataset,
        lr: float,
        total_steps: int,
        offset: int = 0,
        batch_size: int = 64,
        seed: int = 0,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        lr_offset: int | None = None,
        regularizer: Callable[[], None] | None = None,
    ) -> None:
        self.model = model
        self.train_set = train_set
        self.lr = lr
        self.total_steps = total_steps
        self.offset = offset
        self.batch_size = batch_size
        self.seed = seed
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.lr_offset = offset if lr_offset is None else lr_offset
        self.regularizer = regularizer
        self.lrs: list[float] = []
        self._optimizer: torch.optim.Optimizer | None = None

    def _scale(self, step: int) -> float:
        return warmup_cosine_lr(self.lr_offset + step, max_steps=self.total_steps, lr=self.lr) / self.lr

    def build_model(self) -> nn.Module:
        """Return the model to fine-tune (not a fresh one)."""
        return self.model

    def build_optimizer(self, model: nn.Module, loop: LoopConfig) -> torch.optim.Optimizer:
        """Fresh SGD (momentum buffers must match the current, pruned shapes)."""
        optimizer = torch.optim.SGD(
            model.parameters(), lr=self.lr, momentum=self.momentum, nesterov=True, weight_decay=self.weight_decay
        )
        for group in optimizer.param_groups:
            group["lr_scale"] = self._scale(0)
        if self.regularizer is not None:
            regularizer = self.regularizer
            optimizer.register_step_pre_hook(lambda _optimizer, _args, _kwargs: regularizer())
        self._optimizer = optimizer
        return optimizer

    def train_dataset(self) -> Dataset:
        """The training set."""
        return self.train_set

    def batch_order(self) -> Callable[[int, int], Tensor]:
        """Continue the global data stream at this slice's offset."""
        return stream_order(len(self.train_set), self.batch_size, self.seed, self.offset)

    def collate(self) -> Callable[[Any], Any]:
        """Whole batches from in-memory image sets pass through; other datasets are stacked as usual."""
        return collate_batches

    def training_step(self, model: nn.Module, batch: Any, step: int) -> tuple[Tensor, dict[str, float]]:
        """Cross-entropy on one batch; records the LR actually used."""
        if self._optimizer is not None:
            self.lrs.append(float(self._optimizer.param_groups[0]["lr"]))
        inputs, targets = batch
        return F.cross_entropy(model(inputs), targets), {}

    def on_step_end(self, model: nn.Module, step: int) -> None:
        """Set the next step's LR scale."""
        if self._optimizer is not None:
            for group in self._optimizer.param_groups:
                group["lr_scale"] = self._scale(step)

    def state_dict(self) -> dict[str, Any]:
        """The LRs used so far (kept in checkpoints, so a resumed run reports its whole trajectory)."""
        return {"lrs": torch.tensor(self.lrs, dtype=torch.float64)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the LRs of a checkpoint."""
        if "lrs" in state:
            self.lrs = [float(v) for v in state["lrs"]]


@dataclass
class FinetuneSettings:
    """Fine-tuning budget and optimiser (spec §2.5, OURS).

    Attributes:
        steps: total fine-tuning steps F (split evenly over the rounds).
        batch_size: batch size.
        lr: peak LR of the single cosine over all F steps.
        momentum: SGD momentum (Nesterov).
        weight_decay: L2 weight decay.
        restart: each round runs its own cosine over its F/T steps (a variant; default one cosine over F).
        num_workers: DataLoader worker processes (ImageNet needs several).
    """

    steps: int = 150
    batch_size: int = 64
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    restart: bool = False
    num_workers: int = 0


def finetune(
    trainer: Trainer,
    model: nn.Module,
    train_set: Dataset,
    settings: FinetuneSettings,
    steps: int,
    offset: int,
    seed: int,
    total_steps: int | None = None,
    lr_offset: int | None = None,
    regularizer: Callable[[], None] | None = None,
    name: str = "fine-tune",
) -> list[float]:
    """Train ``model`` in place for ``steps`` steps from data-stream step ``offset``; returns the LRs used.

    The LR is the cosine over ``total_steps`` (default ``settings.steps``) from step ``lr_offset`` (default ``offset``).
    ``regularizer`` runs before every optimiser step (see :class:`FinetuneTask`); ``name`` names the run for the
    trainer (one run folder per name in the experiment).
    """
    if steps <= 0:
        return []
    task = FinetuneTask(
        model,
        train_set,
        settings.lr,
        total_steps or settings.steps,
        offset,
        settings.batch_size,
        seed,
        settings.momentum,
        settings.weight_decay,
        lr_offset,
        regularizer,
    )
    loop = LoopConfig(
        max_steps=steps,
        batch_size=settings.batch_size,
        lr=settings.lr,
        weight_decay=0.0,
        schedule="constant",
        log_every=0,
        seed=seed,
        num_workers=settings.num_workers,
    )
    fit = as_fit(trainer)
    assert fit is not None
    fit(task, loop, name)
    model.eval()
    return task.lrs


@dataclass
class PruneRun:
    """What :func:`prune_and_finetune` returns.

    Attributes:
        model: the pruned, fine-tuned model (eval mode).
        history: Torch-Pruning history of all rounds (replayable on the dense model).
        rounds: per round: target MAC fraction, reached MAC fraction, criterion seconds and passes.
        lrs: learning rate of every fine-tuning step, in order.
        criterion_s: total criterion seconds.
        passes: total criterion passes.
    """

    model: nn.Module
    history: list[list[Any]] = field(default_factory=list)
    rounds: list[dict[str, float]] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    criterion_s: float = 0.0
    passes: int = 0


_KEEP_MEMO: dict[tuple, dict[str, int]] = {}


class RatioCache:
    """Channel ratio reaching each MAC fraction of a dense architecture (bisection once per architecture and target).

    Args:
        dense: the dense model.
        example_inputs: an input batch for tracing.
        multiple: every kept channel count a multiple of it (1: exact local pruning; see ``P.rounded_keep_counts``).
    """

    def __init__(self, dense: nn.Module, example_inputs: Tensor, multiple: int = 1) -> None:
        self.dense = copy.deepcopy(dense).eval()
        self.example_inputs = example_inputs
        self.multiple = multiple
        self.sizes = P.group_sizes(self.dense, example_inputs)
        self.dense_macs, self.dense_params = P.count_macs_params(self.dense, example_inputs)

    def keep(self, target: float) -> dict[str, int]:
        """Channels to keep per group at a MAC fraction ``target``."""
        shape = tuple(self.example_inputs.shape)
        key = (tuple(sorted(self.sizes.items())), shape, self.dense_macs, round(target, 6), self.multiple)
        if key not in _KEEP_MEMO:
            if self.multiple > 1:
                _KEEP_MEMO[key] = P.rounded_keep_counts(self.dense, self.example_inputs, target, self.multiple)
            else:
                ratio = P.ratio_for_macs(self.dense, self.example_inputs, target)
                _KEEP_MEMO[key] = P.keep_counts(self.sizes, ratio)
        return dict(_KEEP_MEMO[key])


def prune_and_finetune(
    trainer: Trainer | None,
    dense: nn.Module,
    example_inputs: Tensor,
    criterion: str,
    calibration: Batches,
    target: float,
    rounds: int,
    train_set: Dataset | None,
    settings: FinetuneSettings,
    criterion_settings: P.CriterionSettings | None = None,
    seed: int = 0,
    ratios: RatioCache | None = None,
    global_ranking: bool = False,
) -> PruneRun:
    """Entwined pruning (rounds > 1) or prune-once-then-fine-tune (rounds = 1) to a MAC fraction ``target``.

    Round t prunes to ρ_t = 1 − (1 − target)·t/T of the dense MACs (local: the same channel fraction of every
    group; ``global_ranking``: the globally lowest scores, see ``P.global_keep_counts``), scoring the current model,
    then fine-tunes F/T steps; the LR follows one cosine over all F steps (``settings.restart``: one cosine per
    round), so every schedule gets the same budget. ``trainer=None`` or ``settings.steps=0`` skips training; round t
    trains as the run ``round<t>``.
    """
    ratios = ratios or RatioCache(dense, example_inputs)
    model = copy.deepcopy(dense).eval()
    run = PruneRun(model=model)
    done = 0
    for t in range(1, rounds + 1):
        rho = 1.0 - (1.0 - target) * t / rounds
        result = P.compute_scores(
            model,
            example_inputs,
            criterion,
            calibration,
            criterion_settings,
            seed=derive_seed(seed, "random-criterion", t),
        )
        if global_ranking:
            keep = P.global_keep_counts(model, example_inputs, result.scores, rho * ratios.dense_macs)
        else:
            keep = ratios.keep(rho)
        run.history += P.prune_to_counts(model, example_inputs, result.scores, keep)
        macs, params = P.count_macs_params(model, example_inputs)
        run.criterion_s += result.seconds
        run.passes += result.passes
        steps = settings.steps * t // rounds - done
        started = time.perf_counter()
        if trainer is not None and train_set is not None:
            total, lr_offset = (steps, 0) if settings.restart else (None, None)
            run.lrs += finetune(
                trainer, model, train_set, settings, steps, done, seed, total, lr_offset, name=f"round{t}"
            )
        done += steps
        run.rounds.append(
            {
                "round": float(t),
                "target": rho,
                "macs_frac": macs / ratios.dense_macs,
                "params_frac": params / ratios.dense_params,
                "criterion_s": result.seconds,
                "passes": float(result.passes),
                "finetune_s": time.perf_counter() - started,
            }
        )
    model.eval()
    return run


def sparse_then_prune(
    trainer: Trainer | None,
    dense: nn.Module,
    example_inputs: Tensor,
    target: float,
    train_set: Dataset | None,
    settings: FinetuneSettings,
    sparse_steps: int,
    reg: float = 5e-4,
    seed: int = 0,
    ratios: RatioCache | None = None,
) -> PruneRun:
    """Torch-Pruning's DepGraph baseline: group-sparse training with ``GroupNormPruner``, then prune, then fine-tune.

    The first ``sparse_steps`` of the budget train with ``GroupNormPruner.regularize`` (group-norm sparsity added to
    the gradients before each step); the channels are then ranked by the group L2 norm (the pruner's
    ``GroupMagnitudeImportance(p=2)``) and removed to the MAC fraction ``target`` with the same local rule as the
    other rows (identical architecture); the remaining ``settings.steps - sparse_steps`` steps fine-tune. Same data
    stream and one cosine over ``settings.steps`` as :func:`prune_and_finetune`, so the training budget is equal.
    """
    import torch_pruning as tp

    ratios = ratios or RatioCache(dense, example_inputs)
    model = copy.deepcopy(dense).eval()
    run = PruneRun(model=model)
    sparse_steps = min(sparse_steps, settings.steps)
    started = time.perf_counter()
    if trainer is not None and train_set is not None and sparse_steps > 0:
        importance = tp.importance.GroupMagnitudeImportance(p=2)
        pruner = tp.pruner.GroupNormPruner(
            model,
            example_inputs,
            importance=importance,
            reg=reg,
            pruning_ratio=0.5,
            ignored_layers=P.default_ignored(model),
        )
        run.lrs += finetune(
            trainer,
            model,
            train_set,
            settings,
            sparse_steps,
            0,
            seed,
            regularizer=lambda: pruner.regularize(model),
            name="sparse",
        )
    sparse_s = time.perf_counter() - started
    result = P.compute_scores(model, example_inputs, "magnitude_tp", [])
    run.history += P.prune_to_counts(model, example_inputs, result.scores, ratios.keep(target))
    macs, params = P.count_macs_params(model, example_inputs)
    run.criterion_s = result.seconds
    started = time.perf_counter()
    if trainer is not None and train_set is not None:
        rest = settings.steps - sparse_steps
        run.lrs += finetune(trainer, model, train_set, settings, rest, sparse_steps, seed, name="finetune")
    run.rounds.append(
        {
            "round": 1.0,
            "target": target,
            "macs_frac": macs / ratios.dense_macs,
            "params_frac": params / ratios.dense_params,
            "criterion_s": result.seconds,
            "passes": 0.0,
            "sparse_s": sparse_s,
            "finetune_s": time.perf_counter() - started,
        }
    )
    model.eval()
    return run


class EvalTask(Task):
    """Top-1 and NLL evaluation (the engine's defaults) with this method's batch collate."""

    def collate(self) -> Callable[[Any], Any]:
        """See :meth:`FinetuneTask.collate`."""
        return collate_batches


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Batches) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics on ``batches`` (cumulative average; weights unchanged)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for module in norms:
        module.reset_running_stats()
        module.momentum = None
    model.train()
    for inputs, _ in batches:
        model(inputs)
    for module, momentum in zip(norms, momenta, strict=True):
        module.momentum = momentum
    return model.eval()
