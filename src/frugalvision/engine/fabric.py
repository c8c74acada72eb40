"""Lightning Fabric factory: the only module (with ``loop.py``) that imports Lightning."""

from __future__ import annotations

import os

from lightning.fabric import Fabric
from lightning.fabric.utilities.exceptions import MisconfigurationException

from frugalvision.engine.config import FabricConfig
from frugalvision.errors import ConfigError


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


def build_fabric(cfg: FabricConfig) -> Fabric:
    """Create a Fabric from a :class:`FabricConfig`.

    Raises:
        ConfigError: the hardware or strategy asked for is not usable here (names the field and the fix).
    """
    cfg.validate()
    devices, nodes = resolve_topology(cfg)
    try:
        return Fabric(
            accelerator=cfg.accelerator,
            devices=devices,
            num_nodes=nodes,
            strategy=cfg.strategy,
            precision=cfg.precision,
        )
    except (RuntimeError, ValueError, TypeError, MisconfigurationException) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"fabric settings accelerator={cfg.accelerator!r} devices={cfg.devices!r} strategy={cfg.strategy!r} "
            f"precision={cfg.precision!r} are not usable here ({first_line}); change the fabric.* values"
        ) from None
