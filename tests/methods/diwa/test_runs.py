"""Runs through the engine: linear probing, best-checkpoint tracking, resume, member records, the experiment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import Subset

from frugalvision.data import ArrayDataset, ImageArrays
from frugalvision.engine import Engine, FabricConfig
from frugalvision.errors import ConfigError
from frugalvision.methods.diwa.averaging import average_state_dicts, init_fingerprint
from frugalvision.methods.diwa.members import linear_probe, load_members, save_member, train_member
from frugalvision.methods.diwa.model import gn_cnn
from frugalvision.methods.diwa.splits import domain_splits
from frugalvision.methods.diwa.task import DiwaTask


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(FabricConfig(accelerator="cpu"), progress=False)


def _domains(n_domains: int = 2, per: int = 30):
    generator = torch.Generator().manual_seed(0)
    train, val = [], []
    for d in range(n_domains):
        labels = torch.arange(per) % 3
        images = torch.rand(per, 1, 8, 8, generator=generator) * 80 + labels.view(-1, 1, 1, 1) * 60 + d * 10
        dataset = ArrayDataset(ImageArrays(images.to(torch.uint8), labels, list("abc"), f"d{d}"))
        split = domain_splits([per], d)[0]
        train.append(Subset(dataset, split.train.tolist()))
        val.append(Subset(dataset, split.val.tolist()))
    return train, val


def _net():
    return gn_cnn(1, 3, width=8)


def _init_state(seed: int = 0):
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in _net().state_dict().items()}


class CountingTask(DiwaTask):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps_seen: list[int] = []
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}
        self.crash_at = -1

    def on_step_end(self, model, step):
        self.steps_seen.append(step)
        if step == self.crash_at:
            raise KeyboardInterrupt("simulated kill")
        self.snapshots[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        super().on_step_end(model, step)


@pytest.mark.parametrize("steps", [0, 7])
def test_linear_probe_runs_exactly_the_configured_steps_on_the_head_only(engine, steps):
    train, _ = _domains()
    init = _init_state()
    task = CountingTask(_net, train, per_domain=4, max_steps=99, init_state=init, lr=1e-2)
    state = linear_probe(engine, task, steps)
    assert len(task.steps_seen) == steps
    for key, value in init.items():
        if key.startswith("classifier.") and steps:
            assert not torch.equal(state[key], value), key
        else:
            assert torch.equal(state[key], value), key


def test_best_checkpoint_is_the_weights_at_the_best_validation_step(engine):
    train, val = _domains()
    task = CountingTask(
        _net,
        train,
        val,
        per_domain=4,
        max_steps=12,
        init_state=_init_state(),
        lr=3e-2,
        select_every=3,
        dropout=0.1,
        ma_start=5,
    )
    record = train_member(engine, task, "m", seed=1, run_dir=None)
    steps = [s for s, _ in task.val_history]
    assert steps == [3, 6, 9, 12]
    scores = [score for _, score in task.val_history]
    best_step = steps[scores.index(max(scores))]  # first maximum: later ties do not replace it
    assert record.best_step == best_step and record.val == max(scores)
    for key, value in task.snapshots[best_step].items():
        assert torch.equal(record.state[key], value), key
    expected_ma = {k: torch.stack([task.snapshots[s][k] for s in range(5, 13)]).double().mean(0) for k in record.state}
    for key, value in expected_ma.items():
        torch.testing.assert_close(record.ma_state[key].double(), value, rtol=0, atol=1e-6)


def test_killed_member_resumes_to_the_same_result(engine, tmp_path):
    train, val = _domains()

    def task():
        return CountingTask(
            _net,
            train,
            val,
            per_domain=4,
            max_steps=16,
            init_state=_init_state(),
            lr=3e-2,
            select_every=4,
            dropout=0.5,
            ma_start=2,
            ckpt_every=5,
        )

    reference = train_member(engine, task(), "ref", seed=3, run_dir=tmp_path / "ref")
    crashing = task()
    crashing.crash_at = 12
    with pytest.raises(KeyboardInterrupt):
        train_member(engine, crashing, "m", seed=3, run_dir=tmp_path / "m")
    resumed_task = task()
    resumed = train_member(engine, resumed_task, "m", seed=3, run_dir=tmp_path / "m", resume=True)
    assert resumed_task.steps_seen[0] == 11  # continued after the step-10 checkpoint
    assert resumed.best_step == reference.best_step and resumed.val == reference.val
    for key in reference.state:
        assert torch.equal(resumed.state[key], reference.state[key]), key
        assert torch.equal(resumed.ma_state[key], reference.ma_state[key]), key
    again = train_member(engine, task(), "m", seed=3, run_dir=tmp_path / "m", resume=True)  # complete: loaded
    assert torch.equal(again.state["classifier.weight"], reference.state["classifier.weight"])


def test_missing_or_corrupt_member_is_reported_by_name_and_the_rest_average(engine, tmp_path):
    train, val = _domains()
    init = _init_state()
    dirs = []
    for m in range(4):
        task = DiwaTask(_net, train, val, per_domain=4, max_steps=3, init_state=init, lr=1e-2, select_every=3)
        record = train_member(engine, task, f"member_{m}", seed=m, run_dir=tmp_path / f"member_{m}")
        assert record.fingerprint == init_fingerprint(init)
        dirs.append(tmp_path / f"member_{m}")
    (dirs[1] / "best.safetensors").write_bytes(b"garbage")
    (dirs[2] / "best.safetensors").unlink()
    records, failures = load_members(dirs)
    assert [r.name for r in records] == ["member_0", "member_3"]
    assert set(failures) == {"member_1", "member_2"}
    assert all(name in message for name, message in failures.items())
    merged = average_state_dicts([r.state for r in records], fingerprints=[r.fingerprint for r in records])
    assert set(merged) == set(init)
    other = records[0]
    other.fingerprint = "different"
    save_member(other, tmp_path / "other")
    with pytest.raises(ConfigError, match="different initialisations"):
        average_state_dicts([r.state for r in records], fingerprints=[other.fingerprint, records[1].fingerprint])


def test_smoke_experiment_writes_complete_results(tmp_path):
    from frugalvision.methods.diwa import experiment
    from frugalvision.report.schema import load_results

    config = experiment.PRESETS["smoke"]()
    config.out = str(tmp_path)
    doc = experiment.run(config)
    path = Path(tmp_path) / "diwa" / "results.json"
    assert load_results(path)["verdict"] == doc["verdict"] in ("supported", "not supported", "inconclusive")
    names = {row["name"] for row in doc["rows"]}
    for arm in experiment.ARMS:
        assert f"{arm}_M3" in names
    assert "control_random_inits" in names
    for row in doc["rows"]:
        assert all(v == v for v in row["metrics"].values())  # finite or at least not NaN
    for figure in doc["figures"]:
        assert (Path(tmp_path) / "diwa" / figure).is_file()
    details = json.loads((Path(tmp_path) / "diwa" / "details.json").read_text())
    assert len(details["trials"][0]["members"]) == 3
    assert doc["verdict"] == experiment.compute_verdict(doc["rows"], 3, [0])
    (Path(tmp_path) / "diwa" / "runs" / "trial_0" / "member_01" / "best.safetensors").write_bytes(b"corrupt")
    config.resume = True  # complete members are reloaded, the corrupt one is retrained: same numbers
    again = experiment.run(config)
    assert again["rows"] == doc["rows"]


def test_verdict_rule_on_crafted_rows():
    from frugalvision.methods.diwa.experiment import compute_verdict

    def rows(diwa, erm, control=0.05):
        out = []
        for seed, (d, e) in enumerate(zip(diwa, erm)):
            out += [
                {"name": "diwa_uniform_M5", "seed": seed, "metrics": {"ood_acc": d}},
                {"name": "diwa_restricted_M5", "seed": seed, "metrics": {"ood_acc": d - 0.01}},
                {"name": "erm_best_M5", "seed": seed, "metrics": {"ood_acc": e}},
                {
                    "name": "control_random_inits",
                    "seed": seed,
                    "metrics": {"ood_acc": control, "worst_member_ood_acc": 0.4},
                },
            ]
        return out

    assert compute_verdict(rows([0.5, 0.5, 0.4], [0.45, 0.45, 0.45]), 5, [0, 1, 2]) == "supported"
    assert compute_verdict(rows([0.5, 0.5, 0.4], [0.45, 0.45, 0.45], control=0.3), 5, [0, 1, 2]) == "inconclusive"
    assert compute_verdict(rows([0.4, 0.4, 0.4], [0.45, 0.45, 0.45]), 5, [0, 1, 2]) == "not supported"
    assert compute_verdict(rows([0.5, 0.4, 0.4], [0.45, 0.45, 0.45]), 5, [0, 1, 2]) == "inconclusive"


def test_sharded_sweep_then_resume_equals_a_single_process_run(tmp_path):
    from frugalvision.methods.diwa import experiment
    from frugalvision.methods.diwa.sweep import main as sweep_main

    def config(out):
        c = experiment.PRESETS["smoke"]()
        c.out, c.seeds, c.members, c.ensemble_sizes, c.steps, c.pretrain_steps = str(out), (0, 1), 2, (2,), 10, 30
        return c

    reference = experiment.run(config(tmp_path / "single"))
    with pytest.raises(ConfigError, match="init stage first"):
        sweep_main(["--stage", "train", "--preset", "smoke", "--out", str(tmp_path / "sharded"), "--num-shards", "3"])
    init_path = experiment.prepare_init(config(tmp_path / "sharded"))
    assert init_path.read_bytes() == (tmp_path / "single" / "diwa" / "runs" / "init.safetensors").read_bytes()
    shards = [experiment.train_shard(config(tmp_path / "sharded"), k, 3) for k in range(3)]
    expected = [f"trial_{t}/{kind}_{i:02d}" for t in (0, 1) for kind in ("member", "control") for i in range(2)]
    assert sorted(sum(shards, [])) == sorted(expected) and all(shards)
    merged = config(tmp_path / "sharded")
    merged.resume = True
    assert experiment.run(merged)["rows"] == reference["rows"]
