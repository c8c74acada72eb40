"""The SInGE experiment (spec §6): E1 criterion quality, E2 entwined vs one-shot at equal budget, E3 cost and speed.

Also the variant study (``--study variants``) that picks the default reading of the criterion on a validation split.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from frugalvision.engine import Engine, Task, derive_seed, load_weights, save_weights, seed_everything
from frugalvision.errors import ConfigError, DataError
from frugalvision.experiment import apply_threads
from frugalvision.methods.singe import pruning as P
from frugalvision.methods.singe import task as T
from frugalvision.methods.singe.config import SingeConfig
from frugalvision.methods.singe.data import Splits, array_splits, calibration_batches, imagefolder_splits
from frugalvision.methods.singe.measure import speed_ratio
from frugalvision.registry import get_method
from frugalvision.report import line_plot, make_results, write_results

METHOD = "singe"
CLAIM = (
    "Ranking channels by the integral of the gradient along the path that removes them, with pruning entwined with "
    "fine-tuning, keeps more accuracy at the same MAC reduction than magnitude and Taylor criteria and than "
    "prune-once-then-fine-tune."
)
VERDICT_RULE = (
    "Paired over seeds, a difference d is positive if mean(d) > 0 and mean(d)/(std(d)/sqrt(n)) > 1, negative if "
    "mean(d) < 0 and that ratio < -1, else neutral. Criterion: d = top1(E2 singe entwined) - max(top1(E2 l1 "
    "entwined), top1(E2 taylor_tp entwined)); flowchart: d = top1(E2 singe entwined) - top1(E2 singe oneshot). "
    "supported if both positive, not supported if either negative, else inconclusive. E1, K ablation and the "
    "oracle are reported, not voted."
)
STUDY_RULE = (
    "Variant study on the validation split (one-shot, no fine-tuning): d = mean val top1 over the targets of the best "
    "candidate - max(l1, taylor_tp), paired over seeds; supported if positive (mean/(std/sqrt(n)) > 1), not "
    "supported if negative, else inconclusive."
)


# ---------------------------------------------------------------------------------------------- helpers
def classify(diffs: list[float]) -> str:
    """'positive', 'negative' or 'neutral' for paired differences (mean over standard error beyond ±1)."""
    n = len(diffs)
    if n == 0:
        return "neutral"
    mean = sum(diffs) / n
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
    ratio = mean / (std / math.sqrt(n)) if std > 0 else (math.inf if mean > 0 else -math.inf if mean < 0 else 0.0)
    if mean > 0 and ratio > 1:
        return "positive"
    if mean < 0 and ratio < -1:
        return "negative"
    return "neutral"


def verdict_of(*outcomes: str) -> str:
    """'supported' if all positive, 'not supported' if any negative, else 'inconclusive'."""
    if any(o == "negative" for o in outcomes):
        return "not supported"
    return "supported" if all(o == "positive" for o in outcomes) else "inconclusive"


def _value(rows: list[dict[str, Any]], name: str, seed: int, metric: str) -> float:
    for row in rows:
        if row["name"] == name and row["seed"] == seed:
            return float(row["metrics"][metric])
    raise KeyError(f"no row {name!r} for seed {seed}")


def criterion_name(config: SingeConfig, name: str) -> str:
    """Map the row label "singe" to the configured SInGE criterion."""
    return config.singe.criterion if name == "singe" else name


def criterion_settings(config: SingeConfig, name: str, steps: int | None = None) -> P.CriterionSettings:
    """Integration settings: the configured ones for "singe", weight/layer with the configured K otherwise."""
    s = config.singe
    granularity = s.granularity if name == "singe" else "weight"
    return P.CriterionSettings(
        granularity=granularity,
        scope=s.scope if name == "singe" else "layer",
        steps=steps or s.steps,
        rule=s.rule,
        p=s.p,
    )


def load_data(config: SingeConfig, seed: int) -> Splits:
    """The seed's splits: ImageNet from an ImageFolder root (``dataset=imagenet``), else an in-memory source."""
    if config.dataset == "imagenet":
        if config.data_root is None:
            raise DataError("dataset=imagenet needs --data-root holding train/<wnid>/ and val/<wnid>/")
        size = config.image_size or 224
        return imagefolder_splits(
            config.data_root,
            config.train_size,
            config.val_size,
            config.test_size,
            seed,
            size,
            config.resize_size or round(size / 0.875),
            config.skip_bad_files,
        )
    return array_splits(
        config.dataset,
        config.data_root,
        config.train_size,
        config.val_size,
        config.test_size,
        seed,
        config.augment,
        config.image_size,
    )


def architecture(config: SingeConfig, data: Splits) -> tuple[str, dict[str, Any]]:
    """(registered architecture name, builder kwargs) of the dense model (see :func:`pruning.register_architecture`)."""
    if config.arch == "resnet50":
        return "torchvision_resnet50", {"num_classes": data.num_classes}
    return "cifar_resnet", {
        "depth": config.depth,
        "width": config.width,
        "in_chans": data.image_shape[0],
        "num_classes": data.num_classes,
    }


def convert_checkpoint(source: str | Path, target: str | Path) -> Path:
    """Convert a plain PyTorch state-dict file (e.g. torchvision's ``resnet50-*.pth``) to safetensors.

    The source is read with ``torch.load(weights_only=True)``, which refuses pickled code; the experiment itself only
    reads the safetensors file (``--pretrained``).
    """
    state = torch.load(source, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    save_weights({k: v for k, v in state.items() if isinstance(v, Tensor)}, target)
    return Path(target)


def dense_model(config: SingeConfig, engine: Engine, data: Splits, seed: int) -> nn.Module:
    """The dense model: loaded from ``config.pretrained``, from the per-seed cache, or trained here and cached."""
    arch, kwargs = architecture(config, data)
    seed_everything(derive_seed(seed, "dense-init"))
    model = P.ARCHITECTURES[arch](**kwargs)
    if config.pretrained:
        model.load_state_dict(load_weights(config.pretrained))
        return model.to(engine.device).eval()
    spec = {
        "source": data.source,
        "arch": arch,
        **kwargs,
        "train": len(data.train),
        "steps": config.dense_steps,
        "batch": config.dense_batch,
        "lr": config.dense_lr,
        "augment": config.augment,
        "seed": seed,
        "image_size": config.image_size,
        "fingerprint": data.fingerprint,
    }
    key = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    path = config.method_dir(METHOD) / "cache" / f"dense-{key}.safetensors"
    if path.is_file():
        model.load_state_dict(load_weights(path))
        return model.to(engine.device).eval()
    settings = T.FinetuneSettings(
        steps=config.dense_steps, batch_size=config.dense_batch, lr=config.dense_lr, num_workers=config.num_workers
    )
    T.finetune(engine, model, data.train, settings, config.dense_steps, 0, derive_seed(seed, "dense"))
    if engine.is_main:
        save_weights(model.state_dict(), path)
    return model.eval()


def evaluate(engine: Engine, model: nn.Module, data: Dataset) -> dict[str, float]:
    """Top-1 and NLL on a dataset."""
    return engine.evaluate(Task(), model, {"eval": data})["eval"]


def scores_for(
    config: SingeConfig,
    name: str,
    model: nn.Module,
    example: Tensor,
    calib: list[tuple[Tensor, Tensor]],
    seed: int,
    memo: dict[tuple, P.ScoreResult],
    steps: int | None = None,
) -> P.ScoreResult:
    """Scores of one E1 row; path criteria with the same settings share one integration (and report its cost)."""
    criterion = criterion_name(config, name)
    settings = criterion_settings(config, name, steps)
    if criterion not in P.PATH_VARIANTS:
        return P.compute_scores(model, example, criterion, calib, settings, seed=derive_seed(seed, "random"))
    key = (settings.scope, settings.steps, settings.rule, settings.p)
    if key not in memo:
        variants, seconds, passes = P.compute_path_variants(model, example, calib, settings)
        for label, scores in variants.items():
            memo[(*key, label)] = P.ScoreResult(scores, seconds, passes)
        memo[key] = memo[(*key, label)]
    label = "taylor_path_gate" if criterion == "taylor_path" and settings.granularity == "gate" else criterion
    return memo[(*key, label)]


def _shape_metrics(model: nn.Module, example: Tensor, ratios: T.RatioCache) -> dict[str, float]:
    macs, params = P.count_macs_params(model, example)
    return {"macs_frac": macs / ratios.dense_macs, "params_k": params / 1e3, "macs_m": macs / 1e6}


# ---------------------------------------------------------------------------------------------- main experiment
def run_seed(config: SingeConfig, engine: Engine, seed: int, out_dir: Path) -> tuple[list[dict[str, Any]], str]:
    """All rows of one seed."""
    data = load_data(config, seed)
    dense = dense_model(config, engine, data, seed)
    device = next(dense.parameters()).device
    example = torch.zeros(1, *data.image_shape, device=device)
    calib = calibration_batches(data.calib, config.calibration, seed, device)
    ratios = T.RatioCache(dense, example)
    rows: list[dict[str, Any]] = []
    dense_eval = evaluate(engine, dense, data.test)
    rows.append({"name": "dense", "seed": seed, "metrics": {**dense_eval, **_shape_metrics(dense, example, ratios)}})

    # E1: criterion quality right after one-shot local pruning (identical shapes for every criterion).
    path_memo: dict[tuple, P.ScoreResult] = {}
    for name in config.e1_criteria:
        result = scores_for(config, name, dense, example, calib, seed, path_memo)
        for target in config.targets:
            model = copy.deepcopy(dense)
            P.prune_to_counts(model, example, result.scores, ratios.keep(target))
            metrics = {
                **evaluate(engine, model, data.test),
                **_shape_metrics(model, example, ratios),
                "criterion_s": result.seconds,
                "passes": float(result.passes),
            }
            metrics["top1_bn_recal"] = evaluate(engine, T.recalibrate_bn(model, calib), data.test)["top1"]
            rows.append({"name": f"E1 {name} @{target:.2f}", "seed": seed, "metrics": metrics})
    # K ablation of the SInGE criterion (E1 setting, first target).
    for steps in config.k_ablation:
        result = scores_for(config, "singe", dense, example, calib, seed, path_memo, steps)
        model = copy.deepcopy(dense)
        P.prune_to_counts(model, example, result.scores, ratios.keep(config.targets[0]))
        metrics = {**evaluate(engine, model, data.test), "criterion_s": result.seconds, "passes": float(result.passes)}
        metrics["top1_bn_recal"] = evaluate(engine, T.recalibrate_bn(model, calib), data.test)["top1"]
        rows.append({"name": f"K-ablation K={steps} @{config.targets[0]:.2f}", "seed": seed, "metrics": metrics})

    # E2: fine-tuning at equal budget, one-shot vs entwined, at every target; plus the DepGraph sparse baseline.
    settings = T.FinetuneSettings(
        steps=config.finetune_steps,
        batch_size=config.finetune_batch,
        lr=config.finetune_lr,
        restart=config.lr_restarts,
        num_workers=config.num_workers,
    )
    stream = derive_seed(seed, "e2")
    singe_entwined: dict[float, T.PruneRun] = {}

    def e2_row(label: str, run: T.PruneRun) -> None:
        metrics = {
            **evaluate(engine, run.model, data.test),
            **_shape_metrics(run.model, example, ratios),
            "criterion_s": run.criterion_s,
            "passes": float(run.passes),
            "finetune_steps": float(len(run.lrs)),
            "lr_sum": float(sum(run.lrs)),
        }
        rows.append({"name": label, "seed": seed, "metrics": metrics})

    for target in config.e2_targets:
        for name in config.e2_criteria:
            for schedule, rounds in (("oneshot", 1), ("entwined", config.rounds)):
                run = T.prune_and_finetune(
                    engine,
                    dense,
                    example,
                    criterion_name(config, name),
                    calib,
                    target,
                    rounds,
                    data.train,
                    settings,
                    criterion_settings(config, name),
                    seed=stream,
                    ratios=ratios,
                )
                e2_row(f"E2 {name} {schedule} @{target:.2f}", run)
                if name == "singe" and schedule == "entwined":
                    singe_entwined[target] = run
        if config.sparse_steps > 0:
            run = T.sparse_then_prune(
                engine,
                dense,
                example,
                target,
                data.train,
                settings,
                config.sparse_steps,
                config.sparse_reg,
                seed=stream,
                ratios=ratios,
            )
            e2_row(f"E2 group_sparse oneshot @{target:.2f}", run)

    # E3: latency of the physically pruned SInGE models vs the dense one; save one as plan + safetensors.
    arch, kwargs = architecture(config, data)
    for target, run in singe_entwined.items():
        if config.latency:
            metrics: dict[str, float] = {"macs_frac": _shape_metrics(run.model, example, ratios)["macs_frac"]}
            shape = data.image_shape[:1] + (config.latency_size,) * 2 if config.latency_size else data.image_shape
            for batch in config.latency_batches:
                inputs = torch.randn(batch, *shape)
                measured = speed_ratio(
                    copy.deepcopy(dense).cpu(), copy.deepcopy(run.model).cpu(), inputs, config.latency_threads
                )
                metrics.update({f"{k}_b{batch}": v for k, v in measured.items()})
            rows.append({"name": f"E3 latency singe entwined @{target:.2f}", "seed": seed, "metrics": metrics})
        if seed == config.seeds[0] and target == config.e2_target and engine.is_main:
            plan = P.PruningPlan(arch, kwargs, [1, *data.image_shape], run.history)
            P.save_pruned(run.model, plan, out_dir / f"pruned-singe-entwined-seed{seed}")
    return rows, data.source


def _figure(config: SingeConfig, rows: list[dict[str, Any]], out_dir: Path) -> list[str]:
    """E1 figures: test top-1 vs fraction of MACs removed per criterion (plain, and after BN re-estimation)."""
    targets = sorted(config.targets, reverse=True)
    x = [1.0 - t for t in targets]
    paths = []
    plots = (
        ("top1", "test top-1 right after pruning", "e1_top1_vs_macs_removed"),
        ("top1_bn_recal", "test top-1 after BN re-estimation", "e1_top1_bn_recal_vs_macs_removed"),
    )
    for metric, label, stem in plots:
        series = {}
        for name in config.e1_criteria:
            means, stds = [], []
            for target in targets:
                values = torch.tensor([r["metrics"][metric] for r in rows if r["name"] == f"E1 {name} @{target:.2f}"])
                means.append(float(values.mean()))
                stds.append(float(values.std()) if len(values) > 1 else 0.0)
            series[name] = (means, stds)
        path = line_plot(
            out_dir / f"{stem}.png", x, series, "fraction of MACs removed", label, "SInGE E1 (no fine-tuning)"
        )
        paths.append(path.name)
    targets = sorted(config.e2_targets, reverse=True)
    names = [f"{c} {s}" for c in config.e2_criteria for s in ("oneshot", "entwined")]
    names += ["group_sparse oneshot"] if config.sparse_steps > 0 else []
    series = {}
    for name in names:
        means, stds = [], []
        for target in targets:
            values = torch.tensor([r["metrics"]["top1"] for r in rows if r["name"] == f"E2 {name} @{target:.2f}"])
            means.append(float(values.mean()))
            stds.append(float(values.std()) if len(values) > 1 else 0.0)
        series[name] = (means, stds)
    path = line_plot(
        out_dir / "e2_top1_vs_macs_removed.png",
        [1.0 - t for t in targets],
        series,
        "fraction of MACs removed",
        "test top-1 after fine-tuning",
        "SInGE E2 (equal fine-tuning budget)",
    )
    paths.append(path.name)
    return paths


def run_main(config: SingeConfig) -> dict[str, Any]:
    """E1-E3 on the test split; writes ``<out>/singe/results.json``."""
    start = time.perf_counter()
    out_dir = config.method_dir(METHOD)
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = Engine(config.fabric, progress=config.progress)
    rows: list[dict[str, Any]] = []
    source = config.dataset
    for seed in config.seeds:
        seed_rows, source = run_seed(config, engine, seed, out_dir)
        rows += seed_rows
    crit_d, flow_d = [], []
    at = f"@{config.e2_target:.2f}"
    others = [f"E2 {c} entwined {at}" for c in ("l1", "taylor_tp") if c in config.e2_criteria]
    for seed in config.seeds:
        singe = _value(rows, f"E2 singe entwined {at}", seed, "top1")
        crit_d.append(singe - max(_value(rows, name, seed, "top1") for name in others))
        flow_d.append(singe - _value(rows, f"E2 singe oneshot {at}", seed, "top1"))
    outcomes = (classify(crit_d), classify(flow_d))
    figures = _figure(config, rows, out_dir) if engine.is_main else []
    s = config.singe
    notes = (
        f"SInGE = {s.criterion}/{s.granularity}/{s.scope}, K={s.steps}, {s.rule}, p={s.p} (our reading). "
        f"Criterion comparison {outcomes[0]} (paired top-1 differences {[round(d, 4) for d in crit_d]}); "
        f"flowchart comparison {outcomes[1]} ({[round(d, 4) for d in flow_d]}), both at {config.e2_target:.2f} of "
        "the dense MACs; the other E2 targets are reported, not voted. E1 rows: test top-1 right after "
        "one-shot local pruning (no fine-tuning); 'oracle' is the exact leave-one-out loss change (reference, not "
        "SInGE)."
    )
    doc = make_results(
        METHOD,
        get_method(METHOD).paper,
        config.preset,
        source,
        CLAIM,
        rows,
        verdict_of(*outcomes),
        VERDICT_RULE,
        time.perf_counter() - start,
        figures=figures,
        notes=notes,
        primary_metric="top1",
    )
    if engine.is_main:
        write_results(doc, out_dir)
    return doc


# ---------------------------------------------------------------------------------------------- variant study
def run_variants(config: SingeConfig) -> dict[str, Any]:
    """One-shot validation accuracy of every candidate reading; writes ``<out>/singe/variants/results.json``."""
    start = time.perf_counter()
    out_dir = config.method_dir(METHOD) / "variants"
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = Engine(config.fabric, progress=config.progress)
    rows: list[dict[str, Any]] = []
    source = config.dataset
    candidates = [(c, k) for c in config.study_criteria for k in config.study_steps]
    for seed in config.seeds:
        data = load_data(config, seed)
        source, val = data.source, data.val
        if val is None:
            raise ConfigError("the variant study needs a validation split; pass --val-size > 0")
        dense = dense_model(config, engine, data, seed)
        device = next(dense.parameters()).device
        example = torch.zeros(1, *data.image_shape, device=device)
        calib = calibration_batches(data.calib, config.calibration, seed, device)
        ratios = T.RatioCache(dense, example)
        entries = [(name, name, None) for name in ("l1", "taylor_tp")]
        entries += [(f"{c} K={k}", c, k) for c, k in candidates]
        memo: dict[tuple, P.ScoreResult] = {}
        for label, candidate, steps in entries:
            if steps is None:
                result = P.compute_scores(dense, example, candidate, calib)
            else:
                criterion, granularity, scope = candidate.split("/")
                key = (scope, steps)
                if key not in memo:
                    settings = P.CriterionSettings(scope=scope, steps=steps, rule=config.singe.rule, p=config.singe.p)
                    variants, seconds, passes = P.compute_path_variants(dense, example, calib, settings)
                    for variant, scores in variants.items():
                        memo[(*key, variant)] = P.ScoreResult(scores, seconds, passes)
                    memo[key] = memo[(*key, variant)]
                gate = criterion == "taylor_path" and granularity == "gate"
                result = memo[(*key, "taylor_path_gate" if gate else criterion)]
            metrics: dict[str, float] = {"criterion_s": result.seconds, "passes": float(result.passes)}
            for target in config.study_targets:
                model = copy.deepcopy(dense)
                P.prune_to_counts(model, example, result.scores, ratios.keep(target))
                metrics[f"val_top1@{target:.2f}"] = evaluate(engine, model, val)["top1"]
                recalibrated = T.recalibrate_bn(model, calib)
                metrics[f"val_top1_bn_recal@{target:.2f}"] = evaluate(engine, recalibrated, val)["top1"]
            for key in ("val_top1", "val_top1_bn_recal"):
                metrics[key] = sum(metrics[f"{key}@{t:.2f}"] for t in config.study_targets) / len(config.study_targets)
            rows.append({"name": label, "seed": seed, "metrics": metrics})
    labels = [f"{c} K={k}" for c, k in candidates]

    def mean_of(label: str, metric: str) -> float:
        values = [r["metrics"][metric] for r in rows if r["name"] == label]
        return sum(values) / len(values)

    metric = config.study_metric
    best = max(labels, key=lambda lab: (round(mean_of(lab, metric), 6), -mean_of(lab, "passes")))
    diffs = [
        _value(rows, best, s, metric) - max(_value(rows, "l1", s, metric), _value(rows, "taylor_tp", s, metric))
        for s in config.seeds
    ]
    notes = f"Winner (best mean {metric}, ties to fewer passes): {best}. Candidates: {labels}."
    doc = make_results(
        METHOD,
        get_method(METHOD).paper,
        config.preset,
        source,
        CLAIM,
        rows,
        verdict_of(classify(diffs)),
        STUDY_RULE,
        time.perf_counter() - start,
        notes=notes,
        primary_metric=metric,
    )
    if engine.is_main:
        write_results(doc, out_dir)
        (out_dir / "winner.json").write_text(json.dumps({"winner": best, "config": asdict(config.singe)}, indent=1))
    return doc


def run(config: SingeConfig) -> dict[str, Any]:
    """Run the main experiment, or the variant study when ``config.study == "variants"``."""
    config.validate()
    apply_threads(config.threads)
    if config.study == "variants":
        return run_variants(config)
    return run_main(config)
