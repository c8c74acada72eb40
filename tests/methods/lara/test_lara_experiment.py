"""LaRa experiment: registry entry, presets, config validation, verdict rule, a tiny end-to-end run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from frugalvision.engine import LoopConfig
from frugalvision.errors import ConfigError
from frugalvision.methods.lara.geometry import project
from frugalvision.methods.lara.model import ModelConfig
from frugalvision.methods.lara.runner import (
    CameraDropout,
    ExtrinsicNoise,
    paper,
    repo_latest,
    study_verdict,
    verdict_for,
)
from frugalvision.methods.lara.world import SceneDataset, WorldConfig, generate_scenes
from frugalvision.registry import get_method


def tiny(out: Path):
    module = get_method("lara").load()
    config = module.PRESETS["smoke"]()
    return replace(
        config,
        out=str(out),
        progress=False,
        train_scenes=8,
        val_scenes=4,
        latency_runs=1,
        figure_scenes=1,
        loop=LoopConfig(max_steps=2, batch_size=4, lr=1e-3, log_every=1),
    )


def test_registered_and_presets() -> None:
    module = get_method("lara").load()
    assert set(module.PRESETS) == {"smoke", "standard", "paper"}
    for name, fn in module.PRESETS.items():
        config = fn()
        assert isinstance(config, module.CONFIG_CLASS) and config.preset == name
    p = paper()
    assert p.grid.shape == (200, 200) and p.loop.lr == 5e-4 and p.loop.weight_decay == 1e-5
    assert (p.model.num_latents, p.model.latent_dim, p.model.cross_heads, p.model.self_heads) == (256, 256, 32, 16)
    assert (p.model.feature_stride, p.model.feature_dim, p.model.decoder_heads, p.model.head) == (8, 128, 16, "lss")
    assert p.pos_weight == 2.13 and p.seeds == (84924,) and p.loop.schedule == "constant"
    assert repo_latest().loop.lr == 1e-3
    assert p.model.sync_bn and p.model.decoder_checkpoint and p.model.attn_init == "mha"
    assert p.model.latent_init_std == 0.02  # the official init; ToyBEV presets deviate (see README)


def test_config_validation() -> None:
    module = get_method("lara").load()
    with pytest.raises(ConfigError, match="arms"):
        replace(module.PRESETS["smoke"](), arms=("nope",)).validate()
    with pytest.raises(ConfigError, match="data-root"):
        replace(module.PRESETS["smoke"](), dataset="nuscenes").validate()
    with pytest.raises(ConfigError, match="latent_init_std"):
        replace(module.PRESETS["smoke"](), model=ModelConfig(latent_init_std=0.0)).validate()
    with pytest.raises(ConfigError, match="study_arms"):
        replace(module.PRESETS["smoke"](), study_arms=("lift", "lara-camidx")).validate()
    assert module.STUDIES == ("robustness",)


def test_perturbed_validation_sets() -> None:
    scenes = SceneDataset(generate_scenes(WorldConfig(), 2, seed=3))
    dropped = CameraDropout(scenes, camera=1)[0]
    clean = scenes[0]
    keep = [0, 2, 3, 4, 5]
    for key in ("images", "intrinsics", "rotation", "translation"):
        assert torch.equal(dropped[key], clean[key][keep])
    assert torch.equal(dropped["bev"], clean["bev"]) and torch.equal(dropped["visibility"], clean["visibility"])
    noisy = ExtrinsicNoise(scenes, yaw_deg=2.0, trans_m=0.2, seed=0)
    a, b = noisy[0], noisy[0]
    assert torch.equal(a["rotation"], b["rotation"])  # deterministic per index
    assert torch.equal(a["images"], clean["images"]) and torch.equal(a["intrinsics"], clean["intrinsics"])
    rot_err = torch.rad2deg(
        torch.acos(
            ((a["rotation"].transpose(-1, -2) @ clean["rotation"]).diagonal(dim1=-2, dim2=-1).sum(-1).clamp(-1, 3) - 1)
            / 2
        )
    )
    assert 0 < float(rot_err.max()) < 10 and float((a["translation"] - clean["translation"]).norm(dim=-1).max()) < 1.5
    assert torch.allclose(a["rotation"] @ a["rotation"].transpose(-1, -2), torch.eye(3).expand(6, 3, 3), atol=1e-5)
    # the error is a pure yaw: a camera's optical axis keeps its elevation
    assert torch.allclose(a["rotation"][:, 2, :], clean["rotation"][:, 2, :], atol=1e-6)
    assert not torch.allclose(ExtrinsicNoise(scenes, 0.0, 0.0)[0]["rotation"], a["rotation"])
    point = torch.tensor([[8.0, 0.5, 0.5]])
    pix_clean, _ = project(point, clean["intrinsics"][1], clean["rotation"][1], clean["translation"][1])
    pix_zero, _ = project(
        point, *(ExtrinsicNoise(scenes, 0.0, 0.0)[0][k][1] for k in ("intrinsics", "rotation", "translation"))
    )
    assert torch.allclose(pix_clean, pix_zero, atol=1e-4)


def test_study_verdict_rule() -> None:
    def rows(values: dict[str, float]):
        return [{"name": n, "seed": 0, "metrics": {"val_iou_all": v}} for n, v in values.items()]

    assert study_verdict(rows({"lara": 0.30, "lara-noplucker": 0.20}))[0] == "supported"
    assert study_verdict(rows({"lara": 0.20, "lara-noplucker": 0.30}))[0] == "not supported"
    assert study_verdict(rows({"lara": 0.300, "lara-noplucker": 0.295}))[0] == "inconclusive"
    assert study_verdict(rows({"lara": 0.02, "lara-noplucker": 0.0}))[0] == "inconclusive"
    assert study_verdict(rows({"lara": 0.3}))[0] == "inconclusive"


def test_verdict_rule() -> None:
    def rows(values: dict[str, list[float]]):
        return [
            {"name": n, "seed": s, "metrics": {"val_iou_all": v}} for n, vs in values.items() for s, v in enumerate(vs)
        ]

    arms = ("lift", "lara", "lara-camidx", "dense")
    assert (
        verdict_for(
            rows({"lift": [0.3, 0.3], "lara": [0.4, 0.4], "lara-camidx": [0.2, 0.3], "dense": [0.3, 0.3]}), arms
        )[0]
        == "supported"
    )
    assert (
        verdict_for(
            rows({"lift": [0.3, 0.3], "lara": [0.4, 0.4], "lara-camidx": [0.2, 0.5], "dense": [0.3, 0.3]}), arms
        )[0]
        == "inconclusive"
    )  # mean beats camidx but not on every seed
    assert (
        verdict_for(
            rows({"lift": [0.5, 0.5], "lara": [0.2, 0.2], "lara-camidx": [0.3, 0.3], "dense": [0.1, 0.1]}), arms
        )[0]
        == "not supported"
    )


def test_tiny_run_end_to_end_and_deterministic(tmp_path: Path) -> None:
    module = get_method("lara").load()
    first = module.run(tiny(tmp_path / "a"))
    second = module.run(tiny(tmp_path / "b"))
    assert (tmp_path / "a" / "lara" / "results.json").exists()
    assert (tmp_path / "a" / "lara" / "bev_predictions.png").exists()
    assert [r["name"] for r in first["rows"]] == ["lift", "lara"]
    assert first["verdict"] in ("supported", "not supported", "inconclusive") and first["verdict_rule"]
    for a, b in zip(first["rows"], second["rows"], strict=True):
        for key in ("val_iou_all", "val_iou_vis2", "val_iou_r0-8", "val_iou_r8-16", "params_m"):
            assert a["metrics"][key] == b["metrics"][key]


def test_tiny_robustness_study(tmp_path: Path) -> None:
    module = get_method("lara").load()
    config = replace(tiny(tmp_path), study="robustness", study_arms=("lift", "lara-noplucker"))
    document = module.run(config)
    assert (tmp_path / "lara" / "robustness" / "results.json").exists()
    assert [r["name"] for r in document["rows"]] == ["lift", "lara-noplucker"]
    for row in document["rows"]:
        m = row["metrics"]
        assert m["val_iou_all_drop_worst"] <= m["val_iou_all_drop_mean"] + 1e-9
        assert 0 <= m["val_iou_all_noise"] <= 1
    assert document["verdict"] == "inconclusive"  # lara (Plücker on) not run


def test_benchmark_quick(tmp_path: Path) -> None:
    from frugalvision.methods.lara.benchmark import benchmark

    result = benchmark(tmp_path, quick=True)
    rows = result["rows"]
    assert [r["tokens"] for r in rows] == [128, 768]
    # the dense score matrix (queries x tokens) grows 6x with 6 cameras; LaRa's memory grows far less
    assert rows[1]["dense_mib"] > 3 * rows[0]["dense_mib"]
    assert rows[1]["dense_over_lara_mib"] > rows[0]["dense_over_lara_mib"]
