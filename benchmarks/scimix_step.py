"""Cost of one FixMatch training step with a SciMix mix vs with CutMix (and vs no mix), CPU, one process.

Arms are timed in interleaved, shuffled rounds (``frugalvision.harness.timing``); a ratio is the median of the
per-round ratios. Same measurement as ``frugal bench --methods scimix``.

Usage: python benchmarks/scimix_step.py [--out runs/bench] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from frugalvision.methods.scimix.experiment import benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    results = benchmark(out)
    print(f"{results['batch']}, {args.threads} thread(s)")
    for row in results["ratios"]:
        iqr = f"[{row['ratio_q25']:.2f}, {row['ratio_q75']:.2f}]"
        print(f"{row['name']}: {row['arm_ms']:.1f} ms vs {row['peer_ms']:.1f} ms, ratio {row['ratio']:.2f} {iqr}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "scimix.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out / 'scimix.json'}")


if __name__ == "__main__":
    main()
