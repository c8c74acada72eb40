"""LaRa experiment on the harness: LaRa vs a geometric lift, a dense BEV-query attention and a camera-index ablation.

Offline it runs on ToyBEV (procedural six-camera scenes with exact ground truth, rendered once and cached); with
``--dataset nuscenes --data-root <root>`` the same units train on the official nuScenes tables (paper presets, GPUs
through the engine). Every arm x seed is one unit; the robustness study (Plücker on/off, camera dropout, extrinsic
noise) is a study of its own.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset, default_collate

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
    interleaved_timings,
    metric_values,
)
from frugalvision.methods.lara.api import predict_bev
from frugalvision.methods.lara.config import PRESETS, REFERENCE_ARMS, REFERENCE_LINE, LaraConfig
from frugalvision.methods.lara.functional import positive_weight, ranking_metrics
from frugalvision.methods.lara.model import build_model
from frugalvision.methods.lara.robustness import CameraDropout, ExtrinsicNoise
from frugalvision.methods.lara.task import BevSegmentation

if TYPE_CHECKING:
    from frugalvision.engine import FitResult

METHOD = "lara"
CLAIM = (
    "Encoding every image feature with its camera ray and compressing all cameras into a small latent array, read "
    "out by BEV-coordinate queries, segments vehicles in BEV better than a geometric lift and than dense "
    "query-to-all-token attention, and the ray embedding beats a camera-index embedding."
)
STUDY_CLAIM = (
    "The Plücker moment o × d̂ added to LaRa's ray embedding helps (the official README recommends it); reported "
    "alongside: robustness of LaRa and of the geometric lift to a missing camera and to extrinsic calibration noise."
)
#: IoU@0.5 ("all") on the reported split: ToyBEV's test scenes (weights selected on validation), nuScenes' val
METRIC = "iou_all"
#: the row holding the best scene-independent (constant) map's IoU on the reported split (ToyBEV): "learned" means
#: above it. Added after the first extended run (see the README): the earlier fixed floor below sat under the prior.
PRIOR = "prior"
#: fallback "learned" floor where no prior row exists (nuScenes): IoU@0.5 at or below it is the initial plateau
LEARNED_FLOOR = 0.05
CACHE_VERSION = "toybev-v1"


# ------------------------------------------------------------------------------------------------ data
@dataclass(frozen=True)
class BevData:
    """Training and validation sets of a run.

    Attributes:
        train: training samples.
        val: validation samples (weights selection).
        note: one sentence on what was loaded.
        test: test samples (ToyBEV); None where only validation exists (nuScenes: val is reported, as officially).
    """

    train: Dataset
    val: Dataset
    note: str
    test: Dataset | None = None
    prior: dict[str, float] | None = None

    @property
    def report(self) -> Dataset:
        """The split the rows report."""
        return self.test if self.test is not None else self.val


def _scene_cache_name(config: LaraConfig) -> str:
    """Cache file of the rendered scenes, named by a hash of everything they depend on."""
    key = {"world": config_to_dict(config.world), "count": config.train_scenes + config.val_scenes + config.test_scenes}
    key["seed"], key["version"] = config.data_seed, CACHE_VERSION
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return f"toybev-{digest}.safetensors"


def _render_or_load(path: Path, config: LaraConfig) -> dict[str, torch.Tensor]:
    """The stacked sample tensors of every scene, rendered (and written) unless the cache file exists."""
    from frugalvision.engine import load_weights, save_weights
    from frugalvision.methods.lara.world import generate_scenes

    if path.is_file():
        return load_weights(path)
    scenes = generate_scenes(
        config.world, config.train_scenes + config.val_scenes + config.test_scenes, config.data_seed
    )
    stacked = {key: torch.stack([s.sample[key] for s in scenes]) for key in scenes[0].sample}
    save_weights(stacked, path)
    return stacked


def toybev_data(ctx: Context[LaraConfig]) -> BevData:
    """ToyBEV scenes, rendered once (rank 0 first) and cached under ``<out>/lara/cache``."""
    from frugalvision.methods.lara.world import SceneDataset, per_scene_rig

    config = ctx.config
    path = ctx.cache_path(_scene_cache_name(config))
    stacked = ctx.main_first(lambda: _render_or_load(path, config))
    samples = [{key: value[i] for key, value in stacked.items()} for i in range(len(stacked["bev"]))]
    cut_val, cut_test = config.train_scenes, config.train_scenes + config.val_scenes
    train, val = SceneDataset(samples[:cut_val]), SceneDataset(samples[cut_val:cut_test])
    test = SceneDataset(samples[cut_test:]) if config.test_scenes else None
    positives = stacked["bev"][: config.train_scenes].mean().item()
    rig = "its own rig and calibration error per scene" if per_scene_rig(config.world) else "one exact rig"
    note = (
        f"ToyBEV {len(train)} train / {len(val)} val / {config.test_scenes} test scenes (data seed "
        f"{config.data_seed}, {rig}), {positives:.1%} vehicle cells"
    )
    reported = stacked["bev"][cut_test:] if config.test_scenes else stacked["bev"][cut_val:cut_test]
    return BevData(train, val, note, test, prior=best_constant_map(reported))


def best_constant_map(maps: torch.Tensor) -> dict[str, float]:
    """IoU and AP of the best scene-independent BEV map on a set of maps (an oracle for that set).

    Any constant binary map M scores ``TP / (|M| + P - TP)`` over the set (P: positive cells), so for each size the
    cells with the most vehicles on the set are best: thresholding the set's own per-cell vehicle frequency at its
    best threshold gives the highest IoU any scene-independent prediction can reach. A model whose IoU@0.5 is above
    it uses the scene; at or below it, it may just predict where vehicles usually are.

    Args:
        maps: (scenes, 1, rows, cols) or (scenes, rows, cols) binary vehicle maps.

    Returns:
        ``{"iou_all": best IoU, "ap": AP of the frequency map, "iou_best": the same IoU}``.
    """
    maps = maps.reshape(maps.shape[0], -1).float()
    frequency = maps.mean(0, keepdim=True).expand_as(maps)
    ranked = ranking_metrics(frequency, maps)
    return {"iou_all": ranked["iou_best"], "ap": ranked["ap"], "iou_best": ranked["iou_best"]}


def nuscenes_data(config: LaraConfig) -> BevData:
    """The official nuScenes train / val keyframes through our JSON-table reader or the devkit."""
    from frugalvision.methods.lara.nuscenes import DevkitReader, ImageTransform, NuScenesBEV, NuScenesTables

    root = config.data_root or "."
    transform = ImageTransform(config.image_scale, 0, config.image_crop_top, config.image_height, config.image_width)
    kwargs: dict[str, Any] = {"version": config.nuscenes_version, "grid": config.grid, "transform": transform}
    if config.nuscenes_backend == "json":
        kwargs["tables"] = NuScenesTables(root, config.nuscenes_version)
    else:
        kwargs.update(tables=DevkitReader(root, config.nuscenes_version), backend="devkit")
    train, val = NuScenesBEV(root, split="train", **kwargs), NuScenesBEV(root, split="val", **kwargs)
    note = f"nuScenes {config.nuscenes_version}: {len(train)} train / {len(val)} val keyframes, "
    return BevData(train, val, note + f"{train.positive_fraction():.1%} vehicle cells in the first training keyframes")


def load_data(ctx: Context[LaraConfig]) -> BevData:
    """The run's data (built once per process)."""
    return ctx.memo("data", lambda: nuscenes_data(ctx.config) if ctx.config.source == "nuscenes" else toybev_data(ctx))


# ------------------------------------------------------------------------------------------------ units
@torch.no_grad()
def latency_ms(model: torch.nn.Module, sample: dict[str, torch.Tensor], runs: int) -> float:
    """Median forward latency (ms) of one sample in eval mode (the shared timer, three warm-up passes)."""
    model.eval()
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in default_collate([sample]).items()}
    timings = interleaved_timings({"forward": lambda: model(batch)}, rounds=runs, warmup=3, device=device)
    return timings["forward"].median_ms


def _curve(result: FitResult) -> list[list[float]]:
    """``[step, val IoU(all)]`` of every evaluation during training (the final one included)."""
    points = {int(h["step"]): float(h["val/iou_all"]) for h in result.history if "val/iou_all" in h}
    return [[step, value] for step, value in sorted(points.items())]


def pos_weight_of(config: LaraConfig, data: BevData) -> float:
    """The BCE positive weight: the configured one, or negatives / positives of the training maps (0)."""
    if config.pos_weight > 0:
        return config.pos_weight
    return positive_weight(torch.stack([data.train[i]["bev"] for i in range(len(data.train))]))  # type: ignore[arg-type]


def train_arm(ctx: Context[LaraConfig], unit: Unit) -> tuple[FitResult, BevSegmentation, BevData, UnitResult]:
    """Train one arm for one seed (weights selected on validation), score the reported split; return all parts."""
    config, data = ctx.config, load_data(ctx)
    grid, model_config = config.grid, config.model_config
    weight = pos_weight_of(config, data)
    task = BevSegmentation(
        lambda: build_model(unit.name, model_config, grid),
        data.train,
        {"val": data.val},
        grid,
        weight,
        config.radial_bins,
        select_key=("val", "iou_all") if config.select_best else None,
    )
    result = ctx.fit(task, config.loop)
    model, val_metrics = result.model, result.metrics["val"]
    if task.best_weights:
        model.load_state_dict(task.best_weights)
        val_metrics = ctx.engine.evaluate(task, model, {"val": data.val}, batch_size=_eval_batch(config))["val"]
    reported = val_metrics
    if data.test is not None:
        reported = ctx.engine.evaluate(task, model, {"test": data.test}, batch_size=_eval_batch(config))["test"]
    metrics = dict(reported) | {f"val_{k}": v for k, v in val_metrics.items()}
    metrics["selected_step"] = float(task.best_step if task.best_weights else result.steps)
    metrics["pos_weight"] = weight
    metrics["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
    metrics["latency_ms"] = latency_ms(model, data.val[0], config.latency_runs)
    metrics["train_s"] = result.wall_s
    arrays: dict[str, torch.Tensor] = {}
    shown = min(config.figure_scenes, len(data.report))  # type: ignore[arg-type]
    if unit.seed == config.seeds[0] and shown:
        batch = default_collate([data.report[i] for i in range(shown)])
        arrays = {"predictions": predict_bev(model, batch).cpu(), "truth": batch["bev"][:, 0].float()}
    unit_result = UnitResult.one_row(
        unit, metrics, dataset=config.source, arrays=arrays, val_curve=_curve(result), data_note=data.note
    )
    return result, task, data, unit_result


def _eval_batch(config: LaraConfig) -> int:
    return config.loop.eval_batch_size or config.loop.batch_size


def run_unit(ctx: Context[LaraConfig], unit: Unit) -> UnitResult:
    """Main study: train one arm for one seed, score it on the validation scenes."""
    return train_arm(ctx, unit)[3]


def run_robustness_unit(ctx: Context[LaraConfig], unit: Unit) -> UnitResult:
    """Robustness study: train on clean scenes, then score with each camera removed and with wrong extrinsics."""
    config = ctx.config
    result, task, data, unit_result = train_arm(ctx, unit)
    cameras = len(config.world.camera_yaws_deg)
    sets: dict[str, Dataset] = {f"drop{c}": CameraDropout(data.val, c) for c in range(cameras)}
    sets["noise"] = ExtrinsicNoise(data.val, config.noise_yaw_deg, config.noise_trans_m, seed=config.data_seed)
    scores = ctx.engine.evaluate(task, result.model, sets, batch_size=_eval_batch(config))
    drops = [scores[f"drop{c}"]["iou_all"] for c in range(cameras)]
    metrics = unit_result.rows[0]["metrics"]
    metrics["val_iou_all_drop_mean"] = statistics.fmean(drops)
    metrics["val_iou_all_drop_worst"] = min(drops)
    metrics["val_iou_all_noise"] = scores["noise"]["iou_all"]
    return unit_result


# ------------------------------------------------------------------------------------------------ verdicts
def learned(rows: list[dict[str, Any]], names: tuple[str, ...]) -> Precondition:
    """Precondition: one of ``names`` learned more than where vehicles usually are.

    With a ``prior`` row (ToyBEV: :func:`best_constant_map` of the reported split, one row per seed) an arm has
    learned when its IoU@0.5 beats that row (one-sided 95 % bound, paired over seeds). Without one (nuScenes) the
    fallback is the fixed floor ``LEARNED_FLOOR``, which does not exclude a scene-independent prediction.
    """
    if metric_values(rows, METRIC, PRIOR):
        present = [n for n in names if metric_values(rows, METRIC, n)]
        tests = [compare(rows, METRIC, better=n, reference=PRIOR) for n in present]
        holds = any(t.outcome == "better" for t in tests)
        shown = " | ".join(t.describe() for t in tests) or "no rows"
        words = f"{' or '.join(names)} learned beyond the best scene-independent map ({METRIC} > {PRIOR}, paired)"
        return Precondition(words, holds, shown)
    means = {n: statistics.fmean(v.values()) for n in names if (v := metric_values(rows, METRIC, n))}
    best = max(means.values(), default=0.0)
    shown = ", ".join(f"{n} {m:.3f}" for n, m in means.items()) or "no rows"
    return Precondition(
        f"{' or '.join(names)} learned (mean {METRIC} >= {LEARNED_FLOOR:g})", best >= LEARNED_FLOOR, shown
    )


def prior_rows(ctx: Context[LaraConfig], records: list[UnitRecord]) -> list[dict[str, Any]]:
    """One ``prior`` row per seed: the best scene-independent map on the reported split (ToyBEV only)."""
    if ctx.config.source != "toybev":
        return []
    prior = load_data(ctx).prior
    if prior is None:
        return []
    return [{"name": PRIOR, "seed": seed, "metrics": dict(prior)} for seed in ctx.config.seeds]


def verdict(config: LaraConfig, rows: list[dict[str, Any]]) -> Verdict:
    """LaRa beats the dense BEV-query attention and its camera-index ablation at equal steps (IoU@0.5, paired).

    Every comparison that ran must be "better" for "supported" (an intersection of one-sided 5 % tests: no
    multiplicity correction is needed); one "worse" refutes. Precondition: LaRa learned beyond the best
    scene-independent map (:func:`learned`; corrected after the first extended run, see the README). The
    geometric lift is a reference line (:func:`lift_line`), not voted: the paper claims to beat earlier transformer
    methods, not geometry.
    """
    names = {row["name"] for row in rows}
    comparisons = [compare(rows, METRIC, better="lara", reference=arm) for arm in REFERENCE_ARMS if arm in names]
    if not comparisons:  # only the lift ran next to LaRa: judge against it
        comparisons = [compare(rows, METRIC, better="lara", reference=REFERENCE_LINE)]
    claim = "LaRa beats the dense attention and the camera-index embedding at equal steps"
    return claim_verdict(comparisons, [learned(rows, ("lara",))], claim=claim)


def lift_line(rows: list[dict[str, Any]]) -> str:
    """LaRa against the geometric lift (reported, not voted), on IoU@0.5 and AP."""
    if not metric_values(rows, METRIC, REFERENCE_LINE) or not metric_values(rows, METRIC, "lara"):
        return "the lift reference line did not run"
    return " | ".join(compare(rows, m, better="lara", reference=REFERENCE_LINE).describe() for m in (METRIC, "ap"))


def robustness_verdict(config: LaraConfig, rows: list[dict[str, Any]]) -> Verdict:
    """The Plücker moment helps: lara > lara-noplucker on clean val IoU(all); one of them must have learned."""
    comparison = compare(rows, METRIC, better="lara", reference="lara-noplucker")
    precondition = learned(rows, ("lara", "lara-noplucker"))
    return claim_verdict([comparison], [precondition], claim="the Plücker moment helps")


# ------------------------------------------------------------------------------------------------ figures, notes
def prediction_figure(fig: FigureInput[LaraConfig]) -> list[str]:
    """Ground truth and each arm's probabilities on the first validation scenes (first seed)."""
    from frugalvision.report import image_grid

    first = fig.config.seeds[0]
    shown = {r.unit.name: r.arrays for r in fig.records if r.unit.seed == first and "predictions" in r.arrays}
    if not shown:
        return []
    truth = next(iter(shown.values()))["truth"]
    images, titles = [], []
    for i in range(len(truth)):
        images.append(truth[i].numpy())
        titles.append(f"scene {i}: truth")
        for arm, arrays in shown.items():
            images.append(arrays["predictions"][i].numpy())
            titles.append(arm)
    return [image_grid(fig.out_dir / "bev_predictions.png", images, titles, ncols=1 + len(shown)).name]


def curve_figure(fig: FigureInput[LaraConfig]) -> list[str]:
    """Val IoU(all) during training per arm (mean ± std over seeds), when evaluated more than once."""
    from frugalvision.report import line_plot

    series, steps = {}, []
    for arm in dict.fromkeys(r.unit.name for r in fig.records):
        curves = [e["val_curve"] for e in fig.extras(arm)]
        if curves and len(curves[0]) > 1 and all(len(c) == len(curves[0]) for c in curves):
            values = torch.tensor(curves, dtype=torch.float64)
            steps = values[0, :, 0].tolist()
            series[arm] = (values[..., 1].mean(0).tolist(), values[..., 1].std(0, unbiased=False).tolist())
    if not series:
        return []
    return [line_plot(fig.out_dir / "val_iou_curve.png", steps, series, "step", "val IoU (all)", "LaRa arms").name]


def figures(fig: FigureInput[LaraConfig]) -> list[str]:
    """The prediction grid and the learning curves."""
    return prediction_figure(fig) + curve_figure(fig)


def notes(config: LaraConfig, records: list[UnitRecord]) -> str:
    """Data, grid, loop, protocol, and the lift reference line."""
    grid, loop = config.grid, config.loop
    rows = [row for record in records for row in record.rows]
    selection = "the best validation IoU@0.5 over the evaluations" if config.select_best else "the last weights"
    return (
        f"{records[0].extras.get('data_note', '')}; grid {grid.shape[0]}x{grid.shape[1]} at {grid.res} m (rows = "
        f"forward x); {loop.max_steps} steps, batch {loop.batch_size} per process, lr {loop.lr:g} ({loop.schedule}), "
        f"evaluation every {loop.eval_every} steps, weights kept: {selection}; pos_weight "
        f"{'from the class ratio' if config.pos_weight == 0 else config.pos_weight}. Metrics without prefix are on "
        f"the {config.report_split} split (val_* on validation): iou_all = IoU@0.5 accumulated over the set, ap = "
        "average precision over cells, iou_best = IoU at the best threshold of that set (optimistic), iou_vis2 "
        "ignores cells of vehicles < 40 % visible; latency: median forward ms, batch 1. Reference line (not voted): "
        f"{lift_line(rows)}"
    )


def robustness_notes(config: LaraConfig, records: list[UnitRecord]) -> str:
    """The perturbations, on top of the main notes."""
    return (
        f"{notes(config, records)}; camera dropout: one camera (image and calibration) removed at evaluation, mean / "
        f"worst over the cameras; extrinsic noise: per-camera yaw error N(0, {config.noise_yaw_deg} deg) and "
        f"translation error N(0, {config.noise_trans_m} m) in the calibration given to the model, images unchanged. "
        "Robustness numbers are reported, not part of the verdict."
    )


def benchmark(out_dir: Path) -> dict[str, Any]:
    """View-transform latency and peak memory vs tokens and BEV queries (``lara_benchmark.json``)."""
    from frugalvision.methods.lara.benchmark import benchmark as view_transform_benchmark

    return view_transform_benchmark(out_dir)


MAIN = Study(
    claim=CLAIM,
    primary_metric=METRIC,
    run_unit=run_unit,
    verdict=verdict,
    arms=lambda config: config.arms,
    finish=prior_rows,
    figures=figures,
    notes=notes,
)

ROBUSTNESS = Study(
    claim=STUDY_CLAIM,
    primary_metric=METRIC,
    run_unit=run_robustness_unit,
    verdict=robustness_verdict,
    arms=lambda config: config.study_arms,
    finish=prior_rows,
    figures=figures,
    notes=robustness_notes,
)

EXPERIMENT = Experiment(
    name=METHOD,
    config_class=LaraConfig,
    presets=PRESETS,
    main=MAIN,
    studies={"robustness": ROBUSTNESS},
    benchmark=benchmark,
)
