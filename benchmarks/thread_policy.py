"""Thread policy by measurement: torch CPU training steps under 1 vs 2 threads and OpenMP wait policies.

The OpenMP wait policy is read once, when torch loads libgomp, so every configuration is its own worker process
(started once, kept warm). The parent interleaves the configurations in shuffled rounds: in each round every worker
runs each workload once, one worker at a time, while the others wait on a pipe (asleep). A load level adds that many
spinning processes (``while True: pass``) for the duration of the level: a controlled stand-in for the other jobs of
a shared machine. ``--nice -20`` (root) runs workers and spinners above the machine's other processes, so that level
0 approximates an idle machine and level L adds exactly L competitors.

Run: ``flock /tmp/frugal-measure.lock python benchmarks/thread_policy.py --loads 0 2 6 --nice -20 --out t.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {
    "1 thread": {"threads": 1, "policy": None},
    "2 threads, default policy": {"threads": 2, "policy": None},
    "2 threads, PASSIVE": {"threads": 2, "policy": "PASSIVE"},
}
REFERENCE = "1 thread"


# ----------------------------------------------------------------------------------------------------- worker side
def _workloads() -> dict[str, tuple[object, int]]:
    """name -> (zero-argument training step, images per step): models and batches of the standard presets."""
    import torch
    from torch import nn

    from frugalvision.nn import cifar_resnet, small_vit

    torch.manual_seed(0)
    gray = torch.rand(64, 1, 28, 28)
    labels = torch.randint(0, 10, (64,))

    def step_of(model: nn.Module, images: torch.Tensor) -> object:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step() -> None:
            loss = nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step

    vit = small_vit(img_size=28, patch_size=7, in_chans=1, num_classes=10, embed_dim=64, depth=4, num_heads=4)
    wider = small_vit(img_size=32, patch_size=4, in_chans=3, num_classes=10, embed_dim=192, depth=6, num_heads=3)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    return {
        "mlp (784-128-10, b64)": (step_of(mlp, gray), 64),
        "baseline ViT (d64 x4, 28px, b64)": (step_of(vit, gray), 64),
        "ResNet-20 w16 (28px, b64)": (step_of(cifar_resnet(20, 16, 1, 10), gray), 64),
        "ViT-Ti-like (d192 x6, 32px/4, b64)": (step_of(wider, torch.rand(64, 3, 32, 32)), 64),
    }


def worker(threads: int, target_s: float) -> None:
    """Build the workloads, calibrate steps per call (~target_s at start), then answer ``name`` lines with seconds."""
    import torch

    torch.set_num_threads(threads)
    workloads = _workloads()
    steps: dict[str, int] = {}
    for name, (step, _) in workloads.items():
        for _ in range(2):
            step()
        start = time.perf_counter()
        step()
        steps[name] = max(1, round(target_s / max(time.perf_counter() - start, 1e-4)))
    print(json.dumps({"ready": steps, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        name = line.strip()
        if not name:
            break
        step, _ = workloads[name]
        start = time.perf_counter()
        for _ in range(steps[name]):
            step()
        print(json.dumps({"seconds": time.perf_counter() - start, "steps": steps[name]}), flush=True)


# ----------------------------------------------------------------------------------------------------- parent side
def _start(config: dict, nice: int, target_s: float) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in {"OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT"}}
    if config["policy"]:
        env["OMP_WAIT_POLICY"] = config["policy"]
    command = [sys.executable, __file__, "--worker", str(config["threads"]), "--target-s", str(target_s)]
    return subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=(lambda: os.nice(nice)) if nice else None,
    )


def _spinners(count: int, nice: int) -> list[subprocess.Popen]:
    return [
        subprocess.Popen(
            [sys.executable, "-c", "while True: pass"], preexec_fn=(lambda: os.nice(nice)) if nice else None
        )
        for _ in range(count)
    ]


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q25, _, q75 = statistics.quantiles(values, n=4, method="inclusive")
    return q25, q75


def measure_level(load: int, rounds: int, nice: int, target_s: float, seed: int, configs: list[str]) -> dict:
    """Interleaved rounds of the configurations and every workload with ``load`` spinners running."""
    workers = {name: _start(CONFIGS[name], nice, target_s) for name in configs}
    ready = {name: json.loads(proc.stdout.readline()) for name, proc in workers.items()}
    spinners = _spinners(load, nice)
    rng = random.Random(seed)
    names = list(workers)
    workload_names = list(next(iter(ready.values()))["ready"])
    per_image: dict[str, dict[str, list[float]]] = {w: {c: [] for c in names} for w in workload_names}
    load_before = os.getloadavg()[0]
    try:
        for _ in range(rounds):
            for workload in workload_names:
                order = names[:]
                rng.shuffle(order)
                for name in order:
                    workers[name].stdin.write(workload + "\n")
                    workers[name].stdin.flush()
                    answer = json.loads(workers[name].stdout.readline())
                    per_image[workload][name].append(answer["seconds"] / answer["steps"] / 64 * 1e3)
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()
        for proc in workers.values():
            proc.stdin.close()
            proc.wait()
    result = {"load_spinners": load, "loadavg_1min_start": load_before, "loadavg_1min_end": os.getloadavg()[0]}
    for workload, by_config in per_image.items():
        rows = {}
        for name, values in by_config.items():
            ratios = [ref / own for own, ref in zip(values, by_config[REFERENCE], strict=True)]  # speed-up vs 1
            q25, q75 = _quartiles(ratios)
            rows[name] = {
                "img_per_s": 1e3 / statistics.median(values),
                "speedup_vs_1_thread": statistics.median(ratios),
                "speedup_q25": q25,
                "speedup_q75": q75,
                "worst_img_per_s": 1e3 / max(values),
            }
        result[workload] = rows
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--loads", type=int, nargs="+", default=[0, 2, 6], help="spinner counts, one level each")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--nice", type=int, default=0, help="niceness of workers and spinners (-20 needs root)")
    parser.add_argument("--target-s", type=float, default=0.25, help="seconds of one timed call on an idle core")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS), help="(1 thread first)")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.target_s)
        return
    report = {
        "machine": {"cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg()},
        "nice": args.nice,
        "rounds": args.rounds,
        "levels": [
            measure_level(load, args.rounds, args.nice, args.target_s, seed, args.configs)
            for seed, load in enumerate(args.loads)
        ],
    }
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text)
    for level in report["levels"]:
        print(f"== {level['load_spinners']} spinner(s), loadavg {level['loadavg_1min_start']:.1f}")
        for workload, rows in level.items():
            if isinstance(rows, dict):
                cells = "; ".join(
                    f"{name}: {row['img_per_s']:.0f} img/s (x{row['speedup_vs_1_thread']:.2f} "
                    f"[{row['speedup_q25']:.2f}, {row['speedup_q75']:.2f}])"
                    for name, row in rows.items()
                )
                print(f"  {workload}: {cells}")


if __name__ == "__main__":
    main()
