"""Latency benchmark: dense vs physically pruned CIFAR ResNet on the CPU at several MAC targets (one process)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from frugalvision.methods.singe import pruning as P
from frugalvision.methods.singe.measure import speed_ratio
from frugalvision.methods.singe.task import RatioCache
from frugalvision.nn import cifar_resnet


def latency_table(
    out_dir: Path | None = None,
    depth: int = 8,
    width: int = 16,
    image: tuple[int, int, int] = (1, 28, 28),
    targets: tuple[float, ...] = (0.7, 0.5, 0.3),
    batches: tuple[int, ...] = (1, 64),
    threads: int = 2,
    repeats: int = 15,
) -> dict[str, Any]:
    """Latency ratio pruned/dense (BN folded in both, eval, median), parameters and MACs per MAC target.

    The channels are chosen by L1 magnitude; with local pruning every criterion gives the same architecture, so
    the latency depends on the target only.
    """
    torch.manual_seed(0)
    dense = cifar_resnet(depth, width, image[0], 10).eval()
    example = torch.zeros(1, *image)
    ratios = RatioCache(dense, example)
    rows = []
    for target in targets:
        pruned = copy.deepcopy(dense)
        scores = P.compute_scores(pruned, example, "l1", []).scores
        P.prune_to_counts(pruned, example, scores, ratios.keep(target))
        macs, params = P.count_macs_params(pruned, example)
        row: dict[str, Any] = {
            "target_macs_kept": target,
            "macs_frac": macs / ratios.dense_macs,
            "params_frac": params / ratios.dense_params,
            "macs_m": macs / 1e6,
            "params_k": params / 1e3,
        }
        for batch in batches:
            measured = speed_ratio(dense, pruned, torch.randn(batch, *image), threads, repeats)
            row.update({f"{key}_b{batch}": value for key, value in measured.items()})
        rows.append(row)
    result = {
        "model": f"cifar_resnet depth={depth} width={width}",
        "input": list(image),
        "threads": threads,
        "dense_macs_m": ratios.dense_macs / 1e6,
        "dense_params_k": ratios.dense_params / 1e3,
        "rows": rows,
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "singe_latency.json").write_text(json.dumps(result, indent=1))
    return result
