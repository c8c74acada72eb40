"""T-Food benchmark: dual-encoder retrieval of a 10k x 10k bag vs cross-attention (MMR/ITM) scoring of every pair.

Run: ``python benchmarks/tfood_retrieval.py [out_dir] [n] [threads]`` (writes ``tfood_benchmark.json``; defaults:
n = 10,000, 2 threads).
The dual encoder embeds n images (CLS path) and n recipes in inference mode, forms the n x n similarity matrix and
computes R@1/5/10 and medR both ways with the experiment's metric code (the issue-21 goal: under 10 s on 2 cores);
scoring all n^2 pairs with the cross-attention decoders (what a model without unimodal embeddings must do at test
time) is timed on a sample of pairs and extrapolated; both are timed in interleaved rounds (``harness.timing``).
Model sizes are the standard preset's. ``frugal bench --methods tfood`` runs the same function.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from frugalvision.methods.tfood.experiment import benchmark

if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/bench")
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
    out.mkdir(parents=True, exist_ok=True)
    result = benchmark(out, n=n)
    (out / "tfood_benchmark.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
