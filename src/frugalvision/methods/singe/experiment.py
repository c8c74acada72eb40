"""The SInGE experiment on the harness: E1 criterion quality, E2 short fine-tuning and the flowchart, E3 latency.

Units, per seed: ``dense`` (the dense model, trained once and cached under ``<out>/singe/cache``; with
``dense_seed`` one model serves every seed), ``e1`` (every criterion at every MAC target, one-shot, plain and after
BatchNorm re-estimation), ``k-ablation``, one unit per E2 criterion x target (one-shot + the short fine-tuning),
one per entwined learning-rate reading x flowchart target, the rounded SInGE variant, the DepGraph baseline, and
``e3-latency`` (dense vs pruned vs rounded, interleaved). ``finish`` adds the mean over the targets of each
criterion, which the verdict compares. ``--study variants`` scores every candidate reading of the criterion on the
validation split, one unit per candidate and seed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from frugalvision.errors import ConfigError, DataError
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
    benchmark_result,
    claim_verdict,
    compare,
    metric_values,
)
from frugalvision.harness.stats import ALPHA
from frugalvision.methods.singe.config import SingeConfig, extended, paper, paper_cifar10, smoke, standard
from frugalvision.seeding import derive_seed

if TYPE_CHECKING:
    from torch import Tensor, nn
    from torch.utils.data import Dataset

    from frugalvision.methods.singe import pruning as P
    from frugalvision.methods.singe import task as T
    from frugalvision.methods.singe.data import Splits

METHOD = "singe"
CLAIM = (
    "Ranking channels by the integral of the gradient along the path that removes them, with pruning entwined with "
    "fine-tuning, keeps more accuracy at the same MAC reduction than magnitude and Taylor criteria and than "
    "prune-once-then-fine-tune."
)
BASELINES = ("l1", "taylor_tp")  # the variant study's references


# ---------------------------------------------------------------------------------------------- shared per seed
@dataclass
class SeedState:
    """What every unit of one seed works from.

    Attributes:
        data: the seed's splits.
        dense: the dense model (never modified; units prune deep copies).
        example: a one-image input for tracing.
        calib: the calibration batches D_c.
        ratios: channel counts reaching each MAC target (local pruning).
        rounded: the same with counts that are multiples of ``latency_multiple`` (None when it is 0).
    """

    data: Splits
    dense: nn.Module
    example: Tensor
    calib: list[tuple[Tensor, Tensor]]
    ratios: T.RatioCache
    rounded: T.RatioCache | None


def fit_of(ctx: Context[SingeConfig]) -> T.Fit:
    """Train through the harness: one run folder (checkpoints, resume) per run name, the task's own data seed."""
    return lambda task, loop, name: ctx.fit(task, loop, name=name, seed=loop.seed)


def load_data(config: SingeConfig, seed: int) -> Splits:
    """The seed's splits: ImageNet from an ImageFolder root (``dataset=imagenet``), else an in-memory source."""
    from frugalvision.methods.singe.data import array_splits, imagefolder_splits

    if config.dataset == "imagenet":
        if config.data_root is None:
            raise DataError("dataset=imagenet needs --data-root holding train/<wnid>/ and val/<wnid>/")
        size = config.image_size or 224
        resize = config.resize_size or round(size / 0.875)
        sizes = (config.train_size, config.val_size, config.test_size)
        return imagefolder_splits(config.data_root, *sizes, seed, size, resize, config.skip_bad_files)
    sizes = (config.train_size, config.val_size, config.test_size)
    return array_splits(config.dataset, config.data_root, *sizes, seed, config.augment, config.image_size)


def architecture(config: SingeConfig, data: Splits) -> tuple[str, dict[str, Any]]:
    """(registered architecture name, builder kwargs) of the dense model (see :func:`pruning.register_architecture`)."""
    if config.arch == "resnet50":
        return "torchvision_resnet50", {"num_classes": data.num_classes}
    shape = {"depth": config.depth, "width": config.width, "in_chans": data.image_shape[0]}
    return "cifar_resnet", {**shape, "num_classes": data.num_classes}


def dense_cache_name(config: SingeConfig, data: Splits, seed: int) -> str:
    """Cache file name of a trained dense model: a hash of everything its training depends on."""
    arch, kwargs = architecture(config, data)
    spec = {"source": data.source, "arch": arch, **kwargs, "train": len(data.train), "steps": config.dense_steps}
    spec |= {"batch": config.dense_batch, "lr": config.dense_lr, "augment": config.augment, "seed": seed}
    spec |= {"image_size": config.image_size, "fingerprint": data.fingerprint}
    return f"dense-{hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]}.safetensors"


def dense_seed(config: SingeConfig, seed: int) -> int:
    """The seed of the dense model (and of its data split) that ``seed`` prunes."""
    return seed if config.dense_seed is None else config.dense_seed


def dense_model(ctx: Context[SingeConfig], data: Splits, seed: int) -> nn.Module:
    """The dense model of dense seed ``seed``: from ``config.pretrained``, the cache, or trained here and cached."""
    from frugalvision.engine import load_weights, seed_everything
    from frugalvision.methods.singe import pruning as P
    from frugalvision.methods.singe import task as T

    config = ctx.config
    arch, kwargs = architecture(config, data)
    seed_everything(derive_seed(seed, "dense-init"))
    model = P.ARCHITECTURES[arch](**kwargs)
    path = Path(config.pretrained) if config.pretrained else ctx.cache_path(dense_cache_name(config, data, seed))
    if path.is_file():
        model.load_state_dict(load_weights(path))
        return model.to(ctx.engine.device).eval()
    steps = config.dense_steps
    settings = T.FinetuneSettings(steps, config.dense_batch, config.dense_lr, num_workers=config.num_workers)
    T.finetune(fit_of(ctx), model, data.train, settings, steps, 0, derive_seed(seed, "dense"), name="dense")
    ctx.save_weights(model.state_dict(), path)
    return model.eval()


def seed_state(ctx: Context[SingeConfig], seed: int) -> SeedState:
    """The seed's data, dense model, calibration set and MAC ratios (built once per process)."""
    config = ctx.config
    base = dense_seed(config, seed)

    def build_dense() -> tuple[Splits, nn.Module, T.RatioCache, T.RatioCache | None]:
        import torch

        from frugalvision.methods.singe import task as T

        data = load_data(config, base)
        dense = dense_model(ctx, data, base)
        example = torch.zeros(1, *data.image_shape, device=next(dense.parameters()).device)
        rounded = T.RatioCache(dense, example, config.latency_multiple) if config.latency_multiple > 1 else None
        return data, dense, T.RatioCache(dense, example), rounded

    def build() -> SeedState:
        from frugalvision.methods.singe.data import calibration_batches

        data, dense, ratios, rounded = ctx.memo(("dense", base), build_dense)
        calib = calibration_batches(data.calib, config.calibration, seed, ratios.example_inputs.device)
        return SeedState(data, dense, ratios.example_inputs, calib, ratios, rounded)

    return ctx.memo(("seed", seed), build)


# ---------------------------------------------------------------------------------------------- measuring a model
def evaluate(ctx: Context[SingeConfig], model: nn.Module, data: Dataset) -> dict[str, float]:
    """Top-1 and NLL on a dataset."""
    from frugalvision.methods.singe.task import EvalTask

    return ctx.engine.evaluate(EvalTask(), model, {"eval": data})["eval"]


def shape_metrics(state: SeedState, model: nn.Module) -> dict[str, float]:
    """MAC fraction of the dense model, parameters (k) and MACs (M) of a model."""
    from frugalvision.methods.singe import pruning as P

    macs, params = P.count_macs_params(model, state.example)
    return {"macs_frac": macs / state.ratios.dense_macs, "params_k": params / 1e3, "macs_m": macs / 1e6}


def criterion_name(config: SingeConfig, name: str) -> str:
    """Map the row label "singe" to the configured SInGE criterion."""
    return config.singe.criterion if name == "singe" else name


def criterion_settings(config: SingeConfig, name: str, steps: int | None = None) -> P.CriterionSettings:
    """Integration settings: the configured ones for "singe", weight/layer with the configured K otherwise."""
    from frugalvision.methods.singe import pruning as P

    s, ours = config.singe, name == "singe"
    return P.CriterionSettings(
        granularity=s.granularity if ours else "weight",
        scope=s.scope if ours else "layer",
        steps=steps or s.steps,
        rule=s.rule,
        p=s.p,
    )


def path_scores(
    ctx: Context[SingeConfig], state: SeedState, seed: int, settings: P.CriterionSettings, variant: str
) -> P.ScoreResult:
    """One path variant's scores; every variant of one (scope, K, rule, p) comes from one integration per process."""
    from frugalvision.methods.singe import pruning as P

    def integrate() -> dict[str, P.ScoreResult]:
        variants, seconds, passes = P.compute_path_variants(state.dense, state.example, state.calib, settings)
        return {label: P.ScoreResult(scores, seconds, passes) for label, scores in variants.items()}

    key = ("paths", seed, settings.scope, settings.steps, settings.rule, settings.p)
    return ctx.memo(key, integrate)[variant]


def scores_for(
    ctx: Context[SingeConfig], state: SeedState, name: str, seed: int, steps: int | None = None
) -> P.ScoreResult:
    """Scores of one E1 row on the dense model (path criteria share their integration)."""
    from frugalvision.methods.singe import pruning as P

    config = ctx.config
    criterion, settings = criterion_name(config, name), criterion_settings(config, name, steps)
    if criterion not in P.PATH_VARIANTS:
        random_seed = derive_seed(seed, "random")
        return P.compute_scores(state.dense, state.example, criterion, state.calib, settings, seed=random_seed)
    gate = criterion == "taylor_path" and settings.granularity == "gate"
    return path_scores(ctx, state, seed, settings, "taylor_path_gate" if gate else criterion)


def keep_for(config: SingeConfig, state: SeedState, name: str, result: P.ScoreResult, target: float) -> dict[str, int]:
    """Channels kept per group at ``target``.

    Local (the same fraction of every group), or for the criteria in ``global_criteria`` a global ranking pruned to
    the same MACs.
    """
    from frugalvision.methods.singe import pruning as P

    if name in config.global_criteria:
        return P.global_keep_counts(state.dense, state.example, result.scores, target * state.ratios.dense_macs)
    return state.ratios.keep(target)


def one_shot_metrics(
    ctx: Context[SingeConfig], state: SeedState, result: P.ScoreResult, keep: dict[str, int], data: Dataset
) -> dict[str, float]:
    """Accuracy right after pruning the dense model to ``keep`` with ``result``'s scores, and after BN re-est."""
    from frugalvision.methods.singe import pruning as P
    from frugalvision.methods.singe import task as T

    model = copy.deepcopy(state.dense)
    P.prune_to_counts(model, state.example, result.scores, keep)
    metrics = {**evaluate(ctx, model, data), **shape_metrics(state, model)}
    metrics["top1_bn_recal"] = evaluate(ctx, T.recalibrate_bn(model, state.calib), data)["top1"]
    return {**metrics, "criterion_s": result.seconds, "passes": float(result.passes)}


# ---------------------------------------------------------------------------------------------- main units
def run_dense(ctx: Context[SingeConfig], unit: Unit) -> UnitResult:
    """Train (or load) the seed's dense model; its test accuracy and size."""
    state = seed_state(ctx, unit.seed)
    metrics = {**evaluate(ctx, state.dense, state.data.test), **shape_metrics(state, state.dense)}
    metrics["chance"] = 1.0 / state.data.num_classes
    return UnitResult.one_row(unit, metrics, dataset=state.data.source)


def run_e1(ctx: Context[SingeConfig], unit: Unit) -> UnitResult:
    """E1: every criterion at every MAC target, one-shot pruning of the dense model, no fine-tuning."""
    config, state, rows = ctx.config, seed_state(ctx, unit.seed), []
    for name in config.e1_criteria:
        result = scores_for(ctx, state, name, unit.seed)
        for target in config.targets:
            keep = keep_for(config, state, name, result, target)
            metrics = one_shot_metrics(ctx, state, result, keep, state.data.test)
            rows.append({"name": f"E1 {name} @{target:.2f}", "seed": unit.seed, "metrics": metrics})
    return UnitResult(rows, dataset=state.data.source)


def run_k_ablation(ctx: Context[SingeConfig], unit: Unit) -> UnitResult:
    """K ablation of the SInGE criterion in the E1 setting, at the first target."""
    state, rows, target = seed_state(ctx, unit.seed), [], ctx.config.targets[0]
    for steps in ctx.config.k_ablation:
        result = scores_for(ctx, state, "singe", unit.seed, steps)
        metrics = one_shot_metrics(ctx, state, result, state.ratios.keep(target), state.data.test)
        rows.append({"name": f"K-ablation K={steps} @{target:.2f}", "seed": unit.seed, "metrics": metrics})
    return UnitResult(rows, dataset=state.data.source)


def finetune_settings(config: SingeConfig, reading: str = "cosine") -> T.FinetuneSettings:
    """The E2 fine-tuning budget, shared by every schedule and criterion (``reading``: the entwined LR reading)."""
    from frugalvision.methods.singe import task as T

    return T.FinetuneSettings(
        steps=config.finetune_steps,
        batch_size=config.finetune_batch,
        lr=config.finetune_lr,
        restart=reading == "restarts",
        num_workers=config.num_workers,
    )


def e2_metrics(ctx: Context[SingeConfig], state: SeedState, run: T.PruneRun) -> dict[str, float]:
    """Test accuracy, size, criterion cost and training budget of a pruned, fine-tuned model."""
    return {
        **evaluate(ctx, run.model, state.data.test),
        **shape_metrics(state, run.model),
        "criterion_s": run.criterion_s,
        "passes": float(run.passes),
        "finetune_steps": float(len(run.lrs)),
        "lr_sum": float(sum(run.lrs)),
    }


def save_pruned_model(ctx: Context[SingeConfig], state: SeedState, run: T.PruneRun) -> str:
    """Write the pruned model as plan + safetensors under the unit's folder (rank 0 first); return the folder."""
    from frugalvision.methods.singe import pruning as P

    arch, kwargs = architecture(ctx.config, state.data)
    plan = P.PruningPlan(arch, kwargs, [1, *state.data.image_shape], run.history)
    folder = ctx.unit_dir / "pruned"
    ctx.main_first(lambda: P.save_pruned(run.model, plan, folder))
    return str(folder)


def run_e2(ctx: Context[SingeConfig], unit: Unit) -> UnitResult:
    """E2: prune one-shot (then the short fine-tuning) or entwined with fine-tuning, same budget, to a target."""
    from frugalvision.methods.singe import task as T

    config, state = ctx.config, seed_state(ctx, unit.seed)
    name, schedule, target = unit.params["criterion"], unit.params["schedule"], unit.params["target"]
    reading, multiple = unit.params.get("reading", "cosine"), unit.params.get("multiple", 1)
    ratios = state.rounded if multiple > 1 and state.rounded is not None else state.ratios
    run = T.prune_and_finetune(
        fit_of(ctx),
        state.dense,
        state.example,
        criterion_name(config, name),
        state.calib,
        target,
        1 if schedule == "oneshot" else config.rounds,
        state.data.train,
        finetune_settings(config, reading),
        criterion_settings(config, name),
        seed=derive_seed(unit.seed, "e2"),
        ratios=ratios,
        global_ranking=name in config.global_criteria,
    )
    label = schedule + (f"-{reading}" if schedule == "entwined" else "") + (f" r{multiple}" if multiple > 1 else "")
    rows = [{"name": f"E2 {name} {label} @{target:.2f}", "seed": unit.seed, "metrics": e2_metrics(ctx, state, run)}]
    extras: dict[str, Any] = {"rounds": run.rounds}
    if schedule == "entwined" and reading == config.lr_readings[0] and target == config.e2_target:
        extras["pruned_model"] = save_pruned_model(ctx, state, run)
    return UnitResult(rows, extras=extras, dataset=state.data.source)


def run_sparse(ctx: Context[SingeConfig], unit: Unit) -> UnitResult:
    """E2 DepGraph baseline: group-sparse training, prune by group L2, fine-tune the rest of the same budget."""
    from frugalvision.methods.singe import task as T

    config, state, target = ctx.config, seed_state(ctx, unit.seed), unit.params["target"]
    run = T.sparse_then_prune(
        fit_of(ctx),
        state.dense,
        state.example,
        target,
        state.data.train,
        finetune_settings(config),
        config.sparse_steps,
        config.sparse_reg,
        seed=derive_seed(unit.seed, "e2"),
        ratios=state.ratios,
    )
    row = {"name": f"E2 group_sparse oneshot @{target:.2f}", "seed": unit.seed, "metrics": e2_metrics(ctx, state, run)}
    return UnitResult([row], extras={"rounds": run.rounds}, dataset=state.data.source)


def run_latency(ctx: Context[SingeConfig], unit: Unit) -> UnitResult:
    """E3: CPU latency of the dense model, the pruned one and the rounded one at ``e2_target``, interleaved.

    With local pruning every criterion gives the same architecture, so the channels are chosen by L1 here.
    """
    import torch

    from frugalvision.methods.singe import pruning as P
    from frugalvision.methods.singe.bench import speed_ratios

    config, state, target = ctx.config, seed_state(ctx, unit.seed), ctx.config.e2_target
    l1 = P.compute_scores(state.dense, state.example, "l1", []).scores
    variants = {"": state.ratios} | ({f" r{config.latency_multiple}": state.rounded} if state.rounded else {})
    pruned = {}
    for label, ratios in variants.items():
        model = copy.deepcopy(state.dense)
        P.prune_to_counts(model, state.example, l1, ratios.keep(target))
        pruned[label] = model.cpu().eval()
    shape = state.data.image_shape
    shape = shape[:1] + (config.latency_size,) * 2 if config.latency_size else shape
    metrics: dict[str, dict[str, float]] = {label: shape_metrics(state, m) for label, m in pruned.items()}
    dense = copy.deepcopy(state.dense).cpu().eval()
    for batch in config.latency_batches:
        measured = speed_ratios(
            dense, pruned, torch.randn(batch, *shape), config.latency_threads, config.latency_rounds
        )
        for label, values in measured.items():
            metrics[label].update({f"{k}_b{batch}": v for k, v in values.items()})
    rows = [
        {"name": f"E3 latency{label} @{target:.2f}", "seed": unit.seed, "metrics": values}
        for label, values in metrics.items()
    ]
    return UnitResult(rows, dataset=state.data.source)


MAIN_UNITS = {
    "dense": run_dense,
    "e1": run_e1,
    "k-ablation": run_k_ablation,
    "e2": run_e2,
    "sparse": run_sparse,
    "latency": run_latency,
}


def run_unit(ctx: Context[SingeConfig], unit: Unit) -> UnitResult:
    """Dispatch a main unit by its kind."""
    return MAIN_UNITS[unit.params["kind"]](ctx, unit)


def seed_units(config: SingeConfig, seed: int) -> list[Unit]:
    """The units of one seed, in the order they run."""
    units = [Unit("dense", seed, {"kind": "dense"}), Unit("e1", seed, {"kind": "e1"})]
    if config.k_ablation:
        units.append(Unit("k-ablation", seed, {"kind": "k-ablation"}))
    for target in config.e2_targets:
        for name in config.e2_criteria:
            params = {"kind": "e2", "criterion": name, "schedule": "oneshot", "target": target}
            units.append(Unit(f"e2-{name}-oneshot-{target:.2f}", seed, params))
        if target in config.flow_targets:
            for reading in config.lr_readings:
                params = {"kind": "e2", "criterion": "singe", "schedule": "entwined", "target": target}
                units.append(Unit(f"e2-singe-entwined-{reading}-{target:.2f}", seed, {**params, "reading": reading}))
        if config.sparse_steps > 0:
            units.append(Unit(f"e2-group_sparse-oneshot-{target:.2f}", seed, {"kind": "sparse", "target": target}))
    if config.latency_multiple > 1:
        multiple, target = config.latency_multiple, config.e2_target
        params = {"kind": "e2", "criterion": "singe", "schedule": "oneshot", "target": target, "multiple": multiple}
        units.append(Unit(f"e2-singe-oneshot-r{multiple}-{target:.2f}", seed, params))
    if config.latency:
        units.append(Unit("e3-latency", seed, {"kind": "latency"}))
    return units


def main_units(config: SingeConfig) -> list[Unit]:
    """Every seed's units, seeds outermost (the dense model of a seed is trained by its first unit)."""
    return [unit for seed in config.seeds for unit in seed_units(config, seed)]


# ---------------------------------------------------------------------------------------------- means over targets
def regime_row(prefix: str, targets: tuple[float, ...], tag: str = "mean") -> str:
    """The row a regime is voted on: the single target's row, or the mean over the targets (added by finish)."""
    return f"{prefix} @{targets[0]:.2f}" if len(targets) == 1 else f"{prefix} {tag}"


def _mean_rows(rows: list[dict[str, Any]], prefix: str, targets: tuple[float, ...], tag: str = "mean") -> list[dict]:
    """Per seed, the mean of every metric of ``<prefix> @<target>`` over ``targets`` (none for a single target)."""
    if len(targets) < 2:
        return []
    by_seed: dict[int, list[dict[str, float]]] = {}
    for row in rows:
        for target in targets:
            if row["name"] == f"{prefix} @{target:.2f}":
                by_seed.setdefault(row["seed"], []).append(row["metrics"])
    out = []
    for seed, found in sorted(by_seed.items()):
        if len(found) == len(targets):
            keys = set.intersection(*(set(m) for m in found))
            metrics = {k: statistics.fmean(m[k] for m in found) for k in sorted(keys)}
            out.append({"name": regime_row(prefix, targets, tag), "seed": seed, "metrics": metrics})
    return out


def finish(ctx: Context[SingeConfig], records: list[UnitRecord]) -> list[dict[str, Any]]:
    """The mean over the MAC targets of every E1 criterion, E2 criterion and entwined reading (the voted rows)."""
    config = ctx.config
    rows = [row for record in records for row in record.rows]
    out = []
    for name in config.e1_criteria:
        out += _mean_rows(rows, f"E1 {name}", config.targets)
    for name in config.e2_criteria:
        out += _mean_rows(rows, f"E2 {name} oneshot", config.e2_targets)
    if config.flow_targets != config.e2_targets:
        out += _mean_rows(rows, "E2 singe oneshot", config.flow_targets, "flow-mean")
    for reading in config.lr_readings:
        out += _mean_rows(rows, f"E2 singe entwined-{reading}", config.flow_targets)
    return out


# ---------------------------------------------------------------------------------------------- main verdict
def dense_learns(config: SingeConfig, rows: list[dict[str, Any]]) -> Precondition:
    """The dense model's mean test top-1 is above twice chance and ``dense_min_top1`` (else nothing to keep)."""
    name = f"the dense model is trained (test top-1 > 2 x chance and >= {config.dense_min_top1:g})"
    top1, chance = metric_values(rows, "top1", "dense"), metric_values(rows, "chance", "dense")
    if not top1 or not chance:
        return Precondition(name, False, "no dense row")
    mean, level = statistics.fmean(top1.values()), 2 * statistics.fmean(chance.values())
    holds = mean > level and mean >= config.dense_min_top1
    return Precondition(name, holds, f"{mean:.4f} vs 2 x chance {level:.3f}, floor {config.dense_min_top1:g}")


def _strength(comparison: Any) -> tuple[bool, float]:
    better = comparison.outcome == "better"
    return better, comparison.lower if better else comparison.upper


def verdict(config: SingeConfig, rows: list[dict[str, Any]]) -> Verdict:
    """SInGE beats every voted baseline, and SInGE entwined beats SInGE one-shot.

    The baselines are compared in E1 (after BN re-estimation) and E2 (after the short fine-tuning), each on the mean
    over its MAC targets; the entwined schedule takes the better LR reading, each tested at alpha / k. Every
    comparison must be ``better`` (an intersection of one-sided tests, no multiplicity correction); one ``worse``
    refutes. The per-target rows, the oracle, the K ablation and E3 are reported, not voted.
    """
    comparisons = []
    for metric, prefix, suffix, targets in (
        ("top1_bn_recal", "E1", "", config.targets),
        ("top1", "E2", " oneshot", config.e2_targets),
    ):
        ours = regime_row(f"{prefix} singe{suffix}", targets)
        for baseline in config.voted_baselines:
            reference = regime_row(f"{prefix} {baseline}{suffix}", targets)
            comparisons.append(compare(rows, metric, better=ours, reference=reference))
    flow = config.flow_targets
    oneshot = regime_row("E2 singe oneshot", flow, "mean" if flow == config.e2_targets else "flow-mean")
    alpha = ALPHA / len(config.lr_readings)
    readings = [
        compare(rows, "top1", better=regime_row(f"E2 singe entwined-{r}", flow), reference=oneshot, alpha=alpha)
        for r in config.lr_readings
    ]
    comparisons.append(max(readings, key=_strength))
    claim = (
        "SInGE keeps more test top-1 than each Torch-Pruning baseline after BN re-estimation and after a short "
        "fine-tuning (mean over the MAC targets), and entwined beats one-shot (better LR reading, alpha / k)"
    )
    return claim_verdict(comparisons, [dense_learns(config, rows)], claim=claim)


def _band(rows: list[dict[str, Any]], name: str, metric: str) -> tuple[float, float]:
    values = [r["metrics"][metric] for r in rows if r["name"] == name and metric in r["metrics"]]
    if not values:
        return float("nan"), 0.0
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def _curves(rows: list[dict[str, Any]], names: list[str], targets: list[float], metric: str, prefix: str) -> dict:
    series = {}
    for name in names:
        bands = [_band(rows, f"{prefix} {name} @{t:.2f}", metric) for t in targets]
        series[name] = ([m for m, _ in bands], [s for _, s in bands])
    return series


def figures(fig: FigureInput[SingeConfig]) -> list[str]:
    """E1 (plain and after BN re-estimation) and E2 test top-1 vs the fraction of MACs removed."""
    from frugalvision.report import line_plot

    config, paths = fig.config, []
    targets = sorted(config.targets, reverse=True)
    for metric, label, stem in (
        ("top1", "test top-1 right after pruning", "e1_top1_vs_macs_removed"),
        ("top1_bn_recal", "test top-1 after BN re-estimation", "e1_top1_bn_recal_vs_macs_removed"),
    ):
        series = _curves(fig.rows, list(config.e1_criteria), targets, metric, "E1")
        x = [1.0 - t for t in targets]
        path = line_plot(fig.out_dir / f"{stem}.png", x, series, "fraction of MACs removed", label, "SInGE E1")
        paths.append(path.name)
    targets = sorted(config.e2_targets, reverse=True)
    names = [f"{c} oneshot" for c in config.e2_criteria]
    names += ["group_sparse oneshot"] if config.sparse_steps > 0 else []
    series = _curves(fig.rows, names, targets, "top1", "E2")
    path = line_plot(
        fig.out_dir / "e2_top1_vs_macs_removed.png",
        [1.0 - t for t in targets],
        series,
        "fraction of MACs removed",
        f"test top-1 after {config.finetune_steps} fine-tuning steps",
        "SInGE E2 (one-shot + short fine-tuning, equal budget)",
    )
    return [*paths, path.name]


def notes(config: SingeConfig, records: list[UnitRecord]) -> str:
    """The SInGE reading in use and what the rows mean."""
    s = config.singe
    saved = [r.extras["pruned_model"] for r in records if "pruned_model" in r.extras]
    return (
        f"SInGE = {s.criterion}/{s.granularity}/{s.scope}, K={s.steps}, {s.rule}, p={s.p} (our reading). Voted: the "
        "mean over the MAC targets of E1 (one-shot, BatchNorm re-estimated on the calibration set, no fine-tuning) "
        f"and of E2 (one-shot + {config.finetune_steps} fine-tuning steps), SInGE vs "
        f"{', '.join(config.voted_baselines)} ({', '.join(config.global_criteria) or 'none'} ranked globally at "
        "equal MACs, the rest locally); entwined "
        f"(T={config.rounds}, readings {', '.join(config.lr_readings)}) vs one-shot at {config.flow_targets}. 'oracle' "
        "is the exact leave-one-out loss change (reference, not SInGE); E3 times dense, pruned and rounded models. "
        + (f"Pruned SInGE models (plan + safetensors): {', '.join(saved)}." if saved else "")
    )


# ---------------------------------------------------------------------------------------------- variant study
def candidate_labels(config: SingeConfig) -> list[str]:
    """Row names of the variant-study candidates ("criterion/granularity/scope K=k")."""
    return [f"{c} K={k}" for c in config.study_criteria for k in config.study_steps]


def variant_units(config: SingeConfig) -> list[Unit]:
    """Both baselines and every candidate, once per seed."""
    entries = [(name, {"candidate": name, "steps": 0}) for name in BASELINES]
    entries += [(f"{c} K={k}", {"candidate": c, "steps": k}) for c in config.study_criteria for k in config.study_steps]
    return [
        Unit(label.replace("/", "-").replace(" K=", "-K"), seed, {**params, "label": label})
        for seed in config.seeds
        for label, params in entries
    ]


def run_variant(ctx: Context[SingeConfig], unit: Unit) -> UnitResult:
    """One candidate's validation top-1 after one-shot pruning at every study target (mean over the targets too)."""
    from frugalvision.methods.singe import pruning as P

    config, state = ctx.config, seed_state(ctx, unit.seed)
    if state.data.val is None:
        raise ConfigError("the variant study needs a validation split; pass --val-size > 0")
    candidate, steps = unit.params["candidate"], unit.params["steps"]
    if not steps:
        result = P.compute_scores(state.dense, state.example, candidate, state.calib)
    else:
        criterion, granularity, scope = candidate.split("/")
        settings = P.CriterionSettings(scope=scope, steps=steps, rule=config.singe.rule, p=config.singe.p)
        gate = criterion == "taylor_path" and granularity == "gate"
        result = path_scores(ctx, state, unit.seed, settings, "taylor_path_gate" if gate else criterion)
    metrics: dict[str, float] = {"criterion_s": result.seconds, "passes": float(result.passes)}
    for target in config.study_targets:
        measured = one_shot_metrics(ctx, state, result, state.ratios.keep(target), state.data.val)
        metrics[f"val_top1@{target:.2f}"] = measured["top1"]
        metrics[f"val_top1_bn_recal@{target:.2f}"] = measured["top1_bn_recal"]
    for key in ("val_top1", "val_top1_bn_recal"):
        metrics[key] = statistics.fmean(metrics[f"{key}@{t:.2f}"] for t in config.study_targets)
    row = {"name": unit.params["label"], "seed": unit.seed, "metrics": metrics}
    return UnitResult([row], dataset=state.data.source)


def best_candidate(config: SingeConfig, rows: list[dict[str, Any]]) -> str:
    """The candidate with the best mean ``study_metric`` (ties to fewer criterion passes)."""

    def key(label: str) -> tuple[float, float]:
        return round(_band(rows, label, config.study_metric)[0], 6), -_band(rows, label, "passes")[0]

    return max(candidate_labels(config), key=key)


def variant_verdict(config: SingeConfig, rows: list[dict[str, Any]]) -> Verdict:
    """The best of the k candidates beats both L1 and Taylor on the validation split, at alpha 0.05 / k."""
    best, alpha = best_candidate(config, rows), ALPHA / len(candidate_labels(config))
    comparisons = [compare(rows, config.study_metric, better=best, reference=name, alpha=alpha) for name in BASELINES]
    claim = "the best candidate reading (picked among k, alpha / k) beats L1 and Taylor"
    return claim_verdict(comparisons, claim=claim)


def variant_notes(config: SingeConfig, records: list[UnitRecord]) -> str:
    """The winner (the default to freeze in ``SingeCriterion``) and the candidates."""
    rows = [row for record in records for row in record.rows]
    return (
        f"Winner (best mean {config.study_metric} on the validation split, ties to fewer passes): "
        f"{best_candidate(config, rows)}. Candidates: {candidate_labels(config)}."
    )


# ---------------------------------------------------------------------------------------------- declaration
def benchmark(out_dir: Path) -> dict[str, Any]:
    """Dense vs pruned CPU latency at several MAC targets (interleaved timer; see ``benchmarks/singe_latency.py``).

    ``frugal bench`` writes the returned rows (one per target, width variant and batch) to ``<out>/bench/singe/``.
    """
    from frugalvision.methods.singe.bench import latency_table

    table = latency_table(None)
    ratios = []
    for row in table["rows"]:
        removed = 1.0 - row["target_macs_kept"]
        goal = 0.6 if (removed, row["batch"], row["variant"]) == (0.5, 64, "round8") else None
        ratio = row["latency_ratio"]
        ratios.append(
            {
                "name": f"{removed:.0%} MACs removed, {row['variant']} widths, batch {row['batch']}",
                "arm": f"pruned CIFAR ResNet-8 ({row['variant']} widths {row['widths']})",
                "peer": "the dense CIFAR ResNet-8",
                "ratio": ratio,
                "ratio_q25": row["latency_ratio_q25"],
                "ratio_q75": row["latency_ratio_q75"],
                "arm_ms": row["pruned_ms"],
                "peer_ms": row["dense_ms"],
                "reference_ms": row["dense_ms"],
                "rounds": table["rounds"],
                "threads": table["threads"],
                "goal": goal,
                "meets_goal": None if goal is None else bool(ratio <= goal),
                "macs_fraction": row["macs_frac"],
                "params_fraction": row["params_frac"],
            }
        )
    return benchmark_result(ratios, model=table["model"], input=table["input"], timer=table["timer"])


MAIN = Study(
    claim=CLAIM,
    primary_metric="top1",
    run_unit=run_unit,
    verdict=verdict,
    units=main_units,
    finish=finish,
    figures=figures,
    notes=notes,
)

VARIANTS = Study(
    claim="Among the candidate readings of the SInGE criterion, the best one ranks channels better than L1 and Taylor "
    "(validation top-1 after one-shot pruning); the winner becomes the default.",
    primary_metric="val_top1_bn_recal",
    run_unit=run_variant,
    verdict=variant_verdict,
    units=variant_units,
    notes=variant_notes,
)

EXPERIMENT = Experiment(
    name=METHOD,
    config_class=SingeConfig,
    presets={
        "smoke": smoke,
        "standard": standard,
        "extended": extended,
        "paper": paper,
        "paper_cifar10": paper_cifar10,
    },
    main=MAIN,
    studies={"variants": VARIANTS},
    benchmark=benchmark,
)
