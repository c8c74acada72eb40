"""MuHDi vs sequential ADVENT training-step cost, and the exported agnostic model vs the full multi-head forward.

Usage: ``python benchmarks/muhdi_step.py [out_dir]`` (writes ``muhdi_benchmark.json`` and prints one line per pair).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from frugalvision.methods.muhdi.bench import benchmark


def main() -> None:
    """Run the benchmark on the current thread count and print the ratios."""
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/muhdi")
    result = benchmark(out)
    print(f"device={result['device']} threads={result['threads']} (torch {torch.__version__})")
    for kind, arm, reference in (("training_step", "muhdi", "advent"), ("inference", "full", "exported")):
        for row in result[kind]:
            print(
                f"{kind:<14} {row['scale']:<5} {row['image']:>8} batch {row['batch']}: {arm} {row['arm_ms']:.1f} ms / "
                f"{reference} {row['reference_ms']:.1f} ms = {row['ratio']:.2f} (IQR {row['ratio_q25']:.2f}-"
                f"{row['ratio_q75']:.2f})"
            )


if __name__ == "__main__":
    main()
