"""Inference latency of a MIMO network against the M-member deep ensemble and a single network (ratios, one process).

Every round times each arm once in a shuffled order (:func:`frugalvision.harness.interleaved_timings`); a ratio is
the median of the per-round ratios (:func:`frugalvision.harness.latency_ratio`) with its interquartile range, so a
change of machine load lands on every arm alike. Weights are untrained: the cost does not depend on them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from frugalvision.harness import interleaved_timings, latency_ratio
from frugalvision.methods.mimo.config import MimoRunConfig, parse_unmix
from frugalvision.methods.mimo.model import Unmix, UnmixAt, wrap_backbone

__all__ = ["inference_macs", "latency_arms", "latency_benchmark", "measure_latency"]


@torch.no_grad()
def inference_macs(model: nn.Module, image_shape: tuple[int, int, int]) -> float:
    """Multiply-accumulates of one image's forward pass (FLOPs / 2, counted by ``torch.utils.flop_counter``)."""
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, *image_shape, device=next(model.parameters()).device))
    return counter.get_total_flops() / 2


def latency_arms(
    make_backbone: Callable[[], nn.Module], members: int = 2, unmix: Unmix = "none", unmix_at: UnmixAt = "final"
) -> dict[str, nn.Module | list[nn.Module]]:
    """Untrained networks to time: a single network, the M-member deep ensemble, MIMO, and MIMO with unmixing."""
    single = [wrap_backbone(make_backbone(), 1).eval()]
    arms: dict[str, nn.Module | list[nn.Module]] = {
        "single": single[0],
        "ensemble": single + [wrap_backbone(make_backbone(), 1).eval() for _ in range(members - 1)],
        "mimo": wrap_backbone(make_backbone(), members).eval(),
    }
    if unmix != "none":
        arms["mimo_unmix"] = wrap_backbone(make_backbone(), members, unmix, unmix_at).eval()
    return arms


@torch.no_grad()
def measure_latency(
    arms: dict[str, nn.Module | list[nn.Module]], images: torch.Tensor, rounds: int = 15, warmup: int = 3
) -> dict[str, float]:
    """Median latency (ms) of each arm and the ratios MIMO / ensemble and MIMO / single, interleaved."""

    def call(arm: nn.Module | list[nn.Module]) -> Callable[[], Any]:
        members = arm if isinstance(arm, list) else [arm]
        return lambda: [m(images) for m in members]

    timings = interleaved_timings({name: call(arm) for name, arm in arms.items()}, rounds, warmup)
    out = {f"{name}_ms": timing.median_ms for name, timing in timings.items()}
    for name in [n for n in arms if n.startswith("mimo")]:
        versus = latency_ratio(timings, name, "ensemble")
        out[f"{name}_vs_ensemble"] = versus["ratio"]
        out[f"{name}_vs_ensemble_q25"], out[f"{name}_vs_ensemble_q75"] = versus["ratio_q25"], versus["ratio_q75"]
        out[f"{name}_vs_single"] = latency_ratio(timings, name, "single")["ratio"]
    return out


def latency_benchmark(rounds: int = 15, threads: int = 2) -> dict[str, Any]:
    """MIMO (M = 2) vs its deep ensemble on CPU: PreActResNet-8 w = 8 and 32 at 16x16 (batch 256), WRN-28-2 at 32x32.

    Returns:
        Per configuration: latencies (ms), ratios with their interquartile range, and MACs per image.
    """
    from frugalvision.nn.wide_resnet import preact_resnet, wide_resnet

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cases = {
            "preact8_w8_16px": (lambda: preact_resnet(8, 1, 10, 1), (1, 16, 16), 256),
            "preact8_w32_16px": (lambda: preact_resnet(32, 1, 10, 1), (1, 16, 16), 256),
            "wrn28_2_cifar100": (lambda: wide_resnet(28, 2, 100, 3), (3, 32, 32), 64),
        }
        results: dict[str, Any] = {"threads": threads, "rounds": rounds}
        for name, (make, shape, batch) in cases.items():
            torch.manual_seed(0)
            arms = latency_arms(make, 2, *parse_unmix(MimoRunConfig().unmix))  # type: ignore[arg-type]
            timed = measure_latency(arms, torch.randn(batch, *shape), rounds)
            single_macs, mimo_macs = inference_macs(arms["single"], shape), inference_macs(arms["mimo"], shape)
            timed.update({"batch": batch, "macs_single": single_macs, "macs_ensemble": 2 * single_macs})
            timed.update({"macs_mimo": mimo_macs, "macs_ratio_mimo_vs_ensemble": mimo_macs / (2 * single_macs)})
            results[name] = timed
        return results
    finally:
        torch.set_num_threads(previous)
