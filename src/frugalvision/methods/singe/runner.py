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

from frugalvision.data.arrays import ArrayDataset, ImageArrays
from frugalvision.data.splits import stratified_split, stratified_subset
from frugalvision.engine import Engine, Task, derive_seed, load_weights, save_weights, seed_everything
from frugalvision.experiment import apply_threads
from frugalvision.methods.singe import pruning as P
from frugalvision.methods.singe import task as T
from frugalvision.methods.singe.config import SingeConfig
from frugalvision.methods.singe.data import augment_crop_flip, load_split
from frugalvision.methods.singe.measure import speed_ratio
from frugalvision.nn import cifar_resnet
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
    return P.CriterionSettings(granularity=granularity, scope=s.scope if name == "singe" else "layer",
                               steps=steps or s.steps, rule=s.rule, p=s.p)


class _Augmented(torch.utils.data.Dataset):
    def __init__(self, base: ArrayDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image, label = self.base[index]
        return augment_crop_flip(image), label


def load_data(config: SingeConfig, seed: int) -> tuple[str, ImageArrays, ImageArrays, ImageArrays]:
    """(source, train, val, test) for one seed: disjoint stratified train/val subsets, a stratified test subset."""
    source, train_full = load_split(config.dataset, config.data_root, True)
    _, test_full = load_split(config.dataset, config.data_root, False)
    val_size = min(config.val_size, len(train_full) // 5)
    train_size = min(config.train_size, len(train_full) - val_size)
    picked = stratified_subset(train_full.labels, total=train_size + val_size, seed=seed)
    fractions = [train_size / len(picked), val_size / len(picked)]
    train_part, val_part = stratified_split(train_full.labels[picked], fractions, seed=seed)
    test_idx = stratified_subset(test_full.labels, total=min(config.test_size, len(test_full)), seed=seed)
    train, val = train_full.subset(picked[train_part]), train_full.subset(picked[val_part])
    return source, train, val, test_full.subset(test_idx)


def calibration_batches(train: ImageArrays, size: int, seed: int, device: torch.device,
                        batch: int = 128) -> list[tuple[Tensor, Tensor]]:
    """The calibration set D_c: ``size`` training images chosen by the seed, as batches on ``device``."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(derive_seed(seed, "calibration")))
    idx = order[: min(size, len(train))]
    images, labels = train.images[idx].float().div(255.0), train.labels[idx]
    return [(images[i : i + batch].to(device), labels[i : i + batch].to(device)) for i in range(0, len(idx), batch)]


def dense_model(config: SingeConfig, engine: Engine, train: ImageArrays, seed: int, source: str) -> nn.Module:
    """Train (or load from the per-seed cache) the dense CIFAR ResNet."""
    spec = {"source": source, "depth": config.depth, "width": config.width, "train": len(train),
            "steps": config.dense_steps, "batch": config.dense_batch, "lr": config.dense_lr,
            "augment": config.augment, "seed": seed, "fingerprint": int(train.labels[:64].sum())}
    key = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    path = config.method_dir(METHOD) / "cache" / f"dense-{key}.safetensors"
    seed_everything(derive_seed(seed, "dense-init"))
    model = cifar_resnet(config.depth, config.width, train.image_shape[0], train.num_classes)
    if path.is_file():
        model.load_state_dict(load_weights(path))
        return model.to(engine.device).eval()
    data = ArrayDataset(train)
    settings = T.FinetuneSettings(steps=config.dense_steps, batch_size=config.dense_batch, lr=config.dense_lr)
    T.finetune(engine, model, _Augmented(data) if config.augment else data, settings, config.dense_steps, 0,
               derive_seed(seed, "dense"))
    if engine.is_main:
        save_weights(model.state_dict(), path)
    return model.eval()


def evaluate(engine: Engine, model: nn.Module, data: ImageArrays) -> dict[str, float]:
    """Top-1 and NLL on an image set."""
    return engine.evaluate(Task(), model, {"eval": ArrayDataset(data)})["eval"]


def scores_for(config: SingeConfig, name: str, model: nn.Module, example: Tensor, calib: list[tuple[Tensor, Tensor]],
               seed: int, memo: dict[tuple, P.ScoreResult], steps: int | None = None) -> P.ScoreResult:
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
    source, train, _, test = load_data(config, seed)
    dense = dense_model(config, engine, train, seed, source)
    device = next(dense.parameters()).device
    example = torch.zeros(1, *train.image_shape, device=device)
    calib = calibration_batches(train, config.calibration, seed, device)
    ratios = T.RatioCache(dense, example)
    rows: list[dict[str, Any]] = []
    dense_eval = evaluate(engine, dense, test)
    rows.append({"name": "dense", "seed": seed, "metrics": {**dense_eval, **_shape_metrics(dense, example, ratios)}})

    # E1: criterion quality right after one-shot local pruning (identical shapes for every criterion).
    path_memo: dict[tuple, P.ScoreResult] = {}
    for name in config.e1_criteria:
        result = scores_for(config, name, dense, example, calib, seed, path_memo)
        for target in config.targets:
            model = copy.deepcopy(dense)
            P.prune_to_counts(model, example, result.scores, ratios.keep(target))
            metrics = {**evaluate(engine, model, test), **_shape_metrics(model, example, ratios),
                       "criterion_s": result.seconds, "passes": float(result.passes)}
            metrics["top1_bn_recal"] = evaluate(engine, T.recalibrate_bn(model, calib), test)["top1"]
            rows.append({"name": f"E1 {name} @{target:.2f}", "seed": seed, "metrics": metrics})
    # K ablation of the SInGE criterion (E1 setting, first target).
    for steps in config.k_ablation:
        result = scores_for(config, "singe", dense, example, calib, seed, path_memo, steps)
        model = copy.deepcopy(dense)
        P.prune_to_counts(model, example, result.scores, ratios.keep(config.targets[0]))
        metrics = {**evaluate(engine, model, test), "criterion_s": result.seconds, "passes": float(result.passes)}
        metrics["top1_bn_recal"] = evaluate(engine, T.recalibrate_bn(model, calib), test)["top1"]
        rows.append({"name": f"K-ablation K={steps} @{config.targets[0]:.2f}", "seed": seed, "metrics": metrics})

    # E2: fine-tuning at equal budget, one-shot vs entwined.
    train_set = ArrayDataset(train)
    train_data = _Augmented(train_set) if config.augment else train_set
    settings = T.FinetuneSettings(steps=config.finetune_steps, batch_size=config.finetune_batch,
                                  lr=config.finetune_lr, restart=config.lr_restarts)
    singe_entwined: T.PruneRun | None = None
    for name in config.e2_criteria:
        for schedule, rounds in (("oneshot", 1), ("entwined", config.rounds)):
            run = T.prune_and_finetune(engine, dense, example, criterion_name(config, name), calib, config.e2_target,
                                       rounds, train_data, settings, criterion_settings(config, name),
                                       seed=derive_seed(seed, "e2"), ratios=ratios)
            metrics = {**evaluate(engine, run.model, test), **_shape_metrics(run.model, example, ratios),
                       "criterion_s": run.criterion_s, "passes": float(run.passes),
                       "finetune_steps": float(len(run.lrs)), "lr_sum": float(sum(run.lrs))}
            rows.append({"name": f"E2 {name} {schedule}", "seed": seed, "metrics": metrics})
            if name == "singe" and schedule == "entwined":
                singe_entwined = run

    # E3: latency of the physically pruned SInGE model vs the dense one; save it as plan + safetensors.
    if singe_entwined is not None:
        pruned = singe_entwined.model
        if config.latency:
            metrics: dict[str, float] = {}
            for batch in (1, 64):
                inputs = torch.randn(batch, *train.image_shape)
                measured = speed_ratio(copy.deepcopy(dense).cpu(), copy.deepcopy(pruned).cpu(), inputs,
                                       config.latency_threads)
                metrics.update({f"{k}_b{batch}": v for k, v in measured.items()})
            rows.append({"name": "E3 latency singe entwined", "seed": seed, "metrics": metrics})
        if seed == config.seeds[0] and engine.is_main:
            plan = P.PruningPlan("cifar_resnet", {"depth": config.depth, "width": config.width,
                                                  "in_chans": train.image_shape[0], "num_classes": train.num_classes},
                                 [1, *train.image_shape], singe_entwined.history)
            P.save_pruned(pruned, plan, out_dir / f"pruned-singe-entwined-seed{seed}")
    return rows, source


def _figure(config: SingeConfig, rows: list[dict[str, Any]], out_dir: Path) -> list[str]:
    """E1 figures: test top-1 vs fraction of MACs removed per criterion (plain, and after BN re-estimation)."""
    targets = sorted(config.targets, reverse=True)
    x = [1.0 - t for t in targets]
    paths = []
    plots = (("top1", "test top-1 right after pruning", "e1_top1_vs_macs_removed"),
             ("top1_bn_recal", "test top-1 after BN re-estimation", "e1_top1_bn_recal_vs_macs_removed"))
    for metric, label, stem in plots:
        series = {}
        for name in config.e1_criteria:
            means, stds = [], []
            for target in targets:
                values = torch.tensor([r["metrics"][metric] for r in rows if r["name"] == f"E1 {name} @{target:.2f}"])
                means.append(float(values.mean()))
                stds.append(float(values.std()) if len(values) > 1 else 0.0)
            series[name] = (means, stds)
        path = line_plot(out_dir / f"{stem}.png", x, series, "fraction of MACs removed", label,
                         "SInGE E1 (no fine-tuning)")
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
    others = [f"E2 {c} entwined" for c in ("l1", "taylor_tp") if c in config.e2_criteria]
    for seed in config.seeds:
        singe = _value(rows, "E2 singe entwined", seed, "top1")
        crit_d.append(singe - max(_value(rows, name, seed, "top1") for name in others))
        flow_d.append(singe - _value(rows, "E2 singe oneshot", seed, "top1"))
    outcomes = (classify(crit_d), classify(flow_d))
    figures = _figure(config, rows, out_dir) if engine.is_main else []
    s = config.singe
    notes = (
        f"SInGE = {s.criterion}/{s.granularity}/{s.scope}, K={s.steps}, {s.rule}, p={s.p} (our reading). "
        f"Criterion comparison {outcomes[0]} (paired top-1 differences {[round(d, 4) for d in crit_d]}); "
        f"flowchart comparison {outcomes[1]} ({[round(d, 4) for d in flow_d]}). E1 rows: test top-1 right after "
        "one-shot local pruning (no fine-tuning); 'oracle' is the exact leave-one-out loss change (reference, not "
        "SInGE)."
    )
    doc = make_results(METHOD, get_method(METHOD).paper, config.preset, source, CLAIM, rows,
                       verdict_of(*outcomes), VERDICT_RULE, time.perf_counter() - start, figures=figures, notes=notes,
                       primary_metric="top1")
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
        source, train, val, _ = load_data(config, seed)
        dense = dense_model(config, engine, train, seed, source)
        device = next(dense.parameters()).device
        example = torch.zeros(1, *train.image_shape, device=device)
        calib = calibration_batches(train, config.calibration, seed, device)
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
    diffs = [_value(rows, best, s, metric) - max(_value(rows, "l1", s, metric), _value(rows, "taylor_tp", s, metric))
             for s in config.seeds]
    notes = f"Winner (best mean {metric}, ties to fewer passes): {best}. Candidates: {labels}."
    doc = make_results(METHOD, get_method(METHOD).paper, config.preset, source, CLAIM, rows,
                       verdict_of(classify(diffs)), STUDY_RULE, time.perf_counter() - start, notes=notes,
                       primary_metric=metric)
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
