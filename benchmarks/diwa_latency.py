"""Inference latency of one DiWA weight-averaged model vs the functional ensemble of its M members (CPU).

Usage: python benchmarks/diwa_latency.py [--out runs/bench] [--threads 1]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from frugalvision.methods.diwa.experiment import benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = benchmark(Path(args.out))
    print(f"GroupNorm CNN (width 32), batch 256 of 1x14x14, {args.threads} thread(s), median of 20")
    print("M   WA ms   ENS ms   ENS/WA")
    for key, row in results.items():
        print(f"{key[1:]:>2}  {row['wa_ms']:6.2f}  {row['ens_ms']:7.2f}  {row['ratio']:7.2f}")
    print(f"wrote {Path(args.out) / 'diwa_benchmark.json'}")


if __name__ == "__main__":
    main()
