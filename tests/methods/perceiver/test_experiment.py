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
    assert declared is experiment.EXPERIMENT and set(declared.studies) == {"variants", "calibration"}
    assert set(declared.presets) >= {"smoke", "standard", "extended", "paper"}
    for name in ("smoke", "standard", "extended"):
        config = PRESETS[name]()
        assert isinstance(config, RunConfig) and config.preset == name
        config.validate()
    assert len(PRESETS["standard"]().seeds) >= 3 and PRESETS["standard"]().threads == 2
    paper = PRESETS["paper"]()
    with pytest.raises(ConfigError, match="data-root"):
        paper.validate()
    (tmp_path / "train").mkdir()
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
    per_seed = 2 + len({config.quarter, *config.scratch_widths})
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
    source, train, val, test, skipped = load_data(config, seed=0)
    assert source == "imagefolder" and skipped == [] and (len(train), len(val), len(test)) == (12, 4, 6)
    assert train.image_shape == (3, 28, 28) and train.num_classes == 2
    assert set(train.dataset.indices).isdisjoint(val.dataset.indices)
    assert val.head(4).shape == (4, 3, 28, 28) and sorted(test.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    image, label = train.dataset[0]
    assert image.shape == (3, 28, 28) and label in (0, 1)


def _rows(nested_q8, scratch_q8, nested_full=(0.861, 0.868, 0.866), fixed_full=(0.86, 0.87, 0.865), speed=2.0):
    """Main-study rows: Q = 32, Q/4 = 8; fixed-prefix at Q, scratch-q8 at 8, nested at both; latency on seed 0."""
    rows = []
    for seed, (n, s, nf, ff) in enumerate(zip(nested_q8, scratch_q8, nested_full, fixed_full, strict=True)):
        nested = {"test_top1_quarter": n, "test_top1_full": nf}
        if seed == 0:
            nested |= {"speedup_q8": speed, "speedup_q8_q25": speed - 0.1}
        rows.append({"name": "nested", "seed": seed, "metrics": nested})
        rows.append({"name": "scratch-q8", "seed": seed, "metrics": {"test_top1_quarter": s, "test_top1_native": s}})
        fixed = {"test_top1_full": ff, "test_top1_native": ff, "test_top1_quarter": 0.3, "chance": 0.1}
        rows.append({"name": "fixed-prefix", "seed": seed, "metrics": fixed})
    return rows


SCRATCH = [0.80, 0.81, 0.805]


def test_main_verdict_on_constructed_rows():
    config = PRESETS["standard"]()
    assert config.epsilon == 0.02 and config.quarter == 8
    # within epsilon of both dedicated models, Q matters, fast: supported
    assert experiment.verdict(config, _rows([0.799, 0.812, 0.804], SCRATCH)).verdict == "supported"
    # clearly more than epsilon below the Q/4 model: not supported
    assert experiment.verdict(config, _rows([0.75, 0.76, 0.755], SCRATCH)).verdict == "not supported"
    # clearly more than epsilon below the fixed-Q model at Q: not supported
    low_full = experiment.verdict(config, _rows([0.80, 0.81, 0.805], SCRATCH, nested_full=(0.8, 0.81, 0.805)))
    assert low_full.verdict == "not supported"
    # Q does not matter (scratch at Q/4 as good as fixed at Q): nothing to judge
    flat = experiment.verdict(config, _rows([0.86, 0.87, 0.865], [0.86, 0.87, 0.865]))
    assert flat.verdict == "inconclusive" and "queries matter" in flat.evidence[-2]
    # measured speed-up below 1.5x: not the claim
    slow = experiment.verdict(config, _rows([0.799, 0.812, 0.804], SCRATCH, speed=1.2))
    assert slow.verdict == "inconclusive" and "fails" in slow.evidence[-1]
    noisy = experiment.verdict(config, _rows([0.70, 0.85, 0.80], SCRATCH))
    assert noisy.verdict == "inconclusive"


def test_dynamic_verdict_compares_at_equal_average_macs():
    config = PRESETS["standard"]()
    static = [(1.0, 0.86), (0.5, 0.84), (0.25, 0.80)]
    assert experiment.static_at_macs(static, 0.375) == pytest.approx(0.82)  # half-way mix of Q/4 and Q/2
    assert experiment.static_at_macs([(1.0, 0.8), (0.5, 0.85)], 0.75) == pytest.approx(0.85)  # Pareto front
    rows = []
    for seed in range(3):
        val = [(0.3, 0.80), (0.45, 0.84), (0.7, 0.86)]
        test = [(0.31, 0.80 + 0.001 * seed), (0.46, 0.845), (0.72, 0.861)]
        rows += experiment.budget_rows(config, seed, val, test, static)
    cascade = [r for r in rows if r["name"] == "nested-cascade"][0]["metrics"]
    static_row = [r for r in rows if r["name"] == "nested-static"][0]["metrics"]
    assert cascade["budget_rel_macs_b60"] == static_row["budget_rel_macs_b60"] == 0.46
    assert static_row["budget_top1_b60"] == pytest.approx(experiment.static_at_macs(static, 0.46))
    result = experiment.dynamic_verdict(config, rows)
    assert len(result.comparisons) == 3 and result.verdict in ("supported", "inconclusive", "not supported")


def test_calibration_study_asks_whether_queries_matter():
    config = PRESETS["standard"]()
    units = experiment.calibration_units(config)
    assert [u.name for u in units[:2]] == ["fixed", "scratch-q8"] and units[1].params["split"] == "val"

    def rows(fixed, scratch):
        out = []
        for seed, (f, s) in enumerate(zip(fixed, scratch, strict=True)):
            out.append({"name": "fixed", "seed": seed, "metrics": {"val_top1_native": f}})
            out.append({"name": "scratch-q8", "seed": seed, "metrics": {"val_top1_native": s}})
        return out

    assert experiment.calibration_verdict(config, rows([0.8, 0.82, 0.81], [0.7, 0.71, 0.705])).verdict == "supported"
    assert experiment.calibration_verdict(config, rows([0.8, 0.82, 0.81], [0.8, 0.825, 0.8])).verdict != "supported"


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
    # the performance-table rows (ratio_entry): each width and the worst-case cascade against the model at Q
    assert [e["name"] for e in result["ratios"]][:3] == [
        "forward at Q' = 4 vs Q = 8",
        "forward at Q' = 2 vs Q = 8",
        "forward at Q' = 1 vs Q = 8",
    ]
    assert result["ratios"][1]["ratio"] == pytest.approx(result["model_ratio"][2]) and len(result["ratios"]) == 4
    assert all(e["rounds"] == 2 and e["peer"].startswith("the same Perceiver") for e in result["ratios"])
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


def _image_tree(root, corrupt: str | None = None):
    from PIL import Image

    for split, per_class in (("train", 10), ("val", 3)):
        for cls in ("cat", "dog"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (40, 30), (i * 20, 100, 200 if cls == "dog" else 0)).save(folder / f"{i}.png")
    if corrupt:
        (root / corrupt).write_bytes(b"\x89PNG\r\n\x1a\n not an image")


def test_skip_bad_files_is_honoured_and_the_skipped_files_are_reported(tmp_path):
    from frugalvision.errors import DataError

    _image_tree(tmp_path, corrupt="train/cat/broken.png")
    config = PRESETS["smoke"]()
    config.dataset, config.data_root = "imagefolder", str(tmp_path)
    config.model = dataclasses.replace(config.model, img_size=28, patch_size=7)
    config.train_size, config.val_size, config.test_size = 12, 4, 6
    with pytest.raises(DataError, match="broken.png"):
        data = load_data(config, seed=0)
        for split in (data.train, data.val, data.test):
            list(split.batches())
    config.skip_bad_files = True
    data = load_data(config, seed=0)
    assert [p.endswith("broken.png") for p in data.skipped] == [True] and len(data.train) == 12
    record = experiment.UnitRecord(experiment.Unit("fixed", 0), [], {"skipped_files": data.skipped}, {}, None, 0.0)
    assert "1 corrupt files skipped" in experiment.notes(config, [record]) and "broken.png" in experiment.notes(
        config, [record]
    )


def _cifar_python_release(root, train_per_batch=6, test=8):
    """A tiny CIFAR-10 in the official Python layout: pickled dicts of bytes keys, uint8 [N, 3072] rows."""
    import pickle

    import numpy as np

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        count = test if name == "test_batch" else train_per_batch
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in np.arange(count) % 10],
            b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
            b"filenames": [f"{i}.png".encode() for i in range(count)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def test_cifar_python_release_feeds_the_experiment(tmp_path):
    folder = _cifar_python_release(tmp_path, train_per_batch=10)
    config = dataclasses.replace(PRESETS["smoke"](), dataset="cifar10", data_root=str(tmp_path))
    config.train_size, config.val_size, config.test_size = 30, 10, 8
    config.validate()
    data = load_data(config, seed=0)
    assert data.source == "cifar10" and data.train.image_shape == (3, 32, 32) and data.train.num_classes == 10
    assert len(data.train) == 30 and len(data.val) == 10 and len(data.test) == 8
    arch = experiment.architecture(config, data.train)
    assert (arch.img_size, arch.in_chans, arch.num_classes) == (32, 3, 10)
    # the first record's planar bytes become the (3, 32, 32) image of the test file
    import pickle

    raw = pickle.loads((folder / "test_batch").read_bytes())[b"data"]
    from frugalvision.data.cifar import load_cifar

    test_file = load_cifar(tmp_path, "cifar10", train=False, allow_pickle=True)
    assert torch.equal(test_file.images[0], torch.from_numpy(raw[0].reshape(3, 32, 32)))
    with pytest.raises(ConfigError, match="data-root"):
        dataclasses.replace(PRESETS["smoke"](), dataset="cifar100").validate()
