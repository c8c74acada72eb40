"""Experiment plumbing: verdict rule, config validation, presets, BN recalibration and a tiny end-to-end run."""

from __future__ import annotations

import json

import pytest
import torch

from frugalvision.errors import ConfigError
from frugalvision.methods.singe import config as C
from frugalvision.methods.singe import experiment, runner
from frugalvision.methods.singe import pruning as P
from frugalvision.methods.singe import task as T
from frugalvision.nn import cifar_resnet

torch.set_num_threads(1)


def test_classify_and_verdict_rule() -> None:
    assert runner.classify([0.02, 0.03, 0.025]) == "positive"
    assert runner.classify([-0.02, -0.03, -0.025]) == "negative"
    assert runner.classify([0.05, -0.04, 0.0]) == "neutral"
    assert runner.verdict_of("positive", "positive") == "supported"
    assert runner.verdict_of("positive", "negative") == "not supported"
    assert runner.verdict_of("positive", "neutral") == "inconclusive"


def test_presets_validate_and_bad_fields_raise() -> None:
    assert set(experiment.PRESETS) == {"smoke", "standard", "paper", "paper_cifar10"}
    assert experiment.STUDIES == ("variants",)
    for make in experiment.PRESETS.values():
        make().validate()
    for change in (
        {"depth": 9},
        {"targets": (1.2,)},
        {"e2_criteria": ("l1",)},
        {"e2_target": 0.4},
        {"sparse_steps": 10_000},
        {"arch": "vgg"},
        {"pretrained": "weights.pth"},
        {"e1_criteria": ("magic",)},
        {"study_criteria": ("ig_norm/gate/layer",)},
    ):
        config = C.smoke()
        for key, value in change.items():
            setattr(config, key, value)
        with pytest.raises(ConfigError):
            config.validate()
    with pytest.raises(ConfigError):
        C.SingeCriterion(criterion="ig_norm", granularity="gate").validate()


def test_recalibrate_bn_matches_batch_statistics() -> None:
    torch.manual_seed(0)
    model = cifar_resnet(8, 4, 1, 10).eval()
    x = torch.randn(32, 1, 8, 8) * 3 + 1
    T.recalibrate_bn(model, [(x[:16], None), (x[16:], None)])
    stem = model.stem[0](x)
    torch.testing.assert_close(model.stem[1].running_mean, stem.mean((0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert not model.training


def test_tiny_end_to_end_run_writes_results_and_a_loadable_model(tmp_path) -> None:  # noqa: ANN001
    config = C.SingeConfig(
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
        targets=(0.5,),
        e1_criteria=("l1", "singe", "oracle", "fpgm_tp"),
        k_ablation=(1,),
        e2_targets=(0.5,),
        rounds=2,
        finetune_steps=4,
        sparse_steps=2,
        finetune_batch=16,
        latency_threads=1,
        progress=False,
        threads=1,
    )
    doc = experiment.run(config)
    assert doc["verdict"] in ("supported", "not supported", "inconclusive")
    names = {row["name"] for row in doc["rows"]}
    assert {
        "dense",
        "E1 singe @0.50",
        "E1 fpgm_tp @0.50",
        "E2 singe entwined @0.50",
        "E2 l1 oneshot @0.50",
        "E2 group_sparse oneshot @0.50",
        "E3 latency singe entwined @0.50",
    } <= names
    saved = json.loads((tmp_path / "singe" / "results.json").read_text())
    assert saved["method"] == "singe" and saved["seeds"] == 2
    for row in saved["rows"]:
        if row["name"].startswith("E2"):
            assert row["metrics"]["finetune_steps"] == 4
    model = P.load_pruned(tmp_path / "singe" / "pruned-singe-entwined-seed0")
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    config.study = "variants"
    config.study_steps = (1,)
    config.study_targets = (0.5,)
    study = experiment.run(config)
    assert (tmp_path / "singe" / "variants" / "winner.json").is_file() and study["rows"]


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
