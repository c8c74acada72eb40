"""Latency of the latent stack and of the whole model at Q, Q/2, Q/4, Q/8, and of the cascade (ratios, one process)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from frugalvision.methods.perceiver.config import PerceiverConfig
from frugalvision.methods.perceiver.model import PerceiverClassifier, cascade_stage_macs, macs_breakdown, model_macs


def _median_ms(fns: dict[str, Callable[[], Any]], runs: int, warmup: int) -> dict[str, float]:
    """Median wall time (ms) per function, timed round-robin so that load drift hits all of them equally."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for index in range(warmup + runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if index >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


@torch.no_grad()
def latency_benchmark(
    config: PerceiverConfig | None = None, batch: int = 256, runs: int = 20, warmup: int = 3, threads: int = 2
) -> dict[str, Any]:
    """Measure latencies on CPU (untrained weights: the cost does not depend on them).

    Returns:
        ``{"widths", "model_ms", "latent_ms", "model_ratio", "latent_ratio", "macs_ratio", "q_dependent_share",
        "cascade": {...}, "threads", "batch"}``; ratios are relative to Q.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        config = config or PerceiverConfig()
        model = PerceiverClassifier(config).eval()
        q = config.num_latents
        widths = sorted({q, q // 2, q // 4, max(1, q // 8)}, reverse=True)
        images = torch.rand(batch, config.in_chans, config.img_size, config.img_size)
        prep = model.prepare(images)
        first = model.first_rows(prep, 0, q)
        fns: dict[str, Callable[[], Any]] = {}
        for k in widths:
            fns[f"model_{k}"] = lambda k=k: model(images, num_latents=k)
            fns[f"latent_{k}"] = lambda k=k: model.encoder.process(first[:, :k].contiguous(), prep.x)
        stages = (max(1, q // 4), q)
        fns["cascade_all_stop"] = lambda: model.cascade(images, stages, 0.0)
        fns["cascade_all_escalate"] = lambda: model.cascade(images, stages, 1.0)
        ms = _median_ms(fns, runs, warmup)
        full = ms[f"model_{q}"]
        stage_macs = cascade_stage_macs(config, stages)
        return {
            "config": {
                "num_latents": q,
                "latent_dim": config.latent_dim,
                "layers": config.layers,
                "tokens": config.num_tokens,
            },
            "batch": batch,
            "threads": threads,
            "runs": runs,
            "widths": widths,
            "model_ms": {k: ms[f"model_{k}"] for k in widths},
            "latent_ms": {k: ms[f"latent_{k}"] for k in widths},
            "model_ratio": {k: ms[f"model_{k}"] / full for k in widths},
            "latent_ratio": {k: ms[f"latent_{k}"] / ms[f"latent_{q}"] for k in widths},
            "macs_ratio": {k: model_macs(config, k) / model_macs(config, q) for k in widths},
            "q_dependent_share": {
                k: 1 - macs_breakdown(config, k)["fixed"] / macs_breakdown(config, k)["total"] for k in widths
            },
            "cascade": {
                "stages": list(stages),
                "all_stop_ratio": ms["cascade_all_stop"] / full,
                "all_escalate_ratio": ms["cascade_all_escalate"] / full,
                "all_stop_macs_ratio": stage_macs[0] / model_macs(config, q),
                "all_escalate_macs_ratio": sum(stage_macs) / model_macs(config, q),
            },
        }
    finally:
        torch.set_num_threads(previous)
