"""MuHDi experiment on the harness: continual UDA over a sequence of target domains, MuHDi vs sequential ADVENT.

Offline the domains are procedural street scenes (``frugalvision.data.streets``: a saturated synthetic source and
city / dusty / varied targets); with ``--dataset benchmark --data-root <root>`` the same units run on GTA5 ->
Cityscapes -> IDD (-> Mapillary) in their official layouts. Per seed, the unit ``step1`` trains the shared start of
every arm (source pretraining, then ADVENT source -> T1) and caches it; each continual arm then adapts to T2, T3...
one after the other without seeing an earlier target again; the accuracy matrix A[step, target] gives mean mIoU
and forgetting, for the last iterate (the verdict) and for the best-on-validation snapshots (reported apart).
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from frugalvision.config_io import config_to_dict
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
from frugalvision.methods.muhdi.api import Adapted, accuracy_summary, evaluate_domains, fit_step
from frugalvision.methods.muhdi.config import CONTINUAL_ARMS, PRESETS, MuhdiConfig, arm_settings
from frugalvision.methods.muhdi.labels import SUPER_CLASSES
from frugalvision.methods.muhdi.model import build_segmenter
from frugalvision.methods.muhdi.task import StepSettings, UdaStep
from frugalvision.nn.deeplab import DeepLabV2

METHOD = "muhdi"
CLAIM = (
    "In continual UDA (a labelled source always available, unlabelled targets met one after another, earlier targets "
    "never revisited), MuHDi (multi-level distillation from the frozen previous model plus a target-specialist head "
    "that teaches the target-agnostic test head) forgets less of the earlier targets than sequential ADVENT, at "
    "equal or better mean mIoU over all targets."
)
METRIC = "mean_miou"
CACHE_VERSION = "muhdi-v1"


# ------------------------------------------------------------------------------------------------ data
@dataclass(frozen=True)
class DomainData:
    """One domain's splits: unlabelled training images (labels never read by UDA), validation and test sets."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset


@dataclass(frozen=True)
class SequenceData:
    """The labelled source and the targets in arrival order."""

    source: DomainData
    targets: tuple[DomainData, ...]
    note: str

    def tests(self) -> dict[str, Dataset]:
        """Every test set: the targets in order, then the source."""
        return {**{t.name: t.test for t in self.targets}, "source": self.source.test}


def _digest(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _render(config: MuhdiConfig) -> dict[str, torch.Tensor]:
    """Every split of every street domain, as uint8 images and labels."""
    from frugalvision.data.streets import render_streets

    height, width = config.image_size
    arrays: dict[str, torch.Tensor] = {}
    counts = {"train": config.target_images, "val": config.val_images, "test": config.test_images}
    for domain in (config.source_domain, *config.targets):
        for split, count in counts.items():
            count = config.source_images if (domain == config.source_domain and split == "train") else count
            seed = config.data_seed * 10 + ("train", "val", "test").index(split)
            images, labels = render_streets(domain, count, height, width, seed)
            arrays[f"{domain}/{split}/images"] = torch.from_numpy((images * 255).round().astype("uint8"))
            arrays[f"{domain}/{split}/labels"] = torch.from_numpy(labels)
    return arrays


def street_data(ctx: Context[MuhdiConfig]) -> SequenceData:
    """Street domains, rendered once (rank 0 first) and cached under ``<out>/muhdi/cache``."""
    from frugalvision.data.streets import StreetScenes
    from frugalvision.engine import load_weights, save_weights

    config = ctx.config
    keys = ("source_domain", "targets", "image_size", "source_images", "target_images", "val_images", "test_images")
    parts = {k: getattr(config, k) for k in keys} | {"seed": config.data_seed, "version": CACHE_VERSION}
    path = ctx.cache_path(f"streets-{_digest(parts)}.safetensors")

    def build() -> dict[str, torch.Tensor]:
        if path.is_file():
            return load_weights(path)
        arrays = _render(config)
        save_weights(arrays, path)
        return arrays

    arrays = ctx.main_first(build)

    def domain(name: str) -> DomainData:
        sets = {s: StreetScenes(arrays[f"{name}/{s}/images"].float() / 255, arrays[f"{name}/{s}/labels"], name)
                for s in ("train", "val", "test")}  # fmt: skip
        return DomainData(name, sets["train"], sets["val"], sets["test"])

    source, targets = domain(config.source_domain), tuple(domain(t) for t in config.targets)
    note = (
        f"street scenes {config.image_size[0]}x{config.image_size[1]}: {config.source_domain} {len(source.train)} "
        f"labelled -> {' -> '.join(config.targets)} ({config.target_images} unlabelled each); "
        f"{config.val_images} val / {config.test_images} test per domain (data seed {config.data_seed})"
    )
    return SequenceData(source, targets, note)


def benchmark_data(config: MuhdiConfig) -> SequenceData:
    """GTA5 and the real targets (official train / val splits; val serves as both selection and test set)."""
    from frugalvision.methods.muhdi.datasets import load_benchmark

    def load(name: str, split: str) -> Dataset:
        return load_benchmark(config.data_root or ".", name, split, config.image_size, config.label_map,
                              config.list_dir)  # type: ignore[arg-type]  # fmt: skip

    gta = load("gta5", "all")
    source = DomainData("source", gta, gta, gta)
    targets = tuple(DomainData(t, load(t, "train"), load(t, "val"), load(t, "val")) for t in config.benchmark_targets)
    note = f"GTA5 ({len(gta)}) -> {' -> '.join(config.benchmark_targets)}, label map {config.label_map}"
    return SequenceData(source, targets, note + "; val is the selection and the test set (official protocol)")


def load_data(ctx: Context[MuhdiConfig]) -> SequenceData:
    """The run's domains (built once per process)."""
    return ctx.memo(
        "data", lambda: benchmark_data(ctx.config) if ctx.config.source == "benchmark" else street_data(ctx)
    )


# ------------------------------------------------------------------------------------------------ shared start
@dataclass
class Start:
    """The shared start of a seed: the source-only model and the step-1 (ADVENT source -> T1) outcome."""

    source: DeepLabV2 | None
    step1: Adapted


def _segmenter(ctx: Context[MuhdiConfig]) -> DeepLabV2:
    return build_segmenter(ctx.config.model, len(SUPER_CLASSES))


def _start_digest(config: MuhdiConfig, seed: int) -> str:
    keys = ("dataset", "data_root", "source_domain", "targets", "benchmark_targets", "image_size", "source_images",
            "target_images", "val_images", "data_seed", "label_map", "model", "step", "pretrain_loop", "step1_loop",
            "select_every")  # fmt: skip
    flat = config_to_dict(config)
    return _digest({k: flat[k] for k in keys} | {"seed": seed, "version": CACHE_VERSION})


def _pack(start: Start) -> dict[str, torch.Tensor]:
    state = {f"step1.{k}": v for k, v in start.step1.model.state_dict().items()}
    if start.step1.discriminators is not None:
        state |= {f"step1_d.{k}": v for k, v in start.step1.discriminators.state_dict().items()}
    if start.step1.best_model is not None:
        state |= {f"step1_best.{k}": v for k, v in start.step1.best_model.state_dict().items()}
    if start.source is not None:
        state |= {f"source.{k}": v for k, v in start.source.state_dict().items()}
    state["step1_best_step"] = torch.tensor(start.step1.best_step)
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def _unpack(ctx: Context[MuhdiConfig], state: dict[str, torch.Tensor]) -> Start:
    from frugalvision.methods.muhdi.model import make_discriminators

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}

    def model(prefix: str) -> DeepLabV2 | None:
        weights = part(prefix)
        if not weights:
            return None
        segmenter = _segmenter(ctx)
        segmenter.load_state_dict(weights)
        return segmenter.eval()

    step1 = model("step1")
    assert step1 is not None
    d_state = part("step1_d")
    discriminators = None
    if d_state:
        discriminators = make_discriminators(len(SUPER_CLASSES), ctx.config.model.discriminator_width)
        discriminators.load_state_dict(d_state)
    adapted = Adapted(step1, discriminators, model("step1_best"), int(state["step1_best_step"]))
    return Start(model("source"), adapted)


def _train_start(ctx: Context[MuhdiConfig], data: SequenceData) -> Start:
    config = ctx.config
    source_model = None
    if config.source == "streets" or "source-only" in config.arms:
        task = UdaStep(StepSettings(method="source"), data.source.train, None, scratch=lambda: _segmenter(ctx))
        source_model = fit_step(lambda t, lp: ctx.fit(t, lp, name="pretrain"), task, config.pretrain_loop).model
    first = data.targets[0]
    settings = replace(config.step, method="advent")
    width = config.model.discriminator_width
    previous = source_model if config.source == "streets" else None
    task = UdaStep(settings, data.source.train, first.train, previous, lambda: _segmenter(ctx), None, width, first.val)
    loop = replace(config.step1_loop, eval_every=config.select_every)
    return Start(source_model, fit_step(lambda t, lp: ctx.fit(t, lp, name="step1"), task, loop))


def shared_start(ctx: Context[MuhdiConfig], seed: int) -> Start:
    """The seed's shared start, trained once and cached (``<out>/muhdi/cache/start-<hash>-seed<k>.safetensors``)."""
    from frugalvision.engine import load_weights

    def build() -> Start:
        path = ctx.cache_path(f"start-{_start_digest(ctx.config, seed)}-seed{seed}.safetensors")
        if path.is_file():
            return _unpack(ctx, load_weights(path))
        start = _train_start(ctx, load_data(ctx))
        ctx.save_weights(_pack(start), path)
        return start

    return ctx.memo(("start", seed), build)


# ------------------------------------------------------------------------------------------------ units
def _scores(ctx: Context[MuhdiConfig], model: nn.Module, data: SequenceData) -> dict[str, dict[str, float]]:
    batch = ctx.config.loop.eval_batch_size or ctx.config.loop.batch_size
    return evaluate_domains(model, data.tests(), ctx.engine, batch_size=batch)


def _row_metrics(last: list[dict[str, dict[str, float]]], best: list[dict[str, dict[str, float]]], names) -> dict:
    """Row metrics of a run from its per-step scores (last iterate and best-on-validation)."""
    metrics: dict[str, float] = {}
    for suffix, scores in (("", last), ("_best", best)):
        matrix = [[step[t]["miou"] for t in names] for step in scores]
        summary = accuracy_summary(matrix) if len(matrix) > 1 else {"mean_miou": statistics.fmean(matrix[0])}
        metrics |= {f"{k}{suffix}": v for k, v in summary.items() if not math.isnan(v)}
        metrics |= {f"miou_{t}{suffix}": scores[-1][t]["miou"] for t in names}
        metrics[f"miou_source{suffix}"] = scores[-1]["source"]["miou"]
    return metrics | per_class_iou(last[-1])


def per_class_iou(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """``iou_<class>_<domain>`` of one model on every test set (classes absent from a set, NaN, are left out)."""
    return {
        f"{key}_{domain}": value
        for domain, metrics in scores.items()
        for key, value in metrics.items()
        if key.startswith("iou_") and not math.isnan(value)
    }


def _predictions(model: nn.Module, data: SequenceData, count: int) -> dict[str, torch.Tensor]:
    """Class maps of the first ``count`` test images of every target (uint8), for the figure."""
    model = model.cpu().eval()
    out = {}
    with torch.no_grad():
        for target in data.targets:
            images = torch.stack([target.test[i][0] for i in range(count)])
            out[f"pred/{target.name}"] = model(images).argmax(1).to(torch.uint8)
    return out


def _figure_arrays(ctx: Context[MuhdiConfig], unit: Unit, model: nn.Module, data: SequenceData) -> dict:
    count = min(ctx.config.figure_images, *(len(t.test) for t in data.targets))
    if unit.seed != ctx.config.seeds[0] or count == 0:
        return {}
    return _predictions(model, data, count)


def run_step1(ctx: Context[MuhdiConfig], unit: Unit) -> UnitResult:
    """The shared start of a seed; its row is the source-only model (when that arm is asked for)."""
    config, data = ctx.config, load_data(ctx)
    start = shared_start(ctx, unit.seed)
    names = [t.name for t in data.targets]
    step1 = _scores(ctx, start.step1.model, data)
    extras: dict[str, Any] = {"data_note": data.note, "targets": names, "step1": step1}
    extras["step1_best_step"] = start.step1.best_step
    rows, arrays = [], {}
    if "source-only" in config.arms and start.source is not None:
        scores = _scores(ctx, start.source, data)
        metrics = _row_metrics([scores], [scores], names)
        metrics = {k: v for k, v in metrics.items() if not k.endswith("_best")}
        metrics["domain_gap"] = metrics["miou_source"] - max(metrics[f"miou_{t}"] for t in names)
        rows.append({"name": "source-only", "seed": unit.seed, "metrics": metrics})
        extras["source_only"] = scores
        arrays = _figure_arrays(ctx, unit, start.source, data)
        if arrays:
            count = arrays[f"pred/{names[0]}"].shape[0]
            for t in data.targets:
                arrays[f"image/{t.name}"] = torch.stack([t.test[i][0] for i in range(count)])
                arrays[f"truth/{t.name}"] = torch.stack([t.test[i][1] for i in range(count)]).to(torch.uint8)
    return UnitResult(rows, extras, arrays, config.source)


def run_continual(ctx: Context[MuhdiConfig], unit: Unit) -> UnitResult:
    """One continual arm: from the shared step-1 model, adapt to each later target in turn."""
    config, data = ctx.config, load_data(ctx)
    start = shared_start(ctx, unit.seed)
    settings = arm_settings(config.step, unit.name)
    names = [t.name for t in data.targets]
    model, discriminators = start.step1.model, start.step1.discriminators
    last = [_scores(ctx, model, data)]
    best = [_scores(ctx, start.step1.best_model or model, data)]
    steps: list[dict[str, Any]] = []
    for index, target in enumerate(data.targets[1:], start=2):
        d_state = discriminators.state_dict() if discriminators is not None else None
        width = config.model.discriminator_width
        task = UdaStep(settings, data.source.train, target.train, model, None, d_state, width, target.val)
        loop = replace(config.loop, eval_every=config.select_every)
        adapted = fit_step(lambda t, lp, k=index: ctx.fit(t, lp, name=f"step{k}"), task, loop)
        model, discriminators = adapted.model, adapted.discriminators
        last.append(_scores(ctx, model, data))
        best.append(_scores(ctx, adapted.best_model or model, data))
        steps.append({"target": target.name, "best_step": adapted.best_step, "heads": adapted.head_origin,
                      "losses": _loss_means(adapted.history)})  # fmt: skip
    extras = {"last": last, "best": best, "steps": steps, "targets": names}
    metrics = _row_metrics(last, best, names)
    arrays = _figure_arrays(ctx, unit, model, data)
    return UnitResult([{"name": unit.name, "seed": unit.seed, "metrics": metrics}], extras, arrays, config.source)


def _loss_means(history: list[dict[str, float]]) -> dict[str, float]:
    """Mean of every logged loss term over the step."""
    keys = {k for row in history for k in row if k not in ("step", "lr") and "/" not in k}
    return {k: statistics.fmean(row[k] for row in history if k in row) for k in sorted(keys)}


def run_reference(ctx: Context[MuhdiConfig], unit: Unit) -> UnitResult:
    """Joint (ADVENT on all targets at once) or oracle (supervised on labelled targets), from the source model."""
    config, data = ctx.config, load_data(ctx)
    start = shared_start(ctx, unit.seed)
    settings = arm_settings(config.step, unit.name)
    train = ConcatDataset([t.train for t in data.targets])
    val = ConcatDataset([t.val for t in data.targets])
    previous = start.source if start.source is not None else None
    width = config.model.discriminator_width
    task = UdaStep(settings, data.source.train, train, previous, lambda: _segmenter(ctx), None, width, val)
    loop = replace(config.loop, max_steps=config.total_reference_steps, eval_every=config.select_every)
    loop = replace(loop, log_every=max(1, loop.max_steps // 10))
    adapted = fit_step(lambda t, lp: ctx.fit(t, lp, name=unit.name), task, loop)
    names = [t.name for t in data.targets]
    last, best = _scores(ctx, adapted.model, data), _scores(ctx, adapted.best_model or adapted.model, data)
    metrics = _row_metrics([last], [best], names)
    arrays = _figure_arrays(ctx, unit, adapted.model, data)
    extras = {"last": [last], "best": [best], "losses": _loss_means(adapted.history)}
    return UnitResult([{"name": unit.name, "seed": unit.seed, "metrics": metrics}], extras, arrays, config.source)


def run_unit(ctx: Context[MuhdiConfig], unit: Unit) -> UnitResult:
    """Dispatch a unit to the step-1, continual or reference runner."""
    if unit.name == "step1":
        return run_step1(ctx, unit)
    if unit.name in CONTINUAL_ARMS:
        return run_continual(ctx, unit)
    return run_reference(ctx, unit)


def plan_units(config: MuhdiConfig) -> list[Unit]:
    """Per seed: the shared start first, then every arm (source-only is the start unit's row)."""
    return [
        Unit(name, seed) for seed in config.seeds for name in ("step1", *(a for a in config.arms if a != "source-only"))
    ]


# ------------------------------------------------------------------------------------------------ verdict
def domain_gap(rows: list[dict[str, Any]]) -> Precondition:
    """Precondition: the source-only model is better on the source than on every target (a domain gap exists)."""
    gaps = metric_values(rows, "domain_gap", "source-only")
    mean = statistics.fmean(gaps.values()) if gaps else float("nan")
    return Precondition("a domain gap exists (source-only: source mIoU > every target's)", bool(gaps) and mean > 0,
                        f"mean gap {mean:+.3f} over {len(gaps)} seeds" if gaps else "no source-only row")  # fmt: skip


def verdict(config: MuhdiConfig, rows: list[dict[str, Any]]) -> Verdict:
    """MuHDi forgets less than sequential ADVENT (paired over seeds) at equal or better mean mIoU.

    Supported iff the domain-gap precondition holds (when the source-only row ran), MuHDi's forgetting is lower
    (one-sided 95 % bound) and its mean mIoU is not lower by more than ``noninferiority_margin`` (its lower bound
    above -margin); not supported if either comparison is clearly on the wrong side. Last-iterate numbers only.
    """
    margin = config.noninferiority_margin
    comparisons = [
        compare(rows, "forgetting", better="muhdi", reference="advent", higher_is_better=False),
        compare(rows, METRIC, better="muhdi", reference="advent", margin=-margin, equivalence=-margin),
    ]
    preconditions = [domain_gap(rows)] if any(r["name"] == "source-only" for r in rows) else []
    return claim_verdict(comparisons, preconditions, claim="MuHDi forgets less at equal or better mean mIoU")


# ------------------------------------------------------------------------------------------------ figures, notes
PALETTE = (
    torch.tensor(
        [[128, 64, 128], [70, 70, 70], [220, 220, 0], [107, 142, 35], [70, 130, 180], [220, 20, 60], [0, 0, 142]]
    )
    / 255.0
)


def overlay(image: torch.Tensor, labels: torch.Tensor, alpha: float = 0.55) -> torch.Tensor:
    """``(H, W, 3)`` blend of an image ``(3, H, W)`` in [0, 1] with the class colours of ``labels`` (255: unchanged)."""
    rgb = image.permute(1, 2, 0).float()
    valid = labels < len(PALETTE)
    colours = PALETTE[labels.long().clamp(0, len(PALETTE) - 1)]
    return torch.where(valid[..., None], (1 - alpha) * rgb + alpha * colours, rgb).clamp(0, 1)


def prediction_figure(fig: FigureInput[MuhdiConfig]) -> list[str]:
    """Test images of each target: the image, ground truth and each arm's final prediction, as colour overlays."""
    from frugalvision.report import image_grid

    first = fig.config.seeds[0]
    start = next((r.arrays for r in fig.records if r.unit.name == "step1" and r.unit.seed == first and r.arrays), None)
    if not start:
        return []
    arms = {"source-only": start}
    arms |= {r.unit.name: r.arrays for r in fig.records if r.unit.seed == first and r.unit.name != "step1" and r.arrays}
    targets = [k.split("/", 1)[1] for k in start if k.startswith("image/")]
    images, titles = [], []
    for target in targets:
        for i in range(len(start[f"image/{target}"])):
            image = start[f"image/{target}"][i]
            images += [image, overlay(image, start[f"truth/{target}"][i])]
            titles += [f"{target} #{i}", "ground truth"]
            for arm, arrays in arms.items():
                images.append(overlay(image, arrays[f"pred/{target}"][i]))
                titles.append(arm)
    return [image_grid(fig.out_dir / "predictions.png", images, titles, ncols=2 + len(arms)).name]


def matrix_figure(fig: FigureInput[MuhdiConfig]) -> list[str]:
    """The accuracy matrix A[after step i, target j] of every continual arm (mean over seeds) as heat maps."""
    import matplotlib.pyplot as plt

    arms = [a for a in dict.fromkeys(r.unit.name for r in fig.records) if a in CONTINUAL_ARMS]
    if not arms:
        return []
    fig_, axes = plt.subplots(1, len(arms), figsize=(3.2 * len(arms), 3.0), squeeze=False)
    for ax, arm in zip(axes[0], arms):
        extras = fig.extras(arm)
        names = extras[0]["targets"]
        matrix = torch.tensor([[[step[t]["miou"] for t in names] for step in e["last"]] for e in extras]).mean(0)
        ax.imshow(matrix.numpy(), vmin=0, vmax=max(0.01, float(matrix.max())), cmap="viridis")
        for (i, j), value in zip(torch.cartesian_prod(torch.arange(matrix.shape[0]), torch.arange(matrix.shape[1])),
                                 matrix.flatten()):  # fmt: skip
            colour = "k" if float(value) > 0.6 * float(matrix.max()) else "w"
            ax.text(int(j), int(i), f"{float(value):.3f}", ha="center", va="center", color=colour, fontsize=8)
        ax.set_xticks(range(len(names)), names, fontsize=8)
        ax.set_yticks(range(matrix.shape[0]), [f"after {i + 1}" for i in range(matrix.shape[0])], fontsize=8)
        ax.set_title(arm, fontsize=9)
    fig_.suptitle("test mIoU A[step, target] (last iterate, mean over seeds)", fontsize=9)
    fig_.tight_layout()
    path = fig.out_dir / "accuracy_matrix.png"
    fig_.savefig(path, dpi=110)
    plt.close(fig_)
    return [path.name]


def figures(fig: FigureInput[MuhdiConfig]) -> list[str]:
    """Accuracy matrices, forgetting bars and prediction overlays."""
    from frugalvision.report import bar_plot

    names = matrix_figure(fig)
    if "forgetting" in fig.summary:
        path = fig.out_dir / "forgetting.png"
        bar_plot(path, fig.summary, "forgetting", "forgetting (mean over earlier targets, lower is better)")
        names.append(path.name)
    return names + prediction_figure(fig)


def notes(config: MuhdiConfig, records: list[UnitRecord]) -> str:
    """Data, loops, protocol, and whether adaptation itself helped (ADVENT step 1 vs source-only on T1)."""
    starts = [r for r in records if r.unit.name == "step1"]
    note = starts[0].extras.get("data_note", "") if starts else ""
    gains = [
        r.extras["step1"][r.extras["targets"][0]]["miou"] - r.extras["source_only"][r.extras["targets"][0]]["miou"]
        for r in starts
        if "source_only" in r.extras
    ]
    gain = (
        f"ADVENT step 1 vs source-only on T1: {statistics.fmean(gains):+.3f} mIoU (mean over seeds); " if gains else ""
    )
    loops = f"pretrain {config.pretrain_loop.max_steps}, step 1 {config.step1_loop.max_steps}, later steps "
    return (
        f"{note}; {gain}iterations: {loops}{config.loop.max_steps} each (batch {config.loop.batch_size} source + "
        f"{config.loop.batch_size} target); reported: test mIoU of the last iterate (verdict) and of the snapshot "
        f"with the best validation mIoU on each step's own target (*_best, selected every {config.select_every} "
        "steps; the next step always starts from the last iterate); forgetting F_j = max_{j<=i<last} A[i,j] - "
        "A[last,j], averaged over the targets learned before the last step"
    )


def benchmark(out_dir: Path) -> dict[str, Any]:
    """Training-step cost of MuHDi vs sequential ADVENT and inference cost of the exported agnostic model."""
    from frugalvision.methods.muhdi.bench import benchmark as run_benchmark

    return run_benchmark(out_dir)


MAIN = Study(
    claim=CLAIM,
    primary_metric=METRIC,
    run_unit=run_unit,
    verdict=verdict,
    units=plan_units,
    figures=figures,
    notes=notes,
)

EXPERIMENT = Experiment(name=METHOD, config_class=MuhdiConfig, presets=PRESETS, main=MAIN, benchmark=benchmark)
