"""Experiment wiring: config checks, presets, task through the engine, verdict rule, budgets, benchmark, smoke run."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from frugalvision.data.arrays import ArrayDataset, ImageArrays
from frugalvision.engine import Engine, FabricConfig, LoopConfig
from frugalvision.errors import ConfigError
from frugalvision.methods.perceiver import experiment
from frugalvision.methods.perceiver.bench import latency_benchmark
from frugalvision.methods.perceiver.config import PerceiverConfig
from frugalvision.methods.perceiver.model import PerceiverClassifier
from frugalvision.methods.perceiver.runner import choose_at_budgets, compute_verdict, eval_widths, load_data
from frugalvision.methods.perceiver.task import PerceiverTask
from frugalvision.registry import get_method

TINY = PerceiverConfig(num_latents=8, latent_dim=16, token_dim=16, layers=1, self_heads=2, patch_size=7)


def test_registered_presets_validate_and_bad_values_are_rejected(tmp_path):
    assert get_method("perceiver").status == "available"
    assert experiment.STUDIES == ("variants",)
    experiment.PRESETS["smoke"]().validate()
    experiment.PRESETS["standard"]().validate()
    paper = experiment.PRESETS["paper"]()
    with pytest.raises(ConfigError, match="data-root"):
        paper.validate()
    paper.data_root = str(tmp_path)
    paper.validate()
    assert paper.model.num_tokens == 3136
    config = experiment.PRESETS["standard"]()
    assert config.cascade_stages() == (8, 32) and eval_widths(config) == [32, 24, 16, 8, 4]
    for change in (
        {"min_latents": 5},
        {"selection": "oracle"},
        {"stages": (16, 8)},
        {"beta": 2.0},
        {"budgets": (0.0,)},
        {"scratch_widths": (64,)},
    ):
        with pytest.raises(ConfigError):
            dataclasses.replace(config, **change).validate()


def test_task_trains_through_the_engine_with_sandwich_widths():
    gen = torch.Generator().manual_seed(0)
    arrays = ImageArrays(
        torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=gen),
        torch.arange(64) % 10,
        [str(i) for i in range(10)],
        "toy",
    )
    task = PerceiverTask(
        lambda: PerceiverClassifier(TINY), ArrayDataset(arrays), {}, "nested", min_latents=2, num_random=1, beta=0.5
    )
    engine = Engine(FabricConfig(accelerator="cpu", devices="1"), progress=False)
    result = engine.fit(task, LoopConfig(max_steps=3, batch_size=16, log_every=1, clip_grad_norm=1.0))
    assert result.steps == 3 and all(math.isfinite(h["loss"]) for h in result.history if "loss" in h)
    assert task.last_widths[0] == 8 and task.last_widths[-1] == 2 and len(task.last_widths) == 3


def test_imagefolder_splits_are_disjoint_and_sized(tmp_path):
    from PIL import Image

    for split, per_class in (("train", 10), ("val", 3)):
        for cls in ("cat", "dog"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (40, 30), (i * 20, 100, 200 if cls == "dog" else 0)).save(folder / f"{i}.png")
    config = experiment.PRESETS["smoke"]()
    config.dataset, config.data_root = "imagefolder", str(tmp_path)
    config.model = dataclasses.replace(config.model, img_size=28, patch_size=7)
    config.train_size, config.val_size, config.test_size = 12, 4, 6
    source, train, val, test = load_data(config, seed=0)
    assert source == "imagefolder" and (len(train), len(val), len(test)) == (12, 4, 6)
    assert train.image_shape == (3, 28, 28) and train.num_classes == 2
    assert set(train.dataset.indices).isdisjoint(val.dataset.indices)
    assert val.head(4).shape == (4, 3, 28, 28) and sorted(test.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    image, label = train.dataset[0]
    assert image.shape == (3, 28, 28) and label in (0, 1)


def _rows(nested_q4, prefix_q4, ranked_q4, full, speedup):
    rows = []
    for seed, (n, p, r) in enumerate(zip(nested_q4, prefix_q4, ranked_q4, strict=True)):
        rows.append({"name": "nested", "seed": seed, "metrics": {"test_top1_q8": n, "speedup_q8": speedup}})
        rows.append({"name": "fixed-prefix", "seed": seed, "metrics": {"test_top1_q8": p, "test_top1_q32": full}})
        rows.append({"name": "fixed-ranked", "seed": seed, "metrics": {"test_top1_q8": r, "test_top1_q32": full}})
    return rows


def test_verdict_rule():
    supported = compute_verdict(_rows([0.84, 0.85, 0.845], [0.6, 0.62, 0.61], [0.7, 0.71, 0.69], 0.86, 2.0), 8)
    assert supported[0] == "supported"
    assert supported[2]["baseline"] == 1.0  # ranked is the stronger truncation baseline here
    worse = compute_verdict(_rows([0.5, 0.52, 0.51], [0.6, 0.62, 0.61], [0.7, 0.71, 0.69], 0.86, 2.0), 8)
    assert worse[0] == "not supported"
    slow = compute_verdict(_rows([0.84, 0.85, 0.845], [0.6, 0.62, 0.61], [0.7, 0.71, 0.69], 0.86, 1.2), 8)
    assert slow[0] == "not supported"
    big_drop = compute_verdict(_rows([0.72, 0.73, 0.725], [0.6, 0.62, 0.61], [0.7, 0.71, 0.69], 0.86, 2.0), 8)
    assert big_drop[0] == "inconclusive"


def test_budget_choice_uses_validation_only():
    val = [(0.3, 0.5), (0.5, 0.9), (0.7, 0.8), (1.0, 0.95)]
    test = [(0.31, 0.4), (0.52, 0.7), (0.69, 0.99), (1.0, 0.9)]
    chosen = choose_at_budgets(val, test, (0.2, 0.6, 0.8))
    assert 0.2 not in chosen
    assert chosen[0.6] == (0.7, 0.52) and chosen[0.8] == (0.7, 0.52)


def test_latency_benchmark_reports_ratios():
    result = latency_benchmark(TINY, batch=8, runs=2, warmup=1, threads=1)
    assert result["widths"] == [8, 4, 2, 1]
    assert result["model_ratio"][8] == 1.0 and result["macs_ratio"][2] < 1.0
    assert 0 < result["q_dependent_share"][2] < result["q_dependent_share"][8] < 1


@pytest.mark.slow
def test_smoke_preset_end_to_end(tmp_path):
    config = experiment.PRESETS["smoke"]()
    config.out, config.progress = str(tmp_path), False
    document = experiment.run(config)
    assert document["verdict"] in ("supported", "not supported", "inconclusive")
    names = {row["name"] for row in document["rows"]}
    assert names == {"fixed-prefix", "fixed-ranked", "nested", "scratch-q2", "scratch-q4"}
    assert (tmp_path / "perceiver" / "results.json").is_file()
    config.study = "variants"
    assert experiment.run(config)["primary_metric"] == "val_auc"
