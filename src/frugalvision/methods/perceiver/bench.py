"""Latency of the Perceiver at several query budgets, on the harness's interleaved timer (ratios, one process).

Every round times each arm once in a shuffled order (:func:`frugalvision.harness.interleaved_timings`); a ratio is
the median of the per-round ratios (:func:`frugalvision.harness.latency_ratio`), so a change of machine load during
the measurement lands on every arm alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from frugalvision.harness import interleaved_timings, latency_ratio
from frugalvision.harness.timing import ratio_entry
from frugalvision.methods.perceiver.config import PerceiverConfig
from frugalvision.methods.perceiver.model import PerceiverClassifier, cascade_stage_macs, macs_breakdown, model_macs


@torch.no_grad()
def width_latency(
    model: PerceiverClassifier, images: torch.Tensor, widths: Sequence[int], rounds: int = 20, warmup: int = 3
) -> dict[str, dict[int, float]]:
    """Forward latency of one model at each Q', interleaved; speed-up of Q' = latency(Q) / latency(Q').

    Returns:
        ``{"latency_ms": {Q': median ms}, "speedup": {Q': median per-round ratio}, "speedup_q25", "speedup_q75"}``.
    """
    model.eval()
    device = next(model.parameters()).device
    x = images.to(device)
    arms: dict[str, Callable[[], Any]] = {f"q{k}": (lambda k=k: model(x, num_latents=k)) for k in widths}
    timings = interleaved_timings(arms, rounds=rounds, warmup=warmup, device=device)
    q = model.num_latents
    ratios = {k: latency_ratio(timings, f"q{q}", f"q{k}") for k in widths}
    return {
        "latency_ms": {k: timings[f"q{k}"].median_ms for k in widths},
        "speedup": {k: r["ratio"] for k, r in ratios.items()},
        "speedup_q25": {k: r["ratio_q25"] for k, r in ratios.items()},
        "speedup_q75": {k: r["ratio_q75"] for k, r in ratios.items()},
    }


def _arms(model: PerceiverClassifier, images: torch.Tensor, widths: Sequence[int]) -> dict[str, Callable[[], Any]]:
    """Whole model and latent stack alone at each width, and the cascade with every image stopping / escalating."""
    q = model.num_latents
    prep = model.prepare(images)
    first = model.first_rows(prep, 0, q)
    arms: dict[str, Callable[[], Any]] = {}
    for k in widths:
        arms[f"model_{k}"] = lambda k=k: model(images, num_latents=k)
        arms[f"latent_{k}"] = lambda k=k: model.encoder.process(first[:, :k].contiguous(), prep.x)
    stages = (max(1, q // 4), q)
    arms["cascade_all_stop"] = lambda: model.cascade(images, stages, 0.0)
    arms["cascade_all_escalate"] = lambda: model.cascade(images, stages, 1.0)
    return arms


@torch.no_grad()
def latency_benchmark(
    config: PerceiverConfig | None = None, batch: int = 256, rounds: int = 20, warmup: int = 3, threads: int = 2
) -> dict[str, Any]:
    """Latency ratios on CPU at Q, Q/2, Q/4, Q/8 (untrained weights: the cost does not depend on them).

    Returns:
        ``{"widths", "model_ms", "latent_ms", "model_ratio", "latent_ratio", "model_ratio_iqr", "macs_ratio",
        "q_dependent_share", "cascade": {...}, "threads", "batch"}``; ratios are relative to Q.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        config = config or PerceiverConfig()
        model = PerceiverClassifier(config).eval()
        q = config.num_latents
        widths = sorted({q, q // 2, q // 4, max(1, q // 8)}, reverse=True)
        images = torch.rand(batch, config.in_chans, config.img_size, config.img_size)
        timings = interleaved_timings(_arms(model, images, widths), rounds=rounds, warmup=warmup)
        model_r = {k: latency_ratio(timings, f"model_{k}", f"model_{q}") for k in widths}
        stop, escalate = (latency_ratio(timings, f"cascade_all_{s}", f"model_{q}") for s in ("stop", "escalate"))
        stage_macs, full_macs = cascade_stage_macs(config, (max(1, q // 4), q)), model_macs(config, q)
        peer = f"the same Perceiver at Q = {q} (batch {batch})"
        ratios = [
            ratio_entry(
                timings,
                f"model_{k}",
                f"model_{q}",
                name=f"forward at Q' = {k} vs Q = {q}",
                arm_label=f"Perceiver at Q' = {k} queries",
                peer_label=peer,
                macs_ratio=model_macs(config, k) / full_macs,
                batch=batch,
            )
            for k in widths
            if k != q
        ]
        ratios.append(
            ratio_entry(
                timings,
                "cascade_all_escalate",
                f"model_{q}",
                name=f"cascade ({q // 4} -> {q}), every image escalates",
                arm_label="cascade with reuse, worst case",
                peer_label=peer,
                macs_ratio=sum(stage_macs) / full_macs,
                batch=batch,
            )
        )
        return {
            "ratios": ratios,
            "config": {"num_latents": q, "latent_dim": config.latent_dim, "layers": config.layers},
            "tokens": config.num_tokens,
            "batch": batch,
            "threads": threads,
            "rounds": rounds,
            "widths": widths,
            "model_ms": {k: timings[f"model_{k}"].median_ms for k in widths},
            "latent_ms": {k: timings[f"latent_{k}"].median_ms for k in widths},
            "model_ratio": {k: r["ratio"] for k, r in model_r.items()},
            "model_ratio_iqr": {k: [r["ratio_q25"], r["ratio_q75"]] for k, r in model_r.items()},
            "latent_ratio": {k: latency_ratio(timings, f"latent_{k}", f"latent_{q}")["ratio"] for k in widths},
            "macs_ratio": {k: model_macs(config, k) / full_macs for k in widths},
            "q_dependent_share": {
                k: 1 - macs_breakdown(config, k)["fixed"] / macs_breakdown(config, k)["total"] for k in widths
            },
            "cascade": {
                "stages": [max(1, q // 4), q],
                "all_stop_ratio": stop["ratio"],
                "all_escalate_ratio": escalate["ratio"],
                "all_stop_macs_ratio": stage_macs[0] / full_macs,
                "all_escalate_macs_ratio": sum(stage_macs) / full_macs,
            },
        }
    finally:
        torch.set_num_threads(previous)
