"""Dense vs SInGE-pruned CPU latency (batch 1 and 64) at 30/50/70 % MACs removed, exact and rounded widths.

All models of a target alternate in shuffled rounds (``frugalvision.harness.timing``); each ratio is the median of
the per-round ratios pruned/dense, with its interquartile range. "round8" keeps channel counts that are multiples
of 8 (``--multiple``).

Usage: python benchmarks/singe_latency.py [--out runs/bench] [--threads 2] [--depth 8 --width 16] [--rounds 41]
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
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--multiple", type=int, default=8)
    args = parser.parse_args()
    table = latency_table(
        Path(args.out), args.depth, args.width, threads=args.threads, rounds=args.rounds, multiple=args.multiple
    )
    head = f"{table['model']}, {table['threads']} threads, {table['rounds']} rounds"
    print(f"{head}, dense {table['dense_macs_m']:.2f} MMACs")
    print("MACs kept  variant  batch  widths                      MACs    params  ratio [q25, q75]")
    for row in table["rows"]:
        assert row["params_frac"] < 1.0, "the pruned model did not shrink"
        ratio = f"{row['latency_ratio']:.3f} [{row['latency_ratio_q25']:.2f}, {row['latency_ratio_q75']:.2f}]"
        widths = ",".join(str(w) for w in row["widths"])
        print(
            f"{row['target_macs_kept']:9.2f}  {row['variant']:<7}  {row['batch']:5d}  {widths:<26}  "
            f"{row['macs_frac']:.3f}   {row['params_frac']:.3f}   {ratio}"
        )
    print(f"wrote {Path(args.out) / 'singe_latency.json'}")


if __name__ == "__main__":
    main()
