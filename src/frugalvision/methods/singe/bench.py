"""Latency of physically pruned vs dense models on the CPU, timed with the harness's interleaved timer.

Both models are timed in eval mode with their BatchNorms folded, under ``torch.no_grad``, with the same threads;
the two arms alternate in shuffled rounds (:func:`frugalvision.harness.interleaved_timings`) and the ratio
pruned/dense is the median of the per-round ratios (:func:`frugalvision.harness.latency_ratio`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
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


def calls_for(model: nn.Module, inputs: Tensor, seconds: float = 0.02) -> int:
    """Forwards per timed call so that one call of ``model`` lasts about ``seconds``.

    Sub-millisecond calls (batch 1) are dominated by scheduler noise; several forwards per call average it out.
    """
    run = _forward(model, inputs, 1)
    run()
    start = time.perf_counter()
    run()
    return max(1, math.ceil(seconds / max(time.perf_counter() - start, 1e-6)))


def speed_ratios(
    dense: nn.Module,
    pruned: dict[str, nn.Module],
    inputs: Tensor,
    threads: int = 1,
    rounds: int = 15,
    number: int | None = None,
    warmup: int = 2,
) -> dict[str, dict[str, float]]:
    """Latency of each pruned model relative to the dense one, all arms interleaved in shuffled rounds.

    Args:
        dense: the dense model.
        pruned: name -> physically pruned model.
        inputs: one input batch.
        threads: torch threads while timing.
        rounds: timed rounds (each times ``number`` forwards of every model, in a shuffled order).
        number: forwards per timed call (None: enough for about 20 ms of the dense model, see :func:`calls_for`).
        warmup: untimed rounds first.

    Returns:
        name -> ``dense_ms``, ``pruned_ms`` (medians over rounds, per forward), ``latency_ratio`` (median of the
        per-round ratios pruned/dense) and its quartiles ``latency_ratio_q25`` / ``latency_ratio_q75``.

    Raises:
        ValueError: a pruned model has as many parameters as the dense one (a masked, not pruned, model).
    """
    dense_params = sum(p.numel() for p in dense.parameters())
    for name, model in pruned.items():
        if sum(p.numel() for p in model.parameters()) >= dense_params:
            raise ValueError(f"pruned model {name!r} is not smaller than the dense one; latency needs removed channels")
    with torch_threads(threads):
        number = number or calls_for(dense, inputs)
        arms = {"dense": _forward(dense, inputs, number)}
        arms |= {f"pruned:{k}": _forward(m, inputs, number) for k, m in pruned.items()}
        timings = interleaved_timings(arms, rounds=rounds, warmup=warmup)
    out = {}
    for name in pruned:
        ratio = latency_ratio(timings, f"pruned:{name}", "dense")
        out[name] = {
            "dense_ms": ratio["reference_ms"] / number,
            "pruned_ms": ratio["arm_ms"] / number,
            "latency_ratio": ratio["ratio"],
            "latency_ratio_q25": ratio["ratio_q25"],
            "latency_ratio_q75": ratio["ratio_q75"],
        }
    return out


def speed_ratio(
    dense: nn.Module,
    pruned: nn.Module,
    inputs: Tensor,
    threads: int = 1,
    rounds: int = 15,
    number: int = 3,
    warmup: int = 2,
) -> dict[str, float]:
    """:func:`speed_ratios` for one pruned model."""
    return speed_ratios(dense, {"pruned": pruned}, inputs, threads, rounds, number, warmup)["pruned"]


def latency_table(
    out_dir: Path | None = None,
    depth: int = 8,
    width: int = 16,
    image: tuple[int, int, int] = (1, 28, 28),
    targets: tuple[float, ...] = (0.7, 0.5, 0.3),
    batches: tuple[int, ...] = (1, 64),
    threads: int = 2,
    rounds: int = 41,
    multiple: int = 8,
) -> dict[str, Any]:
    """Latency ratio pruned/dense, parameters and MACs per MAC target of a CIFAR ResNet (random weights).

    Each target has two pruned models, timed in the same interleaved rounds as the dense one: exact local pruning
    and the rounded variant whose channel counts are multiples of ``multiple`` (0: none). The channels are chosen by
    L1 magnitude; with local pruning every criterion gives the same architecture, so the latency depends on the
    target only.
    """
    from frugalvision.methods.singe.task import RatioCache
    from frugalvision.nn import cifar_resnet

    torch.manual_seed(0)
    dense = cifar_resnet(depth, width, image[0], 10).eval()
    example = torch.zeros(1, *image)
    variants = {"exact": RatioCache(dense, example)}
    if multiple > 1:
        variants[f"round{multiple}"] = RatioCache(dense, example, multiple)
    scores = P.compute_scores(dense, example, "l1", []).scores
    rows = []
    for target in targets:
        pruned: dict[str, nn.Module] = {}
        for variant, ratios in variants.items():
            model = copy.deepcopy(dense)
            P.prune_to_counts(model, example, scores, ratios.keep(target))
            pruned[variant] = model
        for batch in batches:
            measured = speed_ratios(dense, pruned, torch.randn(batch, *image), threads, rounds)
            for variant, model in pruned.items():
                macs, params = P.count_macs_params(model, example)
                row: dict[str, Any] = {
                    "target_macs_kept": target,
                    "variant": variant,
                    "batch": batch,
                    "widths": sorted(P.group_sizes(model, example).values()),
                    "macs_frac": macs / variants["exact"].dense_macs,
                    "params_frac": params / variants["exact"].dense_params,
                    **measured[variant],
                }
                rows.append(row)
    result = {
        "model": f"cifar_resnet depth={depth} width={width}",
        "input": list(image),
        "threads": threads,
        "rounds": rounds,
        "timer": "arms interleaved in shuffled rounds, median of per-round ratios (frugalvision.harness.timing)",
        "dense_macs_m": variants["exact"].dense_macs / 1e6,
        "dense_params_k": variants["exact"].dense_params / 1e3,
        "rows": rows,
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "singe_latency.json").write_text(json.dumps(result, indent=1))
    return result
