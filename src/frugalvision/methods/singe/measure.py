"""CPU latency of physically pruned vs dense models (eval, BN folded in both, same threads, warm-up, median)."""

from __future__ import annotations

import statistics

import torch
import torch.utils.benchmark as benchmark
from torch import Tensor, nn

from frugalvision.methods.singe.pruning import fold_batchnorms_of


def _timer(model: nn.Module, inputs: Tensor, threads: int) -> benchmark.Timer:
    folded = fold_batchnorms_of(model, example_inputs=inputs[:1])
    with torch.no_grad():
        folded(inputs)  # warm-up
    scope = {"model": folded, "x": inputs, "torch": torch}
    return benchmark.Timer(stmt="with torch.no_grad(): model(x)", globals=scope, num_threads=threads)


def latency_ms(model: nn.Module, inputs: Tensor, threads: int = 1, repeats: int = 7, number: int = 3) -> float:
    """Median (over ``repeats`` blocks of ``number`` calls) forward latency in ms of the BN-folded eval-mode copy."""
    timer = _timer(model, inputs, threads)
    return statistics.median(timer.timeit(number).mean for _ in range(repeats)) * 1e3


def speed_ratio(
    dense: nn.Module, pruned: nn.Module, inputs: Tensor, threads: int = 1, repeats: int = 7, number: int = 3
) -> dict[str, float]:
    """Dense and pruned latency (ms, medians) and their ratio pruned/dense, timed in alternating blocks.

    Alternating the two models block by block keeps a shared, loaded machine's fluctuations out of the ratio.

    Raises:
        ValueError: the pruned model has as many parameters as the dense one (a masked, not pruned, model).
    """
    dense_params = sum(p.numel() for p in dense.parameters())
    pruned_params = sum(p.numel() for p in pruned.parameters())
    if pruned_params >= dense_params:
        raise ValueError("the pruned model is not smaller than the dense one; latency needs physically pruned layers")
    timers = (_timer(dense, inputs, threads), _timer(pruned, inputs, threads))
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for timer, out in zip(timers, times, strict=True):
            out.append(timer.timeit(number).mean * 1e3)
    dense_ms, pruned_ms = statistics.median(times[0]), statistics.median(times[1])
    ratios = [p / d for d, p in zip(times[0], times[1], strict=True)]
    return {
        "dense_ms": dense_ms,
        "pruned_ms": pruned_ms,
        "latency_ratio": pruned_ms / dense_ms,
        "latency_ratio_paired_median": statistics.median(ratios),
    }
