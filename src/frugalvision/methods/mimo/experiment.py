"""The MIMO / unmixing experiment on the harness (spec section 6) and the unmixing variant study (section 2.6).

Main study, per width and seed, one unit per arm: ``single`` (two independent single networks: the ``single`` row
and the ``ensemble`` row, M x the cost), ``mimo`` (sum mixing), ``linearmixmo``, ``cutmixmo`` and
``cutmixmo-unmix`` (Cut-MixMo + the default unmixing). Every network of a width trains for the same steps of the
same processed batch. ``finish`` adds one latency row per width (MIMO vs the deep ensemble, interleaved timing).

``--study variants``: at the smallest width, Cut-MixMo without unmixing and with every candidate reading, scored on
the validation split only; the winner (lowest mean validation NLL) is the default frozen in ``config.py``.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from pathlib import Path
from typing import Any

import torch

from frugalvision.errors import ConfigError
from frugalvision.harness import (
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
from frugalvision.methods.mimo.config import PRESETS, MimoRunConfig, parse_unmix
from frugalvision.methods.mimo.data import MimoData, full_splits, load_data
from frugalvision.methods.mimo.evaluation import evaluate_members, member_logits
from frugalvision.methods.mimo.model import MimoNetwork, wrap_backbone
from frugalvision.methods.mimo.plugin import MixMo
from frugalvision.methods.mimo.sharing import (
    active_filters,
    channel_ablation,
    encoder_overlap,
    head_overlap,
    linear_cka,
    solo_cka,
    solo_features,
)
from frugalvision.metrics.calibration import ensemble_metrics
from frugalvision.seeding import derive_seed

METHOD = "mimo"
CLAIM = (
    "An unmixing step lets the subnetworks of a MIMO network share features and improves small architectures: at "
    "the smallest width, Cut-MixMo + unmixing beats Cut-MixMo in ensemble test top-1 and has a higher encoder "
    "filter-norm overlap (the unmixing step is our reading; the paper's definition was not available)."
)
THRESHOLDS = (0.2, 0.3, 0.4, 0.5)


def row_name(arm: str, width: int) -> str:
    """Row name of an arm at a width, e.g. ``cutmixmo-unmix-w8``."""
    return f"{arm}-w{width}"


# ---------------------------------------------------------------------------------------------- building, training
def seed_data(ctx: Context[MimoRunConfig], seed: int) -> MimoData:
    """The splits of one seed (the files are read and resized once per process)."""
    full = ctx.memo("full", lambda: full_splits(ctx.config))
    return ctx.memo(("data", seed), lambda: load_data(ctx.config, seed, full))


def make_backbone(config: MimoRunConfig, width: int, data: MimoData) -> torch.nn.Module:
    """PreActResNet (stem and stages w, 2w, 4w) or WideResNet-depth-k sized for the data."""
    from frugalvision.nn.wide_resnet import preact_resnet, wide_resnet

    channels, classes = data.image_shape[0], data.num_classes
    if config.backbone == "wrn":
        return wide_resnet(config.depth, width, classes, channels)
    return preact_resnet(width, config.blocks, classes, channels)


def make_network(config: MimoRunConfig, arm: str, width: int, data: MimoData, unmix: str | None) -> MimoNetwork:
    """The arm's network; ``unmix`` overrides the configured reading of the unmixed arm (None: MixMo)."""
    members = config.arm_settings(arm)[0]
    kind, at = parse_unmix(unmix) if unmix else ("none", "final")
    options = {"unmix_norm_act": config.unmix_norm_act, "shared_head": config.shared_head}
    return wrap_backbone(make_backbone(config, width, data), members, kind, at, **options)  # type: ignore[arg-type]


def make_mixer(config: MimoRunConfig, arm: str) -> MixMo:
    """The arm's mixing plug-in (single networks: no mixing, b = 1)."""
    _, mixing, _, repetitions = config.arm_settings(arm)
    return MixMo(
        mixing=mixing,
        alpha=config.alpha,
        weight_root=config.weight_root,
        p_cut=config.p_cut,
        batch_repetition=repetitions,
        input_repetition=config.input_repetition,
        mask_loss_weight=config.mask_loss_weight,
        l2=config.l2,
        pad=config.pad,
        flip=config.pad > 0,
    )


def train(
    ctx: Context[MimoRunConfig],
    arm: str,
    width: int,
    data: MimoData,
    unmix: str | None = None,
    name: str = "",
    seed: int | None = None,
) -> tuple[MimoNetwork, dict[str, float]]:
    """Train one network of an arm through the harness; return it (eval mode) and its cost accounting."""
    from frugalvision.methods.mimo.task import MimoTask

    config = ctx.config
    repetitions = config.arm_settings(arm)[3]
    loop = dataclasses.replace(config.loop, batch_size=config.loop.batch_size // repetitions)
    if config.lr_per_repetition:
        loop = dataclasses.replace(loop, lr=config.loop.lr / repetitions)
    build = lambda: make_network(config, arm, width, data, unmix)  # noqa: E731
    task = MimoTask(build, data.train_dataset(), make_mixer(config, arm), data.normalise)
    fit = ctx.fit(task, loop, name=name, seed=seed)
    model = fit.model
    assert isinstance(model, MimoNetwork)
    world = ctx.engine.world_size
    accounting = {
        "steps": float(fit.steps),
        "samples": float(fit.steps * config.loop.batch_size * world),
        "unique_images": float(fit.steps * loop.batch_size * world),
        "train_s": fit.wall_s,
    }
    return model.eval(), accounting


def probe(data: MimoData, split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` normalised images and labels of a split."""
    arrays = getattr(data, split)
    images = arrays.images[:count].float().div(255.0)
    return data.normalise(images), arrays.labels[:count]


def sharing_metrics(config: MimoRunConfig, model: MimoNetwork, data: MimoData) -> dict[str, float]:
    """Encoder / head overlap, active core filters, channel ablation (validation) and solo-pass CKA (test)."""
    metrics = {"enc_overlap": encoder_overlap(model.encoders)}
    if len(model.heads) > 1:
        metrics["head_overlap"] = head_overlap(model.heads)  # type: ignore[arg-type]
    active = active_filters(model, THRESHOLDS)
    metrics.update({f"active_t{round(100 * t)}": v for t, v in active.items()})
    val_images, val_labels = probe(data, "val", config.probe_images)
    ablation = channel_ablation(model, val_images, val_labels)
    metrics.update({"ablation_spearman": ablation["spearman"], "ablation_transfer": ablation["transfer"]})
    metrics["solo_cka"] = solo_cka(model, probe(data, "test", config.probe_images)[0])
    return metrics


def model_size(models: list[MimoNetwork], data: MimoData) -> dict[str, float]:
    """Parameters (millions) and inference MACs per image of a model or ensemble."""
    from frugalvision.methods.mimo.bench import inference_macs

    return {
        "params_m": sum(p.numel() for m in models for p in m.parameters()) / 1e6,
        "inference_macs": sum(inference_macs(m, data.image_shape) for m in models),
    }


def scores(models: list[MimoNetwork], data: MimoData) -> dict[str, float]:
    """Test metrics (``test_*``), temperature fitted on validation, validation top-1 / NLL."""
    test = member_logits(models, data.test.images, data.normalise)
    val = member_logits(models, data.val.images, data.normalise)
    metrics = evaluate_members(test, data.test.labels, val, data.val.labels)
    renamed = {k if k.startswith("val_") or k == "temperature" else f"test_{k}": v for k, v in metrics.items()}
    return renamed | {"chance": 1.0 / data.num_classes}


# ---------------------------------------------------------------------------------------------- main units
def run_single(ctx: Context[MimoRunConfig], unit: Unit) -> UnitResult:
    """Two independent single networks: the ``single`` row (the first) and the ``ensemble`` row (both)."""
    config, width = ctx.config, int(unit.params["width"])
    data = seed_data(ctx, unit.seed)
    first, cost = train(ctx, "single", width, data, name="member0")
    second, cost_b = train(ctx, "single", width, data, name="member1", seed=second_member_seed(unit.seed))
    single = scores([first], data) | cost | model_size([first], data)
    ensemble = scores([first, second], data) | model_size([first, second], data)
    ensemble |= {k: cost[k] + cost_b[k] for k in cost if k != "steps"} | {"steps": cost["steps"]}
    images = probe(data, "test", config.probe_images)[0]
    ensemble["enc_overlap"] = encoder_overlap([first.encoders[0], second.encoders[0]])
    ensemble["solo_cka"] = linear_cka(solo_features(first, images, 0), solo_features(second, images, 0))
    rows = [
        {"name": row_name("single", width), "seed": unit.seed, "metrics": single},
        {"name": row_name("ensemble", width), "seed": unit.seed, "metrics": ensemble},
    ]
    return UnitResult(rows, dataset=data.source)


def second_member_seed(seed: int) -> int:
    """Seed of the deep ensemble's second member (another init and data order than the first)."""
    return derive_seed("mimo-ensemble-member", seed)


def run_mimo(ctx: Context[MimoRunConfig], unit: Unit) -> UnitResult:
    """One MIMO-type network: accuracy / uncertainty metrics, sharing measures, cost."""
    config, arm, width = ctx.config, str(unit.params["arm"]), int(unit.params["width"])
    data = seed_data(ctx, unit.seed)
    unmix = config.unmix if config.arm_settings(arm)[2] else None
    model, cost = train(ctx, arm, width, data, unmix)
    metrics = scores([model], data) | cost | model_size([model], data) | sharing_metrics(config, model, data)
    return UnitResult.one_row(unit, metrics, dataset=data.source, unmix=unmix or "none")


def run_unit(ctx: Context[MimoRunConfig], unit: Unit) -> UnitResult:
    """Dispatch a main unit by its arm."""
    return (run_single if unit.params["arm"] == "single" else run_mimo)(ctx, unit)


def main_units(config: MimoRunConfig) -> list[Unit]:
    """Per seed and width, one unit per arm (rows are named ``<arm>-w<width>``)."""
    return [
        Unit(row_name(arm, width), seed, {"arm": arm, "width": width})
        for seed in config.seeds
        for width in config.widths
        for arm in config.arms
    ]


def latency_rows(ctx: Context[MimoRunConfig], records: list[UnitRecord]) -> list[dict[str, Any]]:
    """One row per width: inference latency of MIMO (and MIMO + unmixing) vs the deep ensemble, interleaved."""
    from frugalvision.methods.mimo.bench import latency_arms, measure_latency

    config = ctx.config
    data = seed_data(ctx, config.seeds[0])
    images = probe(data, "test", config.latency_batch)[0]
    rows = []
    for width in config.widths:
        torch.manual_seed(0)
        kind, at = parse_unmix(config.unmix)
        arms = latency_arms(lambda w=width: make_backbone(config, w, data), config.members, kind, at)  # type: ignore[arg-type]
        timed = measure_latency(arms, images, config.latency_rounds)
        rows.append({"name": f"latency-w{width}", "seed": config.seeds[0], "metrics": timed})
    return rows


# ---------------------------------------------------------------------------------------------- main verdict
def learns(rows: list[dict[str, Any]], name: str) -> Precondition:
    """Cut-MixMo's mean test top-1 is above twice chance (otherwise there is nothing to improve or share)."""
    label = f"{name} learns (test top-1 > 2 x chance)"
    top, chance = metric_values(rows, "test_top1", name), metric_values(rows, "chance", name)
    if not top or not chance:
        return Precondition(label, False, f"no {name} row")
    mean, level = statistics.fmean(top.values()), 2 * statistics.fmean(chance.values())
    return Precondition(label, mean > level, f"{mean:.3f} vs {level:.3f}")


def verdict(config: MimoRunConfig, rows: list[dict[str, Any]]) -> Verdict:
    """At the smallest width: Cut-MixMo + unmixing beats Cut-MixMo in test top-1 AND in encoder overlap.

    Both paired comparisons (one-sided 95 % Student-t bounds over seeds) must be "better" for "supported"; either
    being "worse" gives "not supported"; a precondition: Cut-MixMo learns.
    """
    width = min(config.widths)
    ours, reference = row_name("cutmixmo-unmix", width), row_name("cutmixmo", width)
    comparisons = [
        compare(rows, "test_top1", better=ours, reference=reference),
        compare(rows, "enc_overlap", better=ours, reference=reference),
    ]
    claim = f"at the smallest width w={width}, unmixing ({config.unmix}) raises top-1 and feature sharing"
    return claim_verdict(comparisons, [learns(rows, reference)], claim=claim)


def _describe(rows: list[dict[str, Any]], metric: str, better: str, reference: str, lower: bool = False) -> str:
    try:
        return compare(rows, metric, better=better, reference=reference, higher_is_better=not lower).describe()
    except ConfigError as error:  # a row or metric the run lacks (e.g. arms left out): say so, do not fail
        return f"{better} vs {reference} on {metric}: not available ({error})"


def notes(config: MimoRunConfig, records: list[UnitRecord]) -> str:
    """Data and recipe, then the readings reported but not voted (spec section 6)."""
    rows = [row for record in records for row in record.rows]
    small, large = min(config.widths), max(config.widths)
    ours, ref = row_name("cutmixmo-unmix", small), row_name("cutmixmo", small)
    lines = [
        _describe(rows, "test_top1", row_name("cutmixmo-unmix", large), row_name("cutmixmo", large)),
        _describe(rows, "ablation_spearman", ours, ref),
        _describe(rows, "solo_cka", ours, ref),
        _describe(rows, "test_nll", ours, ref, lower=True),
        _describe(rows, "test_ece", ours, ref, lower=True),
        _describe(rows, "test_top1", ref, row_name("single", small)),
        _describe(rows, "test_top1", row_name("ensemble", small), ref),
    ]
    return (
        f"{config.backbone} widths {config.widths}, M={config.members}, b={config.batch_repetition}, "
        f"{config.loop.max_steps} steps of {config.loop.batch_size} processed samples per network (the deep "
        f"ensemble trains {config.members} such networks), unmix={config.unmix} (our reading, chosen by the variant "
        f"study). Reported, not voted: {' | '.join(lines)}."
    )


def _bands(fig: FigureInput[MimoRunConfig], metric: str, arm: str) -> tuple[list[float], list[float]]:
    cells = [
        fig.summary.get(metric, {}).get(row_name(arm, w), {"mean": math.nan, "std": 0.0}) for w in fig.config.widths
    ]
    return [c["mean"] for c in cells], [c.get("std", 0.0) for c in cells]


def figures(fig: FigureInput[MimoRunConfig]) -> list[str]:
    """Accuracy, encoder overlap and solo-pass CKA vs width (mean ± std over seeds)."""
    from frugalvision.report import line_plot

    widths = list(fig.config.widths)
    arms = [a for a in ("single", "ensemble", *fig.config.arms) if a != "single" or "single" in fig.config.arms]
    arms = list(dict.fromkeys(arms))
    sharing_arms = [a for a in arms if a != "single"]
    plots = [
        ("accuracy_vs_width.png", "test_top1", arms, "ensemble test top-1"),
        ("sharing_vs_width.png", "enc_overlap", sharing_arms, "encoder filter-norm overlap"),
        ("cka_vs_width.png", "solo_cka", sharing_arms, "solo-pass linear CKA between members"),
    ]
    paths = []
    for file, metric, names, label in plots:
        series = {arm: _bands(fig, metric, arm) for arm in names}
        paths.append(line_plot(fig.out_dir / file, widths, series, "width", label, f"{label} vs width"))
    return [p.name for p in paths]


# ---------------------------------------------------------------------------------------------- variant study
def variant_units(config: MimoRunConfig) -> list[Unit]:
    """Per seed, at the smallest width: Cut-MixMo without unmixing, then with each candidate reading."""
    units = []
    for seed in config.seeds:
        units.append(Unit("cutmixmo", seed, {"unmix": None}))
        units += [Unit(f"unmix-{c}", seed, {"unmix": c}) for c in config.variant_candidates]
    return units


def run_variant(ctx: Context[MimoRunConfig], unit: Unit) -> UnitResult:
    """One Cut-MixMo network at the smallest width, scored on the validation split only (test unused)."""
    width = min(ctx.config.widths)
    data = seed_data(ctx, unit.seed)
    unmix = unit.params["unmix"]
    model, cost = train(ctx, "cutmixmo-unmix" if unmix else "cutmixmo", width, data, unmix)
    val = member_logits([model], data.val.images, data.normalise)
    metrics = {f"val_{k}": v for k, v in ensemble_metrics(val, data.val.labels).items()}
    metrics |= {"enc_overlap": encoder_overlap(model.encoders), "train_s": cost["train_s"]}
    return UnitResult.one_row(unit, metrics, dataset=data.source)


def variant_names(config: MimoRunConfig) -> list[str]:
    """Row names of the candidate readings."""
    return [f"unmix-{c}" for c in config.variant_candidates]


def best_variant(config: MimoRunConfig, rows: list[dict[str, Any]]) -> str:
    """The candidate with the lowest mean validation NLL (ties: higher validation top-1, then the first listed)."""

    def key(name: str) -> tuple[float, float]:
        nll, acc = metric_values(rows, "val_nll", name), metric_values(rows, "val_top1", name)
        if not nll:
            return (math.inf, 0.0)
        return (round(statistics.fmean(nll.values()), 9), -statistics.fmean(acc.values()))

    return min(variant_names(config), key=key)


def variant_verdict(config: MimoRunConfig, rows: list[dict[str, Any]]) -> Verdict:
    """The best of the k candidates has a lower validation NLL than Cut-MixMo without unmixing, at alpha / k."""
    best, k = best_variant(config, rows), len(config.variant_candidates)
    comparison = compare(rows, "val_nll", better=best, reference="cutmixmo", alpha=ALPHA / k, higher_is_better=False)
    return claim_verdict([comparison], claim=f"the best unmixing reading (picked among k = {k}, alpha / k) beats none")


def variant_notes(config: MimoRunConfig, records: list[UnitRecord]) -> str:
    """The winner (the default to freeze in config.py) and the selection rule."""
    rows = [row for record in records for row in record.rows]
    return (
        f"Winner (lowest mean validation ensemble NLL, ties by top-1): {best_variant(config, rows)}. Cut-MixMo at "
        f"width {min(config.widths)}, {config.loop.max_steps} steps of {config.loop.batch_size}; validation split "
        "only, test never used. The candidates are our readings of the unmixing step."
    )


# ---------------------------------------------------------------------------------------------- declaration
def benchmark(out_dir: Path) -> dict[str, Any]:
    """Inference latency ratios MIMO / deep ensemble (and / single) on CPU; ``frugal bench`` writes them."""
    from frugalvision.methods.mimo.bench import latency_benchmark

    return latency_benchmark()


MAIN = Study(
    claim=CLAIM,
    primary_metric="test_top1",
    run_unit=run_unit,
    verdict=verdict,
    units=main_units,
    finish=latency_rows,
    figures=figures,
    notes=notes,
)

VARIANTS = Study(
    claim="Among our readings of the unmixing step (spatial, learned at the final map or before the last stage, "
    "soft predicted masks), the best lowers Cut-MixMo's validation NLL at the smallest width (validation only).",
    primary_metric="val_nll",
    run_unit=run_variant,
    verdict=variant_verdict,
    units=variant_units,
    notes=variant_notes,
)

EXPERIMENT = Experiment(
    name=METHOD,
    config_class=MimoRunConfig,
    presets=PRESETS,
    main=MAIN,
    studies={"variants": VARIANTS},
    benchmark=benchmark,
)
