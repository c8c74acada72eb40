"""Experiment wiring: presets and checks, accounting of a tiny run, verdict rules on constructed rows, data paths
(CIFAR fixture, ImageFolder), the plug-in through the engine, validation-only temperature, latency arms."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from frugalvision.data.arrays import ArrayDataset, ImageArrays
from frugalvision.engine import Engine, FabricConfig, LoopConfig
from frugalvision.errors import ConfigError, DataError
from frugalvision.harness import run_experiment
from frugalvision.harness.bench import contract_gaps
from frugalvision.harness.stats import ALPHA
from frugalvision.methods.mimo import experiment
from frugalvision.methods.mimo.bench import inference_macs, latency_arms, latency_benchmark, measure_latency
from frugalvision.methods.mimo.config import ARMS, PRESETS, MimoRunConfig, parse_unmix
from frugalvision.methods.mimo.data import load_data
from frugalvision.methods.mimo.evaluation import evaluate_members
from frugalvision.methods.mimo.model import wrap_backbone
from frugalvision.methods.mimo.plugin import MixMo
from frugalvision.methods.mimo.task import MimoTask
from frugalvision.nn.wide_resnet import preact_resnet
from frugalvision.registry import get_method


def test_presets_validate_and_bad_values_are_rejected():
    declared = get_method("mimo").load()
    assert declared is experiment.EXPERIMENT and set(declared.studies) == {"variants"}
    for name in ("smoke", "standard", "extended"):
        PRESETS[name]().validate()
    assert len(PRESETS["standard"]().seeds) >= 3 and len(PRESETS["extended"]().seeds) >= 3
    paper = PRESETS["paper"]()
    assert (paper.backbone, paper.depth, max(paper.widths), paper.members, paper.dataset) == (
        "wrn",
        28,
        10,
        2,
        "cifar100",
    )
    assert paper.loop.batch_size // paper.batch_repetition == 16 and paper.loop.lr / paper.batch_repetition == 0.0125
    with pytest.raises(ConfigError, match="data-root"):
        paper.validate()
    base = PRESETS["smoke"]()
    for change, needle in [
        ({"arms": ("single", "nope")}, "arms"),
        ({"unmix": "magic"}, "unmix"),
        ({"batch_repetition": 3}, "divide loop.batch_size"),
        ({"members": 1}, "M >= 2"),
        ({"dataset": "cifar7"}, "dataset"),
        ({"p_cut": 1.5}, "p_cut"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            dataclasses.replace(base, **change).validate()
    assert parse_unmix("learned-last_stage") == ("learned", "last_stage") and parse_unmix("soft") == ("soft", "final")


def test_paper_preset_builds_a_wrn_28_10_mimo_network():
    paper = dataclasses.replace(PRESETS["paper"](), dataset="auto", data_root=None)
    paper.validate()
    model = wrap_backbone(experiment.make_backbone(paper, 10, _fake_data(32, 3, 100)), 2)
    assert model.encoders[0].weight.shape == (16, 3, 3, 3) and model.heads[1].out_features == 100
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 36.6  # WRN-28-10 + one stem + one head


def _fake_data(size: int, channels: int, classes: int):
    arrays = ImageArrays(
        torch.zeros(classes, channels, size, size, dtype=torch.uint8),
        torch.arange(classes),
        [str(i) for i in range(classes)],
        "fake",
    )
    return experiment.MimoData("fake", arrays, arrays, arrays, (0.5,) * channels, (0.25,) * channels)


def tiny_config(tmp_path, **changes) -> MimoRunConfig:
    config = dataclasses.replace(
        PRESETS["smoke"](),
        out=str(tmp_path),
        seeds=(0,),
        progress=False,
        train_size=400,
        val_size=100,
        test_size=100,
        probe_images=50,
        latency_rounds=1,
        latency_batch=16,
        loop=dataclasses.replace(PRESETS["smoke"]().loop, max_steps=3, batch_size=32),
    )
    return dataclasses.replace(config, **changes)


def test_every_row_of_a_width_logs_the_same_steps_and_processed_samples(tmp_path):
    document = run_experiment(experiment.EXPERIMENT, tiny_config(tmp_path))
    rows = {r["name"]: r["metrics"] for r in document["rows"]}
    trained = [name for name in rows if not name.startswith(("latency", "ensemble"))]
    assert sorted(trained) == sorted(f"{arm}-w4" for arm in ARMS)
    assert {rows[n]["steps"] for n in trained} == {3.0} and {rows[n]["samples"] for n in trained} == {96.0}
    assert rows["cutmixmo-w4"]["unique_images"] == 48.0 and rows["single-w4"]["unique_images"] == 96.0
    assert rows["ensemble-w4"]["samples"] == 192.0 and rows["ensemble-w4"]["inference_macs"] == pytest.approx(
        2 * rows["single-w4"]["inference_macs"]
    )
    for name in ("mimo-w4", "cutmixmo-unmix-w4"):
        for metric in ("enc_overlap", "head_overlap", "active_t20", "ablation_spearman", "solo_cka", "test_ece_ts"):
            assert metric in rows[name], (name, metric)
    assert 0 < rows["latency-w4"]["mimo_vs_ensemble"] and "mimo_unmix_ms" in rows["latency-w4"]
    assert document["verdict"] in ("supported", "not supported", "inconclusive")


def _rows(unmix_top1, unmix_overlap, base=0.8, seeds=(0, 1, 2)):
    rows = []
    for seed in seeds:
        noise = 0.001 * seed
        rows.append(
            {
                "name": "cutmixmo-w8",
                "seed": seed,
                "metrics": {"test_top1": base + noise, "enc_overlap": 0.5 - noise, "chance": 0.1},
            }
        )
        rows.append(
            {
                "name": "cutmixmo-unmix-w8",
                "seed": seed,
                "metrics": {"test_top1": base + unmix_top1 + 2 * noise, "enc_overlap": 0.5 + unmix_overlap},
            }
        )
    return rows


def test_main_verdict_on_constructed_rows():
    config = dataclasses.replace(PRESETS["standard"](), widths=(8, 16))
    assert experiment.verdict(config, _rows(0.02, 0.1)).verdict == "supported"
    assert experiment.verdict(config, _rows(-0.02, 0.1)).verdict == "not supported"
    assert experiment.verdict(config, _rows(0.02, -0.1)).verdict == "not supported"
    assert experiment.verdict(config, _rows(0.02, 0.0005)).verdict == "inconclusive"
    unlearned = experiment.verdict(config, _rows(0.02, 0.1, base=0.15))
    assert unlearned.verdict == "inconclusive" and "fails" in unlearned.evidence[-1]


def test_variant_verdict_picks_the_lowest_validation_nll_at_alpha_over_k():
    config = PRESETS["smoke"]()
    rows = []
    for seed in range(3):
        rows.append({"name": "cutmixmo", "seed": seed, "metrics": {"val_nll": 0.6 + 0.01 * seed, "val_top1": 0.8}})
        for index, name in enumerate(experiment.variant_names(config)):
            nll = 0.5 - 0.01 * (name == "unmix-soft") + 0.001 * seed + 0.0001 * index
            rows.append({"name": name, "seed": seed, "metrics": {"val_nll": nll, "val_top1": 0.8}})
    assert experiment.best_variant(config, rows) == "unmix-soft"
    result = experiment.variant_verdict(config, rows)
    assert result.verdict == "supported"
    assert result.comparisons[0].alpha == pytest.approx(ALPHA / len(config.variant_candidates))


def test_the_temperature_is_fitted_on_validation_only():
    torch.manual_seed(0)
    val, val_labels = torch.randn(300, 2, 5) * 3, torch.randint(0, 5, (300,))
    test, test_labels = torch.randn(200, 2, 5) * 3, torch.randint(0, 5, (200,))
    first = evaluate_members(test, test_labels, val, val_labels)
    second = evaluate_members(test, test_labels[torch.randperm(200)], val, val_labels)
    assert first["temperature"] == second["temperature"] != 1.0
    assert "temperature" not in evaluate_members(test, test_labels)


def test_single_network_loss_is_plain_cross_entropy_and_the_task_trains_through_the_engine(tmp_path):
    torch.manual_seed(0)
    images, labels = torch.rand(64, 1, 16, 16), torch.randint(0, 5, (64,))
    single = wrap_backbone(preact_resnet(4, 1, 5, 1), 1)
    loss, _ = MixMo("sum").training_loss(single, images, labels, 0.0)
    torch.testing.assert_close(loss, F.cross_entropy(single(images)[:, 0], labels))
    arrays = ImageArrays((images * 255).to(torch.uint8), labels, [str(i) for i in range(5)], "toy")
    task = MimoTask(lambda: wrap_backbone(preact_resnet(4, 1, 5, 1), 2, "soft"), ArrayDataset(arrays), MixMo("cut"))
    engine = Engine(FabricConfig(accelerator="cpu"), progress=False)
    result = engine.fit(task, LoopConfig(max_steps=4, batch_size=16, lr=0.05, weight_decay=5e-4), tmp_path / "run")
    assert result.steps == 4 and isinstance(result.model.encoders, torch.nn.ModuleList)
    assert isinstance(task.build_optimizer(result.model, LoopConfig()), torch.optim.SGD)


def _write_cifar10_pickles(root):
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (40, 3072), dtype=np.uint8), "labels": list(range(10)) * 4}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def test_cifar_and_imagefolder_data_paths(tmp_path):
    _write_cifar10_pickles(tmp_path)
    config = dataclasses.replace(
        PRESETS["smoke"](),
        dataset="cifar10",
        data_root=str(tmp_path),
        image_size=32,
        allow_pickle=True,
        train_size=150,
        val_size=40,
        test_size=20,
    )
    config.validate()
    data = load_data(config, seed=0)
    assert data.source == "cifar10" and data.image_shape == (3, 32, 32) and data.num_classes == 10
    assert (len(data.train), len(data.val), len(data.test)) == (150, 40, 20)
    assert len(data.mean) == len(data.std) == 3
    with pytest.raises(DataError, match="allow_pickle"):
        load_data(dataclasses.replace(config, allow_pickle=False), seed=0)
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("a", "b"):
            for i in range(6):
                path = tmp_path / "folder" / split / cls / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((20, 24, 3), 40 * i, dtype=np.uint8)).save(path)
    folder = dataclasses.replace(
        config,
        dataset="imagefolder",
        data_root=str(tmp_path / "folder"),
        image_size=16,
        train_size=8,
        val_size=2,
        test_size=12,
    )
    data = load_data(folder, seed=0)
    assert data.image_shape == (3, 16, 16) and data.train.classes == ["a", "b"] and len(data.test) == 12


def test_latency_arms_time_mimo_against_the_ensemble_and_count_macs():
    arms = latency_arms(lambda: preact_resnet(4, 1, 5, 1), 2, "spatial")
    assert set(arms) == {"single", "ensemble", "mimo", "mimo_unmix"} and len(arms["ensemble"]) == 2
    timed = measure_latency(arms, torch.randn(8, 1, 16, 16), rounds=2, warmup=1)
    assert timed["mimo_vs_ensemble_q25"] <= timed["mimo_vs_ensemble"] <= timed["mimo_vs_ensemble_q75"]
    single, mimo = inference_macs(arms["single"], (1, 16, 16)), inference_macs(arms["mimo"], (1, 16, 16))
    stem_macs, head_macs = 16 * 16 * 4 * 9, 16 * 5
    assert mimo == pytest.approx(single + stem_macs + head_macs)


def test_benchmark_returns_performance_table_rows_against_the_deep_ensemble():
    case = {"tiny": ("PreActResNet-8 w=2", lambda: preact_resnet(2, 1, 5, 1), (1, 8, 8), 4)}
    result = latency_benchmark(rounds=5, threads=1, cases=case, warmup=1)
    assert contract_gaps(result) == [] and experiment.EXPERIMENT.benchmark is experiment.benchmark
    mimo, unmixed = result["ratios"]
    assert (mimo["arm"], mimo["rounds"], mimo["batch"]) == ("MIMO M=2", 5, 4) and "deep ensemble" in mimo["peer"]
    assert "unmixing (learned-final)" in unmixed["arm"] and unmixed["macs_ratio"] > mimo["macs_ratio"]
    assert mimo["ratio"] == pytest.approx(result["tiny"]["mimo_vs_ensemble"])
    assert mimo["macs_ratio"] == pytest.approx(result["tiny"]["macs_ratio_mimo_vs_ensemble"])
