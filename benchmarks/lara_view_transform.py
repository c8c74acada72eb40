"""LaRa vs dense BEV-query cross-attention: view-transform latency and peak memory vs tokens and BEV queries.

Usage: ``python benchmarks/lara_view_transform.py [out_dir]`` (writes ``lara_benchmark.json`` and prints a table).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from frugalvision.methods.lara.benchmark import benchmark


def main() -> None:
    """Run the benchmark on two threads and print one line per setting, the fused-attention headline first."""
    torch.set_num_threads(2)
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/lara")
    result = benchmark(out)
    print(f"device={result['device']} threads={result['threads']} peer: {result['peer']}")
    for h in result["headline"]:
        print(
            f"{h['attn_impl']:>5} {h['tokens']:>5} tokens: LaRa / dense latency {h['lara_over_dense_ms']:.2f}, memory "
            f"{h['lara_over_dense_mib']:.2f}"
        )
    print("attn  grid cams image    tokens queries | lara_ms dense_ms ratio | lara_MiB dense_MiB ratio")
    for r in result["rows"]:
        print(
            f"{r['attn_impl']:>5} {r['grid']:>4} {r['cameras']:>4} {r['image']:>7} {r['tokens']:>6} {r['queries']:>7} |"
            " "
            f"{r['lara_ms']:7.2f} {r['dense_ms']:8.2f} {r['dense_over_lara_ms']:5.2f} | "
            f"{r['lara_mib']:8.2f} {r['dense_mib']:9.2f} {r['dense_over_lara_mib']:5.2f}"
        )
    for grid, slopes in result["slopes"].items():
        print(grid, {k: round(v, 3) for k, v in slopes.items()})


if __name__ == "__main__":
    main()
