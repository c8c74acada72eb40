"""Dense vs SInGE-pruned CPU latency (batch 1 and 64) at 30/50/70 % MACs removed.

Usage: python benchmarks/singe_latency.py [--out runs/bench] [--threads 2] [--depth 8 --width 16]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from frugalvision.methods.singe.bench import latency_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    table = latency_table(Path(args.out), args.depth, args.width, threads=args.threads, repeats=args.repeats)
    print(f"{table['model']}, {table['threads']} threads, dense {table['dense_macs_m']:.2f} MMACs")
    print("MACs kept  params kept  latency ratio b1  latency ratio b64")
    for row in table["rows"]:
        assert row["params_frac"] < 1.0, "the pruned model did not shrink"
        print(
            f"{row['macs_frac']:9.3f}  {row['params_frac']:11.3f}  {row['latency_ratio_b1']:16.3f}  "
            f"{row['latency_ratio_b64']:17.3f}"
        )
    print(f"wrote {Path(args.out) / 'singe_latency.json'}")


if __name__ == "__main__":
    main()
