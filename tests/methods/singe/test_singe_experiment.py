"""Experiment declaration: verdict rules on constructed rows, presets, BN recalibration, a tiny run and its resume."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from frugalvision.errors import ConfigError
from frugalvision.harness import run_experiment, supported_rate
from frugalvision.methods.singe import config as C
from frugalvision.methods.singe import experiment as X
from frugalvision.methods.singe import pruning as P
from frugalvision.methods.singe import task as T
from frugalvision.nn import cifar_resnet

torch.set_num_threads(1)
AT = "@0.50"


BASELINES = ("l1", "taylor_tp", "fpgm_tp", "lamp_tp")


def _rows(singe: list[float], baselines: dict[str, list[float]], entwined: dict[str, list[float]], dense=0.9) -> list:
    """Rows of a standard run (one target): the same values in E1 (top1_bn_recal) and E2 (top1)."""
    rows = []
    for seed in range(len(singe)):
        values = {"singe": singe} | {b: baselines.get(b, baselines.get("*")) for b in BASELINES}
        for name, per_seed in values.items():
            rows.append({"name": f"E1 {name} {AT}", "seed": seed, "metrics": {"top1_bn_recal": per_seed[seed]}})
            rows.append({"name": f"E2 {name} oneshot {AT}", "seed": seed, "metrics": {"top1": per_seed[seed]}})
        for reading in ("cosine", "restarts"):
            metrics = {"top1": entwined[reading][seed]}
            rows.append({"name": f"E2 singe entwined-{reading} {AT}", "seed": seed, "metrics": metrics})
        rows.append({"name": "dense", "seed": seed, "metrics": {"top1": dense, "chance": 0.1}})
    return rows


def _shift(values: list[float], deltas: tuple[float, ...]) -> list[float]:
    return [v + d for v, d in zip(values, deltas, strict=True)]


def test_main_verdict_needs_every_comparison_better_and_a_trained_dense_model() -> None:
    config = C.standard()
    base = [0.70, 0.72, 0.71]
    better = _shift(base, (0.03, 0.04, 0.035))
    flow = {"cosine": _shift(better, (0.02, 0.025, 0.03)), "restarts": better}
    assert X.verdict(config, _rows(better, {"*": base}, flow)).verdict == "supported"
    # one baseline significantly better (here FPGM) refutes, even when SInGE beats the rest
    strong = _shift(better, (0.05, 0.06, 0.055))
    assert X.verdict(config, _rows(better, {"*": base, "fpgm_tp": strong}, flow)).verdict == "not supported"
    # entwined worse than one-shot under both readings refutes the flowchart
    worse = {r: _shift(better, (-0.03, -0.04, -0.035)) for r in ("cosine", "restarts")}
    assert X.verdict(config, _rows(better, {"*": base}, worse)).verdict == "not supported"
    # one comparison unclear: inconclusive
    noisy = [0.75, 0.69, 0.74]
    assert X.verdict(config, _rows(better, {"*": base, "taylor_tp": noisy}, flow)).verdict == "inconclusive"
    # a dense model below the floor: the claim cannot be judged
    config.dense_min_top1 = 0.85
    low = X.verdict(config, _rows(better, {"*": base}, flow, dense=0.8))
    assert low.verdict == "inconclusive" and "precondition" in low.evidence[-1]
    assert len(low.comparisons) == 9 and "one-sided 95%" in low.rule


def test_flowchart_takes_the_better_reading_at_alpha_over_k() -> None:
    config = C.standard()
    base = [0.70, 0.72, 0.71]
    better = _shift(base, (0.03, 0.04, 0.035))
    flow = {"cosine": better, "restarts": _shift(better, (0.02, 0.025, 0.03))}
    result = X.verdict(config, _rows(better, {"*": base}, flow))
    chosen = result.comparisons[-1]
    assert chosen.better == f"E2 singe entwined-restarts {AT}" and chosen.alpha == pytest.approx(0.025)
    assert result.verdict == "supported"


def test_main_rule_says_supported_at_most_five_percent_under_no_effect() -> None:
    config = C.standard()
    base = [0.70, 0.72, 0.71]
    rows = _rows(base, {"*": [0.70, 0.69, 0.73]}, {"cosine": [0.74, 0.73, 0.75], "restarts": [0.71, 0.70, 0.72]})
    assert supported_rate(lambda r: X.verdict(config, r), rows, trials=2000) <= 0.05


def test_finish_adds_the_mean_over_the_targets_that_the_verdict_compares(tmp_path) -> None:  # noqa: ANN001
    from frugalvision.harness import Unit, UnitRecord

    config = C.extended()
    rows = []
    for seed in range(2):
        for target, value in zip(config.e2_targets, (0.8, 0.7, 0.5), strict=True):
            for name in ("E1 singe", "E2 singe oneshot", "E2 singe entwined-cosine"):
                rows.append({"name": f"{name} @{target:.2f}", "seed": seed, "metrics": {"top1": value + seed}})
    record = UnitRecord(Unit("e1", 0), rows, {}, {}, None, 0.0)

    class _Ctx:
        pass

    ctx = _Ctx()
    ctx.config = config
    out = {(r["name"], r["seed"]): r["metrics"]["top1"] for r in X.finish(ctx, [record])}
    assert out[("E1 singe mean", 1)] == pytest.approx(1 + (0.8 + 0.7 + 0.5) / 3)
    assert out[("E2 singe oneshot mean", 0)] == pytest.approx((0.8 + 0.7 + 0.5) / 3)
    assert ("E2 singe entwined-cosine mean", 0) not in out  # one flowchart target: its own row is voted
    assert X.regime_row("E2 singe entwined-cosine", config.flow_targets) == "E2 singe entwined-cosine @0.50"
    assert X.regime_row("E1 singe", config.targets) == "E1 singe mean"


def test_variant_verdict_picks_the_best_candidate_and_corrects_alpha_for_k() -> None:
    config = C.smoke()
    labels = X.candidate_labels(config)
    k = len(labels)
    rows = []
    for seed in range(3):
        for index, name in enumerate(["l1", "taylor_tp", *labels]):
            value = 0.40 + 0.01 * seed + (0.10 + 0.002 * seed if name == labels[-1] else 0.001 * index)
            rows.append({"name": name, "seed": seed, "metrics": {"val_top1_bn_recal": value, "passes": 1.0}})
    result = X.variant_verdict(config, rows)
    assert X.best_candidate(config, rows) == labels[-1] and result.verdict == "supported"
    assert all(c.alpha == pytest.approx(0.05 / k) for c in result.comparisons)
    assert "among k" in result.rule
    null = supported_rate(lambda r: X.variant_verdict(config, r), rows, trials=1000)
    assert null <= 0.05


def test_presets_validate_and_bad_fields_raise() -> None:
    assert set(X.EXPERIMENT.presets) == {"smoke", "standard", "extended", "paper", "paper_cifar10"}
    assert set(X.EXPERIMENT.studies) == {"variants"}
    for make in X.EXPERIMENT.presets.values():
        config = make()
        config.validate()
        assert config.e2_target in config.flow_targets and set(config.flow_targets) <= set(config.e2_targets)
    assert len(C.standard().seeds) >= 3 and C.standard().threads == 2
    extended = C.extended()
    assert extended.train_size == 60000 and extended.test_size == 10000 and extended.dense_seed == 0
    assert set(extended.targets) == set(extended.e2_targets) == {0.7, 0.5, 0.3}
    assert extended.lr_readings == ("cosine", "restarts") and extended.voted_baselines == C.VOTED_BASELINES
    for change in (
        {"depth": 9},
        {"targets": (1.2,)},
        {"e2_criteria": ("l1", "singe")},
        {"e1_criteria": ("l1", "taylor_tp", "fpgm_tp", "singe")},
        {"e2_target": 0.4},
        {"flow_targets": (0.4,)},
        {"lr_readings": ("linear",)},
        {"voted_baselines": ("l2",)},
        {"sparse_steps": 10_000},
        {"arch": "vgg"},
        {"pretrained": "weights.pth"},
        {"e1_criteria": ("magic",)},
        {"study_criteria": ("ig_norm/gate/layer",)},
        {"latency_rounds": 0},
    ):
        config = C.smoke()
        for key, value in change.items():
            setattr(config, key, value)
        with pytest.raises(ConfigError):
            config.validate()
    with pytest.raises(ConfigError):
        C.SingeCriterion(criterion="ig_norm", granularity="gate").validate()


def test_units_are_one_per_job_and_seed_with_the_dense_model_first() -> None:
    config = C.extended()
    units = X.main_units(config)
    e2 = len(config.e2_targets) * len(config.e2_criteria) + len(config.flow_targets) * len(config.lr_readings) + 1
    per_seed = 2 + e2 + 1  # dense, e1, the E2 units (one rounded), e3-latency
    assert len(units) == per_seed * len(config.seeds) and units[0].name == "dense"
    assert len({u.id for u in units}) == len(units)
    assert [u.seed for u in units] == sorted(u.seed for u in units)
    names = {u.name for u in units if u.params["kind"] == "e2"}
    assert names >= {"e2-singe-entwined-cosine-0.50", "e2-singe-entwined-restarts-0.50", "e2-lamp_tp-oneshot-0.30"}
    assert "e2-singe-oneshot-r8-0.50" in names and "e2-singe-entwined-cosine-0.30" not in names
    assert len(X.variant_units(config)) == (2 + len(X.candidate_labels(config))) * len(config.seeds)


def test_recalibrate_bn_matches_batch_statistics() -> None:
    torch.manual_seed(0)
    model = cifar_resnet(8, 4, 1, 10).eval()
    x = torch.randn(32, 1, 8, 8) * 3 + 1
    T.recalibrate_bn(model, [(x[:16], None), (x[16:], None)])
    stem = model.stem[0](x)
    torch.testing.assert_close(model.stem[1].running_mean, stem.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert not model.training


def _tiny(tmp_path) -> C.SingeConfig:  # noqa: ANN001
    return C.SingeConfig(
        preset="smoke",
        out=str(tmp_path),
        seeds=(0, 1),
        dataset="digits",
        width=4,
        train_size=300,
        val_size=100,
        test_size=100,
        dense_steps=6,
        dense_batch=32,
        calibration=32,
        singe=C.SingeCriterion(steps=1),
        dense_seed=0,
        targets=(0.5, 0.7),
        e1_criteria=("l1", "singe", "oracle", "fpgm_tp", "lamp_tp"),
        voted_baselines=("l1", "lamp_tp"),
        k_ablation=(1,),
        e2_targets=(0.5,),
        e2_criteria=("l1", "lamp_tp", "singe"),
        lr_readings=("cosine", "restarts"),
        latency_multiple=2,
        rounds=2,
        finetune_steps=4,
        sparse_steps=2,
        finetune_batch=16,
        latency_threads=1,
        latency_rounds=1,
        progress=False,
        threads=1,
        study_steps=(1,),
        study_targets=(0.5,),
    )


def test_tiny_run_writes_results_a_loadable_model_and_resumes_an_interrupted_unit(tmp_path) -> None:  # noqa: ANN001
    config = _tiny(tmp_path)
    doc = run_experiment(X.EXPERIMENT, config)
    assert doc["verdict"] in ("supported", "not supported", "inconclusive") and doc["comparisons"]
    names = {row["name"] for row in doc["rows"]}
    assert {
        "dense",
        "E1 singe @0.50",
        "E1 fpgm_tp @0.70",
        "E1 singe mean",
        "E1 lamp_tp mean",
        "E2 singe entwined-cosine @0.50",
        "E2 singe entwined-restarts @0.50",
        "E2 l1 oneshot @0.50",
        "E2 singe oneshot r2 @0.50",
        "E2 group_sparse oneshot @0.50",
        "E3 latency @0.50",
        "E3 latency r2 @0.50",
    } <= names
    dense = [row["metrics"]["top1"] for row in doc["rows"] if row["name"] == "dense"]
    assert len(dense) == 2 and dense[0] == dense[1]  # one dense model serves both seeds
    macs = {r["name"]: r["metrics"]["macs_frac"] for r in doc["rows"] if r["seed"] == 0 and "macs_frac" in r["metrics"]}
    assert abs(macs["E1 lamp_tp @0.50"] - macs["E1 l1 @0.50"]) < 0.06  # global LAMP: same MACs, own widths
    assert macs["E1 lamp_tp @0.50"] <= 0.5
    saved = json.loads((tmp_path / "singe" / "results.json").read_text())
    assert saved["method"] == "singe" and saved["seeds"] == 2
    for row in saved["rows"]:
        if row["name"].startswith("E2"):
            assert row["metrics"]["finetune_steps"] == 4
    unit = tmp_path / "singe" / "runs" / "e2-singe-entwined-cosine-0.50-seed0"
    model = P.load_pruned(unit / "pruned")
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert (unit / "round1" / "checkpoints").is_dir() and (unit / "round2" / "checkpoints").is_dir()
    assert len(list((tmp_path / "singe" / "cache").glob("dense-*.safetensors"))) == 1

    # interrupt the entwined unit after its first round: --resume keeps round 1 and trains round 2 again
    before = json.loads((unit / "unit.json").read_text())["rows"][0]["metrics"]
    (unit / "unit.json").unlink()
    (tmp_path / "singe" / "results.json").unlink()  # a finished study is not run again on --resume
    shutil.rmtree(unit / "round2")
    config.resume = True
    again = run_experiment(X.EXPERIMENT, config)
    after = json.loads((unit / "unit.json").read_text())["rows"][0]["metrics"]
    assert {k: after[k] for k in ("top1", "nll", "lr_sum", "finetune_steps")} == {
        k: before[k] for k in ("top1", "nll", "lr_sum", "finetune_steps")
    }
    assert again["verdict"] == doc["verdict"]

    config.resume, config.study = False, "variants"
    study = run_experiment(X.EXPERIMENT, config)
    assert study["rows"] and "Winner" in study["notes"]
    assert {row["name"] for row in study["rows"]} == {"l1", "taylor_tp", *X.candidate_labels(config)}


def test_cifar10_binary_reader_on_a_fixture_in_the_official_layout(tmp_path) -> None:  # noqa: ANN001
    import numpy as np

    from frugalvision.methods.singe.data import load_cifar10_binary

    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    rng = np.random.default_rng(0)
    expected = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, 2, dtype=np.uint8)
        pixels = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        np.concatenate([labels[:, None], pixels], 1).tofile(folder / name)
        expected[name] = (labels, pixels)
    train = load_cifar10_binary(tmp_path, train=True)
    test = load_cifar10_binary(folder, train=False)
    assert train.images.shape == (10, 3, 32, 32) and test.images.shape == (2, 3, 32, 32)
    labels, pixels = expected["test_batch.bin"]
    assert test.labels.tolist() == labels.tolist()
    assert test.images[1, 2, 0, 1].item() == pixels[1, 2 * 1024 + 1]  # channel-planar: B plane, row 0, column 1
    with pytest.raises(Exception, match="not found"):
        load_cifar10_binary(tmp_path / "missing", train=True)
