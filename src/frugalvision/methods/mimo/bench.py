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
from frugalvision.harness.timing import Timing, benchmark_result, ratio_entry
from frugalvision.methods.mimo.config import MimoRunConfig, parse_unmix
from frugalvision.methods.mimo.model import Unmix, UnmixAt, wrap_backbone

__all__ = ["CASES", "inference_macs", "latency_arms", "latency_benchmark", "measure_latency", "time_arms"]


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
def time_arms(
    arms: dict[str, nn.Module | list[nn.Module]], images: torch.Tensor, rounds: int = 15, warmup: int = 3
) -> dict[str, Timing]:
    """Interleaved timings of each arm's forward pass on ``images`` (a list arm runs every member)."""

    def call(arm: nn.Module | list[nn.Module]) -> Callable[[], Any]:
        members = arm if isinstance(arm, list) else [arm]
        return lambda: [m(images) for m in members]

    return interleaved_timings({name: call(arm) for name, arm in arms.items()}, rounds, warmup)


def measure_latency(
    arms: dict[str, nn.Module | list[nn.Module]], images: torch.Tensor, rounds: int = 15, warmup: int = 3
) -> dict[str, float]:
    """Median latency (ms) of each arm and the ratios MIMO / ensemble and MIMO / single, interleaved."""
    return summarise(time_arms(arms, images, rounds, warmup))


def summarise(timings: dict[str, Timing]) -> dict[str, float]:
    """Median latency (ms) of each arm; each MIMO arm's ratio to the ensemble (with its IQR) and to the single net."""
    out = {f"{name}_ms": timing.median_ms for name, timing in timings.items()}
    for name in [n for n in timings if n.startswith("mimo")]:
        versus = latency_ratio(timings, name, "ensemble")
        out[f"{name}_vs_ensemble"] = versus["ratio"]
        out[f"{name}_vs_ensemble_q25"], out[f"{name}_vs_ensemble_q75"] = versus["ratio_q25"], versus["ratio_q75"]
        out[f"{name}_vs_single"] = latency_ratio(timings, name, "single")["ratio"]
    return out


#: a benchmark case: (label, backbone factory, image shape, batch)
Case = tuple[str, Callable[[], nn.Module], tuple[int, int, int], int]
CASES: dict[str, Case] = {
    "preact8_w8_16px": ("PreActResNet-8 w=8, 16x16", lambda: _preact(8, 1, 10, 1), (1, 16, 16), 256),
    "preact8_w32_16px": ("PreActResNet-8 w=32, 16x16", lambda: _preact(32, 1, 10, 1), (1, 16, 16), 256),
    "wrn28_2_cifar100": ("WRN-28-2, CIFAR-100 32x32", lambda: _wrn(28, 2, 100, 3), (3, 32, 32), 64),
}


def _preact(width: int, blocks: int, classes: int, channels: int) -> nn.Module:
    from frugalvision.nn.wide_resnet import preact_resnet

    return preact_resnet(width, blocks, classes, channels)


def _wrn(depth: int, width: int, classes: int, channels: int) -> nn.Module:
    from frugalvision.nn.wide_resnet import wide_resnet

    return wide_resnet(depth, width, classes, channels)


def latency_benchmark(
    rounds: int = 15,
    threads: int = 2,
    cases: dict[str, Case] | None = None,
    warmup: int = 3,
) -> dict[str, Any]:
    """MIMO (M = 2) vs its deep ensemble on CPU: PreActResNet-8 w = 8 and 32 at 16x16 (batch 256), WRN-28-2 at 32x32.

    Returns:
        ``{"ratios": [...], <case>: {...}}``: per case, two performance-table rows (``ratio_entry``: MIMO and MIMO
        with the default unmixing, each against the 2-member deep ensemble, interleaved in the same rounds) and the
        latencies (ms), ratios with their interquartile range, and MACs per image.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    unmix, unmix_at = parse_unmix(MimoRunConfig().unmix)
    try:
        ratios: list[dict[str, Any]] = []
        details: dict[str, Any] = {"threads": threads, "rounds": rounds}
        for name, (label, make, shape, batch) in (cases or CASES).items():
            torch.manual_seed(0)
            arms = latency_arms(make, 2, unmix, unmix_at)  # type: ignore[arg-type]
            timings = time_arms(arms, torch.randn(batch, *shape), rounds, warmup)
            single_macs, mimo_macs = inference_macs(arms["single"], shape), inference_macs(arms["mimo"], shape)
            unmix_macs = inference_macs(arms["mimo_unmix"], shape)  # type: ignore[arg-type]
            peer = f"2-member deep ensemble ({label}, batch {batch})"
            for arm, arm_label, macs in (
                ("mimo", "MIMO M=2", mimo_macs),
                ("mimo_unmix", f"MIMO M=2 + unmixing ({unmix}-{unmix_at})", unmix_macs),
            ):
                ratios.append(
                    ratio_entry(
                        timings,
                        arm,
                        "ensemble",
                        name=f"{arm_label} inference vs deep ensemble, {label}",
                        arm_label=arm_label,
                        peer_label=peer,
                        macs_ratio=macs / (2 * single_macs),
                        batch=batch,
                    )
                )
            timed: dict[str, float] = summarise(timings)
            timed.update({"batch": batch, "macs_single": single_macs, "macs_ensemble": 2 * single_macs})
            timed.update({"macs_mimo": mimo_macs, "macs_ratio_mimo_vs_ensemble": mimo_macs / (2 * single_macs)})
            details[name] = timed
        return benchmark_result(ratios, **details)
    finally:
        torch.set_num_threads(previous)
