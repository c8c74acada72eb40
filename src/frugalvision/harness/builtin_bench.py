"""The framework's own benchmarks, run by ``frugal bench`` next to every method's: engine overhead and start-up.

- ``engine``: ``Engine.fit`` on a tiny MLP against a bare PyTorch loop doing the same work (model build, AdamW,
  shuffled in-memory batches), interleaved in shuffled rounds. A tiny model is the worst case: any per-step cost of
  the engine (data fetching, reseeding, scheduling, logging) shows at full size.
- ``startup``: ``frugal list``, ``frugal --help`` and ``frugal run baseline --help`` (rendered once, then from the
  help cache) as fresh processes against ``python -c "import torch"`` (what any torch program pays first),
  interleaved; then one smoke run of the baseline as a user starts it, with its wall time, its in-run compute and
  its peak memory (resident set size of the process, from ``wait4``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from frugalvision.harness.timing import benchmark_result, interleaved_timings, ratio_entry

__all__ = ["engine_overhead", "run_process", "startup"]

#: the ratio issue 21 asks of the engine on a tiny MLP
ENGINE_GOAL = 1.2


def engine_overhead(out_dir: Path, steps: int = 200, rounds: int = 15, warmup: int = 2) -> dict[str, Any]:
    """``Engine.fit`` vs a bare loop on a 784-128-10 MLP, batch 64, 8,192 in-memory samples, ``steps`` steps each.

    Both arms build the model and AdamW (lr 1e-3) and run ``steps`` optimiser steps over reshuffled epochs; the
    engine runs without checkpoints, logging, evaluation or progress bar (a user's choice), and keeps its
    per-step guarantees (loss finiteness check, per-step reseeding for exact resumption, learning-rate schedule).
    """
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    from frugalvision.engine import Engine, FabricConfig, LoopConfig, Task

    generator = torch.Generator().manual_seed(0)
    inputs, labels = torch.randn(8192, 784, generator=generator), torch.randint(0, 10, (8192,), generator=generator)
    batch = 64

    def build() -> nn.Module:
        return nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))

    class MlpTask(Task):
        def build_model(self) -> nn.Module:
            return build()

        def build_optimizer(self, model: nn.Module, loop: LoopConfig) -> torch.optim.Optimizer:
            return torch.optim.AdamW(model.parameters(), lr=loop.lr)

        def train_dataset(self) -> TensorDataset:
            return TensorDataset(inputs, labels)

        def training_step(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, float]]:
            images, targets = batch
            return nn.functional.cross_entropy(model(images), targets), {}

    def bare() -> None:
        torch.manual_seed(0)
        model = build()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        per_epoch = len(inputs) // batch
        order = torch.randperm(len(inputs))
        for step in range(steps):
            if step and step % per_epoch == 0:
                order = torch.randperm(len(inputs))
            index = order[(step % per_epoch) * batch : (step % per_epoch + 1) * batch]
            loss = nn.functional.cross_entropy(model(inputs[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    engine = Engine(FabricConfig(accelerator="cpu"), progress=False)
    loop = LoopConfig(max_steps=steps, batch_size=batch, lr=1e-3, schedule="constant", log_every=0, ckpt_every_s=0)
    task = MlpTask()
    timings = interleaved_timings({"engine": lambda: engine.fit(task, loop), "bare": bare}, rounds, warmup)
    entry = ratio_entry(
        timings,
        "engine",
        "bare",
        name=f"training loop overhead, tiny MLP ({steps} steps of {batch})",
        arm_label="Engine.fit",
        peer_label="bare PyTorch loop",
        goal=ENGINE_GOAL,
        steps=steps,
    )
    per_step = {key: entry[f"{key}_ms"] / steps for key in ("arm", "peer")}
    return benchmark_result(
        [entry],
        engine_ms_per_step=per_step["arm"],
        bare_ms_per_step=per_step["peer"],
        overhead_ms_per_step=per_step["arm"] - per_step["peer"],
    )


# ------------------------------------------------------------------------------------------------------ start-up
def run_process(command: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> dict[str, Any]:
    """Run a command to its end; return its wall seconds, exit code, peak resident memory (MiB) and output tail.

    The peak memory is the child's own ``ru_maxrss`` (``os.wait4``), not the maximum over every child so far.
    """
    start = time.perf_counter()
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(list(command), stdout=output, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        output.seek(0)
        tail = output.read()[-2000:].decode(errors="replace")
    return {"wall_s": wall, "returncode": process.returncode, "peak_rss_mib": usage.ru_maxrss / 1024, "tail": tail}


def _timed(command: Sequence[str], env: dict[str, str]) -> Callable[[], None]:
    def run() -> None:
        result = run_process(command, env)
        if result["returncode"] != 0:
            raise RuntimeError(f"{' '.join(command)} exited {result['returncode']}: {result['tail'][-300:]}")

    return run


def startup(out_dir: Path, rounds: int = 5, method: str = "baseline") -> dict[str, Any]:
    """Start-up cost of the command line, and one smoke run of ``method`` with its peak memory.

    Args:
        out_dir: folder for the smoke run's outputs and a private help cache (both removed afterwards).
        rounds: interleaved rounds of the short commands.
        method: the experiment whose ``run --help`` and smoke run are timed.
    """
    work = Path(out_dir) / "startup-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {**os.environ, "FRUGALVISION_CACHE": str(work / "cache")}
    frugal = [sys.executable, "-m", "frugalvision.cli"]
    first_help = run_process([*frugal, "run", method, "--help"], env)  # renders and caches the page
    arms = {
        "list": _timed([*frugal, "list"], env),
        "help": _timed([*frugal, "--help"], env),
        "run_help": _timed([*frugal, "run", method, "--help"], env),
        "torch": _timed([sys.executable, "-c", "import torch"], env),
    }
    timings = interleaved_timings(arms, rounds=rounds, warmup=1)
    labels = {"list": "frugal list", "help": "frugal --help", "run_help": f"frugal run {method} --help (cached)"}
    ratios = [
        ratio_entry(timings, arm, "torch", name="start-up (fresh process)", arm_label=label, peer_label="import torch")
        for arm, label in labels.items()
    ]
    smoke = run_process(
        [*frugal, "run", method, "--preset", "smoke", "--out", str(work / "runs"), "--no-progress"], env
    )
    results_file = work / "runs" / method / "results.json"
    compute_s = json.loads(results_file.read_text())["wall_s"] if results_file.is_file() else None
    shutil.rmtree(work, ignore_errors=True)
    if smoke["returncode"] != 0:
        raise RuntimeError(f"the {method} smoke run failed: {smoke['tail'][-500:]}")
    seconds = {arm: timing.median_ms / 1e3 for arm, timing in timings.items()}
    return benchmark_result(
        ratios,
        seconds=seconds,
        run_help_first_s=first_help["wall_s"],
        smoke_run={
            "method": method,
            "wall_s": smoke["wall_s"],
            "compute_s": compute_s,
            "outside_compute_s": None if compute_s is None else smoke["wall_s"] - compute_s,
            "peak_rss_mib": smoke["peak_rss_mib"],
        },
    )
