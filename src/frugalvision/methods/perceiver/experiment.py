"""Registry entry of the DQS Perceiver (arXiv 2205.10873): config, presets, ``run``, studies and benchmark."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from frugalvision.methods.perceiver.bench import latency_benchmark
from frugalvision.methods.perceiver.runner import PerceiverRunConfig, paper, run, smoke, standard

CONFIG_CLASS = PerceiverRunConfig
PRESETS = {"smoke": smoke, "standard": standard, "paper": paper}
STUDIES = ("variants",)

__all__ = ["CONFIG_CLASS", "PRESETS", "STUDIES", "benchmark", "run"]


def benchmark(out_dir: Path) -> dict[str, Any]:
    """Latency ratios at Q, Q/2, Q/4, Q/8 (whole model and latent stack) and of the cascade, standard model, CPU."""
    result = latency_benchmark()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "perceiver_latency.json").write_text(json.dumps(result, indent=2))
    return result
