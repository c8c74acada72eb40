"""MIMO latency benchmark: a MIMO network (M = 2) vs its 2-member deep ensemble and a single network (ratios).

Usage: ``python benchmarks/mimo_latency.py [--threads 2] [--rounds 15]``. Arms are interleaved in shuffled rounds in
one process; the ratios are medians of per-round ratios with their interquartile range. No timing is asserted.
"""

from __future__ import annotations

import argparse
import json

from frugalvision.methods.mimo.bench import latency_benchmark


def main() -> None:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(json.dumps(latency_benchmark(rounds=args.rounds, threads=args.threads), indent=2))


if __name__ == "__main__":
    main()
