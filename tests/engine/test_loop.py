import math

import pytest
import torch
from torch import nn

from frugalvision.engine import Engine, FabricConfig, GlobalBatchSampler, LoopConfig, WeightEma, warmup_cosine_lr
from frugalvision.errors import ConfigError, TrainingDivergedError
from tests.engine.toy import ToyTask


class NoDropoutTask(ToyTask):
    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(self.dim, 16), nn.Tanh(), nn.Linear(16, self.classes))


def _engine():
    return Engine(FabricConfig(accelerator="cpu"), progress=False)


def test_training_reduces_loss_and_reports_metrics():
    result = _engine().fit(ToyTask(), LoopConfig(max_steps=60, batch_size=16, lr=0.02, log_every=1))
    losses = [row["loss"] for row in result.history if "loss" in row]
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10
    assert result.steps == 60 and 0.0 <= result.metrics["val"]["top1"] <= 1.0


def test_gradient_accumulation_matches_a_large_batch():
    small = _engine().fit(NoDropoutTask(), LoopConfig(max_steps=6, batch_size=8, grad_accum=2, lr=0.05, seed=3))
    large = _engine().fit(NoDropoutTask(), LoopConfig(max_steps=6, batch_size=16, grad_accum=1, lr=0.05, seed=3))
    for a, b in zip(small.model.state_dict().values(), large.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_same_seed_same_weights_different_seed_different_weights():
    runs = [_engine().fit(ToyTask(), LoopConfig(max_steps=5, batch_size=8, seed=s)) for s in (1, 1, 2)]
    w = [next(iter(r.model.state_dict().values())) for r in runs]
    assert torch.equal(w[0], w[1]) and not torch.equal(w[0], w[2])


def test_schedule_matches_closed_form():
    lr = partial = dict(max_steps=100, lr=1.0, warmup_steps=10, warmup_start_lr=0.1, min_lr=0.01)
    assert warmup_cosine_lr(0, **partial) == pytest.approx(0.1)
    assert warmup_cosine_lr(5, **partial) == pytest.approx(0.1 + 0.9 * 0.5)
    assert warmup_cosine_lr(10, **partial) == pytest.approx(1.0)
    expected = 0.01 + 0.5 * 0.99 * (1 + math.cos(math.pi * 45 / 90))
    assert warmup_cosine_lr(55, **lr) == pytest.approx(expected)
    assert warmup_cosine_lr(100, **partial) == pytest.approx(0.01)


def test_ema_matches_closed_form():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = WeightEma(model, decay=0.9)
    for value in (2.0, 4.0):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model)
    expected = 0.9 * (0.9 * 1.0 + 0.1 * 2.0) + 0.1 * 4.0
    torch.testing.assert_close(ema.module.weight, torch.full((1, 2), expected))


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path):
    loop = LoopConfig(max_steps=20, batch_size=8, ckpt_every=5)
    with pytest.raises(TrainingDivergedError) as info:
        _engine().fit(ToyTask(nan_at=7), loop, run_dir=tmp_path)
    message = str(info.value)
    assert "step 7" in message and "step_00000005" in message and "\n" not in message
    assert (tmp_path / "checkpoints" / "step_00000005" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "field, value, needle",
    [("lr", -1.0, "loop.lr"), ("batch_size", 0, "loop.batch_size"), ("ema_decay", 1.5, "loop.ema_decay")],
)
def test_invalid_loop_values_name_the_field(field, value, needle):
    with pytest.raises(ConfigError, match=needle):
        LoopConfig(**{field: value}).validate()


def test_batch_larger_than_dataset_is_a_config_error():
    with pytest.raises(ConfigError, match="exceeds the training set"):
        _engine().fit(ToyTask(n=10), LoopConfig(max_steps=2, batch_size=32))


def test_sampler_ranks_partition_the_single_process_batches():
    single = GlobalBatchSampler(50, batch_size=6, seed=4, rank=0, world_size=1)
    ranks = [GlobalBatchSampler(50, batch_size=3, seed=4, rank=r, world_size=2) for r in range(2)]
    for epoch in (0, 3):
        single.set_epoch(epoch)
        for sampler in ranks:
            sampler.set_epoch(epoch)
        for whole, part0, part1 in zip(single, *ranks):
            assert sorted(whole) == sorted(part0 + part1)
            assert part0 == whole[0::2] and part1 == whole[1::2]


def test_sampler_resumes_mid_epoch():
    sampler = GlobalBatchSampler(40, batch_size=4, seed=1)
    sampler.set_epoch(2)
    batches = list(sampler)
    sampler.set_epoch(2, start_batch=3)
    assert list(sampler) == batches[3:] and len(sampler) == len(batches) - 3


def test_run_logs_are_written_as_csv(tmp_path):
    loop = LoopConfig(max_steps=12, batch_size=8, log_every=4)
    _engine().fit(ToyTask(), loop, run_dir=tmp_path)
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[0] == "step" and "loss" in header and "val/top1" in header
    assert [line.split(",")[0] for line in lines[1:4]] == ["4.0", "8.0", "12.0"]


def test_evaluation_matches_a_direct_loop_on_an_odd_sized_set():
    task = ToyTask(n=37)
    engine = _engine()
    model = task.build_model().eval()
    metrics = engine.evaluate(task, model, {"all": task.train_dataset()}, batch_size=5)["all"]
    with torch.no_grad():
        expected = (model(task.x).argmax(-1) == task.y).float().mean().item()
    assert metrics["top1"] == pytest.approx(expected)


def test_on_evaluate_sees_each_periodic_and_the_final_evaluation_of_the_ema_model():
    class Recording(ToyTask):
        def __init__(self):
            super().__init__()
            self.calls = []

        def on_evaluate(self, model, step, metrics):
            self.calls.append((step, metrics["val"]["top1"], model))

    task = Recording()
    result = _engine().fit(task, LoopConfig(max_steps=10, batch_size=16, lr=0.05, eval_every=4, ema_decay=0.9))
    assert [step for step, _, _ in task.calls] == [4, 8, 10]
    assert task.calls[-1][1] == result.metrics["val"]["top1"]
    assert all(model is result.ema_model for _, _, model in task.calls)


def test_a_run_checkpoints_every_few_seconds_as_well_as_every_n_steps(tmp_path):
    loop = LoopConfig(max_steps=12, batch_size=16, ckpt_every=0, ckpt_every_s=0.05, keep_checkpoints=20, log_every=1)
    Engine(FabricConfig(accelerator="cpu"), progress=False).fit(ToyTask(sleep_s=0.02), loop, run_dir=tmp_path)
    steps = sorted(int(p.name.split("_")[1]) for p in (tmp_path / "checkpoints").glob("step_*"))
    assert len(steps) >= 3 and steps[-1] == 12  # time-based ones before the final one
