"""View-transform cost vs number of image tokens and BEV queries: LaRa's latent bottleneck vs dense attention.

LaRa's encoder costs O(tokens × latents) and its decoder O(queries × latents); a dense BEV-query cross-attention
costs O(queries × tokens). Both arms run with the same attention implementation: fused ``scaled_dot_product_attention``
(the fair peer, the headline) and, for reference, explicit ``math`` attention that materialises the score matrices.
We time the view transform alone (tokens → BEV features, batch 1, eval mode) on random
tokens for several camera counts, image sizes and grid sizes with the shared interleaved timer
(:mod:`frugalvision.harness.timing`: both arms alternate in shuffled rounds; the ratio is the median of the per-round
ratios), and measure its peak memory (CUDA allocator when on a GPU, else the replay of the CPU profiler's allocation
events).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from frugalvision.harness.timing import benchmark_result, interleaved_timings, latency_ratio, ratio_entry
from frugalvision.methods.lara.geometry import BevGrid
from frugalvision.methods.lara.model import DenseQueryAttention, LaRa, ModelConfig


class _ViewTransform(nn.Module):
    """tokens (B, T, D) → BEV features (B, M, query_dim) of an arm (the camera CNN and BEV head excluded)."""

    def __init__(self, arm: LaRa) -> None:
        super().__init__()
        self.arm = arm

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        queries = self.arm.query_mlp(self.arm.coords)
        if isinstance(self.arm, DenseQueryAttention):
            return self.arm.decoder(tokens, queries)
        return self.arm.decoder(self.arm.latent_encoder(tokens), queries)


def _peak_mib(fn: Any) -> float:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak / 2**20


@torch.no_grad()
def view_transform_costs(
    cameras: tuple[int, ...] = (1, 2, 4, 6),
    image_sizes: tuple[tuple[int, int], ...] = ((32, 64), (64, 128)),
    grid_sizes: tuple[int, ...] = (32, 64),
    config: ModelConfig | None = None,
    runs: int = 7,
) -> list[dict[str, Any]]:
    """Latency (ms, median over interleaved rounds) and peak memory (MiB) of the LaRa and dense view transforms.

    Returns:
        One dict per (grid, cameras, image size): tokens, queries, both latencies and memories, and their ratios.
    """
    config = config or ModelConfig()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for side in grid_sizes:
        grid = BevGrid(-side / 2, side / 2, -side / 2, side / 2, 1.0)
        torch.manual_seed(0)
        arms = {
            name: _ViewTransform(cls(config, grid)).to(device).eval()
            for name, cls in (("lara", LaRa), ("dense", DenseQueryAttention))
        }
        for n in cameras:
            for height, width in image_sizes:
                tokens = n * (height // config.feature_stride) * (width // config.feature_stride)
                x = torch.randn(1, tokens, config.feature_dim + config.ray_dim, device=device)
                row: dict[str, Any] = {
                    "grid": side,
                    "cameras": n,
                    "image": f"{height}x{width}",
                    "tokens": tokens,
                    "queries": side * side,
                }
                calls = {name: (lambda module=module, x=x: module(x)) for name, module in arms.items()}
                timings = interleaved_timings(calls, rounds=runs, warmup=2, device=device)
                ratio = latency_ratio(timings, "dense", "lara")
                row["entry"] = ratio_entry(
                    timings,
                    "lara",
                    "dense",
                    name=f"view transform, {n} cameras x {height}x{width} ({tokens} tokens), {side}x{side} BEV, "
                    f"{config.attn_impl}",
                    arm_label="LaRa latents (encoder + decoder)",
                    peer_label=f"dense BEV-query cross-attention ({config.attn_impl})",
                    tokens=tokens,
                    queries=side * side,
                    attn_impl=config.attn_impl,
                    batch=1,
                )
                row["lara_over_dense_ms"] = row["entry"]["ratio"]
                row["lara_over_dense_ms_iqr"] = [row["entry"]["ratio_q25"], row["entry"]["ratio_q75"]]
                row.update(lara_ms=ratio["reference_ms"], dense_ms=ratio["arm_ms"], dense_over_lara_ms=ratio["ratio"])
                row.update(dense_over_lara_ms_q25=ratio["ratio_q25"], dense_over_lara_ms_q75=ratio["ratio_q75"])
                for name, call in calls.items():
                    row[f"{name}_mib"] = _peak_mib(call)
                row["dense_over_lara_mib"] = row["dense_mib"] / max(row["lara_mib"], 1e-9)
                rows.append(row)
    return rows


def _slope(rows: list[dict[str, Any]], key: str) -> float:
    """Least-squares slope of ``key`` against tokens (per 1,000 tokens)."""
    xs = [r["tokens"] / 1000 for r in rows]
    ys = [r[key] for r in rows]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else float("nan")


def headline(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """LaRa's latency and memory relative to the dense peer at the two sizes a reader asks about, per kernel.

    Six cameras, 32 x 32 grid, 768 and 3,072 tokens (ToyBEV images at 32 x 64 and 64 x 128).
    """
    out = []
    for row in rows:
        if row["cameras"] == 6 and row["grid"] == 32:
            out.append(
                {
                    "attn_impl": row["attn_impl"],
                    "tokens": row["tokens"],
                    "lara_over_dense_ms": row["lara_over_dense_ms"],
                    "lara_over_dense_ms_iqr": row["lara_over_dense_ms_iqr"],
                    "lara_over_dense_mib": 1.0 / max(row["dense_over_lara_mib"], 1e-9),
                }
            )
    return out


def benchmark(out_dir: Path, quick: bool = False, attn_impls: tuple[str, ...] = ("sdpa", "math")) -> dict[str, Any]:
    """Run :func:`view_transform_costs` per attention implementation and summarise it.

    Args:
        out_dir: folder for ``lara_benchmark.json``.
        quick: two camera counts, one image size, one grid (for tests).
        attn_impls: implementations both arms use in turn: "sdpa" (fused, the fair peer) and "math" (explicit).
    """
    kwargs: dict[str, Any] = (
        {"cameras": (1, 6), "image_sizes": ((32, 64),), "grid_sizes": (32,), "runs": 2}
        if quick
        else {"cameras": (1, 2, 6), "grid_sizes": (32, 64), "runs": 7}
    )
    rows = []
    for impl in attn_impls:
        config = replace(ModelConfig(), attn_impl=impl)
        rows += [{"attn_impl": impl, **row} for row in view_transform_costs(config=config, **kwargs)]
    ratios = [row.pop("entry") for row in rows]
    # the performance table: LaRa / dense at 6 cameras and the 32 x 32 grid (768 and 3,072 tokens), fused SDPA first
    shown = [e for e in ratios if e["queries"] == 32 * 32 and "6 cameras" in e["name"]]
    shown.sort(key=lambda e: (e["attn_impl"] != "sdpa", e["tokens"]))
    summary: dict[str, Any] = {
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(),
        "peer": "dense BEV-query cross-attention (one query per cell to every image token), same attention kernel",
        "headline": headline(rows),
        "rows": rows,
        "slopes": {},
    }
    for impl in attn_impls:
        for side in sorted({r["grid"] for r in rows}):
            sub = [r for r in rows if r["grid"] == side and r["attn_impl"] == impl]
            summary["slopes"][f"{impl}_grid{side}"] = {
                f"{key}_per_1k_tokens": _slope(sub, key) for key in ("lara_ms", "dense_ms", "lara_mib", "dense_mib")
            }
    out_dir.mkdir(parents=True, exist_ok=True)
    result = benchmark_result(shown, **summary)
    (out_dir / "lara_benchmark.json").write_text(json.dumps(result, indent=1))
    return result
