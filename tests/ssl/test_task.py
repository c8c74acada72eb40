"""SemiSupervisedTask through the engine: every framework trains, FixMatch's schedule, exact resume of the teacher."""

import math
import shutil
from dataclasses import replace

import pytest
import torch
from torch import nn

from frugalvision.engine import Engine, FabricConfig
from frugalvision.errors import ConfigError
from frugalvision.ssl import (
    CutMix,
    FixMatch,
    MeanTeacher,
    SemanticMix,
    SemiSupervisedTask,
    Supervised,
    TensorDictDataset,
    composite_mix,
)


def _data(n, seed):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(3, (n,), generator=gen)
    images = torch.rand(n, 3, 8, 8, generator=gen) * 0.2
    images[torch.arange(n), labels] += 0.6  # the class is the brightest channel
    alpha = torch.rand(n, 1, 8, 8, generator=gen)
    return TensorDictDataset(
        {"image": images, "label": labels, "alpha": alpha, "foreground": images, "background": torch.rand(n, 3, 8, 8)}
    )


def _model():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 3))  # fmt: skip


def _engine():
    return Engine(FabricConfig(accelerator="cpu"), progress=False)


@pytest.mark.parametrize(
    "framework, plugin",
    [
        (Supervised(), None),
        (Supervised(mu=2), SemanticMix(composite_mix)),
        (MeanTeacher(mu=2, rampup=3), CutMix()),
        (FixMatch(mu=2, threshold=0.5), SemanticMix(composite_mix)),
    ],
    ids=["supervised", "supervised-composite", "mean-teacher-cutmix", "fixmatch-composite"],
)
def test_every_framework_trains_through_the_engine(framework, plugin):
    task = SemiSupervisedTask(_model, _data(12, 0), _data(48, 1), framework, plugin, {"test": _data(30, 2)})
    loop = task.loop(labeled_batch=6, max_steps=4, lr=0.05, weight_decay=5e-4, eval_every=0, ckpt_every_s=0)
    result = _engine().fit(task, loop)
    assert result.steps == 4 and 0.0 <= result.metrics["test"]["top1"] <= 1.0
    assert all(math.isfinite(row["loss"]) for row in result.history if "loss" in row)


def test_fixmatch_learning_rate_follows_cos_7_pi_over_16(monkeypatch):
    task = SemiSupervisedTask(_model, _data(12, 0), _data(48, 1), FixMatch(mu=2), None)
    seen = []
    step_fn = task.training_step

    def spy(model, batch, step):
        out = step_fn(model, batch, step)
        seen.append((step, task._optimizer.param_groups[0]["lr"]))
        return out

    monkeypatch.setattr(task, "training_step", spy)
    _engine().fit(task, task.loop(labeled_batch=6, max_steps=5, lr=0.03, weight_decay=0.0, ckpt_every_s=0))
    for step, lr in seen:
        assert lr == pytest.approx(0.03 * math.cos(7 * math.pi * step / (16 * 5)))


def test_own_schedule_needs_a_constant_loop():
    task = SemiSupervisedTask(_model, _data(12, 0), _data(48, 1), FixMatch(mu=2), None)
    loop = replace(task.loop(labeled_batch=6, max_steps=3), schedule="cosine")
    with pytest.raises(ConfigError, match="constant"):
        _engine().fit(task, loop)


def test_mean_teacher_resumes_exactly(tmp_path):
    def run(folder, resume):
        task = SemiSupervisedTask(_model, _data(12, 0), _data(48, 1), MeanTeacher(mu=2, rampup=2), CutMix())
        loop = task.loop(labeled_batch=6, max_steps=6, lr=0.05, weight_decay=2e-4, ckpt_every=3, ckpt_every_s=0)
        _engine().fit(task, loop, run_dir=folder, resume=resume)
        return task.framework.teacher.state_dict()

    straight = run(tmp_path / "a", False)
    run(tmp_path / "b", False)
    for path in sorted((tmp_path / "b" / "checkpoints").iterdir()):  # back to the state of a run killed at step 3
        if path.name != "step_00000003":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    resumed = run(tmp_path / "b", True)
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0)


def test_bad_datasets_are_refused():
    with pytest.raises(ConfigError, match="non-empty"):
        SemiSupervisedTask(_model, _data(12, 0).subset(torch.tensor([], dtype=torch.long)), _data(4, 1), FixMatch())
