"""Experiment wiring: config checks, presets, task through the engine, data splits, verdict rules on constructed rows,
budgets, latency timing, the declaration, and a smoke run through the CLI."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from frugalvision.data.arrays import ArrayDataset, ImageArrays
from frugalvision.engine import Engine, FabricConfig, LoopConfig
from frugalvision.errors import ConfigError
from frugalvision.harness import RunConfig
from frugalvision.harness.stats import ALPHA
from frugalvision.methods.perceiver import experiment
from frugalvision.methods.perceiver.bench import latency_benchmark, width_latency
from frugalvision.methods.perceiver.config import PRESETS, PerceiverConfig, PerceiverRunConfig
from frugalvision.methods.perceiver.data import load_data
from frugalvision.methods.perceiver.model import PerceiverClassifier
from frugalvision.methods.perceiver.task import PerceiverTask
from frugalvision.registry import get_method

TINY = PerceiverConfig(num_latents=8, latent_dim=16, token_dim=16, layers=1, self_heads=2, patch_size=7)


def test_registered_presets_validate_and_bad_values_are_rejected(tmp_path):
    assert get_method("perceiver").status == "available"
    declared = get_method("perceiver").load()
    assert declared is experiment.EXPERIMENT and set(declared.studies) == {"variants"}
    assert set(declared.presets) >= {"smoke", "standard", "extended", "paper"}
    for name in ("smoke", "standard", "extended"):
        config = PRESETS[name]()
        assert isinstance(config, RunConfig) and config.preset == name
        config.validate()
    assert len(PRESETS["standard"]().seeds) >= 3 and PRESETS["standard"]().threads == 2
    paper = PRESETS["paper"]()
    with pytest.raises(ConfigError, match="data-root"):
        paper.validate()
    paper.data_root = str(tmp_path)
    paper.validate()
    assert paper.model.num_tokens == 3136
    config = PRESETS["standard"]()
    assert config.cascade_stages() == (8, 32) and config.eval_widths() == [32, 24, 16, 8, 4]
    for change in (
        {"min_latents": 5},
        {"selection": "oracle"},
        {"stages": (16, 8)},
        {"beta": 2.0},
        {"budgets": (0.0,)},
        {"scratch_widths": (64,)},
        {"min_speedup": 0.0},
    ):
        with pytest.raises(ConfigError):
            dataclasses.replace(config, **change).validate()


def test_units_cover_every_model_once_per_seed():
    config = PRESETS["standard"]()
    units = experiment.main_units(config)
    per_seed = 2 + len(config.scratch_widths)
    assert len(units) == per_seed * len(config.seeds) and len({u.id for u in units}) == len(units)
    variants = experiment.variant_units(config)
    assert len(variants) == (1 + 2 * len(config.variant_betas)) * len(config.seeds)
    assert len({u.id for u in variants}) == len(variants)


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
    config = PRESETS["smoke"]()
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


def _rows(nested_q8, prefix_q8, ranked_q8, full=0.86, speedup=(2.0, 2.1, 1.9)):
    rows = []
    for seed, (n, p, r, s) in enumerate(zip(nested_q8, prefix_q8, ranked_q8, speedup, strict=True)):
        rows.append({"name": "nested", "seed": seed, "metrics": {"test_top1_q8": n, "speedup_q8": s}})
        for name, value in (("fixed-prefix", p), ("fixed-ranked", r)):
            metrics = {"test_top1_q8": value, "test_top1_q32": full + 0.001 * seed, "chance": 0.1}
            rows.append({"name": name, "seed": seed, "metrics": metrics})
    return rows


NESTED, PREFIX, RANKED = [0.84, 0.85, 0.845], [0.6, 0.62, 0.61], [0.7, 0.71, 0.69]


def test_main_verdict_on_constructed_rows():
    config = PRESETS["standard"]()
    assert experiment.verdict(config, _rows(NESTED, PREFIX, RANKED)).verdict == "supported"
    worse = experiment.verdict(config, _rows([0.5, 0.52, 0.51], PREFIX, RANKED))
    assert worse.verdict == "not supported"
    slow = experiment.verdict(config, _rows(NESTED, PREFIX, RANKED, speedup=(1.2, 1.25, 1.15)))
    assert slow.verdict == "not supported"
    # beats the ranked truncation but keeps far more than half of its drop: not the claimed effect
    big_drop = experiment.verdict(config, _rows([0.72, 0.73, 0.725], PREFIX, RANKED))
    assert big_drop.verdict == "not supported"
    # the fixed model did not learn (top-1 at Q below 2 x chance): nothing to judge
    unlearned = experiment.verdict(config, _rows([0.15, 0.16, 0.155], [0.1] * 3, [0.11] * 3, full=0.17))
    assert unlearned.verdict == "inconclusive"
    noisy = experiment.verdict(config, _rows([0.7, 0.9, 0.6], [0.6, 0.75, 0.7], RANKED))
    assert noisy.verdict == "inconclusive"


def _variant_rows(config: PerceiverRunConfig, best_gain: float) -> list[dict]:
    rows = []
    for seed in range(3):
        for name in experiment.truncation_names():
            rows.append({"name": name, "seed": seed, "metrics": {"val_auc": 0.5 + 0.01 * seed}})
        for index, name in enumerate(experiment.candidate_names(config)):
            gain = best_gain if index == 2 else 0.0
            rows.append({"name": name, "seed": seed, "metrics": {"val_auc": 0.5 + gain + 0.012 * seed - 0.001}})
    return rows


def test_variant_verdict_corrects_for_the_pick_of_the_best():
    config = PRESETS["standard"]()
    k = len(experiment.candidate_names(config))
    result = experiment.variant_verdict(config, _variant_rows(config, 0.05))
    assert result.verdict == "supported"
    assert experiment.best_candidate(config, _variant_rows(config, 0.05)) == experiment.candidate_names(config)[2]
    assert all(math.isclose(c.alpha, ALPHA / k) for c in result.comparisons)
    assert len(result.comparisons) == len(experiment.truncation_names())
    assert experiment.variant_verdict(config, _variant_rows(config, 0.0)).verdict != "supported"


def test_budget_choice_uses_validation_only():
    val = [(0.3, 0.5), (0.5, 0.9), (0.7, 0.8), (1.0, 0.95)]
    test = [(0.31, 0.4), (0.52, 0.7), (0.69, 0.99), (1.0, 0.9)]
    chosen = experiment.choose_at_budgets(val, test, (0.2, 0.6, 0.8))
    assert 0.2 not in chosen
    assert chosen[0.6] == (0.7, 0.52) and chosen[0.8] == (0.7, 0.52)


def test_latency_is_timed_interleaved_and_reported_as_ratios():
    result = latency_benchmark(TINY, batch=8, rounds=2, warmup=1, threads=1)
    assert result["widths"] == [8, 4, 2, 1]
    assert result["model_ratio"][8] == 1.0 and result["macs_ratio"][2] < 1.0
    assert 0 < result["q_dependent_share"][2] < result["q_dependent_share"][8] < 1
    timed = width_latency(PerceiverClassifier(TINY), torch.rand(4, 1, 28, 28), [8, 2], rounds=3, warmup=1)
    assert timed["speedup"][8] == 1.0 and timed["latency_ms"][2] > 0


@pytest.mark.slow
def test_smoke_preset_end_to_end(tmp_path):
    from frugalvision.cli import main

    assert main(["run", "perceiver", "--preset", "smoke", "--out", str(tmp_path), "--no-progress"]) == 0
    document = json.loads((tmp_path / "perceiver" / "results.json").read_text())
    assert document["verdict"] in ("supported", "not supported", "inconclusive")
    names = {row["name"] for row in document["rows"]}
    assert {"fixed-prefix", "fixed-ranked", "nested", "scratch-q2"} <= names
