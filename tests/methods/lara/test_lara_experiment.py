"""LaRa experiment: registry entry, presets, config validation, verdict rule, a tiny end-to-end run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from frugalvision.engine import LoopConfig
from frugalvision.errors import ConfigError
from frugalvision.methods.lara.runner import paper, repo_latest, verdict_for
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


def test_config_validation() -> None:
    module = get_method("lara").load()
    with pytest.raises(ConfigError, match="arms"):
        replace(module.PRESETS["smoke"](), arms=("nope",)).validate()
    with pytest.raises(ConfigError, match="data-root"):
        replace(module.PRESETS["smoke"](), dataset="nuscenes").validate()


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


def test_benchmark_quick(tmp_path: Path) -> None:
    from frugalvision.methods.lara.benchmark import benchmark

    result = benchmark(tmp_path, quick=True)
    rows = result["rows"]
    assert [r["tokens"] for r in rows] == [128, 768]
    # the dense score matrix (queries x tokens) grows 6x with 6 cameras; LaRa's memory grows far less
    assert rows[1]["dense_mib"] > 3 * rows[0]["dense_mib"]
    assert rows[1]["dense_over_lara_mib"] > rows[0]["dense_over_lara_mib"]
