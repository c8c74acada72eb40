"""Latency of physically pruned vs dense models on the CPU, timed with the harness's interleaved timer.

Both models are timed in eval mode with their BatchNorms folded, under ``torch.no_grad``, with the same threads;
the two arms alternate in shuffled rounds (:func:`frugalvision.harness.interleaved_timings`) and the ratio
pruned/dense is the median of the per-round ratios (:func:`frugalvision.harness.latency_ratio`).
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from frugalvision.harness import interleaved_timings, latency_ratio
from frugalvision.methods.singe import pruning as P


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads (0: leave as is), then restore the previous count."""
    previous = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _forward(model: nn.Module, inputs: Tensor, number: int) -> Any:
    folded = P.fold_batchnorms_of(model, example_inputs=inputs[:1])

    @torch.no_grad()
    def run() -> None:
        for _ in range(number):
            folded(inputs)

    return run


def speed_ratio(
    dense: nn.Module,
    pruned: nn.Module,
    inputs: Tensor,
    threads: int = 1,
    rounds: int = 15,
    number: int = 3,
    warmup: int = 2,
) -> dict[str, float]:
    """Dense and pruned latency (ms per forward, medians over rounds) and the interleaved ratio pruned/dense.

    Args:
        dense: the dense model.
        pruned: the physically pruned model.
        inputs: one input batch.
        threads: torch threads while timing.
        rounds: timed rounds (each times ``number`` forwards of each model, in a shuffled order).
        number: forwards per timed call.
        warmup: untimed rounds first.

    Raises:
        ValueError: the pruned model has as many parameters as the dense one (a masked, not pruned, model).
    """
    if sum(p.numel() for p in pruned.parameters()) >= sum(p.numel() for p in dense.parameters()):
        raise ValueError("the pruned model is not smaller than the dense one; latency needs physically pruned layers")
    arms = {"dense": _forward(dense, inputs, number), "pruned": _forward(pruned, inputs, number)}
    with torch_threads(threads):
        ratio = latency_ratio(interleaved_timings(arms, rounds=rounds, warmup=warmup), "pruned", "dense")
    return {
        "dense_ms": ratio["reference_ms"] / number,
        "pruned_ms": ratio["arm_ms"] / number,
        "latency_ratio": ratio["ratio"],
        "latency_ratio_q25": ratio["ratio_q25"],
        "latency_ratio_q75": ratio["ratio_q75"],
    }


def latency_table(
    out_dir: Path | None = None,
    depth: int = 8,
    width: int = 16,
    image: tuple[int, int, int] = (1, 28, 28),
    targets: tuple[float, ...] = (0.7, 0.5, 0.3),
    batches: tuple[int, ...] = (1, 64),
    threads: int = 2,
    rounds: int = 15,
) -> dict[str, Any]:
    """Latency ratio pruned/dense, parameters and MACs per MAC target of a CIFAR ResNet (random weights).

    The channels are chosen by L1 magnitude; with local pruning every criterion gives the same architecture, so the
    latency depends on the target only.
    """
    from frugalvision.methods.singe.task import RatioCache
    from frugalvision.nn import cifar_resnet

    torch.manual_seed(0)
    dense = cifar_resnet(depth, width, image[0], 10).eval()
    example = torch.zeros(1, *image)
    ratios = RatioCache(dense, example)
    rows = []
    for target in targets:
        pruned = copy.deepcopy(dense)
        P.prune_to_counts(pruned, example, P.compute_scores(pruned, example, "l1", []).scores, ratios.keep(target))
        macs, params = P.count_macs_params(pruned, example)
        row: dict[str, Any] = {
            "target_macs_kept": target,
            "macs_frac": macs / ratios.dense_macs,
            "params_frac": params / ratios.dense_params,
            "macs_m": macs / 1e6,
            "params_k": params / 1e3,
        }
        for batch in batches:
            measured = speed_ratio(dense, pruned, torch.randn(batch, *image), threads, rounds)
            row.update({f"{key}_b{batch}": value for key, value in measured.items()})
        rows.append(row)
    result = {
        "model": f"cifar_resnet depth={depth} width={width}",
        "input": list(image),
        "threads": threads,
        "timer": "interleaved rounds, median of per-round ratios (frugalvision.harness.timing)",
        "dense_macs_m": ratios.dense_macs / 1e6,
        "dense_params_k": ratios.dense_params / 1e3,
        "rows": rows,
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "singe_latency.json").write_text(json.dumps(result, indent=1))
    return result
