"""SInGE experiment entry point for the registry: config class, presets, ``run`` and the variant study."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from frugalvision.methods.singe.config import SingeConfig, paper, paper_cifar10, smoke, standard
from frugalvision.methods.singe.runner import run

CONFIG_CLASS = SingeConfig
PRESETS = {"smoke": smoke, "standard": standard, "paper": paper, "paper_cifar10": paper_cifar10}
STUDIES = ("variants",)


def benchmark(out_dir: Path) -> dict[str, Any]:
    """Dense vs pruned CPU latency at several MAC targets (see ``benchmarks/singe_latency.py``)."""
    from frugalvision.methods.singe.bench import latency_table

    return latency_table(Path(out_dir))


__all__ = ["CONFIG_CLASS", "PRESETS", "STUDIES", "benchmark", "run"]
