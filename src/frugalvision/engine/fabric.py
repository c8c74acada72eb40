"""Lightning Fabric factory: the only module (with ``loop.py``) that imports Lightning."""

from __future__ import annotations

import os
from pathlib import Path

from lightning.fabric import Fabric
from lightning.fabric.loggers import CSVLogger, Logger

from frugalvision.engine.config import FabricConfig


def launcher_world() -> tuple[int, int] | None:
    """Return (devices per node, nodes) when launched by torchrun or SLURM, else None."""
    if "LOCAL_WORLD_SIZE" in os.environ and "WORLD_SIZE" in os.environ:
        local = int(os.environ["LOCAL_WORLD_SIZE"])
        return local, max(1, int(os.environ["WORLD_SIZE"]) // local)
    if "SLURM_NTASKS_PER_NODE" in os.environ and os.environ.get("SLURM_JOB_NAME") not in {"bash", "interactive"}:
        local = int(os.environ["SLURM_NTASKS_PER_NODE"].split("(")[0])
        return local, int(os.environ.get("SLURM_NNODES", "1"))
    return None


def resolve_topology(cfg: FabricConfig) -> tuple[int | str, int]:
    """Resolve ``devices`` and ``num_nodes``: explicit values win, then the launcher's, then one device."""
    from_launcher = launcher_world()
    if cfg.devices != "auto":
        devices: int | str = int(cfg.devices)
    elif from_launcher is not None:
        devices = from_launcher[0]
    elif cfg.accelerator == "cpu":
        devices = 1
    else:
        devices = "auto"
    if cfg.num_nodes > 0:
        nodes = cfg.num_nodes
    elif from_launcher is not None:
        nodes = from_launcher[1]
    else:
        nodes = 1
    return devices, nodes


def build_fabric(cfg: FabricConfig, log_dir: str | Path | None = None, log_name: str = "logs") -> Fabric:
    """Create a Fabric from a :class:`FabricConfig`, with a CSV logger (and TensorBoard when installed).

    Args:
        cfg: hardware and parallelism settings.
        log_dir: folder for the loggers; None disables logging.
        log_name: sub-folder name of the logs.
    """
    cfg.validate()
    devices, nodes = resolve_topology(cfg)
    loggers: list[Logger] = []
    if log_dir is not None:
        loggers.append(CSVLogger(root_dir=str(log_dir), name=log_name, version=""))
        try:
            import tensorboard  # noqa: F401
            from lightning.fabric.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(root_dir=str(log_dir), name=f"{log_name}_tb", version=""))
        except ImportError:
            pass
    return Fabric(
        accelerator=cfg.accelerator,
        devices=devices,
        num_nodes=nodes,
        strategy=cfg.strategy,
        precision=cfg.precision,
        loggers=loggers,
    )
