"""Runs through the engine: linear probing, best-checkpoint tracking, resume, members, the experiment on the harness."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import Subset

from frugalvision.data import ArrayDataset, ImageArrays
from frugalvision.engine import Engine, FabricConfig, latest_checkpoint, load_weights
from frugalvision.errors import ConfigError
from frugalvision.methods.diwa import average, train_members
from frugalvision.methods.diwa.averaging import average_state_dicts, init_fingerprint
from frugalvision.methods.diwa.hparams import MildSpace, sample_hparams
from frugalvision.methods.diwa.members import linear_probe, load_members, save_member, train_member
from frugalvision.methods.diwa.model import gn_cnn
from frugalvision.methods.diwa.splits import domain_splits
from frugalvision.methods.diwa.task import DiwaTask


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(FabricConfig(accelerator="cpu"), progress=False)


def _fit(engine, run_dir=None, ckpt_every=0):
    def fit(task, loop):
        loop = dataclasses.replace(loop, ckpt_every=ckpt_every, ckpt_every_s=0)
        resume = run_dir is not None and latest_checkpoint(Path(run_dir) / "checkpoints") is not None
        return engine.fit(task, loop, run_dir=run_dir, resume=resume)

    return fit


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
    state = linear_probe(task, steps, fit=_fit(engine))
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
    record = train_member(task, seed=1, fit=_fit(engine))
    steps = [s for s, _ in task.val_history]
    assert steps == [3, 6, 9, 12]
    scores = [score for _, score in task.val_history]
    best_step = steps[scores.index(max(scores))]  # first maximum: later ties do not replace it
    assert record.best_step == best_step and record.val == max(scores)
    for key, value in task.snapshots[best_step].items():
        assert torch.equal(record.state[key], value), key
    # ma_start=5 is the official ma_start_iter: the MA with the official alias fixed is the mean of w_4 .. w_12
    expected_ma = {k: torch.stack([task.snapshots[s][k] for s in range(4, 13)]).double().mean(0) for k in record.state}
    for key, value in expected_ma.items():
        torch.testing.assert_close(record.ma_state[key].double(), value, rtol=0, atol=1e-6)


def test_killed_member_resumes_from_its_checkpoint_to_the_same_result(engine, tmp_path):
    """The best weights, their score and the MA sums travel in the engine checkpoint (DiwaTask.state_dict)."""
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
        )

    reference = train_member(task(), seed=3, fit=_fit(engine, tmp_path / "ref", ckpt_every=5))
    crashing = task()
    crashing.crash_at = 12
    with pytest.raises(KeyboardInterrupt):
        train_member(crashing, seed=3, fit=_fit(engine, tmp_path / "m", ckpt_every=5))
    resumed_task = task()
    resumed = train_member(resumed_task, seed=3, fit=_fit(engine, tmp_path / "m", ckpt_every=5))
    assert resumed_task.steps_seen[0] == 11  # continued after the step-10 checkpoint
    assert resumed.best_step == reference.best_step and resumed.val == reference.val
    assert [step for step, _ in resumed_task.val_history] == [4, 8, 12, 16]  # restored from the checkpoint
    for key in reference.state:
        assert torch.equal(resumed.state[key], reference.state[key]), key
        assert torch.equal(resumed.ma_state[key], reference.ma_state[key]), key


def test_missing_or_corrupt_member_is_reported_by_name_and_the_rest_average(engine, tmp_path):
    train, val = _domains()
    init = _init_state()
    dirs = []
    for m in range(4):
        task = DiwaTask(_net, train, val, per_domain=4, max_steps=3, init_state=init, lr=1e-2, select_every=3)
        record = train_member(task, seed=m, fit=_fit(engine), name=f"member_{m}")
        assert record.fingerprint == init_fingerprint(init)
        dirs.append(save_member(record, tmp_path / f"member_{m}"))
    (dirs[1] / "best.safetensors").write_bytes(b"garbage")
    (dirs[2] / "best.safetensors").unlink()
    records, failures = load_members(dirs)
    assert [r.name for r in records] == ["member_0", "member_3"]
    assert set(failures) == {"member_1", "member_2"}
    assert all(name in message for name, message in failures.items())
    merged = average_state_dicts([r.state for r in records], fingerprints=[r.fingerprint for r in records])
    assert set(merged) == set(init)
    with pytest.raises(ConfigError, match="different initialisations"):
        average_state_dicts([r.state for r in records], fingerprints=["different", records[1].fingerprint])


def test_train_members_draws_mild_hparams_and_own_data_orders_from_one_init(engine):
    train, val = _domains()
    init = _init_state()
    space = MildSpace().scaled(1e-2)
    members = train_members(
        _net, init, train, val, count=3, steps=4, per_domain=4, space=space, seed=5, select_every=2, fit=_fit(engine)
    )
    assert [m.name for m in members] == ["member_00", "member_01", "member_02"]
    assert {m.fingerprint for m in members} == {init_fingerprint(init)}
    for index, member in enumerate(members):
        hp = sample_hparams(index, seed=5, space=space)
        assert (member.hparams["lr"], member.hparams["dropout"]) == (hp.lr, hp.dropout)
    assert len({m.hparams["seed"] for m in members}) == 3
    assert not torch.equal(members[0].state["classifier.weight"], members[1].state["classifier.weight"])
    merged = average([m.state for m in members])
    expected = torch.stack([m.state["classifier.weight"] for m in members]).double().mean(0).float()
    torch.testing.assert_close(merged["classifier.weight"], expected, rtol=0, atol=1e-7)


# ------------------------------------------------------------------------------------------------ the experiment
def _tiny(out: Path):
    from frugalvision.methods.diwa.config import smoke

    return dataclasses.replace(
        smoke(),
        out=str(out),
        seeds=(0, 1),
        members=2,
        ensemble_sizes=(2,),
        steps=10,
        progress=False,
        diversity_members=2,
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from frugalvision.harness import run_experiment
    from frugalvision.methods.diwa.experiment import EXPERIMENT

    out = tmp_path_factory.mktemp("diwa")
    return out, run_experiment(EXPERIMENT, _tiny(out))


def test_the_experiment_writes_every_arm_from_the_saved_members_and_nothing_of_its_own(tiny_run):
    from frugalvision.methods.diwa.analysis import ARMS
    from frugalvision.report import load_results

    out, doc = tiny_run
    folder = out / "diwa"
    assert load_results(folder)["verdict"] == doc["verdict"] in ("supported", "not supported", "inconclusive")
    names = {row["name"] for row in doc["rows"]}
    assert {f"{arm}_M2" for arm in ARMS} <= names
    assert {"shared_init", "finetune_default", "scratch_default", "control_random_inits", "diwa_dagger_M4"} <= names
    files = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))  # the harness's run lock
    assert files == sorted(["cache", "config.yaml", "results.json", "runs", *doc["figures"]])
    assert [p.name for p in (folder / "cache").iterdir()][0].startswith("texture-features-")
    units = sorted(p.name for p in (folder / "runs").iterdir())
    assert units == [
        "member00-seed0",
        "member00-seed1",
        "member01-seed0",
        "member01-seed1",
        "scratch00-seed0",
        "scratch00-seed1",
        "scratch01-seed0",
        "scratch01-seed1",
        "shared_init-seed0",
    ]
    for unit in units:
        record = json.loads((folder / "runs" / unit / "unit.json").read_text())
        assert record["rows"] == []  # every row comes from finish
    for row in doc["rows"]:
        assert all(v == v for v in row["metrics"].values())


def test_finish_rows_equal_averages_of_the_saved_member_weights(tiny_run):
    from frugalvision.methods.diwa.analysis import Evaluator
    from frugalvision.methods.diwa.problem import build_problem

    out, doc = tiny_run
    config = _tiny(out)
    problem = build_problem(config)
    runs = out / "diwa" / "runs"
    _, val, test = problem.splits(1)
    ev = Evaluator(problem.build_net(), val, test)
    states = [load_weights(runs / f"member0{i}-seed1" / "best.safetensors") for i in range(2)]
    uniform = ev.outputs(average(states))["ood_acc"]
    row = next(r for r in doc["rows"] if r["name"] == "diwa_uniform_M2" and r["seed"] == 1)
    assert row["metrics"]["ood_acc"] == pytest.approx(uniform, abs=1e-9)
    init = load_weights(runs / "shared_init-seed0" / "init.safetensors")
    every = [load_weights(runs / f"member0{i}-seed{s}" / "best.safetensors") for s in (0, 1) for i in range(2)]
    assert {init_fingerprint(init)} == {
        json.loads((runs / f"member0{i}-seed{s}" / "unit.json").read_text())["extras"]["fingerprint"]
        for s in (0, 1)
        for i in range(2)
    }
    dagger = next(r for r in doc["rows"] if r["name"] == "diwa_dagger_M4")
    assert dagger["metrics"]["ood_acc"] == pytest.approx(ev.outputs(average(every))["ood_acc"], abs=1e-9)


def test_a_member_from_another_shared_init_is_refused_by_finish(tiny_run, tmp_path):
    import shutil

    from frugalvision.harness import run_experiment
    from frugalvision.methods.diwa.experiment import EXPERIMENT

    out, _ = tiny_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    unit = copy / "diwa" / "runs" / "member01-seed1" / "unit.json"
    record = json.loads(unit.read_text())
    record["extras"]["fingerprint"] = "0" * 16
    unit.write_text(json.dumps(record))
    (copy / "diwa" / "results.json").unlink()  # a finished study is not run again on --resume
    with pytest.raises(ConfigError, match="member01-seed1 was trained from another shared init"):
        run_experiment(EXPERIMENT, dataclasses.replace(_tiny(copy), resume=True))


# ------------------------------------------------------------------------------------------------ the verdict
def _rows(diwa, erm, default, scratch, averaged=0.05, worst=0.4, m=5, gap=0.0, kept=3, restricted=-0.01):
    rows = []
    for seed, values in enumerate(zip(diwa, erm, default, scratch)):
        d, e, f, s = values
        rows += [
            {"name": f"diwa_uniform_M{m}", "seed": seed, "metrics": {"ood_acc": d, "val_wa_minus_ens": gap}},
            {"name": f"diwa_restricted_M{m}", "seed": seed, "metrics": {"ood_acc": d + restricted, "kept": kept}},
            {"name": f"erm_best_M{m}", "seed": seed, "metrics": {"ood_acc": e}},
            {"name": "finetune_default", "seed": seed, "metrics": {"ood_acc": f}},
            {"name": "scratch_default", "seed": seed, "metrics": {"ood_acc": s}},
            {
                "name": "control_random_inits",
                "seed": seed,
                "metrics": {"ood_acc": averaged + 0.001 * seed, "collapse_gap": 0.5 * worst - averaged - 0.001 * seed},
            },
        ]
    return rows


def test_verdict_on_constructed_rows():
    from frugalvision.methods.diwa.config import standard
    from frugalvision.methods.diwa.experiment import verdict

    config = dataclasses.replace(standard(), ensemble_sizes=(5,), members=5)
    good_start = ([0.45, 0.46, 0.44], [0.40, 0.41, 0.40])
    assert verdict(config, _rows([0.50, 0.52, 0.51], [0.45, 0.46, 0.45], *good_start)).verdict == "supported"
    # the shared init does not beat scratch: nothing is judged
    bad_start = ([0.40, 0.41, 0.40], [0.45, 0.46, 0.44])
    result = verdict(config, _rows([0.50, 0.52, 0.51], [0.45, 0.46, 0.45], *bad_start))
    assert result.verdict == "inconclusive" and any(
        "precondition" in line and "fails" in line for line in result.evidence
    )
    assert verdict(config, _rows([0.40, 0.41, 0.40], [0.45, 0.46, 0.45], *good_start)).verdict == "not supported"
    # averaging different inits does not collapse: the claim's second half fails
    no_collapse = _rows([0.50, 0.52, 0.51], [0.45, 0.46, 0.45], *good_start, averaged=0.39)
    assert verdict(config, no_collapse).verdict == "not supported"
    noisy = _rows([0.50, 0.40, 0.51], [0.45, 0.46, 0.45], *good_start)
    assert verdict(config, noisy).verdict == "inconclusive"
    # the runs are not in one basin (WA more than half a point below ENS in domain): nothing is judged
    far = verdict(config, _rows([0.50, 0.52, 0.51], [0.45, 0.46, 0.45], *good_start, gap=-0.02))
    assert far.verdict == "inconclusive" and "locality" in far.evidence[-1] and "fails" in far.evidence[-1]


def test_restricted_is_a_candidate_only_when_greedy_kept_more_than_one_member_everywhere():
    from frugalvision.methods.diwa.config import standard
    from frugalvision.methods.diwa.experiment import verdict

    config = dataclasses.replace(standard(), ensemble_sizes=(5,), members=5)
    good_start = ([0.45, 0.46, 0.44], [0.40, 0.41, 0.40])
    both = verdict(config, _rows([0.50, 0.52, 0.51], [0.45, 0.46, 0.45], *good_start, restricted=0.01))
    assert both.comparisons[0].better == "diwa_restricted_M5" and both.comparisons[0].alpha == pytest.approx(0.025)
    # greedy kept one member: restricted is ERM-best itself, so only uniform is tested, at the full alpha
    single = verdict(config, _rows([0.50, 0.52, 0.51], [0.45, 0.46, 0.45], *good_start, kept=1, restricted=0.01))
    assert single.comparisons[0].better == "diwa_uniform_M5" and single.comparisons[0].alpha == pytest.approx(0.05)
    assert "diwa_restricted" not in single.rule.split("(")[1].split(",")[0]


def test_without_runs_from_scratch_the_rule_drops_the_control_and_says_so():
    from frugalvision.methods.diwa.config import paper, standard
    from frugalvision.methods.diwa.experiment import verdict

    config = dataclasses.replace(standard(), ensemble_sizes=(5,), members=5, control_members=0)
    config.validate()
    rows = [
        r
        for r in _rows([0.50, 0.52, 0.51], [0.45, 0.46, 0.45], [0.45, 0.46, 0.44], [0.40, 0.41, 0.40])
        if r["name"] not in ("scratch_default", "control_random_inits")
    ]
    result = verdict(config, rows)
    assert result.verdict == "supported" and len(result.comparisons) == 1
    assert "collapse control and the scratch check were not run" in result.rule
    assert paper().control_members >= 2  # the paper preset keeps its control


def test_verdict_says_supported_at_most_five_percent_of_the_time_under_no_effect():
    from frugalvision.harness import supported_rate
    from frugalvision.methods.diwa.config import standard
    from frugalvision.methods.diwa.experiment import MAIN, verdict

    config = dataclasses.replace(standard(), ensemble_sizes=(5,), members=5)
    rows = _rows([0.50, 0.52, 0.51], [0.45, 0.46, 0.45], [0.45, 0.46, 0.44], [0.40, 0.41, 0.40], gap=-0.002)
    levels = MAIN.null_levels(config)
    for noise in (1.0, 3.0):  # the bound is 5 %; 0.06 leaves room for the simulation's own noise (SE 0.35 %)
        rate = supported_rate(lambda r: verdict(config, r), rows, trials=4000, levels=levels, noise_scale=noise)
        assert rate <= 0.06, rate
    # with the precondition and the collapse always holding, the best-of-two choice alone stays <= 5 %
    kept = ("finetune_default", "scratch_default", "control_random_inits")

    def with_good_start(r):
        return verdict(config, [x for x in r if x["name"] not in kept] + [x for x in rows if x["name"] in kept])

    assert supported_rate(with_good_start, rows, trials=4000, levels=levels) <= 0.06


def test_config_errors_are_one_line_and_name_the_fix():
    from frugalvision.methods.diwa.config import smoke

    for changes, needle in (
        ({"control_members": 1}, "control_members=1"),
        ({"top_start": 17}, "top_start=17"),
        ({"benchmark": "imagenet"}, "benchmark='imagenet'"),
        ({"ensemble_sizes": (9,)}, "ensemble_sizes"),
        ({"test_domain": 9}, "test_domain=9"),
        ({"tie": "x"}, "tie='x'"),
    ):
        with pytest.raises(ConfigError, match=needle) as error:
            dataclasses.replace(smoke(), **changes).validate()
        assert "\n" not in str(error.value)
