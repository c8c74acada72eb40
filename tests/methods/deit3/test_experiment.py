"""Task adapter, FLOP-matched arm, verdict rules, and the smoke preset end to end on the harness (determinism)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from frugalvision.engine import Engine, FabricConfig, save_weights
from frugalvision.errors import ConfigError
from frugalvision.harness import run_experiment, supported_rate
from frugalvision.methods.deit3 import build_optimizer, build_vit, deit3_step, experiment
from frugalvision.methods.deit3.config import (
    arm_recipe,
    experiment_arms,
    extended,
    paper,
    paper_in21k_to_1k,
    smoke,
    standard,
)
from frugalvision.methods.deit3.data import load_colour_sets
from frugalvision.methods.deit3.losses import mixed_bce_loss
from frugalvision.methods.deit3.model import resize_vit
from frugalvision.methods.deit3.task import Deit3Task, build_model


def test_finetune_stage_starts_from_resized_low_res_model_and_ra_order() -> None:
    c = smoke()
    sets = load_colour_sets("digits", n_test=50)
    low = arm_recipe(c, "lowres")
    pre = dataclasses.replace(low.pretrain, repeated_aug=3)
    ft = low.finetune
    low_task = Deit3Task(c.model, low, pre, sets.train, {}, 10, 16)
    torch.manual_seed(0)
    low_model = low_task.build_model().eval()
    assert low_model.pos_embed.shape[1] == (pre.img_size // c.model.patch_size) ** 2
    assert low_task.batch_order() is not None  # repeated augmentation in a single process too
    ft_task = Deit3Task(c.model, low, ft, sets.train, {"test": sets.test}, 10, 16, init_model=low_model)
    high = ft_task.build_model().eval()
    assert ft_task.batch_order() is None
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(high(x), resize_vit(low_model, 16).eval()(x), rtol=0, atol=0)
    # collate: training batches are augmented at the stage's size, evaluation batches resized to the eval size
    items = [low_task.train_dataset()[i] for i in range(8)]
    xb, yb = low_task.collate()(items)
    assert xb.shape == (8, 3, pre.img_size, pre.img_size) and yb.shape == (8,)
    xe, _ = ft_task.collate()([ft_task.eval_datasets()["test"][i] for i in range(4)])
    assert xe.shape == (4, 3, 16, 16)
    bce = Deit3Task(c.model, low, arm_recipe(c, "bce").pretrain, sets.train, {}, 10, 16)
    loss, logs = bce.training_step(high.train(), bce.collate()(items), 0)
    assert torch.isfinite(loss) and 0 < logs["lam"] <= 1
    assert mixed_bce_loss(torch.zeros(2, 10), torch.eye(10)[:2]).item() > 0


def test_resolution_arms_get_the_flops_of_the_base() -> None:
    c = smoke()
    data = experiment.colour_data(load_colour_sets("digits", n_test=50))
    budget = experiment.train_flops(c, c.base, [(c.base.pretrain, c.steps)], data)
    # lowres built from the one-stage base: 10 % of the base's steps at 16 px, the rest of the FLOPs at 12 px
    (low, n_low), (ft, n_ft) = experiment.arm_plan(c, "lowres", data)
    assert (low.img_size, ft.img_size, n_ft) == (12, 16, round(0.1 * c.steps))
    per_low = experiment.train_flops(c, c.base, [(low, 1)], data)
    spent = experiment.train_flops(c, c.base, [(low, n_low), (ft, n_ft)], data)
    assert spent <= budget < spent + per_low and n_low + n_ft > c.steps
    # fullres built from a two-stage base (the paper's shape): as many full-res steps as the FLOPs allow
    two = dataclasses.replace(c, base=arm_recipe(c, "lowres"))
    [(full, n_full)] = experiment.arm_plan(two, "fullres", data)
    base_plan = experiment.split_steps(two.base, two.steps)
    budget = experiment.train_flops(two, two.base, base_plan, data)
    per_full = experiment.train_flops(two, two.base, [(full, 1)], data)
    assert full.img_size == 16 and n_full * per_full <= budget < (n_full + 1) * per_full
    # swaps of one ingredient train the base's steps
    assert experiment.arm_plan(c, "three_augment", data) == [(arm_recipe(c, "three_augment").pretrain, c.steps)]


def test_stage_batch_splits_the_global_batch_of_a_stage() -> None:
    c = paper()
    pre, ft = c.base.pretrain, c.base.finetune
    assert experiment.stage_batch(c, pre, 8) == 256 and experiment.stage_batch(c, ft, 8) == 64
    assert experiment.stage_batch(c, ft, 16) == 32 and experiment.stage_batch(smoke(), smoke().base.pretrain, 4) == 32
    with pytest.raises(ConfigError, match="global_batch=512"):
        experiment.stage_batch(c, ft, 3)


def rows(values: dict[str, list[float]], gflops: dict[str, float] | None = None) -> list[dict]:
    out = []
    for name, per_seed in values.items():
        for seed, value in enumerate(per_seed):
            metrics = {"top1": value, "train_gflops": (gflops or {}).get(name, 1.0)}
            out.append({"name": name, "seed": seed, "metrics": metrics})
    return out


def test_verdict_rule_on_constructed_rows() -> None:
    c = dataclasses.replace(extended(), claims=("augment", "resolution"))

    def v(three: list[float], lowres: list[float], gflops: dict[str, float] | None = None) -> str:
        ref = [0.70, 0.71, 0.72]
        table = {"three_augment": three, "randaugment": ref, "lowres": lowres, "base": ref}
        return experiment.verdict(c, rows(table, gflops)).verdict

    up, down, same = [0.75, 0.77, 0.76], [0.60, 0.62, 0.61], [0.71, 0.70, 0.72]
    assert v(up, up) == "supported"
    assert v(up, same) == "inconclusive"  # every claim must hold
    assert v(up, down) == "not supported"  # one ingredient that hurts refutes "each ingredient helps"
    assert v(up, up, {"lowres": 2.0, "base": 1.0}) == "inconclusive"  # more FLOPs than the reference
    low = {"three_augment": [0.2, 0.21, 0.22], "randaugment": [0.1, 0.1, 0.11], "lowres": up, "base": same}
    assert experiment.verdict(c, rows(low)).verdict == "inconclusive"  # the augment pair does not learn
    one_seed = {name: values[:1] for name, values in low.items()}
    assert experiment.verdict(c, rows(one_seed)).verdict == "inconclusive"
    nothing = experiment.verdict(dataclasses.replace(c, claims=()), rows({"base": up}))
    assert nothing.verdict == "inconclusive" and "no claim" in " ".join(nothing.evidence)


def test_stability_rule_corrects_for_picking_the_best_learning_rate() -> None:
    c = extended()
    lrs = c.stability.lrs
    assert experiment.stability_units(c)[0].params == {"lr": lrs[0], "layer_scale": True}
    assert len(experiment.stability_units(c)) == 2 * len(lrs) * len(c.seeds)

    def table(ls: list[list[float]], no: list[list[float]]) -> list[dict]:
        values = {}
        for lr, a, b in zip(lrs, ls, no):
            values[f"layerscale_lr{lr:g}"], values[f"no_layerscale_lr{lr:g}"] = a, b
        return rows(values)

    good, chance, same = [0.70, 0.71, 0.72], [0.1, 0.1, 0.1], [0.71, 0.70, 0.72]
    helps_at_high_lr = table([good, good, good], [same, same, chance])
    result = experiment.stability_verdict(c, helps_at_high_lr)
    assert result.verdict == "supported" and len(result.evidence) == 1 + 1 + 2  # best, precondition, 2 other LRs
    assert result.comparisons[0].alpha == pytest.approx(0.05 / 3)
    assert experiment.stability_verdict(c, table([chance] * 3, [good] * 3)).verdict == "not supported"
    assert experiment.stability_verdict(c, table([same] * 3, [same] * 3)).verdict == "inconclusive"
    assert experiment.stability_verdict(c, table([chance] * 3, [chance] * 3)).verdict == "inconclusive"  # no learning
    # picking the best of k LRs at alpha / k keeps the false-positive rate at <= 5 % under no effect
    assert supported_rate(lambda r: experiment.stability_verdict(c, r), helps_at_high_lr, trials=2000) <= 0.06


def test_main_rule_says_supported_rarely_under_no_effect_on_extended_shaped_rows() -> None:
    c = extended()
    shaped = rows({arm: [0.70, 0.72, 0.71] for arm in experiment_arms(c)})
    for claims in (c.claims, ("augment",)):
        config = dataclasses.replace(c, claims=claims)
        assert supported_rate(lambda r, cfg=config: experiment.verdict(cfg, r), shaped, trials=2000) <= 0.06


def test_units_of_the_presets() -> None:
    def ids(config) -> list[str]:
        return [u.id for u in experiment.MAIN.plan(config)]

    assert ids(standard()) == [f"{arm}-seed{s}" for s in (0, 1, 2) for arm in ("three_augment", "randaugment")]
    e = extended()
    assert (e.seeds, e.steps, e.preset, len(ids(e)), e.eval_splits) == ((0, 1, 2), 400, "extended", 24, ("test",))
    assert standard().steps == 300
    assert ids(paper_in21k_to_1k(init_weights="w")) == ["base-seed0"]
    assert set(experiment.EXPERIMENT.presets) >= {"smoke", "standard", "extended", "paper", "paper_21k_ft"}


def test_deit3_step_trains_a_tiny_vit() -> None:
    torch.manual_seed(0)
    model = build_vit(None, img_size=16, num_classes=4, patch_size=4, embed_dim=16, depth=1, num_heads=2)
    opt = build_optimizer(model, "lamb", lr=4e-3)
    images, labels = torch.rand(8, 3, 16, 16), torch.arange(8) % 4
    before = [p.detach().clone() for p in model.parameters()]
    loss = deit3_step(model, opt, images, labels, 4, blur_sigma=(0.01, 0.1))
    assert 0 < loss < 1 and any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def run(config) -> dict:
    return run_experiment(experiment.EXPERIMENT, config)


def test_smoke_preset_end_to_end_and_deterministic(tmp_path) -> None:
    docs = []
    for name in ("a", "b"):
        config = smoke()
        config.out = str(tmp_path / name)
        doc = run(config)
        saved = json.loads((tmp_path / name / "deit3" / "results.json").read_text())
        assert saved["verdict"] == doc["verdict"] in ("supported", "not supported", "inconclusive")
        assert {r["name"] for r in saved["rows"]} == set(experiment_arms(config)) and saved["verdict_rule"]
        assert (tmp_path / name / "deit3" / "config.yaml").exists()
        assert (tmp_path / name / "deit3" / "runs" / "lowres-seed0" / "stage1").is_dir()
        docs.append(doc)
    strip = [[{k: v for k, v in r["metrics"].items() if k != "train_s"} for r in d["rows"]] for d in docs]
    assert strip[0] == strip[1]


def test_engine_runs_repeated_augmentation_single_process() -> None:
    c = smoke()
    sets = load_colour_sets("digits", n_test=50)
    recipe = arm_recipe(c, "three_augment")
    stage = dataclasses.replace(recipe.pretrain, repeated_aug=3)
    task = Deit3Task(c.model, recipe, stage, sets.train, {}, 10, 16)
    engine = Engine(FabricConfig(accelerator="cpu"), progress=False)
    fit = engine.fit(task, task.loop_config(2, 8, seed=0, log_every=1))
    assert fit.steps == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in fit.history if "loss" in h)


def write_folder(root: Path, names: list[str], per_class: int = 6, size: int = 20) -> None:
    rng = np.random.default_rng(0)
    for k, name in enumerate(names):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (size, size + 4, 3), dtype=np.uint8)
            pixels[..., k % 3] = 255  # a class-dependent colour
            Image.fromarray(pixels).save(root / name / f"img{i}.png")


def test_imagenet_folder_path_end_to_end_with_integer_v2_folders(tmp_path) -> None:
    write_folder(tmp_path / "imagenet" / "train", ["n01", "n02", "n10"])
    write_folder(tmp_path / "imagenet" / "val", ["n01", "n02", "n10"], per_class=2)
    write_folder(tmp_path / "imagenetv2-matched-frequency-format-val", ["0", "1", "2"], per_class=2)
    config = smoke()
    config.dataset, config.data_root, config.out = "imagenet", str(tmp_path), str(tmp_path / "out")
    config.claims, config.steps, config.batch_size = ("resolution",), 3, 4
    doc = run(config)
    assert doc["dataset"] == "imagenet" and {"top1", "top1_v2"} <= set(doc["rows"][0]["metrics"])
    sets = experiment.find_imagenet(tmp_path)
    low = arm_recipe(config, "lowres")
    task = Deit3Task(config.model, low, low.finetune, sets.train, sets.evals, 3, 16, classes=sets.classes)
    v2 = task.eval_datasets()["v2"]
    labels = sorted({v2[i][1] for i in range(len(v2))})
    assert labels == [0, 1, 2] and v2[0][0].shape == (3, 16, 16) and v2[0][0].dtype == torch.uint8
    write_folder(tmp_path / "v2b", ["0", "1", "2", "10"], per_class=1)  # string sort would give 0, 1, 10, 2
    scrambled = task._wrap(tmp_path / "v2b", False)
    by_folder = {path.parent.name: label for path, label in scrambled.dataset.samples}
    assert by_folder == {"0": 0, "1": 1, "2": 2, "10": 10}
    assert sorted(scrambled[i][1] for i in range(4)) == [0, 1, 2, 10]
    train_item = task.train_dataset()[0]
    assert train_item[0].shape == (3, 16, 16) and train_item[2] == 1
    xb, _ = task.collate()([task.train_dataset()[i] for i in range(4)])
    assert xb.shape == (4, 3, 16, 16)


def test_stability_study_smoke(tmp_path) -> None:
    config = smoke()
    config.out, config.study = str(tmp_path), "stability"
    config.stability.steps = 6
    doc = run(config)
    assert (tmp_path / "deit3" / "stability" / "results.json").exists()
    assert (tmp_path / "deit3" / "stability" / "stability_lr.png").exists()
    names = {f"{kind}_lr{lr:g}" for kind in ("layerscale", "no_layerscale") for lr in config.stability.lrs}
    assert {r["name"] for r in doc["rows"]} == names
    assert all(r["metrics"]["diverged"] in (0.0, 1.0) for r in doc["rows"])


def test_file_list_mode_and_21k_to_1k_finetune_on_a_fixture(tmp_path) -> None:
    """CSV file lists instead of folders; the 21k -> 1k preset starts from the 21k weights with a new head."""
    write_folder(tmp_path / "img", ["n01", "n02", "n10"])
    files = sorted((tmp_path / "img").rglob("*.png"))
    names = ["n01", "n02", "n10"]
    (tmp_path / "train.csv").write_text(
        "path,label\n" + "".join(f"img/{f.parent.name}/{f.name},{f.parent.name}\n" for f in files)
    )
    (tmp_path / "val.csv").write_text(
        "".join(f"img/{f.parent.name}/{f.name},{names.index(f.parent.name)}\n" for f in files[::4])
    )
    # the "21k" model: same ViT, 5 classes; its head must be replaced by a 3-class one
    config = paper_in21k_to_1k("small", init_weights=str(tmp_path / "in21k.safetensors"))
    config.model = smoke().model
    config.out, config.file_list.train, config.file_list.val = (
        str(tmp_path / "out"),
        str(tmp_path / "train.csv"),
        str(tmp_path / "val.csv"),
    )
    config.steps, config.batch_size, config.num_workers, config.eval_every = 2, 4, 0, 0
    config.progress, config.threads = False, 1
    config.base.pretrain.img_size = 16
    config.base.pretrain.global_batch = 0
    recipe = config.base
    torch.manual_seed(0)
    source = build_model(config.model, recipe, recipe.pretrain, 5, 3)
    save_weights(source.state_dict(), config.init_weights)
    data = experiment.folder_data(experiment.file_list_sets(config.file_list.train, {"val": config.file_list.val}))
    assert data.classes == names and data.num_classes == 3
    start = experiment.initial_model(config, recipe, data, seed=0)
    assert start.head.out_features == 3
    for key, value in start.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(value, source.state_dict()[key]), key
    doc = run(config)
    assert doc["dataset"] == "imagenet" and doc["rows"][0]["name"] == "base" and doc["verdict"] == "inconclusive"
    task = Deit3Task(config.model, recipe, recipe.pretrain, data.train, data.evals, 3, 16, classes=data.classes)
    val = task.eval_datasets()["val"]
    by_file = {path.name + path.parent.name: label for path, label in val.dataset.samples}
    assert by_file == {f.name + f.parent.name: names.index(f.parent.name) for f in files[::4]}
    assert task.train_dataset()[0][0].shape == (3, 16, 16)
