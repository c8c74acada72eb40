"""Perceiver DQS latency benchmark: whole model and latent stack at Q, Q/2, Q/4, Q/8, and the cascade (ratios).

Usage: ``python benchmarks/perceiver_latency.py [--threads 2] [--batch 256] [--rounds 20]``. No timing is asserted;
CPU timings of a tiny model are overhead-dominated, so read the ratios, measured in one process.
"""

from __future__ import annotations

import argparse
import json

from frugalvision.methods.perceiver.bench import latency_benchmark


def main() -> None:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(latency_benchmark(batch=args.batch, rounds=args.rounds, threads=args.threads), indent=2))


if __name__ == "__main__":
    main()
