"""Dense vs SInGE-pruned CPU latency (batch 1 and 64) at 30/50/70 % MACs removed.

The two models alternate in shuffled rounds (``frugalvision.harness.timing``); the ratio is the median of the
per-round ratios pruned/dense, with its interquartile range.

Usage: python benchmarks/singe_latency.py [--out runs/bench] [--threads 2] [--depth 8 --width 16] [--rounds 15]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from frugalvision.methods.singe.bench import latency_table


def main() -> None:
    """Print and write the latency table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    table = latency_table(Path(args.out), args.depth, args.width, threads=args.threads, rounds=args.rounds)
    print(f"{table['model']}, {table['threads']} threads, dense {table['dense_macs_m']:.2f} MMACs")
    print("MACs kept  params kept  ratio b1 [q25, q75]    ratio b64 [q25, q75]")
    for row in table["rows"]:
        assert row["params_frac"] < 1.0, "the pruned model did not shrink"
        b1 = f"{row['latency_ratio_b1']:.3f} [{row['latency_ratio_q25_b1']:.2f}, {row['latency_ratio_q75_b1']:.2f}]"
        b64 = f"{row['latency_ratio_b64']:.3f} [{row['latency_ratio_q25_b64']:.2f}, {row['latency_ratio_q75_b64']:.2f}]"
        print(f"{row['macs_frac']:9.3f}  {row['params_frac']:11.3f}  {b1:<21}  {b64}")
    print(f"wrote {Path(args.out) / 'singe_latency.json'}")


if __name__ == "__main__":
    main()
