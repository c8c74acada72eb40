"""LaRa weight selection (issue 19): the official code keeps the weights of the best validation IoU, not the last."""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from pathlib import Path

import torch

from frugalvision.harness import run_experiment
from frugalvision.methods.lara.config import smoke, toy_loop
from frugalvision.methods.lara.experiment import EXPERIMENT
from frugalvision.methods.lara.task import BevSegmentation


def _task(select_key: tuple[str, str] | None = ("val", "iou_all")) -> BevSegmentation:
    return BevSegmentation(lambda: torch.nn.Linear(2, 2), None, {}, None, select_key=select_key)


def test_on_evaluate_keeps_a_copy_of_the_best_weights_and_round_trips_its_state() -> None:
    task, layer, kept = _task(), torch.nn.Linear(2, 2), {}
    for step, score in enumerate([0.2, 0.5, float("nan"), 0.5, 0.1], start=1):
        with torch.no_grad():
            layer.weight.fill_(float(step))
        task.on_evaluate(layer, step, {"val": {"iou_all": score}})
        if step == 2:
            kept = {k: v.clone() for k, v in layer.state_dict().items()}
    assert (task.best_step, task.best_score) == (2, 0.5)  # NaN skipped, ties keep the earlier weights
    assert all(torch.equal(task.best_weights[k], kept[k]) for k in kept)  # a copy, not the live tensors
    other = _task()
    other.load_state_dict(task.state_dict())
    assert (other.best_step, other.best_score) == (2, 0.5)
    assert all(torch.equal(other.best_weights[k], kept[k]) for k in kept)
    last = _task(select_key=None)
    last.on_evaluate(layer, 1, {"val": {"iou_all": 0.9}})
    assert last.best_weights == {} and last.best_step == -1


def _val_history(folder: Path) -> list[tuple[int, float]]:
    with (folder / "metrics.csv").open() as handle:
        return [(int(float(r["step"])), float(r["val/iou_all"])) for r in csv.DictReader(handle) if r["val/iou_all"]]


def test_reported_weights_are_those_of_the_best_validation_evaluation(tmp_path: Path) -> None:
    config = replace(
        smoke(),
        out=str(tmp_path),
        progress=False,
        arms=("lara", "lift"),
        train_scenes=8,
        val_scenes=4,
        test_scenes=4,
        latency_runs=1,
        figure_scenes=0,
        loop=toy_loop(4, warmup_steps=0, log_every=1, eval_every=1, lr=1e-2),
    )
    rows = run_experiment(EXPERIMENT, config)["rows"]
    metrics = next(r["metrics"] for r in rows if r["name"] == "lara")
    history = _val_history(tmp_path / "lara" / "runs" / "lara-seed0")
    assert [s for s, _ in history] == [1, 2, 3, 4]
    best_step, best_value = max(history, key=lambda e: (e[1], -e[0]))  # the first of equal maxima
    assert metrics["selected_step"] == best_step
    assert math.isclose(metrics["val_iou_all"], best_value, rel_tol=1e-6, abs_tol=1e-9)  # re-evaluated, same score
    last = run_experiment(EXPERIMENT, replace(config, out=str(tmp_path / "last"), select_best=False))["rows"]
    assert next(r["metrics"] for r in last if r["name"] == "lara")["selected_step"] == 4
