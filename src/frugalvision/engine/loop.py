"""The training/evaluation loop that drives a method's :class:`Task` through Lightning Fabric.

A method supplies plain ``nn.Module``s, datasets and step functions; the engine owns devices, precision,
distribution, gradient accumulation and clipping, the learning-rate schedule, EMA, evaluation, logging, progress,
checkpoints and exact resumption.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from frugalvision.engine.batching import batch_fetcher, fetched_batches
from frugalvision.engine.checkpoint import (
    checkpoint_candidates,
    latest_checkpoint,
    load_checkpoint,
    read_manifest,
    save_checkpoint,
)
from frugalvision.engine.config import RESUME_NEUTRAL_LOOP_FIELDS, FabricConfig, LoopConfig
from frugalvision.engine.ema import WeightEma
from frugalvision.engine.logging import RunLogger
from frugalvision.engine.runlock import RunLock
from frugalvision.engine.sampler import EpochOrder, GlobalBatchSampler
from frugalvision.engine.schedule import set_lr, warmup_cosine_lr
from frugalvision.engine.seeding import capture_rng_state, derive_seed, restore_rng_state, seed_everything, seed_step
from frugalvision.engine.syncbn import convert_sync_batchnorm, has_batchnorm
from frugalvision.errors import CheckpointError, ConfigError, TrainingDivergedError, writing

if TYPE_CHECKING:
    from lightning.fabric import Fabric


def default_optimizer(model: nn.Module, loop: LoopConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on weight matrices/kernels only (no decay on biases, norms, tokens, gains)."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": loop.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=loop.lr)


class Task:
    """What a method provides to the engine. Override what applies; the defaults fit supervised classification.

    Required: :meth:`build_model`, :meth:`train_dataset`, :meth:`training_step`.
    """

    def build_model(self) -> nn.Module:
        """Return a freshly initialised model (called after seeding, identically on every rank)."""
        raise NotImplementedError

    def build_optimizer(self, model: nn.Module, loop: LoopConfig) -> torch.optim.Optimizer:
        """Return the optimiser; the engine sets its learning rate each step from the schedule."""
        return default_optimizer(model, loop)

    def train_dataset(self) -> Dataset:
        """Return the training dataset (map-style)."""
        raise NotImplementedError

    def batch_order(self) -> EpochOrder | None:
        """Return ``order(epoch, seed) -> indices`` to control the epoch order (e.g. repeated augmentation)."""
        return None

    def collate(self) -> Callable[[list[Any]], Any] | None:
        """Return a collate function, or None for PyTorch's default."""
        return None

    def training_step(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Return (loss to minimise, scalars to log) for one micro-batch."""
        raise NotImplementedError

    def on_step_end(self, model: nn.Module, step: int) -> None:
        """Hook after each optimiser step (the model is the unwrapped module)."""

    def on_evaluate(self, model: nn.Module, step: int, metrics: dict[str, dict[str, float]]) -> None:
        """Hook after each periodic evaluation and the final one, on every rank (e.g. to keep the best weights).

        Args:
            model: the evaluated module (the EMA copy when EMA is on), unwrapped from Fabric.
            step: optimiser steps done.
            metrics: ``{eval set: {metric: value}}``, identical on every rank.
        """

    def state_dict(self) -> dict[str, Any]:
        """State the task keeps outside the model and optimiser (tensors and plain types), saved in checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state returned by :meth:`state_dict` when resuming."""

    def eval_datasets(self) -> dict[str, Dataset]:
        """Return the named evaluation sets."""
        return {}

    @torch.no_grad()
    def eval_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """Return per-sample outputs (leading dim = batch) for one evaluation batch; default: logits and targets."""
        inputs, targets = batch
        return {"logits": model(inputs).float(), "targets": targets}

    def eval_metrics(self, outputs: dict[str, torch.Tensor]) -> dict[str, float]:
        """Turn the concatenated outputs of a whole evaluation set into metrics; default: top-1 and NLL."""
        logits, targets = outputs["logits"], outputs["targets"]
        return {
            "top1": (logits.argmax(-1) == targets).float().mean().item(),
            "nll": torch.nn.functional.cross_entropy(logits, targets).item(),
        }


@dataclass
class FitResult:
    """What :meth:`Engine.fit` returns.

    Attributes:
        model: the trained, unwrapped model (on the engine's device).
        ema_model: the EMA model, when EMA was on.
        metrics: final evaluation metrics per evaluation set (of the EMA model when EMA is on, else the model).
        history: logged rows (step, learning rate, losses, evaluations).
        steps: optimiser steps done.
        wall_s: wall-clock seconds of this call.
        run_dir: where logs and checkpoints were written.
        phases: seconds of this call by phase: ``train_s`` (set-up and optimiser steps), ``eval_s`` (periodic and
            final evaluations), ``checkpoint_s`` (writing checkpoints); they add up to the call's wall time.
    """

    model: nn.Module
    ema_model: nn.Module | None
    metrics: dict[str, dict[str, float]]
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    wall_s: float = 0.0
    run_dir: Path | None = None
    phases: dict[str, float] = field(default_factory=dict)


@dataclass
class _Run:
    """The state of one :meth:`Engine.fit` call, passed between its named steps."""

    task: Task
    loop: LoopConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    ema: WeightEma | None
    run_path: Path | None
    ckpt_root: Path | None
    logger: RunLogger | None
    dataset: Dataset
    fingerprint: dict[str, Any] = field(default_factory=dict)
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    previous_wall_s: float = 0.0
    start_time: float = field(default_factory=time.perf_counter)
    last_checkpoint: float = field(default_factory=time.perf_counter)
    eval_s: float = 0.0
    checkpoint_s: float = 0.0

    @property
    def wall_s(self) -> float:
        """Training seconds so far, including those before a resume."""
        return self.previous_wall_s + time.perf_counter() - self.start_time


class Engine:
    """A thin wrapper around Lightning Fabric that runs :class:`Task` objects.

    Args:
        config: where to run.
        log_dir: folder for CSV/TensorBoard logs (None: no logger).
        progress: show a tqdm bar on rank 0.
    """

    def __init__(self, config: FabricConfig | None = None, log_dir: str | Path | None = None, progress: bool = True):
        from frugalvision.engine.fabric import build_fabric  # Lightning is imported when an engine is made

        self.config = config or FabricConfig()
        self.fabric: Fabric = build_fabric(self.config)
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.progress = progress
        self._launched = False

    @property
    def rank(self) -> int:
        """Global rank of this process."""
        return self.fabric.global_rank

    @property
    def world_size(self) -> int:
        """Number of processes."""
        return self.fabric.world_size

    @property
    def is_main(self) -> bool:
        """True on global rank 0."""
        return self.fabric.is_global_zero

    @property
    def device(self) -> torch.device:
        """This process's device."""
        return self.fabric.device

    def launch(self, function: Callable[..., Any] | None = None, *args: Any) -> Any:
        """Start the processes the strategy needs, then run ``function(engine, *args)`` in each (if given)."""
        if self.config.strategy == "ddp_spawn":
            if function is None:
                raise ConfigError("fabric.strategy='ddp_spawn' needs a function to run; use 'ddp' from the CLI")
            return self.fabric.launch(functools.partial(_run_spawned, self, function), *args)
        if not self._launched:
            self.fabric.launch()
            self._launched = True
        return function(self, *args) if function is not None else None

    def barrier(self) -> None:
        """Wait for all processes."""
        self.fabric.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable object; returned as is in a single process)."""
        if self.world_size == 1:
            return value
        return self.fabric.broadcast(value, src=0)

    # ------------------------------------------------------------------ training
    def fit(
        self,
        task: Task,
        loop: LoopConfig,
        run_dir: str | Path | None = None,
        resume: bool = False,
        desc: str = "train",
        fingerprint: Mapping[str, Any] | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> FitResult:
        """Train ``task`` for ``loop.max_steps`` optimiser steps.

        Args:
            task: the method's task.
            loop: loop settings.
            run_dir: folder for checkpoints (``run_dir/checkpoints``) and logs (``run_dir/metrics.csv``); None
                disables checkpoints (logs then go to ``<log_dir>/<desc>/`` when the engine has a log_dir). Rank 0
                locks it while training, and checks that it is writable before the first step.
            resume: continue from the newest intact checkpoint in ``run_dir`` (exactly: same data order and
                randomness); a corrupt newest checkpoint falls back to the previous one, saying so in one line.
            desc: progress-bar label.
            fingerprint: JSON-able ``{field: value}`` the run depends on beyond the loop (e.g. the experiment's
                config), stored in every checkpoint; resuming with other values is refused, naming the fields.
            on_start: called on every rank once the run is set up and checked (folder, resume, batch size), right
                before the first step (the harness writes config.yaml then).

        Raises:
            TrainingDivergedError: the loss became NaN/inf (the last good checkpoint is kept).
            ConfigError: resuming a checkpoint made with other settings (names the differing fields).
            RunFolderBusyError: another process is training in ``run_dir``.
            OutputError: ``run_dir`` cannot be written (read-only, full, a file in the way).
        """
        loop.validate()
        if not self._launched and self.config.strategy != "ddp_spawn":
            self.launch()
        lock = RunLock(run_dir) if run_dir is not None and self.is_main else None
        if lock is not None:
            lock.acquire()
        try:
            return self._fit(task, loop, run_dir, resume, desc, fingerprint, on_start)
        finally:
            if lock is not None:
                lock.release()

    def _fit(
        self,
        task: Task,
        loop: LoopConfig,
        run_dir: str | Path | None,
        resume: bool,
        desc: str,
        fingerprint: Mapping[str, Any] | None,
        on_start: Callable[[], None] | None,
    ) -> FitResult:
        run = self._start_run(task, loop, run_dir, desc, fingerprint)
        if resume:
            self._restore(run)
        batches = self._batches(task, loop, run.step * loop.grad_accum, run.dataset)
        if on_start is not None:
            on_start()
        from tqdm.auto import tqdm

        bar = tqdm(
            total=loop.max_steps,
            initial=run.step,
            desc=desc,
            disable=not (self.progress and self.is_main),
            dynamic_ncols=True,
            leave=False,
        )
        run.model.train()
        while run.step < loop.max_steps:
            row = self._optimizer_step(run, batches)
            self._after_step(run, row)
            if not bar.disable:
                bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}", refresh=False)
                bar.update(1)
        bar.close()
        return self._finish(run)

    def _start_run(
        self,
        task: Task,
        loop: LoopConfig,
        run_dir: str | Path | None,
        desc: str,
        fingerprint: Mapping[str, Any] | None = None,
    ) -> _Run:
        """Check the folder, seed, build the model, optimiser and EMA, set them up on the devices, open the logger."""
        run_path = Path(run_dir) if run_dir is not None else None
        if run_path is not None and self.is_main:
            _check_writable(run_path / "checkpoints")
        dataset = task.train_dataset()
        seed_everything(loop.seed)
        model = task.build_model()
        if self.config.sync_batchnorm and self.world_size > 1 and has_batchnorm(model):
            model = convert_sync_batchnorm(model, cuda=self.device.type == "cuda")
        if loop.ema_decay > 0 and self.config.strategy == "fsdp":
            raise ConfigError("loop.ema_decay > 0 is not supported with fabric.strategy='fsdp'; use ddp or disable EMA")
        ema = WeightEma(model, loop.ema_decay) if loop.ema_decay > 0 else None
        optimizer = task.build_optimizer(model, loop)
        model, optimizer = self.fabric.setup(model, optimizer)
        if ema is not None:
            ema.module.to(self.fabric.device)
        log_folder = run_path if run_path is not None else (self.log_dir / _safe_name(desc) if self.log_dir else None)
        logger = RunLogger(log_folder, enabled=self.is_main) if log_folder is not None else None
        return _Run(
            task=task,
            loop=loop,
            model=model,
            optimizer=optimizer,
            ema=ema,
            run_path=run_path,
            ckpt_root=run_path / "checkpoints" if run_path is not None else None,
            logger=logger,
            dataset=dataset,
            fingerprint=self._fingerprint(loop, dataset, fingerprint),
        )

    def _fingerprint(self, loop: LoopConfig, dataset: Dataset, extra: Mapping[str, Any] | None) -> dict[str, Any]:
        """What the weights of a run depend on, as JSON values: the loop, the topology, the data, the caller's."""
        neutral = set(RESUME_NEUTRAL_LOOP_FIELDS)
        if loop.schedule in ("constant", "step"):
            neutral.add("max_steps")  # the schedule does not depend on it: a finished run may be extended
        values = {
            f"engine.loop.{name}": value for name, value in dataclasses.asdict(loop).items() if name not in neutral
        }
        values["engine.world_size"] = self.world_size
        values["engine.precision"] = self.config.precision
        values["engine.sync_batchnorm"] = self.config.sync_batchnorm and self.world_size > 1
        values["data.train_size"] = len(dataset)  # type: ignore[arg-type]
        values["data.train_type"] = type(dataset).__name__
        values.update(extra or {})
        return json.loads(json.dumps(values, default=str))

    def _restore(self, run: _Run) -> None:
        """Load the newest intact checkpoint: weights, optimiser, EMA, RNG, history, task state.

        A checkpoint whose files do not match their recorded sizes and hashes is skipped for the previous one, with a
        one-line warning; a checkpoint made with another config is refused.
        """
        if run.ckpt_root is None:
            raise ConfigError("resume=True needs a run directory; pass --out of the interrupted run")
        problems: list[str] = []
        for folder in checkpoint_candidates(run.ckpt_root):
            try:
                model_state, train_state, ema_state = load_checkpoint(folder)
            except CheckpointError as error:
                problems.append(str(error))
                continue
            _check_fingerprint(folder, run.fingerprint)
            if problems and self.is_main:
                print(f"warning: {problems[0]}; resuming from the previous intact checkpoint {folder}", file=sys.stderr)
            self._restore_states(run, folder, model_state, train_state, ema_state)
            return
        if problems:
            raise CheckpointError(f"no intact checkpoint under {run.ckpt_root} ({problems[0]}); start without --resume")
        raise CheckpointError(f"no checkpoint found under {run.ckpt_root}; start without --resume")

    def _restore_states(
        self,
        run: _Run,
        folder: Path,
        model_state: dict[str, torch.Tensor],
        train_state: dict[str, Any],
        ema_state: dict[str, torch.Tensor] | None,
    ) -> None:
        self._load_states(run.model, run.optimizer, model_state, train_state)
        if run.ema is not None:
            if ema_state is None:
                raise CheckpointError(
                    f"{folder} has no EMA weights but loop.ema_decay > 0; resume with the same config"
                )
            run.ema.load_state_dict(ema_state)
        run.step = int(train_state["step"])
        restore_rng_state(train_state["rng"])
        run.history = [dict(row) for row in train_state.get("history", [])]
        run.previous_wall_s = float(train_state.get("wall_s", 0.0))
        if "precision" in train_state:
            self.fabric.strategy.precision.load_state_dict(train_state["precision"])
        run.task.load_state_dict(train_state.get("task", {}))

    def _batches(self, task: Task, loop: LoopConfig, micro_step: int, dataset: Dataset | None = None) -> Iterator[Any]:
        """This rank's micro-batches from global micro-step ``micro_step`` on, epoch after epoch."""
        dataset = task.train_dataset() if dataset is None else dataset
        sampler = GlobalBatchSampler(
            len(dataset),
            loop.batch_size,
            seed=loop.seed,
            rank=self.rank,
            world_size=self.world_size,
            order=task.batch_order(),
        )
        if len(sampler) <= 0:
            raise ConfigError(
                f"loop.batch_size={loop.batch_size} x {self.world_size} process(es) exceeds the training set "
                f"({len(dataset)} samples); lower the batch size"
            )
        return self._epochs(task, loop, micro_step, dataset, sampler)

    def _epochs(
        self, task: Task, loop: LoopConfig, micro_step: int, dataset: Dataset, sampler: GlobalBatchSampler
    ) -> Iterator[Any]:
        """The micro-batches of :meth:`_batches`, epoch after epoch (a generator: nothing runs until the first).

        An in-memory dataset that fetches whole batches (:func:`~frugalvision.engine.batching.batch_fetcher`) is read
        one indexing call per batch when the task has no collate function and no worker processes are asked for; the
        batches are those the DataLoader would give.
        """
        epoch, offset = divmod(micro_step, len(sampler))
        fetch = batch_fetcher(dataset) if loop.num_workers == 0 and task.collate() is None else None
        while True:
            sampler.set_epoch(epoch, offset)
            if fetch is not None:
                yield from fetched_batches(fetch, sampler.index_batches())
                epoch, offset = epoch + 1, 0
                continue
            loader = DataLoader(
                dataset,
                batch_sampler=sampler,
                num_workers=loop.num_workers,
                collate_fn=task.collate(),
                generator=torch.Generator().manual_seed(derive_seed(loop.seed, self.rank, epoch, offset)),
                persistent_workers=False,
            )
            yield from loader
            epoch, offset = epoch + 1, 0

    def _optimizer_step(self, run: _Run, batches: Iterator[Any]) -> dict[str, float]:
        """Set the learning rate, accumulate the micro-steps, clip, step; return the row to log."""
        loop, fabric, model = run.loop, self.fabric, run.model
        lr = warmup_cosine_lr(
            run.step,
            max_steps=loop.max_steps,
            lr=loop.lr,
            warmup_steps=loop.warmup_steps,
            warmup_start_lr=loop.warmup_start_lr,
            min_lr=loop.min_lr,
            schedule=loop.schedule,
            poly_power=loop.poly_power,
            milestones=tuple(loop.milestones),
            gamma=loop.gamma,
        )
        set_lr(run.optimizer, lr)
        logs: dict[str, float] = {}
        loss_sum = 0.0
        for micro in range(loop.grad_accum):
            seed_step(derive_seed(loop.seed, "step", self.rank, run.step, micro), self.device)
            batch = fabric.to_device(next(batches))
            is_last = micro == loop.grad_accum - 1
            with fabric.no_backward_sync(model, enabled=not is_last and self.world_size > 1):
                loss, step_logs = run.task.training_step(model, batch, run.step)
                loss_value = loss.detach().item()  # the one device sync of the micro-step
                self._check_finite(loss_value, run)
                fabric.backward(loss / loop.grad_accum if loop.grad_accum > 1 else loss)
            loss_sum += loss_value / loop.grad_accum
            for key, value in step_logs.items():
                logs[key] = logs.get(key, 0.0) + float(value) / loop.grad_accum
        if loop.clip_grad_norm > 0:
            grad_norm = fabric.clip_gradients(
                model, run.optimizer, max_norm=loop.clip_grad_norm, error_if_nonfinite=False
            )
            logs["grad_norm"] = float(grad_norm)
            if self.config.precision != "16-mixed" and not math.isfinite(logs["grad_norm"]):
                self._diverged(f"gradient norm is {logs['grad_norm']} at step {run.step}", run)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        run.step += 1
        return {"step": float(run.step), "lr": lr, "loss": loss_sum, **logs}

    def _after_step(self, run: _Run, row: dict[str, float]) -> None:
        """EMA, the task's hook, logging, periodic evaluation and checkpoints."""
        loop, step = run.loop, run.step
        if run.ema is not None:
            run.ema.update(self._unwrap(run.model))
        run.task.on_step_end(self._unwrap(run.model), step)
        if loop.log_every and (step % loop.log_every == 0 or step == loop.max_steps):
            run.history.append(row)
            if run.logger is not None:
                run.logger.scalars({f"train/{k}" if k != "step" else k: v for k, v in row.items()})
        if loop.eval_every and step % loop.eval_every == 0 and step < loop.max_steps:
            self._evaluate_run(run)
            run.model.train()
        if run.ckpt_root is not None and self._checkpoint_due(run):
            self._save_run(run)

    def _checkpoint_due(self, run: _Run) -> bool:
        """Every ``ckpt_every`` steps, after ``ckpt_every_s`` seconds since the last one (rank 0 decides), and last."""
        loop, step = run.loop, run.step
        if step == loop.max_steps or (loop.ckpt_every and step % loop.ckpt_every == 0):
            return True
        if not loop.ckpt_every_s:
            return False
        if self.world_size > 1 and step % max(1, loop.log_every) != 0:
            return False  # in a distributed run the clock is consulted (and broadcast) at log steps only
        due = time.perf_counter() - run.last_checkpoint >= loop.ckpt_every_s
        return bool(self.broadcast(due))

    def _save_run(self, run: _Run) -> None:
        began = time.perf_counter()
        extra = {
            "history": run.history,
            "wall_s": run.wall_s,
            "precision": self.fabric.strategy.precision.state_dict(),
            "task": run.task.state_dict(),
        }
        assert run.ckpt_root is not None
        self._save(
            run.ckpt_root,
            run.step,
            run.model,
            run.optimizer,
            run.ema,
            run.loop.keep_checkpoints,
            extra,
            fingerprint=run.fingerprint,
        )
        run.last_checkpoint = time.perf_counter()
        if run.logger is not None:
            run.logger.write(run.history)
        run.checkpoint_s += time.perf_counter() - began

    def _evaluate_run(self, run: _Run) -> dict[str, dict[str, float]]:
        """Evaluate the model (the EMA copy when on), log the metrics and call the task's hook."""
        began = time.perf_counter()
        evaluated = run.ema.module if run.ema is not None else run.model
        loop = run.loop
        metrics = self.evaluate(
            run.task, evaluated, batch_size=loop.eval_batch_size or loop.batch_size, num_workers=loop.num_workers
        )
        self._log_eval(metrics, run.step, run.history, run.logger)
        run.task.on_evaluate(self._unwrap(evaluated), run.step, metrics)
        run.eval_s += time.perf_counter() - began
        return metrics

    def _finish(self, run: _Run) -> FitResult:
        """The final evaluation, the last log write, the result."""
        metrics = self._evaluate_run(run)
        if run.logger is not None:
            run.logger.write(run.history)
            run.logger.close()
        return FitResult(
            model=self._unwrap(run.model),
            ema_model=run.ema.module if run.ema is not None else None,
            metrics=metrics,
            history=run.history,
            steps=run.step,
            wall_s=run.wall_s,
            run_dir=run.run_path,
            phases=self._phases(run),
        )

    def _phases(self, run: _Run) -> dict[str, float]:
        total = time.perf_counter() - run.start_time
        train_s = total - run.eval_s - run.checkpoint_s
        return {"train_s": train_s, "eval_s": run.eval_s, "checkpoint_s": run.checkpoint_s}

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(
        self,
        task: Task,
        model: nn.Module,
        datasets: Mapping[str, Dataset] | None = None,
        batch_size: int = 256,
        num_workers: int = 0,
    ) -> dict[str, dict[str, float]]:
        """Evaluate ``model`` on each dataset; each rank takes a disjoint shard, outputs are gathered, then scored.

        Args:
            task: supplies the evaluation sets (unless ``datasets`` is given), collate, eval step and metrics.
            model: the module to evaluate.
            datasets: named sets to use instead of ``task.eval_datasets()``.
            batch_size: per-rank evaluation batch size.
            num_workers: DataLoader worker processes (``fit`` passes ``loop.num_workers``).

        Returns:
            ``{dataset name: {metric: value}}``; identical on every rank.
        """
        datasets = task.eval_datasets() if datasets is None else datasets
        was_training = model.training
        model.eval()
        results: dict[str, dict[str, float]] = {}
        for name, dataset in datasets.items():
            if len(dataset) == 0:
                raise ConfigError(f"evaluation set {name!r} is empty; remove it or check its data")
            # Every rank runs the same number of batches (FSDP needs all ranks in each forward): shards are padded
            # with repeated indices to ceil(N / world), and the padding is dropped after the gather.
            per_rank = -(-len(dataset) // self.world_size)
            indices = list(range(self.rank, len(dataset), self.world_size))
            true_length = len(indices)
            indices += [indices[-1] if indices else 0] * (per_rank - true_length)
            loader = self._eval_batches(task, dataset, indices, batch_size, num_workers)
            collected: dict[str, list[torch.Tensor]] = {}
            for batch in loader:
                with self.fabric.autocast():
                    outputs = task.eval_step(model, self.fabric.to_device(batch))
                for key, value in outputs.items():
                    collected.setdefault(key, []).append(value.detach())
            merged = {key: self._gather(torch.cat(values), true_length) for key, values in sorted(collected.items())}
            results[name] = task.eval_metrics({k: v.cpu() for k, v in merged.items()})
        model.train(was_training)
        return results

    def _eval_batches(
        self, task: Task, dataset: Dataset, indices: list[int], batch_size: int, num_workers: int
    ) -> Iterator[Any]:
        """The batches of ``dataset[indices]`` in order: one indexing call per batch when the dataset allows it."""
        fetch = batch_fetcher(dataset) if num_workers == 0 and task.collate() is None else None
        if fetch is not None:
            chunks = [indices[start : start + batch_size] for start in range(0, len(indices), batch_size)]
            return fetched_batches(fetch, chunks)
        loader = DataLoader(
            Subset(dataset, indices),
            batch_size=batch_size,
            shuffle=False,
            collate_fn=task.collate(),
            num_workers=num_workers,
        )
        return iter(loader)

    def _gather(self, tensor: torch.Tensor, true_length: int) -> torch.Tensor:
        """Gather equal-length shards from all ranks and drop each rank's padding."""
        if self.world_size == 1:
            return tensor[:true_length]
        lengths = self.fabric.all_gather(torch.tensor([true_length], device=tensor.device)).flatten().tolist()
        gathered = self.fabric.all_gather(tensor)
        return torch.cat([gathered[r, : lengths[r]] for r in range(len(lengths))])

    # ------------------------------------------------------------------ helpers
    def _unwrap(self, model: nn.Module) -> nn.Module:
        return getattr(model, "module", model) if hasattr(model, "_forward_module") else model

    def _log_eval(
        self,
        metrics: dict[str, dict[str, float]],
        step: int,
        history: list[dict[str, float]],
        logger: RunLogger | None,
    ) -> None:
        flat = {f"{name}/{key}": value for name, values in metrics.items() for key, value in values.items()}
        if flat:
            history.append({"step": float(step), **flat})
            if logger is not None:
                logger.scalars({"step": float(step), **flat})

    def _check_finite(self, loss_value: float, run: _Run) -> None:
        bad = not math.isfinite(loss_value)
        if self.world_size > 1:  # every rank must stop together, or the others hang in the next collective
            flag = torch.tensor(float(bad), device=self.fabric.device)
            bad = self.fabric.all_reduce(flag, reduce_op="sum").item() > 0
        if bad:
            self._diverged(f"loss is not finite at step {run.step}", run)

    def _diverged(self, what: str, run: _Run) -> None:
        if run.logger is not None:
            run.logger.write(run.history)
            run.logger.close()
        kept = latest_checkpoint(run.ckpt_root) if run.ckpt_root is not None else None
        where = f"last good checkpoint kept at {kept}" if kept else "no checkpoint was written yet"
        raise TrainingDivergedError(f"{what} ({where}); lower loop.lr or set loop.clip_grad_norm")

    def _model_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        if self.config.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return self._unwrap(model).state_dict()

    def _optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        if self.config.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return get_optimizer_state_dict(model, optimizer, options=options)
        return optimizer.state_dict()

    def _load_states(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        model_state: dict[str, torch.Tensor],
        train_state: dict[str, Any],
    ) -> None:
        if self.config.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
                set_optimizer_state_dict,
            )

            options = StateDictOptions(full_state_dict=True)
            set_model_state_dict(model, model_state, options=options)
            set_optimizer_state_dict(model, optimizer, train_state["optimizer"], options=options)
            return
        self._unwrap(model).load_state_dict(model_state)
        optimizer.load_state_dict(train_state["optimizer"])

    def _save(
        self,
        root: Path,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        ema: WeightEma | None,
        keep: int,
        extra: dict[str, Any],
        fingerprint: Mapping[str, Any] | None = None,
    ) -> None:
        model_state = self._model_state(model)
        optimizer_state = self._optimizer_state(model, optimizer)
        if self.is_main:
            train_state = {"step": step, "optimizer": optimizer_state, "rng": capture_rng_state(), **extra}
            ema_state = ema.state_dict() if ema else None
            save_checkpoint(root, step, model_state, train_state, ema_state, keep=keep, fingerprint=fingerprint)
        self.fabric.barrier()


def _run_spawned(engine: Engine, function: Callable[..., Any], fabric: Fabric, *args: Any) -> Any:
    """Entry point of a spawned process: bind the engine to this process's Fabric, then run the function."""
    engine.fabric = fabric
    engine._launched = True
    return function(engine, *args)


def _check_writable(folder: Path) -> None:
    """Create ``folder`` and write a probe file in it, so that an unwritable folder fails before any training."""
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()


def _check_fingerprint(folder: Path, current: Mapping[str, Any]) -> None:
    """Refuse to resume from a checkpoint whose recorded fingerprint differs from the run's (names the fields)."""
    manifest = read_manifest(folder)
    stored = (manifest or {}).get("fingerprint") or {}
    differing = [key for key in stored if key in current and stored[key] != current[key]]
    if not differing:
        return
    differing.sort(key=lambda key: (key.startswith(("engine.", "data.")), key))
    shown = ", ".join(f"{key}={stored[key]!r} (now {current[key]!r})" for key in differing[:4])
    more = f" and {len(differing) - 4} more" if len(differing) > 4 else ""
    raise ConfigError(
        f"checkpoint {folder} was made with {shown}{more}; resume with the same config, or run without --resume "
        "(or with another --out) to start over"
    )


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "run"
