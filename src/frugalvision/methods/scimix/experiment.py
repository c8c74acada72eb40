"""The SciMix experiment on the harness: a learned in-class mixer on few-label supervised, Mean Teacher, FixMatch.

Units (main study): ``references`` (the oracle classifier and the background classifier, trained once on their own
data and cached), then per seed ``generator`` (the supervised warm-up and the generator, both cached under
``<out>/scimix/cache`` so every arm and the variant study share them; its rows measure the mixes on held-out pairs)
and one unit per ``framework+mix`` row (trained from the warm-up). Variant study: per seed one unit per generator
reading (decoder x schedule), scored on the validation split.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from frugalvision.errors import ConfigError
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
    compare,
    interleaved_timings,
    threshold,
)
from frugalvision.harness.stats import ALPHA
from frugalvision.harness.timing import benchmark_result, ratio_entry
from frugalvision.methods.scimix.config import (
    FRAMEWORKS,
    ScimixConfig,
    extended,
    paper,
    paper_cifar100,
    smoke,
    standard,
)
from frugalvision.methods.scimix.data import Problem, References, build_problem, build_references
from frugalvision.methods.scimix.generator import GeneratorConfig, SciMixGenerator
from frugalvision.methods.scimix.losses import LossWeights
from frugalvision.methods.scimix.metrics import (
    between_class_mixes,
    composite_mixes,
    draw_pairs,
    mix_quality,
    predict,
    semantic_mixes,
)
from frugalvision.methods.scimix.task import GeneratorTask
from frugalvision.nn import cifar_resnet
from frugalvision.seeding import derive_seed
from frugalvision.ssl import (
    CutMix,
    FixMatch,
    Framework,
    MeanTeacher,
    MixUp,
    SemanticMix,
    SemiSupervisedTask,
    Supervised,
    TensorDictDataset,
    composite_mix,
    fixmatch_wrn,
    write_labeled_json,
)

METHOD = "scimix"
CLAIM = (
    "Mixing the semantic content of one image into the background of another with a learned generator (SciMix) "
    "gives in-class samples that inherit their non-semantic parent's background, and these mixes improve Mean "
    "Teacher, FixMatch and supervised training on a small labeled set."
)
PAIRS = 1000
FIGURE_COLUMNS = ("A (semantic)", "B (context)", "SciMix (learned)", "exact composite", "CutMix", "MixUp")


# ------------------------------------------------------------------------------------------------ building blocks
def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _data_key(config: ScimixConfig) -> dict[str, Any]:
    fields = ("dataset", "data_root", "labeled_json", "labels_per_class", "unlabeled", "val_size", "test_size")
    more = ("oracle_size", "nuisance", "image_size", "object_size", "alpha_gain", "allow_pickle")
    return {name: getattr(config, name) for name in fields + more}


def classifier_fn(config: ScimixConfig, num_classes: int, channels: int) -> Callable[[], nn.Module]:
    """The classifier builder: CIFAR ResNet-8 (``classifier_width``) or FixMatch's WRN-28 (``filters`` = width)."""
    if config.classifier == "wrn28_2":
        return lambda: fixmatch_wrn(num_classes, filters=config.classifier_width, in_chans=channels)
    return lambda: cifar_resnet(8, width=config.classifier_width, in_chans=channels, num_classes=num_classes)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _cached(ctx: Context[ScimixConfig], name: str, train: Callable[[], dict[str, torch.Tensor]]) -> dict:
    """Weights from ``<out>/scimix/cache/<name>``, trained (and saved by rank 0) when missing."""
    from frugalvision.engine import load_weights

    path = ctx.cache_path(name)
    if path.is_file():
        return load_weights(path)
    state = train()
    ctx.save_weights(state, path)
    return state


def _supervised_fit(
    ctx: Context[ScimixConfig], name: str, model_fn: Callable[[], nn.Module], data: TensorDictDataset, steps: int
) -> dict[str, torch.Tensor]:
    """Cross-entropy with FixMatch's optimiser and weak views (the warm-up and the reference classifiers)."""
    config = ctx.config
    if steps == 0:
        torch.manual_seed(derive_seed(ctx.seed, name, "init"))
        return _state(model_fn())
    task = SemiSupervisedTask(model_fn, data, data, Supervised(eval_ema=0.0, lr_schedule="cosine_7_16"), None)
    batch = min(config.labeled_batch if name == "warmup" else 64, len(data))
    loop = task.loop(batch, max_steps=steps, lr=config.warmup_lr, weight_decay=5e-4, log_every=max(1, steps // 5))
    return _state(ctx.fit(task, loop, name=name, seed=derive_seed(ctx.seed, name)).model)


def problem_of(ctx: Context[ScimixConfig], seed: int) -> Problem:
    """The seed's splits (built once per process)."""
    return ctx.memo(("problem", seed), lambda: build_problem(ctx.config, seed))


def references_of(ctx: Context[ScimixConfig]) -> tuple[nn.Module, nn.Module | None, References]:
    """The oracle and background classifiers (trained once, cached) and their data."""
    config = ctx.config
    refs = ctx.memo("references", lambda: build_references(config))
    problem = problem_of(ctx, config.seeds[0])
    key = _digest(_data_key(config), config.reference_steps, config.classifier, config.classifier_width)
    build = classifier_fn(config, problem.num_classes, problem.channels)

    def fit_oracle() -> dict[str, torch.Tensor]:
        return _supervised_fit(ctx, "oracle", build, refs.oracle, config.reference_steps)

    oracle = build()
    oracle.load_state_dict(_cached(ctx, f"oracle-{key}.safetensors", fit_oracle))
    background = None
    if refs.background_train is not None:
        crops = refs.background_train
        count = int(crops.fields["label"].max()) + 1
        build_bg = classifier_fn(replace(config, classifier="resnet8"), count, problem.channels)

        def fit_background() -> dict[str, torch.Tensor]:
            return _supervised_fit(ctx, "background", build_bg, crops, config.reference_steps)

        background = build_bg()
        background.load_state_dict(_cached(ctx, f"background-{key}.safetensors", fit_background))
    return oracle.eval(), background.eval() if background is not None else None, refs


def _warmup_key(config: ScimixConfig, seed: int) -> str:
    fields = (config.classifier, config.classifier_width, config.warmup_steps, config.warmup_lr, config.labeled_batch)
    return _digest(_data_key(config), fields, seed)


def warmup_state(ctx: Context[ScimixConfig], seed: int) -> dict[str, torch.Tensor]:
    """The supervised warm-up on the labeled set (cached per seed): every row starts from it."""
    config, problem = ctx.config, problem_of(ctx, seed)
    build = classifier_fn(config, problem.num_classes, problem.channels)
    name = f"warmup-{_warmup_key(config, seed)}-seed{seed}.safetensors"
    return _cached(ctx, name, lambda: _supervised_fit(ctx, "warmup", build, problem.labeled, config.warmup_steps))


def generator_config(config: ScimixConfig, problem: Problem) -> GeneratorConfig:
    """The generator architecture of the config."""
    g = config.generator
    return GeneratorConfig(problem.num_classes, problem.channels, g.style_dim, g.content_channels, g.width, g.decoder)


def loss_weights(config: ScimixConfig) -> LossWeights:
    """The generator's loss weights."""
    g = config.generator
    return LossWeights(
        rec=g.rec, sem=g.sem, cls=g.cls, cyc=g.cyc, swap=g.swap, bg=g.bg, adv=g.adv, r1=g.r1, a_max=g.a_max
    )


def trained_generator(ctx: Context[ScimixConfig], seed: int) -> SciMixGenerator:
    """The seed's generator (cached): trained on labeled + unlabeled images with the staged or joint schedule."""
    config, problem = ctx.config, problem_of(ctx, seed)
    arch = generator_config(config, problem)
    key = _digest(_warmup_key(config, seed), asdict(config.generator))

    def train() -> dict[str, torch.Tensor]:
        g = config.generator
        build = classifier_fn(config, problem.num_classes, problem.channels)
        teacher = None
        if g.schedule == "staged":
            teacher = build()
            teacher.load_state_dict(warmup_state(ctx, seed))
        labeled, unlabeled = problem.generator_images()
        task = GeneratorTask(
            arch, unlabeled, loss_weights(config), g.threshold, g.schedule, teacher, classifier_fn=build,
            labeled=labeled, labeled_batch=g.labeled_batch, classifier_lr=g.joint_lr, teacher_ema=g.joint_ema,
        )  # fmt: skip
        from frugalvision.engine import LoopConfig

        loop = LoopConfig(
            max_steps=g.steps, batch_size=min(g.batch_size, len(unlabeled)), lr=g.lr, weight_decay=0.0,
            schedule="constant", log_every=max(1, g.steps // 10),
        )  # fmt: skip
        model = ctx.fit(task, loop, name="generator", seed=derive_seed(seed, "generator")).model
        return _state(model.generator)

    generator = SciMixGenerator(arch)
    generator.load_state_dict(_cached(ctx, f"generator-{key}-seed{seed}.safetensors", train))
    return generator.eval()


# ------------------------------------------------------------------------------------------------ rows
def framework_of(config: ScimixConfig, name: str) -> tuple[Framework, float, float]:
    """(framework, learning rate, weight decay) of a row's framework."""
    if name == "fixmatch":
        f = config.fixmatch
        return (
            FixMatch(mu=f.mu, eval_ema=config.eval_ema, threshold=f.threshold, lambda_u=f.lambda_u),
            f.lr,
            f.weight_decay,
        )
    if name == "mean_teacher":
        m = config.mean_teacher
        rampup = max(1.0, m.rampup_fraction * config.steps)
        return MeanTeacher(mu=m.mu, alpha=m.alpha, consistency=m.consistency, rampup=rampup), m.lr, m.weight_decay
    if name == "supervised":
        return Supervised(mu=1, eval_ema=config.eval_ema, lr_schedule="cosine_7_16"), config.supervised_lr, 5e-4
    raise ConfigError(f"unknown framework {name!r}; use one of {', '.join(FRAMEWORKS)}")


def plugin_of(config: ScimixConfig, mix: str, generator: SciMixGenerator | None) -> Any:
    """The row's mixing plug-in."""
    if mix == "none":
        return None
    if mix == "mixup":
        return MixUp(config.mix_alpha, config.lambda_mix)
    if mix == "cutmix":
        return CutMix(config.mix_alpha, config.lambda_mix)
    if mix == "oracle":
        return SemanticMix(composite_mix, config.lambda_mix)
    assert generator is not None
    return SemanticMix(generator.mixer(), config.lambda_mix)


def train_row(
    ctx: Context[ScimixConfig], seed: int, row: str, eval_set: TensorDictDataset, name: str = "row"
) -> tuple[float, float, list[float]]:
    """Train one ``framework+mix`` row from the warm-up; returns (reported top-1, final top-1, eval curve)."""
    config, problem = ctx.config, problem_of(ctx, seed)
    framework_name, _, mix = row.partition("+")
    framework, lr, weight_decay = framework_of(config, framework_name)
    generator = trained_generator(ctx, seed) if mix == "scimix" else None
    build = classifier_fn(config, problem.num_classes, problem.channels)
    task = SemiSupervisedTask(
        build, problem.labeled, problem.unlabeled, framework, plugin_of(config, mix, generator),
        {"eval": eval_set}, init_state=warmup_state(ctx, seed),
    )  # fmt: skip
    loop = task.loop(
        config.labeled_batch, max_steps=config.steps, lr=lr, weight_decay=weight_decay,
        eval_every=config.eval_every, log_every=max(1, config.steps // 10),
    )  # fmt: skip
    result = ctx.fit(task, loop, name=name)
    curve = [row_["eval/top1"] for row_ in result.history if "eval/top1" in row_]
    reported = statistics.fmean(curve[-config.report_last :])
    return reported, result.metrics["eval"]["top1"], curve


# ------------------------------------------------------------------------------------------------ units
def _figure_examples(columns: list[torch.Tensor], count: int) -> dict[str, torch.Tensor]:
    return {"examples": torch.stack([c[:count] for c in columns], dim=1).contiguous()}


def _mix_rows(
    ctx: Context[ScimixConfig], seed: int, pairs: Any, generator: SciMixGenerator, oracle: nn.Module, bg: Any
) -> tuple[list[dict[str, Any]], list[torch.Tensor]]:
    """Quality rows of the learned mixes, the exact composites and MixUp / CutMix on held-out pairs."""
    config = ctx.config
    oracle_acc = float((predict(oracle, pairs.semantic["image"]) == pairs.semantic["label"]).float().mean())
    learned = semantic_mixes(generator.mixer(), pairs)
    quality = mix_quality(learned, pairs, oracle, bg)
    quality["oracle_top1"] = oracle_acc
    quality["fidelity_ratio"] = quality["fidelity"] / max(oracle_acc, 1e-6)
    rows = [{"name": "mix:scimix", "seed": seed, "metrics": quality}]
    columns = [pairs.semantic["image"], pairs.context["image"], learned]
    if config.synthetic:
        exact = composite_mixes(pairs)
        rows.append({"name": "mix:oracle", "seed": seed, "metrics": mix_quality(exact, pairs, oracle, bg)})
        columns.append(exact)
    else:
        columns.append(torch.full_like(learned, 0.5))
    for kind in ("cutmix", "mixup"):
        mixes, larger, other = between_class_mixes(pairs, kind, derive_seed(seed, kind))
        metrics = mix_quality(mixes, pairs, oracle, bg, larger, other)
        rows.append({"name": f"mix:{kind}", "seed": seed, "metrics": metrics})
        columns.append(mixes)
    return rows, columns


def run_references(ctx: Context[ScimixConfig], unit: Unit) -> UnitResult:
    """Train (or load) the oracle and background classifiers; report their held-out accuracy."""
    oracle, background, refs = references_of(ctx)
    metrics = {"oracle_train_images": float(len(refs.oracle))}
    if background is not None and refs.background_test is not None:
        crops = refs.background_test.fields
        found = predict(background, crops["image"].float() / 255.0)
        metrics["background_top1"] = float((found == crops["label"]).float().mean())
    return UnitResult.one_row(unit, metrics, dataset=problem_of(ctx, unit.seed).source)


def run_generator(ctx: Context[ScimixConfig], unit: Unit) -> UnitResult:
    """The seed's warm-up and generator; rows: warm-up test top-1 and the quality of every kind of mix."""
    config, seed = ctx.config, unit.seed
    problem = problem_of(ctx, seed)
    oracle, background, _ = references_of(ctx)
    warm = classifier_fn(config, problem.num_classes, problem.channels)()
    warm.load_state_dict(warmup_state(ctx, seed))
    test = problem.test.fields
    warm_top1 = float((predict(warm, test["image"].float() / 255.0) == test["label"]).float().mean())
    generator = trained_generator(ctx, seed)
    pairs = draw_pairs(test, PAIRS, derive_seed(seed, "pairs"))
    rows, columns = _mix_rows(ctx, seed, pairs, generator, oracle, background)
    rows.append({"name": "warmup", "seed": seed, "metrics": {"test_top1": warm_top1}})
    if ctx.is_main and config.labeled_json is None:
        write_labeled_json(ctx.unit_dir / "labeled.json", _labeled_split(problem, config, seed))
    arrays = _figure_examples(columns, config.figure_pairs)
    return UnitResult(rows, {"pairs": len(pairs)}, arrays, problem.source)


def _labeled_split(problem: Problem, config: ScimixConfig, seed: int) -> Any:
    from frugalvision.ssl import LabeledSplit

    return LabeledSplit(problem.indices["labeled"], problem.indices["unlabeled"], config.labels_per_class, seed)


def run_row(ctx: Context[ScimixConfig], unit: Unit) -> UnitResult:
    """One ``framework+mix`` row on the test split."""
    problem = problem_of(ctx, unit.seed)
    reported, final, curve = train_row(ctx, unit.seed, unit.name, problem.test)
    metrics = {"test_top1": reported, "test_top1_final": final}
    return UnitResult.one_row(unit, metrics, dataset=problem.source, curve=curve)


def run_unit(ctx: Context[ScimixConfig], unit: Unit) -> UnitResult:
    """Dispatch on the unit's kind."""
    if unit.name == "references":
        return run_references(ctx, unit)
    if unit.name == "generator":
        return run_generator(ctx, unit)
    return run_row(ctx, unit)


def main_units(config: ScimixConfig) -> list[Unit]:
    """References once, then per seed the generator and every row."""
    units = [Unit("references", config.seeds[0])]
    for seed in config.seeds:
        units += [Unit("generator", seed)] + [Unit(row, seed) for row in config.rows]
    return units


# ------------------------------------------------------------------------------------------------ verdict
def _mean(rows: list[dict[str, Any]], name: str, metric: str) -> float:
    values = [float(r["metrics"][metric]) for r in rows if r["name"] == name and metric in r["metrics"]]
    return statistics.fmean(values) if values else math.nan


def validity(config: ScimixConfig, rows: list[dict[str, Any]]) -> list[Precondition]:
    """(i) the learned mixes are valid: fidelity >= 0.8 x oracle accuracy, inheritance >= 2 x chance (means)."""
    fidelity, oracle = _mean(rows, "mix:scimix", "fidelity"), _mean(rows, "mix:scimix", "oracle_top1")
    checks = [
        Precondition(
            "learned-SciMix label fidelity >= 0.8 x the oracle's accuracy on real held-out images",
            fidelity >= 0.8 * oracle,
            f"fidelity {fidelity:.3f} vs 0.8 x {oracle:.3f} = {0.8 * oracle:.3f}",
        )
    ]
    inheritance = _mean(rows, "mix:scimix", "inheritance")
    if config.synthetic:
        chance = 1.0 / 10
        checks.append(
            Precondition(
                "learned-SciMix background inheritance >= 2 x chance (2/10)",
                inheritance >= 2 * chance,
                f"inheritance {inheritance:.3f} vs {2 * chance:.3f}",
            )
        )
    return checks


def framework_comparisons(rows: list[dict[str, Any]]) -> list[Comparison]:
    """Per framework: test top-1 of ``F+scimix`` vs ``F+none``, paired over seeds (one-sided 95 %)."""
    return [compare(rows, "test_top1", f"{f}+scimix", f"{f}+none") for f in FRAMEWORKS]


def _reported(rows: list[dict[str, Any]]) -> list[str]:
    names = {r["name"] for r in rows}
    lines = []
    for f in FRAMEWORKS:
        for better, reference in ((f"{f}+oracle", f"{f}+cutmix"), (f"{f}+oracle", f"{f}+none")):
            if better in names and reference in names:
                lines.append("reported, not voted: " + compare(rows, "test_top1", better, reference).describe())
    return lines


def verdict(config: ScimixConfig, rows: list[dict[str, Any]]) -> Verdict:
    """Supported iff the mixes are valid, >= 2 of 3 frameworks improve with SciMix and none gets worse.

    Not supported when the mixes are valid and no framework improves; inconclusive otherwise (and whenever the
    generator's mixes are not valid: then the learned reading was not tested).
    """
    checks = validity(config, rows)
    comparisons = framework_comparisons(rows)
    better = sum(c.outcome == "better" for c in comparisons)
    worse = sum(c.outcome == "worse" for c in comparisons)
    valid = all(p.holds for p in checks)
    if valid and better >= 2 and worse == 0:
        name = "supported"
    elif valid and better == 0:
        name = "not supported"
    else:
        name = "inconclusive"
    rule = (
        "inconclusive unless the learned mixes are valid ("
        + "; ".join(p.name for p in checks)
        + "); then, per framework (supervised, Mean Teacher, FixMatch), F+scimix vs F+none on test_top1 (mean of "
        "the last evaluations of the EMA / teacher model) is 'better' when the one-sided 95% lower bound (Student "
        "t over seeds) is above 0 and 'worse' when the upper bound is below 0: supported if >= 2 frameworks are "
        "better and none worse; not supported if none is better; otherwise inconclusive"
    )
    evidence = [c.describe() for c in comparisons]
    evidence += [f"precondition '{p.name}' {'holds' if p.holds else 'fails'}: {p.detail}" for p in checks]
    return Verdict(name, rule, tuple(evidence + _reported(rows)), tuple(comparisons))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ figures, notes
def figures(fig: FigureInput[ScimixConfig]) -> list[str]:
    """A grid of example mixes (first seed): A, B, the learned SciMix mix, the exact composite, CutMix, MixUp."""
    from frugalvision.report.figures import image_grid

    records = [r for r in fig.records if r.unit.name == "generator" and "examples" in r.arrays]
    if not records:
        return []
    examples = records[0].arrays["examples"]  # [pairs, columns, C, H, W]
    images = [examples[i, j].permute(1, 2, 0).clamp(0, 1).numpy() for i in range(len(examples)) for j in range(6)]
    titles = [FIGURE_COLUMNS[j] if i == 0 else "" for i in range(len(examples)) for j in range(6)]
    image_grid(fig.out_dir / "mixes.png", images, titles, ncols=6)
    return ["mixes.png"]


def notes(config: ScimixConfig, records: list[UnitRecord]) -> str:
    """The protocol in one sentence."""
    return (
        f"{config.labels_per_class} labels per class (background tied to class with p={config.nuisance} in the "
        f"labeled set only), {config.unlabeled} unlabeled; warm-up {config.warmup_steps} steps, generator "
        f"{config.generator.steps} steps ({config.generator.decoder}, {config.generator.schedule}), every row "
        f"{config.steps} steps from the warm-up; test_top1 = mean of the last {config.report_last} evaluations; mix "
        f"metrics on {PAIRS} held-out pairs of different classes (oracle and background classifiers never train a row)"
    )


# ------------------------------------------------------------------------------------------------ variant study
VARIANTS = tuple((d, s) for d in ("modulated", "adain", "layered") for s in ("staged", "joint"))


def variant_name(decoder: str, schedule: str) -> str:
    """Row name of a generator reading."""
    return f"{decoder}-{schedule}"


def variant_units(config: ScimixConfig) -> list[Unit]:
    """References once, then per seed one unit per reading."""
    units = [Unit("references", config.seeds[0])]
    for seed in config.seeds:
        units += [Unit(variant_name(d, s), seed, {"decoder": d, "schedule": s}) for d, s in VARIANTS]
    return units


def run_variant(ctx: Context[ScimixConfig], unit: Unit) -> UnitResult:
    """One reading: its generator's mixes on validation pairs and supervised+scimix validation accuracy."""
    if unit.name == "references":
        return run_references(ctx, unit)
    base = ctx.config
    generator_settings = replace(base.generator, decoder=unit.params["decoder"], schedule=unit.params["schedule"])
    ctx.config = replace(base, generator=generator_settings)
    try:
        problem = problem_of(ctx, unit.seed)
        oracle, background, _ = references_of(ctx)
        generator = trained_generator(ctx, unit.seed)
        pairs = draw_pairs(problem.val.fields, PAIRS, derive_seed(unit.seed, "val-pairs"))
        rows, _ = _mix_rows(ctx, unit.seed, pairs, generator, oracle, background)
        metrics = dict(rows[0]["metrics"])
        metrics["val_top1"], _, _ = train_row(ctx, unit.seed, "supervised+scimix", problem.val)
    finally:
        ctx.config = base
    return UnitResult.one_row(unit, metrics, dataset=problem.source)


def best_variant(config: ScimixConfig, rows: list[dict[str, Any]]) -> str:
    """Highest mean validation fidelity among readings with mean inheritance >= 2 x chance; ties by val top-1."""
    names = [variant_name(d, s) for d, s in VARIANTS if any(r["name"] == variant_name(d, s) for r in rows)]
    if not names:
        raise ConfigError("the variant study has no rows; run it with --study variants")
    valid = [n for n in names if not config.synthetic or _mean(rows, n, "inheritance") >= 0.2] or names
    return max(valid, key=lambda n: (round(_mean(rows, n, "fidelity"), 3), _mean(rows, n, "val_top1")))


def variant_verdict(config: ScimixConfig, rows: list[dict[str, Any]]) -> Verdict:
    """Supported iff the chosen reading's mixes are valid beyond the noise, each test at alpha / k (k readings)."""
    winner = best_variant(config, [r for r in rows if r["name"] != "references"])
    k = len(VARIANTS)
    comparisons = [threshold(rows, "fidelity_ratio", winner, 0.8, alpha=ALPHA / k)]
    if config.synthetic:
        comparisons.append(threshold(rows, "inheritance", winner, 0.2, alpha=ALPHA / k))
    outcomes = [c.outcome for c in comparisons]
    name = "supported" if all(o == "better" for o in outcomes) else (
        "not supported" if any(o == "worse" for o in outcomes) else "inconclusive"
    )  # fmt: skip
    rule = (
        f"the reading with the highest mean validation label fidelity among those whose mean background inheritance "
        f"is >= 2 x chance (ties: supervised+scimix validation top-1) is chosen among k={k}; supported if its "
        "fidelity / oracle accuracy is above 0.8 and its inheritance above 0.2, each by a one-sided "
        f"{100 * (1 - ALPHA / k):.2f}% Student-t bound over seeds (alpha/k); not supported if either upper bound is "
        "below its threshold; otherwise inconclusive"
    )
    evidence = tuple([f"chosen reading: {winner}"] + [c.describe() for c in comparisons])
    return Verdict(name, rule, evidence, tuple(comparisons))  # type: ignore[arg-type]


def variant_notes(config: ScimixConfig, records: list[UnitRecord]) -> str:
    """The study's protocol."""
    return (
        f"validation split; each reading's generator ({config.generator.steps} steps) scored on {PAIRS} validation "
        f"pairs, and supervised+scimix trained {config.steps} steps from the warm-up and scored on validation"
    )


# ------------------------------------------------------------------------------------------------ benchmark
def benchmark(out_dir: Path) -> dict[str, Any]:
    """Cost of one FixMatch step with a SciMix mix vs with CutMix (same batch, interleaved rounds, one process)."""
    torch.manual_seed(0)
    classes, size = 10, 16
    generator = SciMixGenerator(GeneratorConfig(classes, 3, 64, 32, 8, "adain")).eval()  # the default reading
    model = cifar_resnet(8, width=8, in_chans=3, num_classes=classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    labeled = {"image": torch.rand(32, 3, size, size), "label": torch.randint(classes, (32,))}
    unlabeled = {"image": torch.rand(64, 3, size, size), "label": torch.full((64,), -1)}
    framework = FixMatch(mu=2)

    def step(plugin: Any) -> Callable[[], None]:
        def run() -> None:
            loss, _ = framework.loss(model, labeled, unlabeled, 0, plugin)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        return run

    arms = {"cutmix": step(CutMix()), "scimix": step(SemanticMix(generator.mixer())), "none": step(None)}
    timings = interleaved_timings(arms, rounds=20, warmup=3)
    sizes = "32 labeled + 64 unlabeled, 16x16, ResNet-8 width 8, generator width 8 (the experiment's sizes)"
    return benchmark_result(
        [
            ratio_entry(
                timings,
                "scimix",
                "cutmix",
                name="FixMatch step with a SciMix mix vs with CutMix",
                arm_label="FixMatch + SciMix (generator forward)",
                peer_label="FixMatch + CutMix",
            ),
            ratio_entry(
                timings,
                "cutmix",
                "none",
                name="FixMatch step with CutMix vs without a mix",
                arm_label="FixMatch + CutMix",
                peer_label="FixMatch",
            ),
        ],  # fmt: skip
        device="cpu",
        batch=sizes,
    )


MAIN = Study(
    claim=CLAIM,
    primary_metric="test_top1",
    run_unit=run_unit,
    verdict=verdict,
    units=main_units,
    figures=figures,
    notes=notes,
)

VARIANTS_STUDY = Study(
    claim="Among our readings of the generator (decoder x schedule), the one chosen on validation produces valid "
    "in-class mixes (label fidelity near the oracle's accuracy, background inherited from the context parent).",
    primary_metric="fidelity",
    run_unit=run_variant,
    verdict=variant_verdict,
    units=variant_units,
    notes=variant_notes,
    null_levels=lambda config: {"fidelity_ratio": 0.8, "inheritance": 0.2},
)

EXPERIMENT = Experiment(
    name=METHOD,
    config_class=ScimixConfig,
    presets={
        "smoke": smoke,
        "standard": standard,
        "extended": extended,
        "paper": paper,
        "paper_cifar100": paper_cifar100,
    },
    main=MAIN,
    studies={"variants": VARIANTS_STUDY},
    benchmark=benchmark,
)
