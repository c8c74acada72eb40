"""The engine: Lightning Fabric underneath, methods' tasks on top.

Names are imported on first use, so ``from frugalvision.engine.config import LoopConfig`` (every config module does
this) does not import Lightning: the CLI's ``list`` and ``--help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "Engine": "loop",
    "FitResult": "loop",
    "Task": "loop",
    "default_optimizer": "loop",
    "FabricConfig": "config",
    "LoopConfig": "config",
    "checkpoint_candidates": "checkpoint",
    "latest_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "load_weights": "checkpoint",
    "safe_torch_load": "checkpoint",
    "save_checkpoint": "checkpoint",
    "save_weights": "checkpoint",
    "verify_checkpoint": "checkpoint",
    "RunLock": "runlock",
    "GlobalBatchNorm": "syncbn",
    "convert_sync_batchnorm": "syncbn",
    "all_gather_with_grad": "distributed",
    "gather_global_batch": "distributed",
    "rank_and_world_size": "distributed",
    "WeightEma": "ema",
    "CompositeOptimizer": "optim",
    "GlobalBatchSampler": "sampler",
    "shuffled_order": "sampler",
    "warmup_cosine_lr": "schedule",
    "derive_seed": "seeding",
    "seed_everything": "seeding",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'frugalvision.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"frugalvision.engine.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from frugalvision.engine.checkpoint import (
        checkpoint_candidates,
        latest_checkpoint,
        load_checkpoint,
        load_weights,
        safe_torch_load,
        save_checkpoint,
        save_weights,
        verify_checkpoint,
    )
    from frugalvision.engine.config import FabricConfig, LoopConfig
    from frugalvision.engine.distributed import all_gather_with_grad, gather_global_batch, rank_and_world_size
    from frugalvision.engine.ema import WeightEma
    from frugalvision.engine.loop import Engine, FitResult, Task, default_optimizer
    from frugalvision.engine.optim import CompositeOptimizer
    from frugalvision.engine.runlock import RunLock
    from frugalvision.engine.sampler import GlobalBatchSampler, shuffled_order
    from frugalvision.engine.schedule import warmup_cosine_lr
    from frugalvision.engine.seeding import derive_seed, seed_everything
    from frugalvision.engine.syncbn import GlobalBatchNorm, convert_sync_batchnorm
