"""The experiment declaration: presets, unit plan, the verdict rule on crafted rows, figures' overlay, benchmark."""

import dataclasses
import json

import pytest
import torch

from frugalvision.errors import ConfigError
from frugalvision.methods.muhdi.bench import benchmark
from frugalvision.methods.muhdi.config import PRESETS, arm_settings
from frugalvision.methods.muhdi.experiment import PALETTE, overlay, per_class_iou, plan_units, verdict


def _rows(forgetting_gap, miou_gap, gap=0.2, noise=(0.001, -0.002, 0.0015)):
    rows = []
    for seed, e in enumerate(noise):
        rows.append({"name": "source-only", "seed": seed, "metrics": {"mean_miou": 0.3, "domain_gap": gap}})
        rows.append({"name": "advent", "seed": seed, "metrics": {"mean_miou": 0.40, "forgetting": 0.05}})
        rows.append({
            "name": "muhdi", "seed": seed,
            "metrics": {"mean_miou": 0.40 + miou_gap + e, "forgetting": 0.05 - forgetting_gap + e},
        })  # fmt: skip
    return rows


def test_verdict_rule_on_crafted_rows():
    config = PRESETS["standard"]()
    assert verdict(config, _rows(0.03, 0.0)).verdict == "supported"  # forgets less, same mIoU
    assert verdict(config, _rows(0.03, -0.005)).verdict == "supported"  # within the non-inferiority margin
    assert verdict(config, _rows(-0.03, 0.0)).verdict == "not supported"  # forgets more
    assert verdict(config, _rows(0.03, -0.05)).verdict == "not supported"  # clearly lower mean mIoU
    assert verdict(config, _rows(0.03, 0.0, gap=-0.1)).verdict == "inconclusive"  # no domain gap
    assert verdict(config, _rows(0.0, 0.0, noise=(0.01, -0.01, 0.0))).verdict == "inconclusive"
    rule = verdict(config, _rows(0.03, 0.0)).rule
    assert "forgetting" in rule and "-0.01" in rule


def test_presets_validate_and_scale_up():
    for name in ("smoke", "standard", "extended"):
        PRESETS[name]().validate()
    smoke, standard, extended = (PRESETS[n]() for n in ("smoke", "standard", "extended"))
    assert len(standard.seeds) >= 3 and len(extended.seeds) >= 3 and len(extended.targets) == 3
    assert extended.loop.max_steps > standard.loop.max_steps > smoke.loop.max_steps
    paper = PRESETS["paper"]()
    assert paper.model.backbone == "resnet101" and paper.image_size == (320, 640) and paper.loop.batch_size == 1
    assert paper.step.lambda_pod == 1e-5 and paper.step.lambda_kd == 1e-5 and paper.step.lambda_kt == 1.0
    with pytest.raises(ConfigError, match="data-root"):
        paper.validate()


def test_invalid_fields_fail_with_one_line(tmp_path):
    base = PRESETS["smoke"]()
    for changes, needle in (
        ({"arms": ("muhdi", "dann")}, "arms"),
        ({"targets": ("city", "city")}, "targets"),
        ({"targets": ("synthetic",)}, "targets"),
        ({"image_size": (16, 16)}, "image_size"),
        ({"label_map": "mine"}, "label_map"),
        ({"dataset": "kitti"}, "dataset"),
    ):
        with pytest.raises(ConfigError, match=needle):
            dataclasses.replace(base, **changes).validate()


def test_units_put_the_shared_start_first_in_every_seed():
    config = dataclasses.replace(PRESETS["standard"](), seeds=(0, 1))
    names = [(u.name, u.seed) for u in plan_units(config)]
    assert names == [("step1", 0), ("advent", 0), ("muhdi", 0), ("step1", 1), ("advent", 1), ("muhdi", 1)]


def test_arm_settings_change_one_thing_each():
    base = PRESETS["standard"]().step
    assert arm_settings(base, "advent").method == "advent"
    assert arm_settings(base, "muhdi-no-pod").lambda_pod == 0 and arm_settings(base, "muhdi-no-pod").lambda_kd > 0
    assert arm_settings(base, "muhdi-no-specialist").branches == ("agnostic",)
    assert (
        base.specialist_init == "agnostic" and arm_settings(base, "muhdi-fresh-specialist").specialist_init == "fresh"
    )
    assert PRESETS["paper"]().step.specialist_init == "fresh"
    assert arm_settings(base, "bn-only").lambda_adv_main == 0 and arm_settings(base, "oracle").method == "supervised"


def test_overlay_blends_class_colours_and_leaves_ignored_pixels():
    image = torch.zeros(3, 2, 2)
    labels = torch.tensor([[0, 6], [255, 3]])
    out = overlay(image, labels, alpha=1.0)
    assert out.shape == (2, 2, 3)
    assert torch.allclose(out[0, 1], PALETTE[6]) and torch.equal(out[1, 0], torch.zeros(3))


def test_quick_benchmark_writes_both_ratios(tmp_path):
    from frugalvision.harness.bench import contract_gaps

    result = benchmark(tmp_path, quick=True)
    assert result["training_step"][0]["ratio"] > 0 and result["inference"][0]["ratio"] > 0
    assert contract_gaps(result) == [] and [r["peer"] for r in result["ratios"]][0] == "sequential ADVENT step"
    assert result["inference"][0]["params_exported"] < result["inference"][0]["params_full"]
    assert json.loads((tmp_path / "muhdi_benchmark.json").read_text())["device"] in ("cpu", "cuda")


def _write_benchmark(root, height=32, width=64):
    """GTA5 (4 images) and Cityscapes / IDD (train and val, 2 each) in the official layouts."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)

    def pair(image_path, label_path, ids):
        for path in (image_path, label_path):
            path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(image_path)
        Image.fromarray(rng.choice(ids, (height, width)).astype(np.uint8)).save(label_path)

    for i in range(4):
        pair(root / f"GTA5/images/{i:05d}.png", root / f"GTA5/labels/{i:05d}.png", [7, 11, 21, 23, 26])
    for split in ("train", "val"):
        for i in range(2):
            name = f"aachen/aachen_{i:06d}_000019"
            pair(root / f"cityscapes/leftImg8bit/{split}/{name}_leftImg8bit.png",
                 root / f"cityscapes/gtFine/{split}/{name}_gtFine_labelIds.png", [7, 11, 21, 23, 26])  # fmt: skip
            pair(root / f"IDD/leftImg8bit/{split}/30/{i:06d}_leftImg8bit.png",
                 root / f"IDD/gtFine/{split}/30/{i:06d}_gtFine_labelids.png", [0, 29, 32, 33, 12])  # fmt: skip


def test_the_benchmark_path_runs_end_to_end_on_real_format_files(tmp_path):
    from frugalvision.cli import main
    from frugalvision.report import load_results

    _write_benchmark(tmp_path / "data")
    argv = ["run", "muhdi", "--preset", "smoke", "--dataset", "benchmark", "--data-root", str(tmp_path / "data"),
            "--arms", "advent", "muhdi", "--benchmark-targets", "cityscapes", "idd", "--loop.batch-size", "2",
            "--step1-loop.batch-size", "2", "--out", str(tmp_path / "out"), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    document = load_results(tmp_path / "out" / "muhdi")
    assert document["dataset"] == "benchmark"
    assert {r["name"] for r in document["rows"]} == {"advent", "muhdi"}
    assert all("miou_cityscapes" in r["metrics"] and "forgetting" in r["metrics"] for r in document["rows"])
    assert all("iou_flat_cityscapes" in r["metrics"] and "iou_sky_idd" in r["metrics"] for r in document["rows"])


def test_per_class_iou_names_class_and_domain_and_drops_absent_classes():
    scores = {"city": {"miou": 0.5, "iou_flat": 0.75, "iou_sky": float("nan")}, "source": {"iou_flat": 0.25}}
    assert per_class_iou(scores) == {"iou_flat_city": 0.75, "iou_flat_source": 0.25}


def test_the_paper_preset_validates_with_a_data_root(tmp_path):
    _write_benchmark(tmp_path)
    dataclasses.replace(PRESETS["paper"](), data_root=str(tmp_path)).validate()
