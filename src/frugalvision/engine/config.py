"""Engine configuration: where to run (Fabric) and how to loop (steps, optimisation, checkpoints)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from frugalvision.errors import ConfigError

Precision = Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true"]
Strategy = Literal["auto", "ddp", "ddp_spawn", "fsdp"]


@dataclass
class FabricConfig:
    """Hardware and parallelism settings, forwarded to Lightning Fabric.

    Attributes:
        accelerator: "auto", "cpu", "cuda", "gpu" or "mps".
        devices: devices per node, or "auto" (taken from torchrun/SLURM when launched by them, else 1).
        num_nodes: number of nodes, or 0 to take it from the launcher's environment.
        strategy: "auto", "ddp", "ddp_spawn" or "fsdp".
        precision: "32-true", "bf16-mixed", "16-mixed" or "bf16-true".
        sync_batchnorm: in a run of several processes, normalise BatchNorm layers over the global batch (as one
            process would); False keeps per-process batch statistics. No effect in one process or without BatchNorm.
    """

    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 0
    strategy: Strategy = "auto"
    precision: Precision = "32-true"
    sync_batchnorm: bool = True

    def validate(self) -> None:
        """Raise ConfigError on an invalid value."""
        if self.accelerator not in {"auto", "cpu", "cuda", "gpu", "mps"}:
            raise ConfigError(f"fabric.accelerator={self.accelerator!r} is invalid; use auto, cpu, cuda, gpu or mps")
        if self.devices != "auto" and not (self.devices.isdigit() and int(self.devices) > 0):
            raise ConfigError(f"fabric.devices={self.devices!r} is invalid; use a positive integer or 'auto'")
        if self.num_nodes < 0:
            raise ConfigError(f"fabric.num_nodes={self.num_nodes} is invalid; use a positive integer or 0 for auto")
        if self.strategy not in {"auto", "ddp", "ddp_spawn", "fsdp"}:
            raise ConfigError(f"fabric.strategy={self.strategy!r} is invalid; use auto, ddp, ddp_spawn or fsdp")
        if self.precision not in {"32-true", "bf16-mixed", "16-mixed", "bf16-true"}:
            raise ConfigError(
                f"fabric.precision={self.precision!r} is invalid; use 32-true, bf16-mixed, 16-mixed or bf16-true"
            )


#: loop fields that do not change the weights a run produces (a checkpoint stays valid when they change)
RESUME_NEUTRAL_LOOP_FIELDS = (
    "ckpt_every",
    "ckpt_every_s",
    "keep_checkpoints",
    "log_every",
    "num_workers",
    "eval_batch_size",
)


@dataclass
class LoopConfig:
    """Optimisation loop settings.

    Attributes:
        max_steps: optimiser steps in total.
        batch_size: samples per device per micro-step; the global batch is batch_size x grad_accum x world size.
        grad_accum: micro-steps accumulated before each optimiser step.
        lr: peak learning rate (absolute, never rescaled by the engine).
        weight_decay: decoupled weight decay (applied to weights of rank >= 2 only by the default optimiser).
        warmup_steps: linear warm-up steps from warmup_start_lr to lr.
        warmup_start_lr: learning rate at step 0.
        min_lr: learning rate at the end of the cosine decay.
        schedule: after the warm-up: "cosine", "constant", "poly" (DeepLab's polynomial decay with poly_power) or
            "step" (multiply by gamma at each of milestones).
        poly_power: exponent of the "poly" schedule.
        milestones: optimiser steps at which the "step" schedule multiplies the learning rate by gamma.
        gamma: factor of the "step" schedule.
        clip_grad_norm: clip the global gradient norm to this value; 0 disables.
        ema_decay: decay of an exponential moving average of the weights; 0 disables.
        eval_every: evaluate every N optimiser steps (0: only at the end).
        ckpt_every: checkpoint every N optimiser steps (0: only at the end).
        ckpt_every_s: also checkpoint when this many seconds passed since the last checkpoint (0 disables), so that
            a killed run loses at most that much work.
        keep_checkpoints: how many step checkpoints to keep on disk.
        log_every: log training metrics every N optimiser steps.
        seed: base seed; each rank and step derives its own. In a harness experiment every run's base seed comes from
            its unit's seed (``--seeds``); a non-zero value here is an offset mixed into it (0 keeps the unit seed).
        num_workers: DataLoader worker processes (0 runs data loading in the main process).
        eval_batch_size: batch size for evaluation (0: same as batch_size).
    """

    max_steps: int = 100
    batch_size: int = 64
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 0
    warmup_start_lr: float = 0.0
    min_lr: float = 0.0
    schedule: Literal["cosine", "constant", "poly", "step"] = "cosine"
    poly_power: float = 0.9
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    clip_grad_norm: float = 0.0
    ema_decay: float = 0.0
    eval_every: int = 0
    ckpt_every: int = 0
    ckpt_every_s: float = 60.0
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0
    eval_batch_size: int = 0

    def validate(self) -> None:
        """Raise ConfigError on an invalid value."""
        positive = {"max_steps": self.max_steps, "batch_size": self.batch_size, "grad_accum": self.grad_accum}
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"loop.{name}={value} is invalid; it must be a positive integer")
        non_negative = {
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "warmup_steps": self.warmup_steps,
            "warmup_start_lr": self.warmup_start_lr,
            "min_lr": self.min_lr,
            "clip_grad_norm": self.clip_grad_norm,
            "eval_every": self.eval_every,
            "ckpt_every": self.ckpt_every,
            "ckpt_every_s": self.ckpt_every_s,
            "num_workers": self.num_workers,
            "eval_batch_size": self.eval_batch_size,
            "log_every": self.log_every,
        }
        for name, value in non_negative.items():
            if value < 0:
                raise ConfigError(f"loop.{name}={value} is invalid; it must be >= 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"loop.ema_decay={self.ema_decay} is invalid; use a value in [0, 1), 0 disables EMA")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"loop.keep_checkpoints={self.keep_checkpoints} is invalid; keep at least 1")
        if self.warmup_steps > self.max_steps:
            raise ConfigError(
                f"loop.warmup_steps={self.warmup_steps} exceeds loop.max_steps={self.max_steps}; lower warmup_steps"
            )
        if self.schedule not in {"cosine", "constant", "poly", "step"}:
            raise ConfigError(f"loop.schedule={self.schedule!r} is invalid; use cosine, constant, poly or step")
        if self.poly_power <= 0 or self.gamma <= 0:
            raise ConfigError(f"loop.poly_power={self.poly_power}, loop.gamma={self.gamma}: both must be > 0")
        if list(self.milestones) != sorted(self.milestones) or any(m <= 0 for m in self.milestones):
            raise ConfigError(f"loop.milestones={self.milestones} is invalid; give increasing positive steps")
