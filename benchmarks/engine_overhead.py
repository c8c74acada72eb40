"""Engine overhead: ``Engine.fit`` step time vs a hand-written PyTorch loop, same model and data, one process.

Run: ``python benchmarks/engine_overhead.py`` (or ``frugal bench --methods baseline``).
"""

import json
import sys
from pathlib import Path

from frugalvision.methods.baseline.experiment import benchmark

if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/bench")
    out.mkdir(parents=True, exist_ok=True)
    print(json.dumps(benchmark(out), indent=2))
