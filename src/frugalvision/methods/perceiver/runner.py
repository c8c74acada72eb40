"""The DQS Perceiver experiment (spec §6) and the variant study (spec §2.6); ``experiment.py`` exposes them."""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from frugalvision.data.arrays import ArrayDataset, ImageArrays
from frugalvision.data.folders import ImageFolderDataset
from frugalvision.data.sources import available_default_source, load_source
from frugalvision.data.splits import stratified_split, stratified_subset
from frugalvision.engine import Engine, FabricConfig, LoopConfig, latest_checkpoint
from frugalvision.errors import ConfigError
from frugalvision.experiment import RunConfig, apply_threads
from frugalvision.methods.perceiver.config import PerceiverConfig
from frugalvision.methods.perceiver.functional import cascade_outcome, pareto_auc
from frugalvision.methods.perceiver.model import PerceiverClassifier, cascade_stage_macs, macs_breakdown, model_macs
from frugalvision.methods.perceiver.selection import collect_logits, rank_latents
from frugalvision.methods.perceiver.task import PerceiverTask
from frugalvision.registry import get_method
from frugalvision.report import line_plot, make_results, write_results

METHOD = "perceiver"
CLAIM = (
    "Reducing the number Q of latent queries of a Perceiver at inference (here Q/4, with queries selected by a "
    "training that makes small query sets work) cuts inference time while limiting the accuracy drop, far less "
    "than truncating an ordinarily trained Perceiver (mechanism and training are our reading of the abstract)."
)
SELECTIONS = ("prefix", "ranked", "scorer")
DEFAULT_TAUS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 1.0)


@dataclass
class PerceiverRunConfig(RunConfig):
    """DQS Perceiver experiment settings (all method values are our reading, spec §2.5).

    Attributes:
        model: architecture (Q = model.num_latents).
        train_size: training images per seed (stratified subset of the training file).
        val_size: validation images per seed (disjoint from training; τ, ranking and selection use only these).
        test_size: test images (stratified subset of the official test file).
        min_latents: Q_min of the width grid.
        num_random: random sandwich widths per step.
        beta: distillation weight β of the nested loss.
        temperature: distillation temperature T.
        selection: query selection of the nested model: "prefix", "ranked" or "scorer".
        stages: cascade query-set sizes (empty: (Q/4, Q)).
        scratch_widths: Q of the reference models trained from scratch.
        taus: cascade thresholds swept.
        budgets: MAC budgets (fractions of MACs at Q) at which the cascade is compared to static truncation.
        rank_images: validation images used for the leave-one-out ranking.
        latency_batch: batch size of the latency measurement.
        latency_runs: timed runs per width (median reported).
        variant_betas: β values of the variant study.
        loop: optimisation settings (seed replaced per run).
    """

    model: PerceiverConfig = field(default_factory=PerceiverConfig)
    train_size: int = 16000
    val_size: int = 2000
    test_size: int = 5000
    min_latents: int = 4
    num_random: int = 1
    beta: float = 0.5
    temperature: float = 1.0
    selection: str = "prefix"
    stages: tuple[int, ...] = ()
    scratch_widths: tuple[int, ...] = (8, 16)
    taus: tuple[float, ...] = DEFAULT_TAUS
    budgets: tuple[float, ...] = (0.4, 0.6, 0.8)
    rank_images: int = 1000
    latency_batch: int = 256
    latency_runs: int = 20
    variant_betas: tuple[float, ...] = (0.0, 0.5, 1.0)
    loop: LoopConfig = field(
        default_factory=lambda: LoopConfig(
            max_steps=250,
            batch_size=128,
            lr=1e-3,
            weight_decay=0.05,
            warmup_steps=12,
            clip_grad_norm=1.0,
            log_every=10,
        )
    )

    def cascade_stages(self) -> tuple[int, ...]:
        """The cascade stages (default (Q/4, Q))."""
        q = self.model.num_latents
        return self.stages or (max(1, q // 4), q)

    def validate(self) -> None:
        """Check every field (one-line ConfigError naming the field and the fix)."""
        super().validate()
        self.loop.validate()
        self.model.validate()
        q = self.model.num_latents
        if self.min_latents < 1 or q % self.min_latents:
            raise ConfigError(f"min_latents={self.min_latents} must divide model.num_latents={q}; e.g. Q/8")
        if q % 4:
            raise ConfigError(f"model.num_latents={q} must be a multiple of 4 (the experiment evaluates Q/4)")
        if self.selection not in SELECTIONS:
            raise ConfigError(f"selection={self.selection!r} is invalid; use prefix, ranked or scorer")
        stages = self.cascade_stages()
        if list(stages) != sorted(set(stages)) or stages[-1] != q or stages[0] < 1:
            raise ConfigError(f"stages={stages} must increase strictly and end at model.num_latents={q}")
        if any(not 1 <= w <= q for w in self.scratch_widths):
            raise ConfigError(f"scratch_widths={self.scratch_widths} must lie in 1..{q}")
        if not 0.0 <= self.beta <= 1.0 or any(not 0.0 <= b <= 1.0 for b in self.variant_betas):
            raise ConfigError("beta and variant_betas must lie in [0, 1]")
        if self.temperature <= 0:
            raise ConfigError(f"temperature={self.temperature} must be positive")
        for name in ("train_size", "val_size", "test_size", "rank_images", "latency_batch", "latency_runs"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} is invalid; it must be a positive integer")
        if not self.budgets or any(not 0 < b <= 1 for b in self.budgets):
            raise ConfigError(f"budgets={self.budgets} must be fractions in (0, 1]")
        if self.dataset == "imagefolder" and self.data_root is None:
            raise ConfigError("dataset='imagefolder' needs --data-root pointing at a folder with train/ and val/")


def eval_widths(config: PerceiverRunConfig) -> list[int]:
    """Q' evaluated: Q, 3Q/4, Q/2, Q/4, Q/8 (and Q_min), deduplicated, decreasing."""
    q = config.model.num_latents
    return sorted({q, 3 * q // 4, q // 2, q // 4, max(1, q // 8), config.min_latents} - {0}, reverse=True)


# ---------------------------------------------------------------------- data
class Split:
    """One labelled image set as the experiment needs it: a dataset to train on, labels, and image batches.

    Built from in-memory arrays (the offline sources) or from any (image, label) dataset (ImageFolder).
    """

    def __init__(
        self,
        dataset: Dataset,
        labels: torch.Tensor,
        num_classes: int,
        image_shape: tuple[int, int, int],
        arrays: ImageArrays | None = None,
        num_workers: int = 0,
    ) -> None:
        self.dataset, self.labels, self.num_classes, self.image_shape = dataset, labels.long(), num_classes, image_shape
        self.arrays, self.num_workers = arrays, num_workers

    @classmethod
    def from_arrays(cls, arrays: ImageArrays) -> Split:
        """A split held in memory."""
        return cls(ArrayDataset(arrays), arrays.labels, arrays.num_classes, arrays.image_shape, arrays)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batches(self, batch_size: int = 250, limit: int | None = None) -> Iterator[torch.Tensor]:
        """Float image batches in order (the first ``limit`` images when given)."""
        count = len(self) if limit is None else min(limit, len(self))
        if self.arrays is not None:
            for start in range(0, count, batch_size):
                yield self.arrays.images[start : min(start + batch_size, count)].float().div_(255.0)
            return
        subset = Subset(self.dataset, range(count))
        for images, _ in DataLoader(subset, batch_size=batch_size, num_workers=self.num_workers):
            yield images

    def head(self, count: int) -> torch.Tensor:
        """The first ``count`` images as one tensor."""
        return torch.cat(list(self.batches(limit=count)))

    def subset(self, indices: Sequence[int]) -> Split:
        """The images at ``indices``."""
        index = list(indices)
        if self.arrays is not None:
            return Split.from_arrays(self.arrays.subset(index))
        return Split(
            Subset(self.dataset, index),
            self.labels[index],
            self.num_classes,
            self.image_shape,
            num_workers=self.num_workers,
        )


def _folder_splits(config: PerceiverRunConfig, seed: int) -> tuple[Split, Split, Split]:
    """ImageNet-style splits from ``data_root/{train,val}/<class>/*``.

    Training: RandomResizedCrop + flip; evaluation: resize to 256/224 of the size, centre crop. Validation is a
    stratified hold-out of the training folder; test is ``val/``.
    """
    from torchvision import transforms

    if config.data_root is None:
        raise ConfigError("dataset='imagefolder' needs --data-root with train/ and val/ class folders")
    size = config.model.img_size
    to_tensor = transforms.ToTensor()
    train_tf = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(), to_tensor])
    eval_tf = transforms.Compose([transforms.Resize(round(size * 256 / 224)), transforms.CenterCrop(size), to_tensor])
    root = Path(config.data_root)
    train_full = ImageFolderDataset(root / "train", train_tf)
    train_eval = ImageFolderDataset(root / "train", eval_tf, classes=train_full.classes)
    test_full = ImageFolderDataset(root / "val", eval_tf, classes=train_full.classes)
    labels = torch.tensor(train_full.targets)
    val_size = min(config.val_size, len(labels) // 5)
    train_size = min(config.train_size, len(labels) - val_size)
    picked = stratified_subset(labels, total=train_size + val_size, seed=seed)
    train_part, val_part = stratified_split(labels[picked], [train_size / len(picked), val_size / len(picked)], seed)
    test_labels = torch.tensor(test_full.targets)
    test_idx = stratified_subset(test_labels, total=min(config.test_size, len(test_labels)), seed=seed)
    shape = (3, size, size)
    workers = config.loop.num_workers
    classes = train_full.num_classes
    train_idx, val_idx = picked[train_part].tolist(), picked[val_part].tolist()
    return (
        Split(Subset(train_full, train_idx), labels[train_idx], classes, shape, num_workers=workers),
        Split(Subset(train_eval, val_idx), labels[val_idx], classes, shape, num_workers=workers),
        Split(Subset(test_full, test_idx.tolist()), test_labels[test_idx], classes, shape, num_workers=workers),
    )


def load_data(config: PerceiverRunConfig, seed: int) -> tuple[str, Split, Split, Split]:
    """(source, train, val, test) for one seed: disjoint stratified train/val subsets and a test subset.

    ``dataset="imagefolder"`` reads ``data_root/{train,val}`` (ImageNet layout); any other name is an offline
    source of :func:`frugalvision.data.sources.load_source`.
    """
    if config.dataset == "imagefolder":
        return ("imagefolder", *_folder_splits(config, seed))
    source = available_default_source(config.data_root) if config.dataset == "auto" else config.dataset
    train_full = load_source(source, root=config.data_root, train=True)
    test_full = load_source(source, root=config.data_root, train=False)
    val_size = min(config.val_size, len(train_full) // 5)
    train_size = min(config.train_size, len(train_full) - val_size)
    picked = stratified_subset(train_full.labels, total=train_size + val_size, seed=seed)
    train_part, val_part = stratified_split(
        train_full.labels[picked], [train_size / len(picked), val_size / len(picked)], seed=seed
    )
    test_idx = stratified_subset(test_full.labels, total=min(config.test_size, len(test_full)), seed=seed)
    return (
        source,
        Split.from_arrays(train_full.subset(picked[train_part])),
        Split.from_arrays(train_full.subset(picked[val_part])),
        Split.from_arrays(test_full.subset(test_idx)),
    )


def model_config(config: PerceiverRunConfig, data: Split, **changes: Any) -> PerceiverConfig:
    """The architecture sized for the images (channels, resolution, classes), with optional changes."""
    channels, height, _ = data.image_shape
    return dataclasses.replace(
        config.model, img_size=height, in_chans=channels, num_classes=data.num_classes, **changes
    )


# ---------------------------------------------------------------------- measurements
@torch.no_grad()
def measure_latency(
    model: PerceiverClassifier, images: torch.Tensor, widths: Sequence[int], runs: int, warmup: int = 3
) -> dict[int, float]:
    """Median forward latency (ms) per width; widths are timed round-robin so that load drift hits all equally."""
    model.eval()
    device = next(model.parameters()).device
    x = images.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times: dict[int, list[float]] = {k: [] for k in widths}
    for index in range(warmup + runs):
        for k in widths:
            sync()
            start = time.perf_counter()
            model(x, num_latents=k)
            sync()
            if index >= warmup:
                times[k].append((time.perf_counter() - start) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def _top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(-1) == labels).float().mean().item()


def _device_images(model: PerceiverClassifier, images: torch.Tensor) -> torch.Tensor:
    return images.to(next(model.parameters()).device)


def evaluate_static(
    model: PerceiverClassifier, data: Split, widths: Sequence[int], stages: Sequence[int]
) -> tuple[dict[int, float], list[torch.Tensor]]:
    """Top-1 at each width and the cached per-stage cascade logits of a set."""
    per_width, per_stage = collect_logits(model, data.batches(), widths, stages)
    return {k: _top1(v, data.labels) for k, v in per_width.items()}, per_stage


def choose_at_budgets(
    val_points: Sequence[tuple[float, float]], test_points: Sequence[tuple[float, float]], budgets: Sequence[float]
) -> dict[float, tuple[float, float]]:
    """Per budget, the operating point with the best validation top-1 within the budget, measured on test.

    Returns ``{budget: (test top-1, test relative MACs)}``; budgets that no operating point fits are left out.

    Args:
        val_points: (relative MACs, top-1) on validation per operating point.
        test_points: the same operating points measured on test.
        budgets: fractions of the MACs at Q.
    """
    out = {}
    for budget in budgets:
        fits = [i for i, (macs, _) in enumerate(val_points) if macs <= budget + 1e-12]
        if not fits:
            continue
        best = max(fits, key=lambda i: (val_points[i][1], -val_points[i][0]))
        out[budget] = (test_points[best][1], test_points[best][0])
    return out


# ---------------------------------------------------------------------- training
def train_model(
    engine: Engine,
    config: PerceiverRunConfig,
    arch: PerceiverConfig,
    train: Split,
    seed: int,
    mode: str,
    name: str,
    beta: float | None = None,
) -> PerceiverClassifier:
    """Train one Perceiver (``mode`` "fixed" or "nested") and return the unwrapped model."""
    task = PerceiverTask(
        lambda: PerceiverClassifier(arch),
        train.dataset,
        {},
        train_mode=mode,  # type: ignore[arg-type]
        min_latents=config.min_latents,
        num_random=config.num_random,
        beta=config.beta if beta is None else beta,
        temperature=config.temperature,
        seed=seed,
    )
    loop = dataclasses.replace(config.loop, seed=seed)
    run_dir = config.method_dir(METHOD) / "runs" / f"{name}-seed{seed}"
    resume = config.resume and latest_checkpoint(run_dir / "checkpoints") is not None
    result = engine.fit(task, loop, run_dir=run_dir, resume=resume, desc=f"{name} seed {seed}")
    model = result.model
    assert isinstance(model, PerceiverClassifier)
    return model.eval()


def _rank(model: PerceiverClassifier, val: Split, count: int) -> None:
    images = _device_images(model, val.head(count))
    rank_latents(model, images, val.labels[:count].to(images.device))


# ---------------------------------------------------------------------- verdict
def _t_positive(values: Sequence[float]) -> tuple[float, float]:
    """(mean, mean / (std / √n)); the ratio is ±inf when std = 0 and mean ≠ 0."""
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    if std == 0:
        return mean, math.copysign(math.inf, mean) if mean else 0.0
    return mean, mean / (std / math.sqrt(len(values)))


def compute_verdict(rows: Sequence[dict[str, Any]], quarter: int) -> tuple[str, str, dict[str, float]]:
    """Spec §6 verdict at Q' = Q/4 from the per-seed rows."""
    rule = (
        f"at Q'=Q/4={quarter}: (i) mean measured latency speed-up of the nested model vs Q >= 1.5x; (ii) d = "
        f"top1(nested, Q/4) - top1(best of fixed-prefix and fixed-ranked by mean, Q/4) is positive (paired over "
        "seeds: mean > 0 and mean/(std/sqrt n) > 1); (iii) mean drop top1(fixed, Q) - top1(nested, Q/4) <= half the "
        "truncated baseline's mean drop. supported if (i)-(iii) hold; not supported if d is negative (mean < 0, "
        "ratio < -1) or (i) fails; inconclusive otherwise"
    )
    by = {(r["name"], r["seed"]): r["metrics"] for r in rows}
    seeds = sorted({r["seed"] for r in rows if r["name"] == "nested"})
    key = f"test_top1_q{quarter}"
    base_name = max(("fixed-prefix", "fixed-ranked"), key=lambda n: statistics.fmean(by[(n, s)][key] for s in seeds))
    diffs = [by[("nested", s)][key] - by[(base_name, s)][key] for s in seeds]
    full = [by[("fixed-prefix", s)][f"test_top1_q{max(_widths_of(by, s))}"] for s in seeds]
    drop_nested = statistics.fmean(f - by[("nested", s)][key] for f, s in zip(full, seeds, strict=True))
    drop_base = statistics.fmean(f - by[(base_name, s)][key] for f, s in zip(full, seeds, strict=True))
    speedup = statistics.fmean(by[("nested", s)][f"speedup_q{quarter}"] for s in seeds)
    mean_d, ratio = _t_positive(diffs)
    ok_speed = speedup >= 1.5
    ok_d = mean_d > 0 and ratio > 1
    ok_drop = drop_nested <= 0.5 * drop_base
    if ok_speed and ok_d and ok_drop:
        verdict = "supported"
    elif (mean_d < 0 and ratio < -1) or not ok_speed:
        verdict = "not supported"
    else:
        verdict = "inconclusive"
    facts = {
        "speedup_quarter": speedup,
        "d_mean": mean_d,
        "d_ratio": ratio,
        "drop_nested": drop_nested,
        "drop_baseline": drop_base,
        "baseline": 0.0 if base_name == "fixed-prefix" else 1.0,
    }
    return verdict, rule, facts


def _widths_of(by: dict[tuple[str, int], dict[str, float]], seed: int) -> list[int]:
    return [int(k.split("_q")[1]) for k in by[("fixed-prefix", seed)] if k.startswith("test_top1_q")]


# ---------------------------------------------------------------------- main experiment
def run_main(config: PerceiverRunConfig) -> dict[str, Any]:
    """Every row of spec §6 for every seed; writes ``<out>/perceiver/results.json`` and figures."""
    start = time.perf_counter()
    out_dir = config.method_dir(METHOD)
    engine = Engine(config.fabric, log_dir=out_dir, progress=config.progress)
    widths = eval_widths(config)
    stages = config.cascade_stages()
    q = config.model.num_latents
    quarter = q // 4
    rows: list[dict[str, Any]] = []
    curves: dict[str, list[list[float]]] = {}
    cascade_curves: list[list[tuple[float, float]]] = []
    source = ""
    arch = config.model
    for seed in config.seeds:
        source, train, val, test = load_data(config, seed)
        arch = model_config(config, train, scorer=config.selection == "scorer")
        fixed_arch = dataclasses.replace(arch, scorer=False)
        full_macs = model_macs(fixed_arch, q)
        # --- fixed-Q baseline, truncated by prefix and by the learned ranking
        fixed = train_model(engine, config, fixed_arch, train, seed, "fixed", "fixed")
        for name in ("fixed-prefix", "fixed-ranked"):
            if name == "fixed-ranked":
                _rank(fixed, val, config.rank_images)
            val_acc, _ = evaluate_static(fixed, val, widths, stages)
            test_acc, _ = evaluate_static(fixed, test, widths, stages)
            metrics = {f"test_top1_q{k}": v for k, v in test_acc.items()}
            metrics.update({f"val_top1_q{k}": v for k, v in val_acc.items()})
            metrics["auc_test"] = pareto_auc(
                [model_macs(fixed_arch, k) / full_macs for k in widths], [test_acc[k] for k in widths]
            )
            rows.append({"name": name, "seed": seed, "metrics": metrics})
            curves.setdefault(name, []).append([test_acc[k] for k in widths])
        # --- nested training (ours), with the configured selection
        nested = train_model(engine, config, arch, train, seed, "nested", f"nested-{config.selection}")
        if config.selection == "ranked":
            _rank(nested, val, config.rank_images)
        val_acc, val_stages = evaluate_static(nested, val, widths, stages)
        test_acc, test_stages = evaluate_static(nested, test, widths, stages)
        rel = {k: model_macs(arch, k) / full_macs for k in widths}
        metrics = {f"test_top1_q{k}": v for k, v in test_acc.items()}
        metrics.update({f"val_top1_q{k}": v for k, v in val_acc.items()})
        metrics.update({f"rel_macs_q{k}": v for k, v in rel.items()})
        latency = measure_latency(nested, test.head(config.latency_batch), widths, config.latency_runs)
        metrics.update({f"latency_ms_q{k}": v for k, v in latency.items()})
        metrics.update({f"speedup_q{k}": latency[q] / v for k, v in latency.items()})
        # --- cascade: τ chosen on validation at each MAC budget, applied to test
        stage_macs = cascade_stage_macs(arch, stages)
        val_y, test_y = val.labels, test.labels
        val_pts = []
        test_pts = []
        for tau in config.taus:
            v = cascade_outcome(val_stages, val_y, tau, stage_macs)
            t = cascade_outcome(test_stages, test_y, tau, stage_macs)
            val_pts.append((v["macs"] / full_macs, v["top1"]))
            test_pts.append((t["macs"] / full_macs, t["top1"]))
        cascade_curves.append(test_pts)
        static_val = [(rel[k], val_acc[k]) for k in widths]
        static_test = [(rel[k], test_acc[k]) for k in widths]
        chosen_c = choose_at_budgets(val_pts, test_pts, config.budgets)
        chosen_s = choose_at_budgets(static_val, static_test, config.budgets)
        for budget in config.budgets:
            tag = f"b{int(round(budget * 100))}"
            if budget in chosen_c:
                metrics[f"cascade_top1_{tag}"], metrics[f"cascade_rel_macs_{tag}"] = chosen_c[budget]
            if budget in chosen_s:
                metrics[f"static_top1_{tag}"], metrics[f"static_rel_macs_{tag}"] = chosen_s[budget]
        metrics["auc_test"] = pareto_auc([r for r, _ in static_test], [a for _, a in static_test])
        metrics["auc_test_cascade"] = pareto_auc([r for r, _ in test_pts], [a for _, a in test_pts])
        rows.append({"name": "nested", "seed": seed, "metrics": metrics})
        curves.setdefault("nested", []).append([test_acc[k] for k in widths])
        # --- references trained from scratch at a smaller Q
        for width in config.scratch_widths:
            small = dataclasses.replace(fixed_arch, num_latents=width)
            model = train_model(engine, config, small, train, seed, "fixed", f"scratch-q{width}")
            acc, _ = evaluate_static(model, test, [width], [width])
            rows.append({"name": f"scratch-q{width}", "seed": seed, "metrics": {f"test_top1_q{width}": acc[width]}})
    if not engine.is_main:
        engine.barrier()
        return {}
    figures = _main_figures(out_dir, config, widths, curves, rows, cascade_curves, arch)
    verdict, rule, facts = compute_verdict(rows, quarter)
    breakdown = macs_breakdown(dataclasses.replace(arch, scorer=False), quarter)
    q_share = 1 - breakdown["fixed"] / breakdown["total"]
    secondary = sum(_cascade_wins(rows, b) for b in config.budgets)
    notes = (
        f"train/val/test = {config.train_size}/{config.val_size}/{config.test_size} images per seed; "
        f"{config.loop.max_steps} steps of batch {config.loop.batch_size}; Q={q}, Q_min={config.min_latents}, "
        f"selection={config.selection}, beta={config.beta}; cascade stages {stages}. Verdict facts: mean speed-up "
        f"at Q/4 {facts['speedup_quarter']:.2f}x, d = {facts['d_mean']:+.4f} (t = {facts['d_ratio']:.2f}), drop nested "
        f"{facts['drop_nested']:.4f} vs truncated baseline {facts['drop_baseline']:.4f}. Q-dependent MAC share at "
        f"Q/4: {q_share:.2f} (Amdahl bound of the speed-up). Secondary (our reading only): the cascade beats static "
        f"prefix truncation at {secondary}/{len(config.budgets)} MAC budgets. The mechanism is our reading of the "
        "abstract; the paper's numbers were not available."
    )
    document = make_results(
        METHOD,
        get_method(METHOD).paper,
        config.preset,
        source,
        CLAIM,
        rows,
        verdict,
        rule,
        time.perf_counter() - start,
        figures=[Path(f).name for f in figures],
        notes=notes,
        primary_metric=f"test_top1_q{quarter}",
    )
    write_results(document, out_dir)
    engine.barrier()
    return document


def _cascade_wins(rows: Sequence[dict[str, Any]], budget: float) -> bool:
    """Mean cascade top-1 > mean static top-1 at a budget (False when either has no operating point there)."""
    tag = f"b{int(round(budget * 100))}"
    nested = [r["metrics"] for r in rows if r["name"] == "nested"]
    if not all(f"cascade_top1_{tag}" in m and f"static_top1_{tag}" in m for m in nested):
        return False
    return statistics.fmean(m[f"cascade_top1_{tag}"] for m in nested) > statistics.fmean(
        m[f"static_top1_{tag}"] for m in nested
    )


def _main_figures(
    out_dir: Path,
    config: PerceiverRunConfig,
    widths: Sequence[int],
    curves: dict[str, list[list[float]]],
    rows: Sequence[dict[str, Any]],
    cascade_curves: Sequence[Sequence[tuple[float, float]]],
    arch: PerceiverConfig,
) -> list[Path]:
    order = sorted(widths)
    idx = [list(widths).index(k) for k in order]

    def band(runs: list[list[float]]) -> tuple[list[float], list[float]]:
        stacked = torch.tensor(runs)[:, idx]
        return stacked.mean(0).tolist(), stacked.std(0, unbiased=False).tolist()

    figures = [
        line_plot(
            out_dir / "top1_vs_queries.png",
            order,
            {n: band(c) for n, c in curves.items()},
            "queries Q'",
            "test top-1",
            "accuracy vs number of latent queries",
        )
    ]
    fixed_arch = dataclasses.replace(arch, scorer=False)
    rel = [model_macs(fixed_arch, k) / model_macs(fixed_arch, arch.num_latents) for k in order]
    series: dict[str, Any] = {n: band(c) for n, c in curves.items()}
    figures.append(
        line_plot(
            out_dir / "top1_vs_macs.png",
            rel,
            series,
            "relative MACs (analytic)",
            "test top-1",
            "accuracy vs MACs (static Q')",
        )
    )
    nested = [r["metrics"] for r in rows if r["name"] == "nested"]
    speed = [statistics.fmean(1.0 / m[f"speedup_q{k}"] for m in nested) for k in order]
    figures.append(
        line_plot(
            out_dir / "top1_vs_latency.png",
            speed,
            {"nested": band(curves["nested"])},
            "measured latency / latency at Q",
            "test top-1",
            "accuracy vs measured CPU latency",
        )
    )
    points = sorted(cascade_curves[0])
    figures.append(
        line_plot(
            out_dir / "cascade_curve.png",
            [p[0] for p in points],
            {"cascade (seed 0, tau sweep)": [p[1] for p in points]},
            "relative MACs",
            "test top-1",
            f"cascade {config.cascade_stages()}",
        )
    )
    return figures


# ---------------------------------------------------------------------- variant study
def _variant_rows(
    config: PerceiverRunConfig,
    model: PerceiverClassifier,
    arch: PerceiverConfig,
    label: str,
    score: Split,
    seed: int,
    full_macs: float,
) -> list[dict[str, Any]]:
    """Static and cascade rows of one model/selection: AUC of top-1 vs relative MACs on the scoring split."""
    widths, stages, q = eval_widths(config), config.cascade_stages(), config.model.num_latents
    acc, score_stages = evaluate_static(model, score, widths, stages)
    rel = [model_macs(arch, k) / full_macs for k in widths]
    stage_macs = cascade_stage_macs(arch, stages)
    pts = [cascade_outcome(score_stages, score.labels, t, stage_macs) for t in config.taus]
    static = {"val_auc": pareto_auc(rel, [acc[k] for k in widths]), f"val_top1_q{q // 4}": acc[q // 4]}
    cascade = {"val_auc": pareto_auc([p["macs"] / full_macs for p in pts], [p["top1"] for p in pts])}
    return [
        {"name": f"{label}-static", "seed": seed, "metrics": static},
        {"name": f"{label}-cascade", "seed": seed, "metrics": cascade},
    ]


def run_variants(config: PerceiverRunConfig) -> dict[str, Any]:
    """Spec §2.6: nested β × {prefix, ranked, scorer} × {static, cascade}, scored by the validation AUC.

    The validation split is halved: the first half chooses the latent ranking, the second half scores every
    variant (the cascade's score is the AUC of its whole τ sweep, so no threshold is chosen; test is never used).
    Writes ``<out>/perceiver/variants/results.json``.
    """
    start = time.perf_counter()
    out_dir = config.method_dir(METHOD) / "variants"
    engine = Engine(config.fabric, log_dir=out_dir, progress=config.progress)
    q = config.model.num_latents
    rows: list[dict[str, Any]] = []
    source = ""
    for seed in config.seeds:
        source, train, val, _ = load_data(config, seed)
        half = len(val) // 2
        tune, score = val.subset(range(half)), val.subset(range(half, len(val)))
        base = model_config(config, train, scorer=False)
        full_macs = model_macs(base, q)
        fixed = train_model(engine, config, base, train, seed, "fixed", "variants-fixed")
        rows += _variant_rows(config, fixed, base, "fixed-prefix", score, seed, full_macs)
        _rank(fixed, tune, min(config.rank_images, len(tune)))
        rows += _variant_rows(config, fixed, base, "fixed-ranked", score, seed, full_macs)
        for beta in config.variant_betas:
            model = train_model(engine, config, base, train, seed, "nested", f"variants-nested-b{beta}", beta=beta)
            rows += _variant_rows(config, model, base, f"nested-b{beta}-prefix", score, seed, full_macs)
            _rank(model, tune, min(config.rank_images, len(tune)))
            rows += _variant_rows(config, model, base, f"nested-b{beta}-ranked", score, seed, full_macs)
            scorer_arch = dataclasses.replace(base, scorer=True)
            model = train_model(
                engine, config, scorer_arch, train, seed, "nested", f"variants-scorer-b{beta}", beta=beta
            )
            rows += _variant_rows(config, model, scorer_arch, f"nested-b{beta}-scorer", score, seed, full_macs)
    if not engine.is_main:
        engine.barrier()
        return {}
    names = sorted({r["name"] for r in rows})
    mean_auc = {n: statistics.fmean(r["metrics"]["val_auc"] for r in rows if r["name"] == n) for n in names}
    best_nested = max((n for n in names if n.startswith("nested")), key=mean_auc.__getitem__)
    best_fixed = max((n for n in names if n.startswith("fixed")), key=mean_auc.__getitem__)
    by = {(r["name"], r["seed"]): r["metrics"]["val_auc"] for r in rows}
    diffs = [by[(best_nested, s)] - by[(best_fixed, s)] for s in config.seeds]
    mean_d, ratio = _t_positive(diffs)
    verdict = (
        "supported" if mean_d > 0 and ratio > 1 else ("not supported" if mean_d < 0 and ratio < -1 else "inconclusive")
    )
    rule = (
        "variant study on validation only: score = mean top-1 of the accuracy-vs-relative-MACs Pareto front over "
        "[1/8, 1]; supported if the best nested variant beats the best fixed-Q truncation (paired over seeds: mean > "
        "0 and mean/(std/sqrt n) > 1); not supported if mean < 0 and ratio < -1; inconclusive otherwise"
    )
    document = make_results(
        METHOD,
        get_method(METHOD).paper,
        config.preset,
        source,
        "Among our readings, which training/selection/inference combination keeps accuracy best as Q shrinks.",
        rows,
        verdict,
        rule,
        time.perf_counter() - start,
        notes=f"best variant: {best_nested} (val AUC {mean_auc[best_nested]:.4f}); best truncation baseline: "
        f"{best_fixed} ({mean_auc[best_fixed]:.4f}). The latent ranking uses the first half of the validation "
        "split, the scores the second half.",
        primary_metric="val_auc",
    )
    write_results(document, out_dir)
    engine.barrier()
    return document


def run(config: PerceiverRunConfig) -> dict[str, Any]:
    """Run the main experiment, or the variant study when ``config.study == "variants"``."""
    config.validate()
    apply_threads(config.threads)
    if config.study == "variants":
        return run_variants(config)
    if config.study is not None:
        raise ConfigError(f"study={config.study!r} is not offered by perceiver; use --study variants")
    return run_main(config)


# ---------------------------------------------------------------------- presets
def smoke() -> PerceiverRunConfig:
    """Seconds: Q = 8, d = 32, L = 2, 1,000 images, 30 steps, 2 seeds, every row and both inference modes.

    One torch thread: tiny models gain nothing from more, and spinning threads hurt on a shared CPU.
    """
    return PerceiverRunConfig(
        preset="smoke",
        seeds=(0, 1),
        threads=1,
        model=PerceiverConfig(num_latents=8, latent_dim=32, token_dim=32, layers=2, self_heads=2),
        train_size=1000,
        val_size=300,
        test_size=300,
        min_latents=2,
        scratch_widths=(2, 4),
        rank_images=200,
        latency_batch=64,
        latency_runs=5,
        taus=(0.0, 0.5, 0.8, 0.95, 1.0),
        variant_betas=(0.5,),
        loop=LoopConfig(max_steps=30, batch_size=64, lr=2e-3, warmup_steps=3, clip_grad_norm=1.0, log_every=5),
    )


def standard() -> PerceiverRunConfig:
    """Minutes on 2 CPU cores: Fashion-MNIST, Q = 32, d = 64, L = 4, 3 seeds (spec §6)."""
    return PerceiverRunConfig(preset="standard")


def paper() -> PerceiverRunConfig:
    """GPU scale, ImageNet-1k ImageFolder at ``--data-root`` (spec §2.5 paper column and §5; all values OURS).

    Q = 256, Q_min = 32, d = 512, D = 256, L = 12, patch 4 at 224 px (3,136 tokens), 2-D Fourier positions with 64
    bands concatenated, drop-path 0.1, bf16-mixed. The loop assumes 8 GPUs × 256 images (global batch 2,048):
    lr = 5e-4 · 2048 / 512, ≈ 300 epochs, 5 warm-up epochs. Run through ``torchrun``/SLURM with
    ``--fabric.strategy ddp``. RandAugment, Mixup/CutMix and label smoothing of the spec are not implemented.
    """
    return PerceiverRunConfig(
        preset="paper",
        dataset="imagefolder",
        model=PerceiverConfig(
            img_size=224,
            in_chans=3,
            num_classes=1000,
            patch_size=4,
            token_dim=256,
            num_latents=256,
            latent_dim=512,
            layers=12,
            self_heads=8,
            pos="fourier",
            fourier_bands=64,
            drop_path=0.1,
        ),
        train_size=10_000_000,
        val_size=10_000,
        test_size=50_000,
        min_latents=32,
        scratch_widths=(32, 64, 128, 192),
        latency_batch=256,
        fabric=FabricConfig(precision="bf16-mixed"),
        loop=LoopConfig(
            max_steps=186_000,
            batch_size=256,
            lr=2e-3,
            weight_decay=0.05,
            warmup_steps=3_100,
            clip_grad_norm=1.0,
            ckpt_every=2_000,
            num_workers=8,
        ),
    )
