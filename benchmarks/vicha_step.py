"""ViCHA benchmark: one pre-training step of ViCHA vs the ALBEF-style baseline (ratio, interleaved rounds).

Run: ``python benchmarks/vicha_step.py [out_dir] [threads] [rounds]`` (writes ``vicha_benchmark.json``; defaults:
runs/bench, 2 threads, 15 rounds). A step is forward (all objectives, momentum passes), backward, AdamW, queue
update and EMA, at the standard preset's sizes and batch (16) on caption-world texts and random images; the two arms
are timed in shuffled interleaved rounds (``harness.timing``) and the median per-round ratio is reported with its
interquartile range.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from frugalvision.methods.vicha.experiment import benchmark

if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/bench")
    torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 15
    out.mkdir(parents=True, exist_ok=True)
    result = benchmark(out, rounds=rounds)
    (out / "vicha_benchmark.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
