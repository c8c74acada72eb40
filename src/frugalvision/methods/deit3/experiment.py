"""DeiT III experiment on the harness: the DeiT III recipe vs the DeiT recipe and one-ingredient ablations, per seed.

Units: every arm once per seed (the ablations only on ``ablation_seeds``); each unit trains its stages through
``ctx.fit`` (one run folder per stage). Study ``stability``: a deeper ViT at a raised LR, with vs without LayerScale.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from frugalvision.data.arrays import ImageArrays
from frugalvision.errors import ConfigError, TrainingDivergedError
from frugalvision.harness import (
    Comparison,
    Context,
    Experiment,
    Precondition,
    Study,
    Unit,
    UnitRecord,
    UnitResult,
    Verdict,
    claim_verdict,
    compare,
    metric_values,
)
from frugalvision.methods.deit3.config import PRESET_FNS, Deit3Config, RecipeConfig, StageConfig, arm_recipe
from frugalvision.methods.deit3.data import ColourSets, FolderSets, file_list_sets, find_imagenet, load_colour_sets
from frugalvision.methods.deit3.model import load_pretrained
from frugalvision.methods.deit3.task import Deit3Task, build_model, forward_flops
from frugalvision.seeding import derive_seed

NAME = "deit3"
CLAIM = (
    "A plain ViT with LayerScale trained with the simplified DeiT III recipe (LAMB, BCE on binarised Mixup/CutMix "
    "targets, 3-Augment, uniform stochastic depth, low-resolution training then fine-tuning) beats the original DeiT "
    "recipe at equal or lower training compute."
)
STABILITY_CLAIM = (
    "LayerScale stabilises the training of deeper ViTs: at a high learning rate a depth-12 ViT with LayerScale "
    "diverges less often (and trains better) than the same ViT without it."
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


def load_data(config: Deit3Config) -> ExperimentData:
    """The run's data: file lists or class folders for ImageNet, else the offline ColourFashion sets."""
    if config.dataset in ("imagenet", "imagenet21k") and config.file_list.train is not None:
        lists = config.file_list
        evals = {name: path for name, path in (("val", lists.val), ("v2", lists.v2)) if path is not None}
        return folder_data(file_list_sets(lists.train, evals, lists.root, config.skip_bad_files, name=config.dataset))
    if config.dataset in ("imagenet", "imagenet21k"):
        if config.data_root is None:
            raise ConfigError(f"dataset={config.dataset!r} needs --data-root <folder holding {config.dataset}/train>")
        return folder_data(find_imagenet(config.data_root, config.skip_bad_files, name=config.dataset))
    return colour_data(load_colour_sets(config.dataset, config.data_root, config.n_train, config.n_val, config.n_test))


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
    from frugalvision.engine import load_weights

    if config.init_weights is None:
        return None
    torch.manual_seed(derive_seed("deit3-head", seed))
    model = build_model(config.model, recipe, recipe.pretrain, data.num_classes, data.in_chans)
    return load_pretrained(model, load_weights(config.init_weights), reset_head=config.reset_head)


def _task(
    config: Deit3Config,
    recipe: RecipeConfig,
    stage: StageConfig,
    data: ExperimentData,
    evals: dict[str, ImageArrays | Path],
    size: int,
    **kw: Any,
) -> Deit3Task:
    """One stage's task on the experiment data (``model_cfg`` overrides the config's ViT size)."""
    return Deit3Task(
        kw.pop("model_cfg", config.model),
        recipe,
        stage,
        data.train,
        evals,
        data.num_classes,
        size,
        classes=data.classes,
        skip_bad_files=data.skip_bad_files,
        list_root=data.list_root,
        **kw,
    )


def run_unit(ctx: Context[Deit3Config], unit: Unit) -> UnitResult:
    """Train one arm for one seed through all its stages (one ``ctx.fit`` per stage); evaluate at the end."""
    config = ctx.config
    data = ctx.memo("data", lambda: load_data(config))
    recipe = arm_recipe(config, unit.name)
    plan = stage_plan(recipe, arm_steps(config, unit.name, data))
    model = initial_model(config, recipe, data, unit.seed)
    wall, metrics = 0.0, {}
    for index, (stage, steps) in enumerate(plan):
        last = index == len(plan) - 1
        task = _task(config, recipe, stage, data, data.evals if last else {}, plan[-1][0].img_size, init_model=model)
        loop = task.loop_config(
            steps,
            config.batch_size,
            seed=0,
            world_size=ctx.engine.world_size,
            num_workers=config.num_workers,
            eval_every=config.eval_every if last else 0,
            log_every=50,
        )
        fit = ctx.fit(task, loop, name=f"stage{index}", seed=unit.seed * 1000 + index)
        model, wall, metrics = fit.model, wall + fit.wall_s, fit.metrics
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
    return UnitResult.one_row(unit, row, dataset=data.source, description=data.description)


def units(config: Deit3Config) -> list[Unit]:
    """Every arm once per seed; the ablations (arms other than deit3, deit) only on ``ablation_seeds``."""
    keep = config.ablation_seeds
    return [
        Unit(arm, seed)
        for seed in config.seeds
        for arm in config.arms
        if arm in ("deit3", "deit") or keep is None or seed in keep
    ]


def _mean(rows: list[dict[str, Any]], metric: str, name: str) -> float:
    values = list(metric_values(rows, metric, name).values())
    return math.fsum(values) / len(values) if values else math.nan


def verdict(config: Deit3Config, rows: list[dict[str, Any]]) -> Verdict:
    """deit3 > deit on clean top-1 (paired over seeds), given both learn (sanity floor) and deit3's FLOPs <= deit's."""
    means = {arm: _mean(rows, "top1", arm) for arm in ("deit3", "deit")}
    flops = {arm: _mean(rows, "train_gflops", arm) for arm in ("deit3", "deit")}
    floor = config.sanity_floor
    preconditions = [
        Precondition("both arms deit3 and deit ran", {"deit3", "deit"} <= set(config.arms), f"arms {config.arms!r}"),
        Precondition(
            f"both arms learn (mean top1 >= {floor:g})",
            all(m >= floor for m in means.values()),
            f"deit3 {means['deit3']:.3f}, deit {means['deit']:.3f}",
        ),
        Precondition(
            "deit3 uses <= the training FLOPs of deit",
            flops["deit3"] <= flops["deit"] * (1 + 1e-9),
            f"deit3 {flops['deit3']:.4g} GFLOPs, deit {flops['deit']:.4g} GFLOPs",
        ),
    ]
    names = {row["name"] for row in rows}
    paired = {"deit3", "deit"} <= names  # a single-arm run (paper presets) trains deit3 only: no comparison
    comparison = compare(rows, "top1", "deit3", "deit") if paired else Comparison("top1", "deit3", "deit", ())
    return claim_verdict([comparison], preconditions, claim="DeiT III recipe beats DeiT")


def notes(config: Deit3Config, records: list[UnitRecord]) -> str:
    """Data, model and compute matching in one sentence."""
    description = records[0].extras.get("description", "") if records else ""
    return (
        f"data: {description}; model: ViT {config.model.preset} (patch {config.model.patch_size}, width "
        f"{config.model.embed_dim}, depth {config.model.depth}); deit3 trains 85 % of its steps at low resolution and "
        "fine-tunes at full resolution, deit trains at full resolution for the same number of steps (so deit3 uses "
        "fewer FLOPs); deit3_fullres gets deit3's FLOPs; ablations run on ablation_seeds only."
    )


# ------------------------------------------------------------------------------------------------ stability study
def run_stability_unit(ctx: Context[Deit3Config], unit: Unit) -> UnitResult:
    """One run of the stability study: DeiT III pre-training stage, deeper ViT, LR x ``lr_multiplier``."""
    config, st = ctx.config, ctx.config.stability
    data = ctx.memo("data", lambda: load_data(config))
    model_cfg = dataclasses.replace(config.model, preset="custom", depth=st.depth)
    size = config.deit3.finetune.img_size if config.deit3.finetune else config.deit3.pretrain.img_size
    stage = dataclasses.replace(config.deit3.pretrain, img_size=size, lr=config.deit3.pretrain.lr * st.lr_multiplier)
    recipe = dataclasses.replace(config.deit3, layer_scale=unit.name == "layerscale", finetune=None)
    evals = {data.primary: data.evals[data.primary]}
    task = _task(config, recipe, stage, data, evals, size, model_cfg=model_cfg)
    loop = task.loop_config(
        st.steps,
        config.batch_size,
        seed=0,
        world_size=ctx.engine.world_size,
        num_workers=config.num_workers,
        log_every=max(1, st.steps // 10),
    )
    chance = 1.0 / data.num_classes
    try:
        fit = ctx.fit(task, loop)
        losses = [h["loss"] for h in fit.history if "loss" in h]
        diverged = not losses or losses[-1] > losses[0]
        top1, final_loss = fit.metrics[data.primary]["top1"], losses[-1] if losses else float("nan")
    except TrainingDivergedError:
        diverged, top1, final_loss = True, chance, -1.0
    metrics = {"diverged": float(diverged), "top1": chance if diverged else top1, "final_loss": final_loss}
    return UnitResult.one_row(unit, metrics, dataset=data.source, description=data.description)


def stability_verdict(config: Deit3Config, rows: list[dict[str, Any]]) -> Verdict:
    """Top-1 of layerscale > no_layerscale, paired over seeds, a diverged run scoring chance accuracy."""
    return claim_verdict(
        [compare(rows, "top1", better="layerscale", reference="no_layerscale")],
        claim="LayerScale trains the deep ViT better at a high LR (diverged runs score chance)",
    )


def stability_notes(config: Deit3Config, records: list[UnitRecord]) -> str:
    """The study's settings."""
    st = config.stability
    lr = config.deit3.pretrain.lr * st.lr_multiplier
    return (
        f"study stability: depth {st.depth}, LR {lr:g} ({st.lr_multiplier:g}x the recipe's), {st.steps} steps; "
        "a run diverged when its loss became non-finite (final_loss -1) or ended above its first logged value"
    )


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


MAIN: Study[Deit3Config] = Study(
    claim=CLAIM, primary_metric="top1", run_unit=run_unit, verdict=verdict, units=units, notes=notes
)
STABILITY: Study[Deit3Config] = Study(
    claim=STABILITY_CLAIM,
    primary_metric="top1",
    run_unit=run_stability_unit,
    verdict=stability_verdict,
    arms=lambda config: ("layerscale", "no_layerscale"),
    notes=stability_notes,
)
EXPERIMENT = Experiment(
    name=NAME,
    config_class=Deit3Config,
    presets=PRESET_FNS,
    main=MAIN,
    studies={"stability": STABILITY},
    benchmark=benchmark,
)
