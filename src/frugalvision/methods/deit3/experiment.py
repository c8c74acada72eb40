"""DeiT III experiment: the DeiT III recipe vs the DeiT recipe and one-ingredient ablations, per seed."""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from frugalvision.config_io import save_config
from frugalvision.data.arrays import ImageArrays
from frugalvision.engine import Engine, load_weights
from frugalvision.engine.seeding import derive_seed
from frugalvision.errors import ConfigError, TrainingDivergedError
from frugalvision.experiment import apply_threads
from frugalvision.methods.deit3.config import PRESET_FNS, Deit3Config, RecipeConfig, StageConfig, arm_recipe
from frugalvision.methods.deit3.data import ColourSets, FolderSets, file_list_sets, find_imagenet, load_colour_sets
from frugalvision.methods.deit3.model import load_pretrained
from frugalvision.methods.deit3.task import Deit3Task, build_model, forward_flops
from frugalvision.registry import get_method
from frugalvision.report.schema import make_results, paired_difference, write_results

NAME = "deit3"
STUDIES = ("stability",)
CONFIG_CLASS = Deit3Config
PRESETS = PRESET_FNS
CLAIM = (
    "A plain ViT with LayerScale trained with the simplified DeiT III recipe (LAMB, BCE on binarised Mixup/CutMix "
    "targets, 3-Augment, uniform stochastic depth, low-resolution training then fine-tuning) beats the original DeiT "
    "recipe at equal or lower training compute."
)
VERDICT_RULE = (
    "clean test top-1, paired per seed, d = deit3 - deit: 'inconclusive' if either arm's mean is below the sanity "
    "floor (the arms did not learn within the budget); else 'supported' if mean(d) > 0, deit3 wins on a strict "
    "majority of seeds and deit3 uses <= the training FLOPs of deit; 'not supported' if mean(d) < -std(d) (std 0 for "
    "one seed); otherwise 'inconclusive'"
)


def stage_plan(recipe: RecipeConfig, steps: int) -> list[tuple[StageConfig, int]]:
    """Split ``steps`` optimiser steps between the recipe's stages."""
    if recipe.finetune is None:
        return [(recipe.pretrain, steps)]
    first = max(1, round(steps * recipe.pretrain.steps_fraction))
    return [(recipe.pretrain, first), (recipe.finetune, max(1, steps - first))]


@dataclass
class ExperimentData:
    """What the arms train and evaluate on: in-memory arrays (offline data) or class folders (ImageNet).

    Attributes:
        train: training images or folder.
        evals: named evaluation images or folders; ``primary`` gives the row's ``top1``, the others ``top1_<name>``.
        num_classes: number of classes.
        in_chans: input channels.
        source: dataset name for results.json.
        primary: the evaluation set of the headline metric.
        classes: training class names (folder mode).
        skip_bad_files: folder mode: skip corrupt images.
        description: one line for the notes.
        list_root: file-list mode: folder that relative paths in the CSVs resolve against.
    """

    train: ImageArrays | Path
    evals: dict[str, ImageArrays | Path]
    num_classes: int
    in_chans: int
    source: str
    primary: str
    classes: list[str] | None = None
    skip_bad_files: bool = False
    description: str = ""
    list_root: Path | None = None


def colour_data(sets: ColourSets) -> ExperimentData:
    """The offline ColourFashion sets as experiment data (headline: clean test top-1)."""
    return ExperimentData(
        train=sets.train,
        evals={"test": sets.test, "val": sets.val, "hue": sets.test_hue, "blur": sets.test_blur},
        num_classes=sets.num_classes,
        in_chans=sets.train.image_shape[0],
        source=sets.source,
        primary="test",
        description=f"ColourFashion from {sets.source} ({len(sets.train)} train / {len(sets.val)} val / "
        f"{len(sets.test)} test, RGB tinted; hue = held-out tint band, blur = Gaussian sigma 1)",
    )


def folder_data(sets: FolderSets) -> ExperimentData:
    """ImageNet-style class folders as experiment data (headline: val top-1; V2 when present)."""
    return ExperimentData(
        train=sets.train,
        evals=dict(sets.evals),
        num_classes=sets.num_classes,
        in_chans=3,
        source=sets.source,
        primary="val",
        classes=sets.classes,
        skip_bad_files=sets.skip_bad_files,
        list_root=sets.list_root,
        description=f"{sets.source} folders: train {sets.train}, evaluation {', '.join(map(str, sets.evals.values()))}",
    )


def train_flops(
    config: Deit3Config, recipe: RecipeConfig, plan: list[tuple[StageConfig, int]], data: ExperimentData
) -> float:
    """Training FLOPs of a plan: steps x batch x 3 x forward FLOPs at each stage's resolution."""
    total = 0.0
    for stage, steps in plan:
        model = build_model(config.model, recipe, stage, data.num_classes, data.in_chans)
        total += 3.0 * steps * config.batch_size * forward_flops(model, stage.img_size, data.in_chans)
    return total


def arm_steps(config: Deit3Config, arm: str, data: ExperimentData) -> int:
    """Optimiser steps of an arm: ``config.steps``, except the full-res arm, matched to the DeiT III arm's FLOPs."""
    if arm != "deit3_fullres":
        return config.steps
    ref = config.deit3
    budget = train_flops(config, ref, stage_plan(ref, config.steps), data)
    recipe = arm_recipe(config, arm)
    per_step = train_flops(config, recipe, [(recipe.pretrain, 1)], data)
    return max(1, int(math.floor(budget / per_step)))


def initial_model(config: Deit3Config, recipe: RecipeConfig, data: ExperimentData, seed: int) -> nn.Module | None:
    """The model an arm starts from: None (fresh, built by the engine after seeding), or ``config.init_weights``.

    With pre-trained weights (e.g. the ImageNet-21k model of the 21k -> 1k fine-tune) the ViT is built at the
    first stage's size with this data's number of classes, the checkpoint loaded into it (official or timm keys,
    position table interpolated) and, with ``reset_head``, a freshly initialised head of ``seed`` kept.
    """
    if config.init_weights is None:
        return None
    torch.manual_seed(derive_seed("deit3-head", seed))
    model = build_model(config.model, recipe, recipe.pretrain, data.num_classes, data.in_chans)
    return load_pretrained(model, load_weights(config.init_weights), reset_head=config.reset_head)


def train_arm(
    engine: Engine, config: Deit3Config, arm: str, seed: int, data: ExperimentData
) -> tuple[nn.Module, dict[str, Any]]:
    """Train one arm for one seed through all its stages; return the model and its metrics row."""
    recipe = arm_recipe(config, arm)
    steps = arm_steps(config, arm, data)
    plan = stage_plan(recipe, steps)
    final_size = plan[-1][0].img_size
    model = initial_model(config, recipe, data, seed)
    wall = 0.0
    metrics: dict[str, dict[str, float]] = {}
    run_root = config.method_dir(NAME) / "runs" / f"{arm}-seed{seed}"
    for index, (stage, stage_steps) in enumerate(plan):
        last = index == len(plan) - 1
        task = Deit3Task(
            config.model,
            recipe,
            stage,
            data.train,
            data.evals if last else {},
            data.num_classes,
            final_size,
            init_model=model,
            classes=data.classes,
            skip_bad_files=data.skip_bad_files,
            list_root=data.list_root,
        )
        loop = task.loop_config(
            stage_steps,
            config.batch_size,
            seed=seed * 1000 + index,
            world_size=engine.world_size,
            num_workers=config.num_workers,
            eval_every=config.eval_every if last else 0,
            log_every=50,
        )
        stage_dir = run_root / f"stage{index}"
        fit = engine.fit(
            task,
            loop,
            run_dir=stage_dir if config.resume else None,
            resume=config.resume and (stage_dir / "checkpoints").exists(),
            desc=f"{arm} s{seed} stage{index}",
        )
        model = fit.model
        wall += fit.wall_s
        metrics = fit.metrics
    assert model is not None
    row = {"top1": metrics[data.primary]["top1"], "nll": metrics[data.primary]["nll"]}
    row.update({f"top1_{name}": values["top1"] for name, values in metrics.items() if name != data.primary})
    row.update(
        {
            "train_gflops": train_flops(config, recipe, plan, data) / 1e9,
            "steps": float(sum(s for _, s in plan)),
            "train_s": wall,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        }
    )
    return model, row


def compute_verdict(rows: list[dict[str, Any]], sanity_floor: float = 0.0) -> str:
    """Apply :data:`VERDICT_RULE` to the rows (needs arms 'deit3' and 'deit')."""
    diffs = paired_difference(rows, "top1", "deit", "deit3")
    if not diffs:
        return "inconclusive"
    for arm in ("deit3", "deit"):
        if statistics.fmean(r["metrics"]["top1"] for r in rows if r["name"] == arm) < sanity_floor:
            return "inconclusive"
    mean = statistics.fmean(diffs)
    std = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    wins = sum(d > 0 for d in diffs)
    flops = {r["name"]: r["metrics"]["train_gflops"] for r in rows if r["name"] in ("deit3", "deit")}
    cheaper = flops.get("deit3", math.inf) <= flops.get("deit", 0.0) * (1 + 1e-9)
    if mean > 0 and wins * 2 > len(diffs) and cheaper:
        return "supported"
    if mean < -std:
        return "not supported"
    return "inconclusive"


STABILITY_CLAIM = (
    "LayerScale stabilises the training of deeper ViTs: at a high learning rate a depth-12 ViT with LayerScale "
    "diverges less often (and trains better) than the same ViT without it."
)
STABILITY_RULE = (
    "per seed, d = top1(layerscale) - top1(no_layerscale), a diverged run (non-finite loss, or final training loss "
    "above the first logged one) counting as chance accuracy: 'supported' if layerscale diverges in fewer runs, or "
    "in as many and mean(d) > 0 with a strict majority of wins; 'not supported' if it diverges in more runs, or in "
    "as many and mean(d) < -std(d); otherwise 'inconclusive'"
)


def stability_verdict(rows: list[dict[str, Any]]) -> str:
    """Apply :data:`STABILITY_RULE`."""
    div = {
        name: sum(r["metrics"]["diverged"] for r in rows if r["name"] == name)
        for name in ("layerscale", "no_layerscale")
    }
    if div["layerscale"] != div["no_layerscale"]:
        return "supported" if div["layerscale"] < div["no_layerscale"] else "not supported"
    diffs = paired_difference(rows, "top1", "no_layerscale", "layerscale")
    mean = statistics.fmean(diffs)
    std = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
    if mean > 0 and sum(d > 0 for d in diffs) * 2 > len(diffs):
        return "supported"
    if mean < -std:
        return "not supported"
    return "inconclusive"


def run_stability(config: Deit3Config, data: ExperimentData, engine: Engine, start: float) -> dict[str, Any]:
    """``--study stability``: deeper ViT, DeiT III pre-training at ``lr x lr_multiplier``, with/without LayerScale.

    Writes ``<out>/deit3/stability/results.json`` (the main experiment's results stay in ``<out>/deit3``).
    """
    st = config.stability
    model_cfg = dataclasses.replace(config.model, preset="custom", depth=st.depth)
    stage = dataclasses.replace(
        config.deit3.pretrain,
        img_size=config.deit3.finetune.img_size if config.deit3.finetune else config.deit3.pretrain.img_size,
        lr=config.deit3.pretrain.lr * st.lr_multiplier,
    )
    rows = []
    for seed in config.seeds:
        for name, layer_scale in (("layerscale", True), ("no_layerscale", False)):
            recipe = dataclasses.replace(config.deit3, layer_scale=layer_scale, finetune=None)
            task = Deit3Task(
                model_cfg,
                recipe,
                stage,
                data.train,
                {data.primary: data.evals[data.primary]},
                data.num_classes,
                stage.img_size,
                classes=data.classes,
                skip_bad_files=data.skip_bad_files,
                list_root=data.list_root,
            )
            loop = task.loop_config(
                st.steps,
                config.batch_size,
                seed=seed,
                world_size=engine.world_size,
                num_workers=config.num_workers,
                log_every=max(1, st.steps // 10),
            )
            try:
                fit = engine.fit(task, loop, desc=f"stability {name} s{seed}")
                losses = [h["loss"] for h in fit.history if "loss" in h]
                diverged = not losses or losses[-1] > losses[0]
                top1 = fit.metrics[data.primary]["top1"]
                final_loss = losses[-1] if losses else float("nan")
            except TrainingDivergedError:
                diverged, top1, final_loss = True, 1.0 / data.num_classes, -1.0
            if diverged:
                top1 = 1.0 / data.num_classes
            rows.append(
                {
                    "name": name,
                    "seed": seed,
                    "metrics": {"diverged": float(diverged), "top1": top1, "final_loss": final_loss},
                }
            )
    doc = make_results(
        method=NAME,
        paper=get_method(NAME).paper,
        preset=config.preset,
        dataset=data.source,
        claim=STABILITY_CLAIM,
        rows=rows,
        verdict=stability_verdict(rows),
        verdict_rule=STABILITY_RULE,
        wall_s=time.perf_counter() - start,
        notes=f"study stability: depth {st.depth}, LR {stage.lr:g} ({st.lr_multiplier:g}x the recipe's), "
        f"{st.steps} steps at {stage.img_size} px; final_loss -1 marks a non-finite loss; data: {data.description}",
        primary_metric="top1",
    )
    out = config.method_dir(NAME) / "stability"
    write_results(doc, out)
    return doc


def run(config: Deit3Config) -> dict[str, Any]:
    """Run every arm for every seed; write ``<out>/deit3/results.json`` (and the config) and return the document.

    With ``config.study == "stability"`` run the LayerScale stability study instead (``<out>/deit3/stability/``).
    """
    config.validate()
    start = time.perf_counter()
    if config.dataset in ("imagenet", "imagenet21k") and config.file_list.train is not None:
        lists = config.file_list
        evals = {name: path for name, path in (("val", lists.val), ("v2", lists.v2)) if path is not None}
        skip = bool(getattr(config, "skip_bad_files", False))
        data = folder_data(file_list_sets(lists.train, evals, lists.root, skip, name=config.dataset))
    elif config.dataset in ("imagenet", "imagenet21k"):
        if config.data_root is None:
            raise ConfigError(f"dataset={config.dataset!r} needs --data-root <folder holding {config.dataset}/train>")
        skip = bool(getattr(config, "skip_bad_files", False))
        data = folder_data(find_imagenet(config.data_root, skip, name=config.dataset))
    else:
        data = colour_data(
            load_colour_sets(config.dataset, config.data_root, config.n_train, config.n_val, config.n_test)
        )
    apply_threads(config.threads)
    out_dir = config.method_dir(NAME)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, out_dir / "config.yaml")
    engine = Engine(config.fabric, progress=config.progress)
    if config.study == "stability":
        return run_stability(config, data, engine, start)
    rows: list[dict[str, Any]] = []
    for seed in config.seeds:
        for arm in config.arms:
            ablation = arm not in ("deit3", "deit")
            if ablation and config.ablation_seeds is not None and seed not in config.ablation_seeds:
                continue
            _, metrics = train_arm(engine, config, arm, seed, data)
            rows.append({"name": arm, "seed": seed, "metrics": metrics})
    has_pair = {"deit3", "deit"} <= set(config.arms)
    verdict = compute_verdict(rows, config.sanity_floor) if has_pair else "inconclusive"
    notes = (
        f"data: {data.description}; model: ViT {config.model.preset} "
        f"(patch {config.model.patch_size}, width {config.model.embed_dim}, depth {config.model.depth}); "
        "deit3 trains 85 % of its steps at low resolution and fine-tunes at full resolution, deit trains at full "
        "resolution for the same number of steps (so deit3 uses fewer FLOPs); deit3_fullres gets deit3's FLOPs."
    )
    if not has_pair:
        notes += " The verdict needs both the deit3 and deit arms."
    doc = make_results(
        method=NAME,
        paper=get_method(NAME).paper,
        preset=config.preset,
        dataset=data.source,
        claim=CLAIM,
        rows=rows,
        verdict=verdict,
        verdict_rule=f"{VERDICT_RULE}; sanity floor {config.sanity_floor}",
        wall_s=time.perf_counter() - start,
        notes=notes,
        primary_metric="top1",
    )
    write_results(doc, out_dir)
    return doc


def benchmark(out_dir: Path) -> dict[str, Any]:
    """Train-step throughput of our ViT vs timm's, and 3-Augment throughput (see benchmarks/deit3_step.py)."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[4] / "benchmarks" / "deit3_step.py"
    if not path.exists():
        raise ConfigError(f"{path} not found; the deit3 benchmark lives in the repository's benchmarks/ folder")
    spec = importlib.util.spec_from_file_location("deit3_step", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["deit3_step"] = module
    spec.loader.exec_module(module)
    return module.main(out_dir)
