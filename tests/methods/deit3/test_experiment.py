"""Task adapter, FLOP-matched arm, verdict rules, and the smoke preset end to end on the harness (determinism)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from frugalvision.engine import Engine, FabricConfig, save_weights
from frugalvision.harness import run_experiment
from frugalvision.methods.deit3 import build_optimizer, build_vit, deit3_step, experiment
from frugalvision.methods.deit3.config import arm_recipe, extended, paper_in21k_to_1k, smoke, standard
from frugalvision.methods.deit3.data import load_colour_sets
from frugalvision.methods.deit3.losses import mixed_bce_loss
from frugalvision.methods.deit3.model import resize_vit
from frugalvision.methods.deit3.task import Deit3Task, build_model


def test_finetune_stage_starts_from_resized_low_res_model_and_ra_order() -> None:
    c = smoke()
    sets = load_colour_sets("digits", n_test=50)
    pre, ft = c.deit3.pretrain, c.deit3.finetune
    low_task = Deit3Task(c.model, c.deit3, pre, sets.train, {}, 10, 16)
    torch.manual_seed(0)
    low = low_task.build_model().eval()
    assert low.pos_embed.shape[1] == (pre.img_size // c.model.patch_size) ** 2
    assert low_task.batch_order() is not None  # repeated augmentation in a single process too
    ft_task = Deit3Task(c.model, c.deit3, ft, sets.train, {"test": sets.test}, 10, 16, init_model=low)
    high = ft_task.build_model().eval()
    assert ft_task.batch_order() is None
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(high(x), resize_vit(low, 16).eval()(x), rtol=0, atol=0)
    # collate: training batches are augmented at the stage's size, evaluation batches resized to the eval size
    items = [low_task.train_dataset()[i] for i in range(8)]
    xb, yb = low_task.collate()(items)
    assert xb.shape == (8, 3, pre.img_size, pre.img_size) and yb.shape == (8,)
    xe, _ = ft_task.collate()([ft_task.eval_datasets()["test"][i] for i in range(4)])
    assert xe.shape == (4, 3, 16, 16)
    loss, logs = low_task.training_step(low.train(), (xb, yb), 0)
    assert torch.isfinite(loss) and 0 < logs["lam"] <= 1
    assert mixed_bce_loss(torch.zeros(2, 10), torch.eye(10)[:2]).item() > 0


def test_fullres_arm_gets_the_flops_of_the_low_res_schedule() -> None:
    c = smoke()
    sets = load_colour_sets("digits", n_test=50)
    data = experiment.colour_data(sets)
    steps = experiment.arm_steps(c, "deit3_fullres", data)
    budget = experiment.train_flops(c, c.deit3, experiment.stage_plan(c.deit3, c.steps), data)
    full = arm_recipe(c, "deit3_fullres")
    per_step = experiment.train_flops(c, full, [(full.pretrain, 1)], data)
    assert steps < c.steps and steps * per_step <= budget < (steps + 1) * per_step


def rows(deit3: list[float], deit: list[float], flops: tuple[float, float] = (1.0, 2.0)) -> list[dict]:
    out = []
    for seed, (a, b) in enumerate(zip(deit3, deit)):
        out.append({"name": "deit3", "seed": seed, "metrics": {"top1": a, "train_gflops": flops[0]}})
        out.append({"name": "deit", "seed": seed, "metrics": {"top1": b, "train_gflops": flops[1]}})
    return out


def test_verdict_rule() -> None:
    def v(r: list[dict], config=None) -> str:
        return experiment.verdict(config or standard(), r).verdict

    assert v(rows([0.80, 0.81, 0.79], [0.78, 0.79, 0.775])) == "supported"
    assert v(rows([0.80, 0.81, 0.79], [0.78, 0.79, 0.775], flops=(3.0, 2.0))) == "inconclusive"  # more compute
    assert v(rows([0.70, 0.71, 0.69], [0.80, 0.80, 0.81])) == "not supported"
    assert v(rows([0.79, 0.81, 0.80], [0.80, 0.80, 0.80])) == "inconclusive"
    assert v(rows([0.20, 0.21, 0.19], [0.10, 0.11, 0.10])) == "inconclusive"  # below the sanity floor
    assert v(rows([0.8], [0.7])) == "inconclusive"  # one seed cannot decide
    assert v(rows([0.8, 0.81], [0.7, 0.7]), dataclasses.replace(standard(), arms=("deit3",))) == "inconclusive"


def test_units_run_ablations_on_their_seeds_only_and_extended_is_the_readme_run() -> None:
    ids = [u.id for u in experiment.units(standard())]
    assert len(ids) == 10 and "deit3_ce-seed0" in ids and "deit3_ce-seed1" not in ids and "deit-seed2" in ids
    e = extended()
    assert (e.arms, e.seeds, e.steps, e.preset) == (("deit3", "deit"), (0, 1, 2), 4000, "extended")
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
        assert {r["name"] for r in saved["rows"]} == {"deit3", "deit"} and saved["verdict_rule"]
        assert (tmp_path / name / "deit3" / "config.yaml").exists()
        assert (tmp_path / name / "deit3" / "runs" / "deit3-seed0" / "stage1").is_dir()
        docs.append(doc)
    strip = [[{k: v for k, v in r["metrics"].items() if k != "train_s"} for r in d["rows"]] for d in docs]
    assert strip[0] == strip[1]


def test_engine_runs_repeated_augmentation_single_process() -> None:
    c = smoke()
    sets = load_colour_sets("digits", n_test=50)
    task = Deit3Task(c.model, c.deit3, c.deit3.pretrain, sets.train, {}, 10, 16)
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
    config.arms, config.steps, config.batch_size = ("deit3",), 3, 4
    doc = run(config)
    assert doc["dataset"] == "imagenet" and {"top1", "top1_v2"} <= set(doc["rows"][0]["metrics"])
    sets = experiment.find_imagenet(tmp_path)
    task = Deit3Task(
        config.model, config.deit3, config.deit3.finetune, sets.train, sets.evals, 3, 16, classes=sets.classes
    )
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


def test_stability_study_smoke_and_rule(tmp_path) -> None:
    config = smoke()
    config.out, config.study = str(tmp_path), "stability"
    config.stability.steps = 6
    doc = run(config)
    assert (tmp_path / "deit3" / "stability" / "results.json").exists()
    assert {r["name"] for r in doc["rows"]} == {"layerscale", "no_layerscale"}
    assert all(r["metrics"]["diverged"] in (0.0, 1.0) for r in doc["rows"])

    def rows(ls: list[tuple[float, float]], no: list[tuple[float, float]]) -> list[dict]:
        out = []
        for seed, ((d1, t1), (d2, t2)) in enumerate(zip(ls, no)):
            out.append({"name": "layerscale", "seed": seed, "metrics": {"diverged": d1, "top1": t1}})
            out.append({"name": "no_layerscale", "seed": seed, "metrics": {"diverged": d2, "top1": t2}})
        return out

    def v(r: list[dict]) -> str:
        return experiment.stability_verdict(standard(), r).verdict

    assert v(rows([(0, 0.5), (0, 0.52), (0, 0.51)], [(1, 0.1), (1, 0.1), (1, 0.1)])) == "supported"
    assert v(rows([(1, 0.1), (1, 0.1), (1, 0.1)], [(0, 0.5), (0, 0.52), (0, 0.51)])) == "not supported"
    assert v(rows([(0, 0.5), (0, 0.5)], [(0, 0.5), (0, 0.5)])) == "inconclusive"


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
    config.deit3.pretrain.img_size = 16
    recipe = config.deit3
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
    assert doc["dataset"] == "imagenet" and doc["rows"][0]["name"] == "deit3"
    task = Deit3Task(config.model, recipe, recipe.pretrain, data.train, data.evals, 3, 16, classes=data.classes)
    val = task.eval_datasets()["val"]
    by_file = {path.name + path.parent.name: label for path, label in val.dataset.samples}
    assert by_file == {f.name + f.parent.name: names.index(f.parent.name) for f in files[::4]}
    assert task.train_dataset()[0][0].shape == (3, 16, 16)
