"""Start-up of the command line, before vs after a change: two source trees, interleaved in shuffled rounds.

Each round runs every (tree, command) pair once as a fresh process, in a shuffled order, and records its wall time
and its CPU time (user + system, from ``wait4``: far less sensitive to the machine's load than wall time). The
"before" tree is any checkout of the package sources (e.g. ``git archive HEAD~5 src | tar -x -C /tmp/before``);
``run METHOD --help`` is timed cold (an empty help cache every time) and, for the current tree, cached.

Run: ``flock /tmp/frugal-measure.lock python benchmarks/startup.py --before /tmp/before/src --rounds 3``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from frugalvision.threads import apply_thread_policy

COMMANDS = {
    "frugal list": ["list"],
    "frugal --help": ["--help"],
    "frugal run baseline --help (cold)": ["run", "baseline", "--help"],
    "frugal run deit3 --help (cold)": ["run", "deit3", "--help"],
}


def _run(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command} failed")
    return time.perf_counter() - start, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="src folder of the 'before' tree")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    apply_thread_policy()
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    trees = {"before": {**base, "PYTHONPATH": str(args.before.resolve())}, "after": base}
    cache = Path(tempfile.mkdtemp(prefix="frugal-help-"))
    jobs = [(tree, label, argv) for tree in trees for label, argv in COMMANDS.items()]
    jobs += [("after", "frugal run baseline --help (cached)", ["run", "baseline", "--help"])]
    jobs += [("-", "python -c 'import torch'", None)]
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {(tree, label): [] for tree, label, _ in jobs}
    rng = random.Random(0)
    _run(
        [sys.executable, "-m", "frugalvision.cli", "run", "baseline", "--help"],
        {**base, "FRUGALVISION_CACHE": str(cache)},
    )
    for _ in range(args.rounds):
        rng.shuffle(jobs)
        for tree, label, argv in jobs:
            if argv is None:
                samples[(tree, label)].append(_run([sys.executable, "-c", "import torch"], base))
                continue
            env = dict(trees[tree])
            cached = "(cached)" in label
            env["FRUGALVISION_CACHE"] = str(cache) if cached else tempfile.mkdtemp(prefix="frugal-cold-")
            samples[(tree, label)].append(_run([sys.executable, "-m", "frugalvision.cli", *argv], env))
    report = {
        f"{tree}: {label}": {
            "wall_s": statistics.median(w for w, _ in values),
            "cpu_s": statistics.median(c for _, c in values),
            "rounds": len(values),
        }
        for (tree, label), values in sorted(samples.items())
    }
    report["loadavg_end"] = list(os.getloadavg())
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
