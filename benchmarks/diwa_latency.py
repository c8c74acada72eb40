"""Inference latency of one DiWA weight-averaged model vs the functional ensemble of its M members (CPU).

Arms are timed in interleaved, shuffled rounds (``frugalvision.harness.timing``); the ratio is the median of the
per-round ENS / WA ratios. Same measurement as ``frugal bench --methods diwa``.

Usage: python benchmarks/diwa_latency.py [--out runs/bench] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from frugalvision.methods.diwa.experiment import benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    results = benchmark(out)
    print(f"GroupNorm CNN (width 32), batch {results['batch']} of {results['image']}, {args.threads} thread(s)")
    print("M   WA ms   ENS ms   ENS/WA  (IQR of the per-round ratios)")
    for key in ("M5", "M10"):
        row = results[key]
        iqr = f"[{row['ratio_q25']:.2f}, {row['ratio_q75']:.2f}]"
        print(f"{key[1:]:>2}  {row['wa_ms']:6.2f}  {row['ens_ms']:7.2f}  {row['ratio']:7.2f}  {iqr}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "diwa.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out / 'diwa.json'}")


if __name__ == "__main__":
    main()
