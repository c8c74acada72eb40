"""The engine: Lightning Fabric underneath, methods' tasks on top."""

from frugalvision.engine.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_weights,
    safe_torch_load,
    save_checkpoint,
    save_weights,
)
from frugalvision.engine.config import FabricConfig, LoopConfig
from frugalvision.engine.distributed import all_gather_with_grad, gather_global_batch, rank_and_world_size
from frugalvision.engine.ema import WeightEma
from frugalvision.engine.loop import Engine, FitResult, Task, default_optimizer
from frugalvision.engine.sampler import GlobalBatchSampler, shuffled_order
from frugalvision.engine.schedule import warmup_cosine_lr
from frugalvision.engine.seeding import derive_seed, seed_everything

__all__ = [
    "Engine",
    "FabricConfig",
    "FitResult",
    "GlobalBatchSampler",
    "LoopConfig",
    "Task",
    "WeightEma",
    "all_gather_with_grad",
    "default_optimizer",
    "derive_seed",
    "gather_global_batch",
    "latest_checkpoint",
    "load_checkpoint",
    "load_weights",
    "rank_and_world_size",
    "safe_torch_load",
    "save_checkpoint",
    "save_weights",
    "seed_everything",
    "shuffled_order",
    "warmup_cosine_lr",
]
