"""T-Food experiment on the harness: an H-T-like fixed-margin dual encoder, then one component added per arm.

Arms: fixed margin -> + dynamic (incremental) margin -> + semantic triplets -> + HTD and MMR/ITM (full T-Food); the
"tfood" unit also returns the row "tfood_rerank" (its top-k re-scored by the ITM head). Data: MiniRecipe1M, generated
once into ``<out>/tfood/cache/`` (or Recipe1M under ``data_root``). The study ``ablations`` trains full T-Food and
T-Food minus one component (dynamic margin, semantic triplets, MMR/ITM decoders).
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from frugalvision.engine.config import FabricConfig, LoopConfig
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
    claim_verdict,
    compare,
    interleaved_timings,
    metric_values,
)
from frugalvision.harness.stats import ALPHA
from frugalvision.harness.timing import Timing, benchmark_result, ratio_entry
from frugalvision.methods.tfood.config import (
    ABLATION_ARMS,
    ARMS,
    DEFAULT_ARMS,
    PAPER_ITM_WEIGHT,
    TFoodConfig,
    arm_losses,
    build_model,
)
from frugalvision.methods.tfood.data import RecipeImageDataset, load_recipe1m, write_mini_recipe1m
from frugalvision.methods.tfood.model import ImageEncoderConfig, RecipeOutput, TFoodModel
from frugalvision.methods.tfood.pretrain import ContrastivePretrainer, PretrainTask
from frugalvision.methods.tfood.task import TFoodTask, embed_dataset, reranked_retrieval
from frugalvision.methods.tfood.text import RecipeTokens, WordPieceTokenizer, WordTokenizer
from frugalvision.metrics import bidirectional_retrieval

__all__ = [
    "ABLATION_ARMS",
    "ARMS",
    "DEFAULT_ARMS",
    "EXPERIMENT",
    "METRIC",
    "TFoodConfig",
    "ablation_verdict",
    "chosen_itm_weight",
    "itm_verdict",
]

METHOD = "tfood"
CLAIM = (
    "Training-only cross-attention decoders with an image-text matching loss, hierarchical transformer decoders "
    "and dynamic-margin (incremental) plus semantic triplet losses improve the dual encoder's image-recipe "
    "retrieval R@1 over an H-T-style fixed-margin triplet baseline (Recipe1M: +8.1 R@1 on 1k, +10.9 on 10k)."
)
ABLATION_CLAIM = "Each component of T-Food (dynamic margin, semantic triplets, MMR/ITM decoders) adds test R@1."
ITM_CLAIM = (
    "Choosing the ITM weight on validation (a deviation the issue allows): another weight of the grid gives full "
    "T-Food a higher validation R@1 than the paper's 1.0. The weight with the best mean validation R@1 is the one "
    "the extended preset uses; the test split is not touched."
)
#: validation R@1 of the selected weights, first protocol, mean of both directions (the ITM study's metric)
VAL_METRIC = "val_r1"
#: test R@1 of the first protocol, mean of image->recipe and recipe->image (the primary metric)
METRIC = "test_r1"
#: issue 21's goal for the whole 10k x 10k retrieval on 2 cores (seconds) and the benchmark's embedding chunk
BENCH_GOAL_S = 10.0
BENCH_CHUNK = 1000


# ------------------------------------------------------------------------------------------------ presets
def smoke() -> TFoodConfig:
    """Seconds: 240 recipes, 10 pretraining steps, 30 steps per arm, 1 seed."""
    return TFoodConfig(
        preset="smoke",
        threads=1,
        seeds=(0,),
        num_recipes=240,
        protocols=(("bag20", 20, 2), ("bag30", 30, 1)),
        pretrain_steps=10,
        pretrain_batch=16,
        freeze_image_epochs=1,
        image_lr_scale=0.1,
        loop=LoopConfig(
            max_steps=30,
            batch_size=12,
            lr=1e-3,
            weight_decay=0.0,
            warmup_steps=3,
            clip_grad_norm=8.0,
            log_every=5,
            eval_every=10,
        ),
    )


def standard() -> TFoodConfig:
    """About 2 minutes on 2 CPU cores: the dual-encoder baseline vs full T-Food (+ ITM re-ranking), 120 steps, 3 seeds.

    1,600 recipes, the tiny ViT with 4-pixel patches from random init (the pretrained CLIP stand-in is in
    ``extended``), validation every 40 steps selects the weights.
    """
    config = TFoodConfig(
        preset="standard", threads=2, arms=("ht_fixed", "tfood", "tfood_rerank"), image=ImageEncoderConfig(patch_size=4)
    )
    config.loop = replace(config.loop, max_steps=120, warmup_steps=12, eval_every=40)
    return config


def extended() -> TFoodConfig:
    """The evidence run (<= 10 minutes on 2 CPU cores): baseline vs T-Food on a pretrained encoder, 1,000 test recipes.

    8,000 recipes (6,000 / 1,000 / 1,000), the ViT pretrained once by InfoNCE against ingredient words (800 steps of
    64, cached, shared), then per arm 600 steps of 20 with the encoder frozen for the first epoch (300 steps) and at
    0.1 x the learning rate after (as the paper with CLIP); test: 10 bags of 100, mean ± std over bags; 3 seeds.
    ITM weight 0.1, chosen on validation by the ``itm_weight`` study's pre-committed rule (a deviation: the paper
    uses 1.0). ``--study ablations`` runs the one-removed arms on the same preset.
    """
    config = TFoodConfig(
        preset="extended",
        threads=2,
        arms=("ht_fixed", "tfood"),
        num_recipes=8000,
        image=ImageEncoderConfig(patch_size=4),
        pretrain_steps=800,
        freeze_image_epochs=1,
        image_lr_scale=0.1,
        protocols=(("bag100", 100, 10),),
        itm_weight=0.1,  # the itm_weight study: best mean validation R@1 (0.1: 0.740, 0.3: 0.733, 1.0: 0.673)
    )
    config.loop = replace(config.loop, max_steps=600, warmup_steps=30, eval_every=150)
    return config


def paper() -> TFoodConfig:
    """Recipe1M at paper scale (GPU): global batch 100, Adam 1e-5, 120 epochs, sizes of the released configs.

    The image backbone is the offline EfficientNet-Lite0 ImageNet model (no CLIP weights offline), frozen for 20
    epochs. The released configs pair each backbone with its own margin and learning rate: an ImageNet backbone
    starts the incremental margin at 0.05 and trains at the full 1e-5 (this preset), CLIP starts at 0.18 and trains
    at 0.1 x (1e-6): with CLIP weights pass ``--margin-start 0.18 --image-lr-scale 0.1``. Pass ``--data-root`` with
    ``recipe1m/`` in it.
    """
    steps_per_epoch = 238_407 // 100
    return TFoodConfig(
        preset="paper",
        dataset="recipe1m",
        seeds=(1338,),
        image=ImageEncoderConfig(backbone="efficientnet_lite0", img_size=224, pretrained=True),
        crop_ratio=224 / 256,
        recipe_width=512,
        recipe_heads=4,
        recipe_layers=2,
        htd_layers=2,
        recipe_ffn=2048,
        embed_dim=1024,
        mmr_width=1024,
        mmr_heads=4,
        mmr_image_layers=1,
        mmr_fusion_layers=4,
        mmr_ffn=2048,
        margin_start=0.05,
        margin_delta=0.005,
        freeze_image_epochs=20,
        image_lr_scale=1.0,
        protocols=(("1k", 1000, 10), ("10k", 10000, 5)),
        fabric=FabricConfig(precision="bf16-mixed"),
        loop=LoopConfig(
            max_steps=120 * steps_per_epoch,
            batch_size=100,
            lr=1e-5,
            weight_decay=0.0,
            schedule="constant",
            clip_grad_norm=8.0,
            ckpt_every=steps_per_epoch,
            eval_every=steps_per_epoch,
            log_every=100,
            num_workers=8,
        ),
    )


PRESETS = {"smoke": smoke, "standard": standard, "extended": extended, "paper": paper}


# ------------------------------------------------------------------------------------------------ data
@dataclass(frozen=True)
class RecipeData:
    """The train/val/test pairs, the tokenizer and the data folder of a run."""

    sets: dict[str, RecipeImageDataset]
    tokenizer: WordTokenizer | WordPieceTokenizer
    root: Path

    @property
    def longest_title(self) -> int:
        """Tokens of the longest title over every split (titles are kept whole, so the model needs that many)."""
        return max(d.longest_title for d in self.sets.values())


def mini_recipe1m_root(ctx: Context[TFoodConfig]) -> Path:
    """Generate MiniRecipe1M once into the method's cache (rank 0 first), named by a hash of its settings."""
    config = ctx.config
    key = f"{config.num_recipes}-{config.background_fraction}-{config.max_images}-{config.image_size}-0"
    root = ctx.cache_path(f"mini-recipe1m-{hashlib.sha256(key.encode()).hexdigest()[:12]}")

    def build() -> Path:
        if not (root / "recipe1m" / "layer1.json").is_file():
            write_mini_recipe1m(
                root,
                config.num_recipes,
                background_fraction=config.background_fraction,
                max_images=config.max_images,
                image_size=config.image_size,
                seed=0,
            )
        return root

    return ctx.main_first(build)


def load_data(config: TFoodConfig, root: Path) -> RecipeData:
    """Read the recipes under ``root``, fit the tokenizer on train, build the train/val/test pairs."""
    recipes, _ = load_recipe1m(root)
    parts = {p: [r for r in recipes if r.partition == p] for p in ("train", "val", "test")}
    if config.text == "minilm":
        tokenizer: WordTokenizer | WordPieceTokenizer = WordPieceTokenizer()
    else:
        tokenizer = WordTokenizer.fit(t for r in parts["train"] for t in (r.title, *r.ingredients, *r.instructions))
    size, crop, preload = config.image.img_size, config.crop_ratio, config.dataset == "mini-recipe1m"
    sets = {
        p: RecipeImageDataset(parts[p], tokenizer, size, train=p == "train", preload=preload, crop_ratio=crop)
        for p in ("train", "val", "test")
    }
    return RecipeData(sets, tokenizer, root)


def _data(ctx: Context[TFoodConfig]) -> RecipeData:
    config = ctx.config
    root = Path(config.data_root) if config.data_root is not None else mini_recipe1m_root(ctx)
    return load_data(config, root)


# ------------------------------------------------------------------------------------------------ units
def per_process_loop(loop: LoopConfig, world_size: int) -> LoopConfig:
    """The loop one process runs: ``loop.batch_size`` is the global batch, split evenly over the processes."""
    if loop.batch_size % world_size:
        raise ConfigError(
            f"loop.batch_size={loop.batch_size} (the global batch) is not divisible by {world_size} processes; "
            "pass a multiple of the process count"
        )
    return replace(loop, batch_size=loop.batch_size // world_size)


def pretrained_image_encoder(ctx: Context[TFoodConfig], data: RecipeData) -> dict[str, torch.Tensor] | None:
    """The contrastively pretrained image encoder's weights (None when ``pretrain_steps`` is 0).

    Trained once (through ``ctx.fit``, seed 0, inside the first unit that needs it) and cached under
    ``<out>/tfood/cache`` by a hash of everything it depends on, so every arm and seed starts from the same encoder.
    """
    from frugalvision.engine import load_weights

    config = ctx.config
    if config.pretrain_steps <= 0:
        return None
    key = {
        "image": asdict(config.image),
        "steps": config.pretrain_steps,
        "batch": config.pretrain_batch,
        "lr": config.pretrain_lr,
        "temperature": config.pretrain_temperature,
        "dim": config.embed_dim,
        "data": str(data.root),
        "vocabulary": len(data.tokenizer),
        "train": len(data.sets["train"]),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    path = ctx.cache_path(f"image-encoder-{digest}.safetensors")

    def build() -> dict[str, torch.Tensor]:
        if path.is_file():
            return load_weights(path)
        steps, world = config.pretrain_steps, ctx.engine.world_size
        loop = LoopConfig(
            max_steps=steps,
            batch_size=per_process_loop(replace(config.loop, batch_size=config.pretrain_batch), world).batch_size,
            lr=config.pretrain_lr,
            weight_decay=0.05,
            warmup_steps=max(1, steps // 20),
            schedule="cosine",
            clip_grad_norm=1.0,
            log_every=max(1, steps // 10),
        )
        vocab = len(data.tokenizer)
        task = PretrainTask(
            lambda: ContrastivePretrainer(config.image, vocab, config.embed_dim),
            data.sets["train"],
            config.pretrain_temperature,
        )
        result = ctx.fit(task, loop, name="pretrain", seed=0)
        state = {k: v.detach().cpu() for k, v in result.model.image_encoder.state_dict().items()}
        ctx.save_weights(state, path)
        return state

    return ctx.memo(("pretrained", digest), build)


def with_image_weights(model: TFoodModel, weights: dict[str, torch.Tensor] | None) -> TFoodModel:
    """Load the pretrained image encoder into an arm's model (unchanged when ``weights`` is None)."""
    if weights is not None:
        model.image_encoder.load_state_dict(weights)
    return model


def train_arm(
    ctx: Context[TFoodConfig], arm: str, data: RecipeData, itm_weight: float | None = None, test: bool = True
) -> tuple[dict[str, float], TFoodModel, list]:
    """Train one arm through ``ctx.fit``; return (row metrics of the selected weights, that model, the history).

    The selected weights are those with the best validation R@1 (``select_best``; the task keeps them across
    checkpoints and resumes), else the last ones; their test metrics come from one evaluation after training
    (``test=False``: validation metrics only). ``itm_weight`` overrides the config's ITM weight.
    """
    config, sets = ctx.config, data.sets
    loop = per_process_loop(config.loop, ctx.engine.world_size)
    steps_per_epoch = max(1, len(sets["train"]) // config.loop.batch_size)
    arm_config = config if itm_weight is None else replace(config, itm_weight=itm_weight)
    loss, htd, mmr = arm_losses(arm, arm_config, steps_per_epoch)
    primary = config.protocols[0][0]
    weights = pretrained_image_encoder(ctx, data)
    task = TFoodTask(
        lambda: with_image_weights(
            build_model(config, len(data.tokenizer), htd, mmr, max_title=max(32, data.longest_title)), weights
        ),
        sets["train"],
        {"val": sets["val"]},
        loss,
        steps_per_epoch=steps_per_epoch,
        freeze_image_steps=config.freeze_image_epochs * steps_per_epoch,
        image_lr_scale=config.image_lr_scale,
        batch_size=loop.batch_size,
        background_fraction=config.background_fraction,
        protocols=config.protocols,
        eval_seed=config.eval_seed,
        select_key=("val", f"{primary}/R@1") if config.select_best else None,
    )
    result = ctx.fit(task, loop)
    model = result.model
    if config.select_best and task.best_weights:
        model.load_state_dict(task.best_weights)
        val, selected_step = task.best_metrics["val"], task.best_step
    else:
        val, selected_step = result.metrics["val"], result.steps
    if test:
        scores = ctx.engine.evaluate(task, model, {"test": sets["test"]})["test"]
        metrics = {f"test/{k}": v for k, v in scores.items()}
        metrics[METRIC] = scores[f"{primary}/R@1"]
    else:
        metrics = {f"val/{k}": v for k, v in val.items()}
    metrics[VAL_METRIC] = val[f"{primary}/R@1"]
    metrics["selected_step"] = float(selected_step)
    metrics["train_s"] = result.wall_s
    metrics["params_test_m"] = _count(model, exclude_mmr=True) / 1e6
    if test:
        metrics["test_pairs"] = float(len(sets["test"]))
    return metrics, model, result.history


def rerank_metrics(config: TFoodConfig, model: TFoodModel, emb: dict[str, torch.Tensor], n: int) -> dict[str, float]:
    """Test metrics of ITM re-ranking of the dual encoder's top ``rerank_k`` (and its cost per query)."""
    metrics = {}
    tic = time.perf_counter()
    for name, bag, bags in config.protocols:
        for key, value in reranked_retrieval(model, emb, bag, bags, config.rerank_k, config.eval_seed).items():
            metrics[f"test/{name}/{key}"] = value
    queries = sum(2 * min(b, n) * k for _, b, k in config.protocols)
    metrics["rerank_ms_per_query"] = 1e3 * (time.perf_counter() - tic) / queries
    metrics[METRIC] = metrics[f"test/{config.protocols[0][0]}/R@1"]
    metrics["test_pairs"] = float(n)
    return metrics


def run_unit(ctx: Context[TFoodConfig], unit: Unit, rerank: bool = True) -> UnitResult:
    """Train one arm for one seed and evaluate its dual encoder; the "tfood" unit adds the re-ranking row."""
    data = ctx.memo("data", lambda: _data(ctx))
    metrics, model, history = train_arm(ctx, unit.name, data)
    test = data.sets["test"]
    tic = time.perf_counter()
    emb = embed_dataset(model, test)
    metrics["embed_ms_per_pair"] = 1e3 * (time.perf_counter() - tic) / len(test)
    rows = [{"name": unit.name, "seed": unit.seed, "metrics": metrics}]
    if rerank and unit.name == "tfood" and "tfood_rerank" in ctx.config.arms:
        rows.append(
            {"name": "tfood_rerank", "seed": unit.seed, "metrics": rerank_metrics(ctx.config, model, emb, len(test))}
        )
    curve = [[h["step"], h["loss_tri"]] for h in history if "loss_tri" in h]
    sizes = [len(data.sets[p]) for p in ("train", "val", "test")]
    extras = {"loss_curve": curve, "sizes": sizes, "vocabulary": len(data.tokenizer), "root": str(data.root)}
    return UnitResult(rows, extras, dataset=ctx.config.dataset)


def itm_name(weight: float) -> str:
    """Row name of full T-Food trained with ITM weight ``weight`` (the ITM study)."""
    return f"tfood_itm{weight:g}"


def itm_units(config: TFoodConfig) -> list[Unit]:
    """The ITM study: full T-Food once per weight of ``itm_grid`` and seed."""
    return [Unit(itm_name(w), seed, {"itm_weight": w}) for seed in config.seeds for w in config.itm_grid]


def run_itm_unit(ctx: Context[TFoodConfig], unit: Unit) -> UnitResult:
    """Train full T-Food with the unit's ITM weight; report validation metrics only (the test split is not used)."""
    data = ctx.memo("data", lambda: _data(ctx))
    metrics, _, history = train_arm(ctx, "tfood", data, itm_weight=float(unit.params["itm_weight"]), test=False)
    curve = [[h["step"], h["loss_tri"]] for h in history if "loss_tri" in h]
    sizes = [len(data.sets[p]) for p in ("train", "val", "test")]
    extras = {"loss_curve": curve, "sizes": sizes, "vocabulary": len(data.tokenizer), "root": str(data.root)}
    return UnitResult([{"name": unit.name, "seed": unit.seed, "metrics": metrics}], extras, dataset=ctx.config.dataset)


def chosen_itm_weight(config: TFoodConfig, rows: list[dict[str, Any]]) -> float:
    """The grid weight with the best mean validation R@1 over seeds (ties: the paper's 1.0, then the smaller)."""
    means = {}
    for weight in config.itm_grid:
        values = list(metric_values(rows, VAL_METRIC, itm_name(weight)).values())
        means[weight] = sum(values) / len(values) if values else float("-inf")
    return max(means, key=lambda w: (round(means[w], 9), w == PAPER_ITM_WEIGHT, -w))


def itm_verdict(config: TFoodConfig, rows: list[dict[str, Any]]) -> Verdict:
    """The best other weight (picked by its mean among k = |grid| - 1) beats the paper's 1.0 at alpha / k."""
    others = [w for w in config.itm_grid if w != PAPER_ITM_WEIGHT]
    means = {w: list(metric_values(rows, VAL_METRIC, itm_name(w)).values()) for w in others}
    best = max(others, key=lambda w: (sum(means[w]) / len(means[w])) if means[w] else float("-inf"))
    if not metric_values(rows, VAL_METRIC, itm_name(best)) or not metric_values(
        rows, VAL_METRIC, itm_name(PAPER_ITM_WEIGHT)
    ):
        comparison = Comparison(VAL_METRIC, itm_name(best), itm_name(PAPER_ITM_WEIGHT), ())
    else:
        comparison = compare(
            rows, VAL_METRIC, better=itm_name(best), reference=itm_name(PAPER_ITM_WEIGHT), alpha=ALPHA / len(others)
        )
    claim = f"the best of {len(others)} other ITM weights beats the paper's 1.0 on validation (alpha / {len(others)})"
    return claim_verdict([comparison], claim=claim)


def itm_notes(config: TFoodConfig, records: list[UnitRecord]) -> str:
    """The chosen weight and the per-weight means, on top of the main notes."""
    rows = [row for record in records for row in record.rows]
    means = []
    for weight in config.itm_grid:
        values = list(metric_values(rows, VAL_METRIC, itm_name(weight)).values())
        if values:
            means.append(f"{weight:g}: {sum(values) / len(values):.4f}")
    return (
        f"Chosen ITM weight (best mean validation R@1 over seeds, fixed before any test run): "
        f"{chosen_itm_weight(config, rows):g}; means {', '.join(means)}. Validation only: {notes(config, records)}"
    )


def main_arms(config: TFoodConfig) -> tuple[str, ...]:
    """The trained arms of the main study ("tfood_rerank" is a row of the "tfood" unit)."""
    return tuple(a for a in config.arms if a != "tfood_rerank")


# ------------------------------------------------------------------------------------------------ verdicts
def chance_r1(config: TFoodConfig, rows: list[dict[str, Any]]) -> float:
    """Chance R@1 of the first protocol: one over its bag size, or over the test pairs when there are fewer."""
    pairs = [row["metrics"]["test_pairs"] for row in rows if "test_pairs" in row["metrics"]]
    bag = config.protocols[0][1]
    return 1.0 / min(bag, round(sum(pairs) / len(pairs))) if pairs else 1.0 / bag


def learned(rows: list[dict[str, Any]], name: str, chance: float) -> Precondition:
    """Precondition: the arm's mean test R@1 is at least twice chance (the models learned at all)."""
    values = list(metric_values(rows, METRIC, name).values())
    mean = sum(values) / len(values) if values else float("nan")
    return Precondition(
        f"{name} learns (mean {METRIC} >= 2 x chance)", mean >= 2 * chance, f"{mean:.3f} vs {chance:.3f}"
    )


def paired(rows: list[dict[str, Any]], better: str, reference: str) -> Comparison:
    """``compare`` on the primary metric; a row that was not run gives an empty (unclear) comparison."""
    if metric_values(rows, METRIC, better) and metric_values(rows, METRIC, reference):
        return compare(rows, METRIC, better=better, reference=reference)
    return Comparison(METRIC, better, reference, ())


def tfood_verdict(rows: list[dict[str, Any]], chance: float) -> Verdict:
    """Full T-Food's dual-encoder R@1 beats the fixed-margin baseline over seeds (one paired comparison)."""
    comparison = paired(rows, "tfood", "ht_fixed")
    return claim_verdict([comparison], [learned(rows, "tfood", chance)], claim="T-Food beats the H-T-like baseline")


def ablation_verdict(rows: list[dict[str, Any]], chance: float) -> Verdict:
    """Every component helps: full T-Food beats each one-removed arm (all of k, so no alpha correction needed)."""
    comparisons = [paired(rows, "tfood", arm) for arm in ABLATION_ARMS[1:]]
    return claim_verdict(comparisons, [learned(rows, "tfood", chance)], claim="every component adds R@1")


def verdict(config: TFoodConfig, rows: list[dict[str, Any]]) -> Verdict:
    """Main verdict (see :func:`tfood_verdict`)."""
    return tfood_verdict(rows, chance_r1(config, rows))


def study_verdict(config: TFoodConfig, rows: list[dict[str, Any]]) -> Verdict:
    """Ablations verdict (see :func:`ablation_verdict`)."""
    return ablation_verdict(rows, chance_r1(config, rows))


# ------------------------------------------------------------------------------------------------ report
def figures(fig: FigureInput[TFoodConfig]) -> list[str]:
    """Mean triplet-loss curve per trained arm (band: std over seeds)."""
    from frugalvision.report import line_plot

    series, steps = {}, []
    for name in dict.fromkeys(r.unit.name for r in fig.records):
        curves = [e["loss_curve"] for e in fig.extras(name)]
        if curves and curves[0] and all(len(c) == len(curves[0]) for c in curves):
            stacked = torch.tensor(curves, dtype=torch.float64)
            steps = stacked[0, :, 0].tolist()
            series[name] = (stacked[..., 1].mean(0).tolist(), stacked[..., 1].std(0, unbiased=False).tolist())
    if not series:
        return []
    return [line_plot(fig.out_dir / "triplet_loss.png", steps, series, "step", "triplet loss", "T-Food arms").name]


def notes(config: TFoodConfig, records: list[UnitRecord]) -> str:
    """Data sizes, loop, protocols and the selection rule."""
    extras = records[0].extras if records else {}
    sizes = extras.get("sizes", [0, 0, 0])
    selection = "best-validation weights" if config.select_best else "last weights"
    return (
        f"data at {extras.get('root')}; pairs train/val/test = {sizes[0]}/{sizes[1]}/{sizes[2]}; "
        f"{config.loop.max_steps} steps x global batch {config.loop.batch_size}; class-pair batches for every "
        f"arm; protocols {config.protocols} (mean over bags; *_std: std over bags); image encoder "
        f"{config.image.backbone}"
        + (
            f" pretrained by InfoNCE against ingredient words ({config.pretrain_steps} steps, cached, shared), frozen "
            f"{config.freeze_image_epochs} epoch(s) then at {config.image_lr_scale:g} x lr"
            if config.pretrain_steps
            else ""
        )
        + f"; text {config.text}; vocabulary "
        f"{extras.get('vocabulary')}; test metrics of the {selection} (validation every {config.loop.eval_every} "
        "steps and at the end)"
    )


def _count(model: TFoodModel, exclude_mmr: bool) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not (exclude_mmr and n.startswith("mmr.")))


# ------------------------------------------------------------------------------------------------ benchmark
def benchmark(
    out_dir: Path, n: int = 10_000, pair_sample: int = 2_000, rounds: int = 5, chunk: int = BENCH_CHUNK
) -> dict[str, Any]:
    """The whole n x n retrieval as a user runs it vs cross-attention (MMR/ITM) scoring of every pair.

    Interleaved rounds (:mod:`frugalvision.harness.timing`): the dual encoder embeds n images (CLS path,
    :meth:`TFoodModel.image_embedding`) and n recipes in inference mode, in chunks of ``chunk``, forms the n x n
    similarity matrix and computes R@1/5/10 and medR both ways with ``frugalvision.metrics`` (the experiment's metric
    code); the cross-attention alternative scores ``pair_sample`` pairs with the MMR decoders, extrapolated to all
    n^2 pairs. The ratio row is dual / cross (all pairs). Details: the dual encoder's total and its phases (medians
    over rounds) against the 10 s goal of issue 21. Sizes are the standard preset's; inputs are random.
    """
    torch.manual_seed(0)
    config = standard()
    model = build_model(config, 200, htd=True, mmr=True).eval()
    gen = torch.Generator().manual_seed(0)
    size = config.image.img_size
    images = torch.rand(n, 3, size, size, generator=gen)
    recipes = RecipeTokens(
        torch.randint(4, 200, (n, 8), generator=gen),
        torch.randint(4, 200, (n, 6, 6), generator=gen),
        torch.randint(4, 200, (n, 4, 10), generator=gen),
    )
    chunk = min(chunk, n)
    with torch.inference_mode():
        tokens = model.embed_images(images[:chunk])[1]
        recipe = model.embed_recipes(recipes.index(torch.arange(chunk)))[1]
    rows = torch.randint(0, tokens.shape[0], (pair_sample,), generator=gen)
    cols = torch.randint(0, recipe.tokens.shape[0], (pair_sample,), generator=gen)
    phases: dict[str, list[float]] = {"embed_images_s": [], "embed_recipes_s": [], "similarity_s": [], "metrics_s": []}

    @torch.inference_mode()
    def dual() -> None:  # what a user runs: embed both sides, one matrix product, R@K and medR with the metric code
        marks = [time.perf_counter()]
        img = torch.cat([model.image_embedding(images[i : i + chunk]) for i in range(0, n, chunk)])
        marks.append(time.perf_counter())
        rec = torch.cat(
            [model.embed_recipes(recipes.index(torch.arange(i, min(i + chunk, n))))[0] for i in range(0, n, chunk)]
        )
        marks.append(time.perf_counter())
        sim = img @ rec.T
        marks.append(time.perf_counter())
        bidirectional_retrieval(sim, names=("image_to_recipe", "recipe_to_image"))
        marks.append(time.perf_counter())
        for key, begin, finish in zip(phases, marks, marks[1:], strict=False):
            phases[key].append(finish - begin)

    @torch.inference_mode()
    def cross() -> None:
        for i in range(0, pair_sample, chunk):
            r, c = rows[i : i + chunk], cols[i : i + chunk]
            model.itm_logits(tokens[r], RecipeOutput(recipe.embedding[c], recipe.tokens[c], recipe.valid[c]))

    timings = interleaved_timings({"dual": dual, "cross": cross}, rounds=rounds, warmup=1)
    scale = n * n / pair_sample
    timings["cross_all"] = Timing("cross_all", tuple(ms * scale for ms in timings["cross"].samples_ms))
    entry = ratio_entry(
        timings,
        "dual",
        "cross_all",
        name=f"{n:,} x {n:,} image-recipe retrieval",
        arm_label="dual encoder: embed both sides, rank, R@1/5/10 + medR both ways (frugalvision.metrics)",
        peer_label=f"ITM cross-attention scoring of all pairs (timed on {pair_sample:,}, extrapolated)",
        n=n,
        chunk=chunk,
    )
    total = timings["dual"].median_ms / 1e3
    medians = {key: statistics.median(values[1:] or values) for key, values in phases.items()}  # warm-up dropped
    return benchmark_result(
        [entry],
        n=n,
        threads=torch.get_num_threads(),
        dual_total_s=total,
        dual_goal_s=BENCH_GOAL_S,
        meets_goal=total <= BENCH_GOAL_S,
        **medians,
        cross_s_per_pair=timings["cross"].median_ms / 1e3 / pair_sample,
        cross_all_pairs_s_extrapolated=timings["cross_all"].median_ms / 1e3,
    )


# ------------------------------------------------------------------------------------------------ declaration
MAIN = Study(
    claim=CLAIM,
    primary_metric=METRIC,
    run_unit=run_unit,
    verdict=verdict,
    arms=main_arms,
    figures=figures,
    notes=notes,
)

ABLATIONS = Study(
    claim=ABLATION_CLAIM,
    primary_metric=METRIC,
    run_unit=partial(run_unit, rerank=False),
    verdict=study_verdict,
    arms=lambda config: ABLATION_ARMS,
    figures=figures,
    notes=notes,
)

ITM_STUDY = Study(
    claim=ITM_CLAIM,
    primary_metric=VAL_METRIC,
    run_unit=run_itm_unit,
    verdict=itm_verdict,
    units=itm_units,
    figures=figures,
    notes=itm_notes,
)

EXPERIMENT = Experiment(
    name=METHOD,
    config_class=TFoodConfig,
    presets=PRESETS,
    main=MAIN,
    studies={"ablations": ABLATIONS, "itm_weight": ITM_STUDY},
    benchmark=benchmark,
)
