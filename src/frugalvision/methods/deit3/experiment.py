"""DeiT III experiment on the harness: single-ingredient swaps of a base recipe, paired over seeds.

Each claim of the paper's ablation tables is a pair of arms that differ in one ingredient (``config.claim_pair``);
every arm trains once per seed, its stages through ``ctx.fit`` (one run folder per stage). Study ``stability``: a
depth-12 ViT over a sweep of learning rates, with and without LayerScale.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import lru_cache
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
    FigureInput,
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
from frugalvision.harness.stats import ALPHA
from frugalvision.methods.deit3.config import (
    EVAL_SPLITS,
    PRESET_FNS,
    Deit3Config,
    ModelConfig,
    RecipeConfig,
    StageConfig,
    arm_recipe,
    claim_pair,
    experiment_arms,
)
from frugalvision.methods.deit3.data import ColourSets, FolderSets, file_list_sets, find_imagenet, load_colour_sets
from frugalvision.methods.deit3.model import load_pretrained
from frugalvision.methods.deit3.task import Deit3Task, build_model, forward_flops
from frugalvision.seeding import derive_seed

NAME = "deit3"
CLAIM = (
    "Each ingredient of the DeiT III recipe, swapped alone on a ViT recipe that learns, improves top-1 as the paper's "
    "ablations report: BCE on binarised Mixup/CutMix targets over cross-entropy, 3-Augment over RandAugment, the "
    "better crop for the data regime (Simple Random Crop where the model does not over-fit, as on ImageNet-21k; "
    "RandomResizedCrop on ImageNet-1k), and low-resolution training then a full-resolution fine-tune over "
    "full-resolution training at equal FLOPs (and, at paper scale, the whole recipe over DeiT's)."
)
STABILITY_CLAIM = (
    "LayerScale stabilises the training of deeper ViTs: over a sweep of AdamW learning rates, a depth-12 ViT with "
    "LayerScale trains better than the same ViT without it at some learning rate (where training without it degrades)."
)
#: Claim -> what the paper reports, for the notes and the README (table numbers are our reading, see the README).
PAPER_ROWS = {
    "recipe": "the whole DeiT III recipe beats DeiT's (ViT-S 81.4 vs 79.9 top-1 on ImageNet-1k)",
    "loss": "BCE on binarised mixed targets beats cross-entropy (ImageNet-1k pre-training)",
    "augment": "3-Augment beats RandAugment for ViT",
    "crop": "SRC beats RRC on ImageNet-21k, RRC stays better on ImageNet-1k",
    "resolution": "training at lower resolution then fine-tuning at the target one beats full-resolution training",
}


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


def colour_data(sets: ColourSets, splits: tuple[str, ...] = EVAL_SPLITS) -> ExperimentData:
    """The offline ColourFashion sets as experiment data (headline: clean test top-1; ``splits`` are evaluated)."""
    every = {"test": sets.test, "val": sets.val, "hue": sets.test_hue, "blur": sets.test_blur}
    return ExperimentData(
        train=sets.train,
        evals={name: every[name] for name in every if name in splits},
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
    sets = load_colour_sets(config.dataset, config.data_root, config.n_train, config.n_val, config.n_test)
    return colour_data(sets, config.eval_splits)


# ------------------------------------------------------------------------------------------------ plans and FLOPs
def split_steps(recipe: RecipeConfig, steps: int) -> list[tuple[StageConfig, int]]:
    """Split ``steps`` optimiser steps between the recipe's stages by their ``steps_fraction``."""
    if recipe.finetune is None:
        return [(recipe.pretrain, steps)]
    first = max(1, round(steps * recipe.pretrain.steps_fraction))
    return [(recipe.pretrain, first), (recipe.finetune, max(1, steps - first))]


def stage_batch(config: Deit3Config, stage: StageConfig, world_size: int) -> int:
    """Per-device batch of a stage: its ``global_batch`` split over the devices, else ``config.batch_size``.

    Raises:
        ConfigError: the global batch does not split evenly over the devices.
    """
    if stage.global_batch == 0:
        return config.batch_size
    if stage.global_batch % world_size:
        raise ConfigError(
            f"a stage's global_batch={stage.global_batch} does not split over {world_size} devices; "
            "use a device count that divides it"
        )
    return stage.global_batch // world_size


@lru_cache(maxsize=64)
def _image_flops(
    model: tuple[Any, ...], layer_scale: bool, class_pos: bool, size: int, classes: int, chans: int
) -> float:
    recipe = RecipeConfig(layer_scale=layer_scale, class_pos_embed=class_pos)
    stage = StageConfig(img_size=size, drop_path=0.0)
    return forward_flops(build_model(ModelConfig(*model), recipe, stage, classes, chans), size, chans)


def train_flops(
    config: Deit3Config,
    recipe: RecipeConfig,
    plan: list[tuple[StageConfig, int]],
    data: ExperimentData,
    world_size: int = 1,
) -> float:
    """Training FLOPs of a plan: steps x global batch x 3 x forward FLOPs of one image at each stage's resolution."""
    total = 0.0
    for stage, steps in plan:
        per_image = _image_flops(
            dataclasses.astuple(config.model),
            recipe.layer_scale,
            recipe.class_pos_embed,
            stage.img_size,
            data.num_classes,
            data.in_chans,
        )
        total += 3.0 * steps * stage_batch(config, stage, world_size) * world_size * per_image
    return total


def arm_plan(config: Deit3Config, arm: str, data: ExperimentData, world_size: int = 1) -> list[tuple[StageConfig, int]]:
    """The stages of an arm and their optimiser steps.

    The base and the ingredient swaps train ``config.steps`` (the DeiT arm ``deit_steps``); a resolution arm built
    from the base gets the base's training FLOPs: ``fullres`` as many full-resolution steps as fit, ``lowres`` a
    full-resolution fine-tune of ``lowres.finetune_share`` of the base's steps and low-resolution steps for the rest.
    """
    recipe = arm_recipe(config, arm)
    if arm == "deit":
        return split_steps(recipe, config.deit_steps or config.steps)
    if arm not in ("lowres", "fullres") or recipe == config.base:
        return split_steps(recipe, config.steps)
    budget = train_flops(config, config.base, split_steps(config.base, config.steps), data, world_size)
    per_step = train_flops(config, recipe, [(recipe.pretrain, 1)], data, world_size)
    if recipe.finetune is None:
        return [(recipe.pretrain, max(1, math.floor(budget / per_step)))]
    finetune_steps = max(1, round(config.lowres.finetune_share * config.steps))
    finetune = train_flops(config, recipe, [(recipe.finetune, finetune_steps)], data, world_size)
    return [(recipe.pretrain, max(1, math.floor((budget - finetune) / per_step))), (recipe.finetune, finetune_steps)]


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
    world = ctx.engine.world_size
    recipe = arm_recipe(config, unit.name)
    plan = arm_plan(config, unit.name, data, world)
    model = initial_model(config, recipe, data, unit.seed)
    wall, metrics = 0.0, {}
    for index, (stage, steps) in enumerate(plan):
        last = index == len(plan) - 1
        task = _task(config, recipe, stage, data, data.evals if last else {}, plan[-1][0].img_size, init_model=model)
        loop = task.loop_config(
            steps,
            stage_batch(config, stage, world),
            seed=0,
            world_size=world,
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
            "train_gflops": train_flops(config, recipe, plan, data, world) / 1e9,
            "steps": float(sum(s for _, s in plan)),
            "train_s": wall,
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        }
    )
    return UnitResult.one_row(unit, row, dataset=data.source, description=data.description)


def _mean(rows: list[dict[str, Any]], metric: str, name: str) -> float:
    values = list(metric_values(rows, metric, name).values())
    return math.fsum(values) / len(values) if values else math.nan


def verdict(config: Deit3Config, rows: list[dict[str, Any]]) -> Verdict:
    """Every claim's expected winner beats its reference on clean top-1, paired over seeds (alpha 0.05 each).

    Preconditions: each claim's pair is in a regime that learns (one of its arms reaches ``sanity_floor`` mean
    top-1), and the resolution claim's low-resolution arm uses at most the FLOPs of the full-resolution one. No
    claim (the 21k -> 1k preset) is always inconclusive. One ``worse`` comparison refutes the joint claim.
    """
    floor = config.sanity_floor
    comparisons: list[Comparison] = []
    preconditions: list[Precondition] = []
    for claim in config.claims:
        winner, reference = claim_pair(config, claim)
        comparisons.append(compare(rows, "top1", winner, reference))
        means = {arm: _mean(rows, "top1", arm) for arm in (winner, reference)}
        preconditions.append(
            Precondition(
                f"{claim}: an arm learns (mean top1 >= {floor:g})",
                max(means.values()) >= floor,
                ", ".join(f"{arm} {value:.3f}" for arm, value in means.items()),
            )
        )
        if claim == "resolution":
            flops = {arm: _mean(rows, "train_gflops", arm) for arm in (winner, reference)}
            preconditions.append(
                Precondition(
                    f"resolution: {winner} uses <= the training FLOPs of {reference}",
                    flops[winner] <= flops[reference] * (1 + 1e-6),
                    ", ".join(f"{arm} {value:.4g} GFLOPs" for arm, value in flops.items()),
                )
            )
    if not comparisons:
        comparisons.append(Comparison("top1", "base", "no claim configured", ()))
        preconditions.append(Precondition("a claim is configured", False, "claims=() trains the base recipe only"))
    claims = ", ".join(config.claims) or "none"
    return claim_verdict(comparisons, preconditions, claim=f"each ingredient helps ({claims})")


def notes(config: Deit3Config, records: list[UnitRecord]) -> str:
    """Data, model, base recipe and the arms of each claim, in one paragraph."""
    description = records[0].extras.get("description", "") if records else ""
    pre = config.base.pretrain
    pairs = "; ".join(
        f"{claim}: {' vs '.join(claim_pair(config, claim))} (paper: {PAPER_ROWS[claim]})" for claim in config.claims
    )
    m = config.model
    return (
        f"data: {description}; model: ViT {m.preset} (patch {m.patch_size}, width {m.embed_dim}, depth {m.depth}), "
        f"LayerScale {config.base.layer_scale_init:g}; base: {pre.optimizer} {pre.lr:g}, {pre.loss}, augment "
        f"{pre.augment}, crop {pre.crop}, mixup {pre.mixup_alpha:g}/cutmix {pre.cutmix_alpha:g}, {config.steps} steps "
        f"of batch {config.batch_size} at {pre.img_size} px; claims (expected winner vs reference): {pairs}. The loss "
        "arms add Mixup/CutMix when the base has none; the resolution arm built from the base gets the base's FLOPs."
    )


# ------------------------------------------------------------------------------------------------ stability study
def stability_units(config: Deit3Config) -> list[Unit]:
    """One run per learning rate x (with, without LayerScale) x seed."""
    return [
        Unit(f"{kind}_lr{lr:g}", seed, {"lr": lr, "layer_scale": kind == "layerscale"})
        for seed in config.seeds
        for lr in config.stability.lrs
        for kind in ("layerscale", "no_layerscale")
    ]


def run_stability_unit(ctx: Context[Deit3Config], unit: Unit) -> UnitResult:
    """One run of the sweep: the base recipe at full resolution on a deeper ViT, at one LR, with or without LS."""
    config, st = ctx.config, ctx.config.stability
    data = ctx.memo("data", lambda: load_data(config))
    model_cfg = dataclasses.replace(config.model, preset="custom", depth=st.depth)
    full = arm_recipe(config, "fullres")
    stage = dataclasses.replace(full.pretrain, lr=float(unit.params["lr"]), optimizer=st.optimizer)
    recipe = dataclasses.replace(full, layer_scale=bool(unit.params["layer_scale"]))
    evals = {data.primary: data.evals[data.primary]}
    task = _task(config, recipe, stage, data, evals, stage.img_size, model_cfg=model_cfg)
    world = ctx.engine.world_size
    loop = task.loop_config(
        st.steps,
        stage_batch(config, stage, world),
        seed=0,
        world_size=world,
        num_workers=config.num_workers,
        log_every=max(1, st.steps // 10),
    )
    chance = 1.0 / data.num_classes
    try:
        fit = ctx.fit(task, loop)
        losses = [h["loss"] for h in fit.history if "loss" in h]
        diverged = not losses or not math.isfinite(losses[-1]) or losses[-1] > losses[0]
        top1, final_loss = fit.metrics[data.primary]["top1"], losses[-1] if losses else float("nan")
    except TrainingDivergedError:
        diverged, top1, final_loss = True, chance, -1.0
    metrics = {"diverged": float(diverged), "top1": chance if diverged else top1, "final_loss": final_loss}
    return UnitResult.one_row(unit, metrics, dataset=data.source, description=data.description)


def _strength(comparison: Comparison) -> tuple[bool, float]:
    better = comparison.outcome == "better"
    return better, comparison.lower if better else comparison.upper


def stability_verdict(config: Deit3Config, rows: list[dict[str, Any]]) -> Verdict:
    """LayerScale beats no LayerScale on top-1 at some LR of the sweep: the best of k LRs, each at alpha / k.

    A diverged run scores chance accuracy. Precondition: the deep ViT learns at some LR (``sanity_floor``).
    """
    lrs = config.stability.lrs
    k = len(lrs)
    candidates = [
        compare(rows, "top1", f"layerscale_lr{lr:g}", f"no_layerscale_lr{lr:g}", alpha=ALPHA / k) for lr in lrs
    ]
    best = max(candidates, key=_strength)
    names = [f"{kind}_lr{lr:g}" for lr in lrs for kind in ("layerscale", "no_layerscale")]
    top = max(_mean(rows, "top1", name) for name in names)
    learns = Precondition(
        f"the depth-{config.stability.depth} ViT learns at some LR (best mean top1 >= {config.sanity_floor:g})",
        top >= config.sanity_floor,
        f"best mean top1 {top:.3f}",
    )
    claim = f"LayerScale trains the deep ViT better at some LR of the sweep (the best of k = {k} LRs, alpha / k)"
    result = claim_verdict([best], [learns], claim=claim)
    others = tuple(f"(other LR) {c.describe()}" for c in candidates if c is not best)
    return dataclasses.replace(result, evidence=result.evidence + others)


def stability_figures(fig: FigureInput[Deit3Config]) -> list[str]:
    """Mean top-1 (band: std over seeds) against the learning rate, with and without LayerScale."""
    from frugalvision.report import line_plot

    lrs = fig.config.stability.lrs
    series = {}
    for kind in ("layerscale", "no_layerscale"):
        stats = [fig.summary["top1"][f"{kind}_lr{lr:g}"] for lr in lrs]
        series[kind] = ([s["mean"] for s in stats], [s["std"] for s in stats])
    line_plot(
        fig.out_dir / "stability_lr.png",
        [math.log10(lr) for lr in lrs],
        series,
        "log10 learning rate",
        "top-1",
        f"depth-{fig.config.stability.depth} ViT, AdamW",
    )
    return ["stability_lr.png"]


def stability_notes(config: Deit3Config, records: list[UnitRecord]) -> str:
    """The sweep's settings."""
    st = config.stability
    return (
        f"study stability: depth {st.depth}, {st.optimizer} at LRs {', '.join(f'{lr:g}' for lr in st.lrs)}, "
        f"{st.steps} steps each, the base recipe otherwise; a run diverged when its loss became non-finite "
        "(final_loss -1) or ended above its first logged value, and then scores chance accuracy"
    )


def benchmark(out_dir: Path) -> dict[str, Any]:
    """Our train step vs timm's deit3 model doing the same recipe work, and 3-Augment throughput.

    See ``benchmarks/deit3_step.py``; the CLI writes the returned measurements to ``<out>/bench/deit3.json``.
    """
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
    return module.main()


MAIN: Study[Deit3Config] = Study(
    claim=CLAIM, primary_metric="top1", run_unit=run_unit, verdict=verdict, arms=experiment_arms, notes=notes
)
STABILITY: Study[Deit3Config] = Study(
    claim=STABILITY_CLAIM,
    primary_metric="top1",
    run_unit=run_stability_unit,
    verdict=stability_verdict,
    units=stability_units,
    figures=stability_figures,
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
