"""T-Food experiment: an H-T-like fixed-margin dual encoder, then one component added per arm, up to T-Food.

Arms: fixed margin -> + dynamic (incremental) margin -> + semantic triplets -> + HTD and MMR/ITM (full T-Food), and
full T-Food with ITM re-ranking, on MiniRecipe1M (or Recipe1M under ``data_root``). The study ``ablations`` trains
full T-Food and T-Food minus one component (dynamic margin, semantic triplets, MMR/ITM decoders).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from frugalvision.engine import Engine, FabricConfig, LoopConfig, latest_checkpoint
from frugalvision.errors import ConfigError
from frugalvision.experiment import RunConfig, apply_threads
from frugalvision.methods.tfood.data import RecipeImageDataset, load_recipe1m, write_mini_recipe1m
from frugalvision.methods.tfood.model import ImageEncoderConfig, RecipeEncoderConfig, RecipeOutput, TFoodModel
from frugalvision.methods.tfood.task import LossConfig, TFoodTask, embed_dataset, reranked_retrieval
from frugalvision.methods.tfood.text import RecipeTokens, WordPieceTokenizer, WordTokenizer
from frugalvision.registry import get_method
from frugalvision.report import bar_plot, line_plot, make_results, write_results

METHOD = "tfood"
CLAIM = (
    "Training-only cross-attention decoders with an image-text matching loss, hierarchical transformer decoders "
    "and dynamic-margin (incremental) plus semantic triplet losses improve the dual encoder's image-recipe "
    "retrieval R@1 over an H-T-style fixed-margin triplet baseline (Recipe1M: +8.1 R@1 on 1k, +10.9 on 10k)."
)
#: trained arms, each adds one component to the previous one; "tfood_rerank" re-scores "tfood"'s top-k with ITM
ARMS = (
    "ht_fixed",
    "dynamic_margin",
    "semantic",
    "tfood",
    "tfood_rerank",
    "tfood_adaptive",
    "tfood_no_dynamic",
    "tfood_no_semantic",
    "tfood_no_mmr",
)
DEFAULT_ARMS = ("ht_fixed", "dynamic_margin", "semantic", "tfood", "tfood_rerank")
#: full T-Food and T-Food minus one component (the ``ablations`` study)
ABLATION_ARMS = ("tfood", "tfood_no_dynamic", "tfood_no_semantic", "tfood_no_mmr")
STUDIES = ("ablations",)


@dataclass
class TFoodConfig(RunConfig):
    """T-Food experiment settings.

    Attributes:
        arms: rows to run (see ``ARMS``); "tfood_rerank" needs "tfood".
        num_recipes: recipes generated for MiniRecipe1M (75 / 12.5 / 12.5 % train / val / test).
        image_size: generated image side.
        max_images: at most this many images per generated recipe.
        background_fraction: share of background (class 0) recipes, and of background items per batch.
        image: image encoder.
        crop_ratio: resize to ``img_size / crop_ratio`` then crop (paper: 224 / 256; 1.0 resizes straight).
        text: "words" (word tokenizer fitted on the training split, encoders from scratch: the paper) or "minilm"
            (MiniLM-L6's WordPiece tokenizer and its pretrained transformer as the sentence encoder, offline).
        text_layers: MiniLM layers used by the "minilm" option (1..6).
        freeze_text: keep MiniLM frozen (True) or fine-tune it with the rest (False).
        recipe_width: recipe token width (paper 512).
        recipe_heads: recipe attention heads (paper 4).
        recipe_layers: layers of each recipe encoder (paper 2).
        htd_layers: layers of each HTD decoder in the HTD arms (paper 2).
        recipe_ffn: feed-forward width of the recipe layers.
        dropout: dropout of the recipe encoder, HTD and MMR layers (paper 0.1).
        embed_dim: joint embedding width (paper 1024).
        mmr_width: MMR width (paper 1024).
        mmr_heads: MMR heads (paper 4).
        mmr_image_layers: MMR image-side decoder layers (paper 1).
        mmr_fusion_layers: MMR final decoder layers (paper 4).
        mmr_ffn: MMR feed-forward width (paper 2048).
        fixed_margin: margin of the fixed-margin arm (0.3).
        margin_start: incremental margin alpha_0 (paper 0.18 with CLIP, 0.05 with an ImageNet backbone).
        margin_delta: increment per epoch; 0 scales it so alpha reaches margin_max at the last epoch (toy runs).
        margin_max: incremental margin alpha_max (0.3).
        semantic_weight: weight of the semantic triplets (0.1).
        itm_weight: weight of the ITM loss (1.0).
        itm_temperature: hard-negative sampling temperature (1.0).
        freeze_image_epochs: epochs with the image backbone frozen (paper 20; 0 for a random-init backbone).
        image_lr_scale: image backbone learning rate / the rest (paper 0.1).
        rerank_k: candidates re-scored by the ITM head.
        select_best: report the weights with the best validation R@1 (first protocol, mean of both directions) over
            the evaluations every ``loop.eval_every`` steps and at the end; False reports the last weights.
        protocols: ``(name, bag size, bags)`` of the evaluation (paper: 1k x 10 and 10k x 5).
        eval_seed: seed of the evaluation bags.
        loop: optimisation (Adam, no weight decay; clip 8).
    """

    dataset: str = "mini-recipe1m"
    seeds: tuple[int, ...] = (0, 1, 2)
    arms: tuple[str, ...] = DEFAULT_ARMS
    num_recipes: int = 1600
    image_size: int = 32
    max_images: int = 3
    background_fraction: float = 0.5
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    crop_ratio: float = 1.0
    text: str = "words"
    text_layers: int = 6
    freeze_text: bool = True
    recipe_width: int = 64
    recipe_heads: int = 2
    recipe_layers: int = 1
    htd_layers: int = 1
    recipe_ffn: int = 128
    dropout: float = 0.1
    embed_dim: int = 64
    mmr_width: int = 64
    mmr_heads: int = 2
    mmr_image_layers: int = 1
    mmr_fusion_layers: int = 2
    mmr_ffn: int = 128
    fixed_margin: float = 0.3
    margin_start: float = 0.18
    margin_delta: float = 0.0
    margin_max: float = 0.3
    semantic_weight: float = 0.1
    itm_weight: float = 1.0
    itm_temperature: float = 1.0
    freeze_image_epochs: int = 0
    image_lr_scale: float = 1.0
    rerank_k: int = 10
    select_best: bool = True
    protocols: tuple[tuple[str, int, int], ...] = (("bag100", 100, 2), ("bag200", 200, 1))
    eval_seed: int = 0
    loop: LoopConfig = field(
        default_factory=lambda: LoopConfig(
            max_steps=500,
            batch_size=20,
            lr=1e-3,
            weight_decay=0.0,
            warmup_steps=30,
            schedule="constant",
            clip_grad_norm=8.0,
            log_every=10,
            eval_every=100,
        )
    )

    def validate(self) -> None:
        """Check every field (one-line ConfigError naming the field and the fix)."""
        super().validate()
        self.loop.validate()
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms:
            raise ConfigError(f"arms={self.arms!r} is invalid; choose among {', '.join(ARMS)}")
        if "tfood_rerank" in self.arms and "tfood" not in self.arms:
            raise ConfigError("arms has tfood_rerank without tfood; add tfood (re-ranking re-scores its top-k)")
        if self.dataset not in ("mini-recipe1m", "recipe1m"):
            raise ConfigError(f"dataset={self.dataset!r} is invalid; use mini-recipe1m or recipe1m (with --data-root)")
        if self.dataset == "recipe1m" and self.data_root is None:
            raise ConfigError("dataset=recipe1m needs --data-root (the folder that contains recipe1m/)")
        if self.loop.batch_size < 4:
            raise ConfigError(f"loop.batch_size={self.loop.batch_size} is too small; use >= 4 (pairs + negatives)")
        for name in ("num_recipes", "recipe_width", "embed_dim", "rerank_k"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} is invalid; it must be a positive integer")
        if self.recipe_width % self.recipe_heads or (self.mmr_width and self.mmr_width % self.mmr_heads):
            raise ConfigError("recipe_width / mmr_width must be divisible by recipe_heads / mmr_heads; change one")
        if not 0.0 < self.crop_ratio <= 1.0:
            raise ConfigError(f"crop_ratio={self.crop_ratio} is invalid; use a value in (0, 1], e.g. 0.875")
        if self.text not in ("words", "minilm"):
            raise ConfigError(f"text={self.text!r} is invalid; use 'words' or 'minilm'")
        if not 1 <= self.text_layers <= 6:
            raise ConfigError(f"text_layers={self.text_layers} is invalid; MiniLM-L6 has 1..6 layers")
        if self.study is not None and self.study not in STUDIES:
            raise ConfigError(f"study={self.study!r} is invalid; use one of {', '.join(STUDIES)} or leave it unset")
        if not 0.0 <= self.background_fraction < 1.0:
            raise ConfigError(f"background_fraction={self.background_fraction} is invalid; use a value in [0, 1)")


def smoke() -> TFoodConfig:
    """Seconds: 240 recipes, 30 steps per arm, 1 seed."""
    return TFoodConfig(
        preset="smoke",
        seeds=(0,),
        num_recipes=240,
        protocols=(("bag20", 20, 2), ("bag30", 30, 1)),
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
    """Minutes on 2 CPU cores: 1,600 recipes, 400 steps per arm (constant lr after warm-up), 3 seeds.

    The tiny ViT uses 4-pixel patches (64 tokens): at equal steps the baseline's validation R@1 was about three
    times that with 8-pixel patches (600-step diagnostic, README). Validation every 50 steps selects the weights.
    """
    config = TFoodConfig(preset="standard", image=ImageEncoderConfig(patch_size=4))
    config.loop = replace(config.loop, max_steps=400, eval_every=50)
    return config


def paper() -> TFoodConfig:
    """Recipe1M at paper scale (GPU): batch 100, Adam 1e-5, 120 epochs, margins and sizes of the released configs.

    The image backbone is the offline EfficientNet-Lite0 ImageNet model (no CLIP weights offline), frozen for 20
    epochs at 0.1 x the learning rate; pass ``--data-root`` with ``recipe1m/`` in it.
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
        image_lr_scale=0.1,
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


CONFIG_CLASS = TFoodConfig
PRESETS = {"smoke": smoke, "standard": standard, "paper": paper}


def arm_losses(arm: str, config: TFoodConfig, steps_per_epoch: int) -> tuple[LossConfig, bool, bool]:
    """(loss settings, HTD on, MMR on) of a trained arm."""
    epochs = max(1, -(-config.loop.max_steps // steps_per_epoch))
    delta = config.margin_delta or (config.margin_max - config.margin_start) / max(1, epochs - 1)
    dynamic = LossConfig(
        margin_mode="incremental",
        margin_start=config.margin_start,
        margin_delta=delta,
        margin_max=config.margin_max,
        semantic_weight=0.0,
        itm_weight=0.0,
        itm_temperature=config.itm_temperature,
    )
    if arm == "ht_fixed":
        return replace(dynamic, margin_mode="fixed", margin=config.fixed_margin), False, False
    if arm == "dynamic_margin":
        return dynamic, False, False
    if arm == "semantic":
        return replace(dynamic, semantic_weight=config.semantic_weight), False, False
    full = replace(dynamic, semantic_weight=config.semantic_weight, itm_weight=config.itm_weight)
    if arm == "tfood":
        return full, True, True
    if arm == "tfood_adaptive":
        return replace(full, margin_mode="adaptive", margin=config.margin_start), True, True
    if arm == "tfood_no_dynamic":
        return replace(full, margin_mode="fixed", margin=config.fixed_margin), True, True
    if arm == "tfood_no_semantic":
        return replace(full, semantic_weight=0.0), True, True
    if arm == "tfood_no_mmr":
        return replace(full, itm_weight=0.0), True, False
    raise ConfigError(f"arm {arm!r} is not a trained arm")


def load_data(
    config: TFoodConfig, out_dir: Path
) -> tuple[dict[str, RecipeImageDataset], WordTokenizer | WordPieceTokenizer, Path]:
    """Generate MiniRecipe1M (or read Recipe1M), fit the tokenizer on train, build the train/val/test pairs."""
    if config.dataset == "mini-recipe1m" and config.data_root is None:
        root = out_dir / "data"
        write_mini_recipe1m(
            root,
            config.num_recipes,
            background_fraction=config.background_fraction,
            max_images=config.max_images,
            image_size=config.image_size,
            seed=0,
        )
    else:
        root = Path(config.data_root)
    recipes, _ = load_recipe1m(root)
    parts = {p: [r for r in recipes if r.partition == p] for p in ("train", "val", "test")}
    if config.text == "minilm":
        tokenizer = WordPieceTokenizer()
    else:
        tokenizer = WordTokenizer.fit(t for r in parts["train"] for t in (r.title, *r.ingredients, *r.instructions))
    size = config.image.img_size
    preload = config.dataset == "mini-recipe1m"
    sets = {
        "train": RecipeImageDataset(
            parts["train"], tokenizer, size, train=True, preload=preload, crop_ratio=config.crop_ratio
        ),
        "val": RecipeImageDataset(parts["val"], tokenizer, size, preload=preload, crop_ratio=config.crop_ratio),
        "test": RecipeImageDataset(parts["test"], tokenizer, size, preload=preload, crop_ratio=config.crop_ratio),
    }
    return sets, tokenizer, root


def build_model(config: TFoodConfig, vocab_size: int, htd: bool, mmr: bool) -> TFoodModel:
    """The model of one arm."""
    recipe = RecipeEncoderConfig(
        vocab_size=vocab_size,
        width=config.recipe_width,
        heads=config.recipe_heads,
        layers=config.recipe_layers,
        htd_layers=config.htd_layers if htd else 0,
        ffn=config.recipe_ffn,
        dropout=config.dropout,
        max_title=32,
        max_lines=20,
        max_line_tokens=20,
        pretrained_text="minilm" if config.text == "minilm" else None,
        pretrained_layers=config.text_layers,
        freeze_pretrained=config.freeze_text,
    )
    return TFoodModel(
        config.image,
        recipe,
        embed_dim=config.embed_dim,
        mmr_width=config.mmr_width if mmr else 0,
        mmr_heads=config.mmr_heads,
        mmr_image_layers=config.mmr_image_layers,
        mmr_fusion_layers=config.mmr_fusion_layers,
        mmr_ffn=config.mmr_ffn,
    )


def verdict_for(
    rows: list[dict[str, Any]], metric: str, chance: float = 0.0, method: str = "tfood", base: str = "ht_fixed"
) -> tuple[str, str]:
    """Computed verdict: T-Food's R@1 above the baseline's on every seed -> supported (if above 2 x chance)."""
    rule = (
        f"inconclusive if {method}'s mean {metric} is below 2 x chance ({2 * chance:.3f}: the models did not learn); "
        f"else supported if {method}'s {metric} (mean R@1 of image_to_recipe and recipe_to_image) exceeds {base}'s "
        f"on every seed; not supported if it is lower or equal on every seed; otherwise inconclusive"
    )
    by_seed: dict[int, dict[str, float]] = {}
    for row in rows:
        if row["name"] in (method, base):
            by_seed.setdefault(row["seed"], {})[row["name"]] = row["metrics"][metric]
    diffs = [v[method] - v[base] for v in by_seed.values() if method in v and base in v]
    if not diffs:
        return "inconclusive", rule
    mean = sum(v[method] for v in by_seed.values() if method in v) / len(diffs)
    if mean < 2 * chance:
        return "inconclusive", rule
    if all(d > 0 for d in diffs):
        return "supported", rule
    if all(d <= 0 for d in diffs):
        return "not supported", rule
    return "inconclusive", rule


def ablation_verdict(rows: list[dict[str, Any]], metric: str, chance: float = 0.0) -> tuple[str, str, str]:
    """Computed verdict of the ablations study: (verdict, rule, per-component outcome in words)."""
    rule = (
        f"inconclusive if tfood's mean {metric} is below 2 x chance ({2 * chance:.3f}); else a component helps if "
        f"tfood's {metric} exceeds tfood minus that component on every seed, hurts if it is lower or equal on every "
        "seed, else mixed; supported if every removed component helps, not supported if any hurts, else inconclusive"
    )
    outcomes = {}
    for arm in ABLATION_ARMS[1:]:
        verdict, _ = verdict_for(rows, metric, 0.0, method="tfood", base=arm)
        outcomes[arm] = {"supported": "helps", "not supported": "hurts"}.get(verdict, "mixed")
    words = "; ".join(f"{arm.removeprefix('tfood_no_')}: {outcome}" for arm, outcome in outcomes.items())
    full = [r["metrics"][metric] for r in rows if r["name"] == "tfood"]
    if not full or sum(full) / len(full) < 2 * chance or len(outcomes) < len(ABLATION_ARMS) - 1:
        return "inconclusive", rule, words
    if all(o == "helps" for o in outcomes.values()):
        return "supported", rule, words
    if any(o == "hurts" for o in outcomes.values()):
        return "not supported", rule, words
    return "inconclusive", rule, words


def _rerank_metrics(
    config: TFoodConfig, model: TFoodModel, emb: dict[str, torch.Tensor], n_test: int
) -> dict[str, float]:
    rerank = {}
    tic = time.perf_counter()
    for name, bag, bags in config.protocols:
        for key, value in reranked_retrieval(model, emb, bag, bags, config.rerank_k, config.eval_seed).items():
            rerank[f"test/{name}/{key}"] = value
    queries = sum(2 * min(b, n_test) * n for _, b, n in config.protocols)
    rerank["rerank_ms_per_query"] = 1e3 * (time.perf_counter() - tic) / queries
    return rerank


def train_arm(
    engine: Engine,
    config: TFoodConfig,
    arm: str,
    seed: int,
    sets: dict[str, RecipeImageDataset],
    vocab_size: int,
    out_dir: Path,
) -> tuple[dict[str, float], TFoodModel, list[dict[str, float]]]:
    """Train one arm; return (row metrics of the selected weights, the selected model, the training history).

    The selected weights are those with the best validation R@1 (``select_best``; the task keeps them across
    checkpoints and resumes), else the last ones; their test metrics come from one evaluation after training.
    """
    steps_per_epoch = max(1, len(sets["train"]) // (config.loop.batch_size * engine.world_size))
    loss, htd, mmr = arm_losses(arm, config, steps_per_epoch)
    primary = config.protocols[0][0]
    task = TFoodTask(
        lambda: build_model(config, vocab_size, htd, mmr),
        sets["train"],
        {"val": sets["val"]},
        loss,
        steps_per_epoch=steps_per_epoch,
        freeze_image_steps=config.freeze_image_epochs * steps_per_epoch,
        image_lr_scale=config.image_lr_scale,
        batch_size=config.loop.batch_size,
        background_fraction=config.background_fraction,
        protocols=config.protocols,
        eval_seed=config.eval_seed,
        select_key=("val", f"{primary}/R@1") if config.select_best else None,
    )
    loop = replace(config.loop, seed=seed)
    run_dir = out_dir / "runs" / f"{arm}-seed{seed}"
    resume = config.resume and latest_checkpoint(run_dir / "checkpoints") is not None
    result = engine.fit(task, loop, run_dir=run_dir, resume=resume, desc=f"{arm} seed {seed}")
    model = result.model
    if config.select_best and task.best_weights:
        model.load_state_dict(task.best_weights)
        val, selected_step = task.best_metrics["val"], task.best_step
    else:
        val, selected_step = result.metrics["val"], result.steps
    test = engine.evaluate(task, model, {"test": sets["test"]})["test"]
    metrics = {f"test/{k}": v for k, v in test.items()}
    metrics["val/R@1"] = val[f"{primary}/R@1"]
    metrics["selected_step"] = float(selected_step)
    metrics["train_s"] = result.wall_s
    metrics["params_test_m"] = _count(model, exclude_mmr=True) / 1e6
    return metrics, model, result.history


def run(config: TFoodConfig) -> dict[str, Any]:
    """Train every arm for every seed, evaluate the dual encoders (and ITM re-ranking), write results.json.

    With ``config.study == "ablations"`` train full T-Food and T-Food minus each component instead, and write
    ``<out>/tfood/ablations/results.json``.
    """
    config.validate()
    apply_threads(config.threads)
    start = time.perf_counter()
    method_dir = config.method_dir(METHOD)
    method_dir.mkdir(parents=True, exist_ok=True)
    study = config.study == "ablations"
    out_dir = method_dir / "ablations" if study else method_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    arms = ABLATION_ARMS if study else config.arms
    sets, tokenizer, root = load_data(config, method_dir)
    if isinstance(tokenizer, WordTokenizer):
        tokenizer.save(method_dir / "vocab.json")
    engine = Engine(config.fabric, log_dir=out_dir, progress=config.progress)
    primary = config.protocols[0][0]
    rows: list[dict[str, Any]] = []
    curves: dict[str, list[list[float]]] = {}
    steps: list[float] = []
    for seed in config.seeds:
        for arm in [a for a in arms if a != "tfood_rerank"]:
            metrics, model, history = train_arm(engine, config, arm, seed, sets, len(tokenizer), out_dir)
            tic = time.perf_counter()
            emb = embed_dataset(model, sets["test"])
            metrics["embed_ms_per_pair"] = 1e3 * (time.perf_counter() - tic) / len(sets["test"])
            rows.append({"name": arm, "seed": seed, "metrics": metrics})
            losses = [h for h in history if "loss" in h]
            curves.setdefault(arm, []).append([h["loss_tri"] for h in losses])
            steps = [h["step"] for h in losses]
            if arm == "tfood" and "tfood_rerank" in arms:
                rerank = _rerank_metrics(config, model, emb, len(sets["test"]))
                rows.append({"name": "tfood_rerank", "seed": seed, "metrics": rerank})
    document: dict[str, Any] = {}
    if engine.is_main:
        figures = []
        series = {}
        for arm, runs in curves.items():
            stacked = torch.tensor(runs)
            series[arm] = (stacked.mean(0).tolist(), stacked.std(0, unbiased=False).tolist())
        if steps:
            figures.append(
                line_plot(out_dir / "triplet_loss.png", steps, series, "step", "triplet loss", "T-Food arms")
            )
        metric = f"test/{primary}/R@1"
        provisional = make_results(
            METHOD, get_method(METHOD).paper, config.preset, config.dataset, CLAIM, rows, "inconclusive", "", 0.0
        )
        bar_plot(out_dir / "r1.png", provisional["summary"], metric, f"test R@1 ({primary}, mean of directions)")
        figures.append(out_dir / "r1.png")
        chance = 1.0 / min(config.protocols[0][1], len(sets["test"]))
        notes = (
            f"data at {root}; pairs train/val/test = {len(sets['train'])}/{len(sets['val'])}/{len(sets['test'])};"
            f" {config.loop.max_steps} steps x batch {config.loop.batch_size} x {engine.world_size} process(es);"
            f" class-pair batches for every arm; protocols {config.protocols}; image encoder {config.image.backbone};"
            f" text {config.text}; vocabulary {len(tokenizer)}; chance R@1 {chance:.3f}; "
            + (
                f"weights with the best val {primary}/R@1 (evaluated every {config.loop.eval_every} steps and at the "
                "end; `selected_step`), test metrics of those weights"
                if config.select_best
                else "last weights"
            )
        )
        if study:
            verdict, rule, outcome = ablation_verdict(rows, metric, chance)
            notes += f"; components (full T-Food vs minus it): {outcome}"
        else:
            verdict, rule = verdict_for(rows, metric, chance)
        document = make_results(
            METHOD,
            get_method(METHOD).paper,
            config.preset,
            config.dataset,
            CLAIM,
            rows,
            verdict,
            rule,
            time.perf_counter() - start,
            figures=[Path(f).name for f in figures],
            primary_metric=metric,
            notes=notes,
        )
        write_results(document, out_dir)
    engine.barrier()
    return document


def _count(model: TFoodModel, exclude_mmr: bool) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not (exclude_mmr and n.startswith("mmr.")))


def benchmark(out_dir: Path, n: int = 10_000, pair_sample: int = 2_000) -> dict[str, Any]:
    """Dual-encoder retrieval of an ``n`` x ``n`` bag vs cross-attention (MMR/ITM) scoring of every pair.

    The dual encoder embeds n images and n recipes once and ranks with one matrix product; the cross-attention
    alternative must run the MMR decoders on all n^2 pairs, timed on ``pair_sample`` pairs and extrapolated.
    Sizes are the standard preset's; the inputs are random images and random recipes of typical length.
    """
    torch.manual_seed(0)
    config = standard()
    model = build_model(config, 200, htd=True, mmr=True).eval()
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, config.image.img_size, config.image.img_size, generator=gen)
    title = torch.randint(4, 200, (n, 8), generator=gen)
    ingredients = torch.randint(4, 200, (n, 6, 6), generator=gen)
    instructions = torch.randint(4, 200, (n, 4, 10), generator=gen)
    chunk = 500
    with torch.no_grad():
        tic = time.perf_counter()
        img_parts, tok_parts, rec_parts, out_parts = [], [], [], []
        for i in range(0, n, chunk):
            e, t = model.embed_images(images[i : i + chunk])
            img_parts.append(e)
            tok_parts.append(t)
        for i in range(0, n, chunk):
            e, o = model.embed_recipes(
                RecipeTokens(title[i : i + chunk], ingredients[i : i + chunk], instructions[i : i + chunk])
            )
            rec_parts.append(e)
            out_parts.append(o)
        embed_s = time.perf_counter() - tic
        img, rec = torch.cat(img_parts), torch.cat(rec_parts)
        tic = time.perf_counter()
        sim = img @ rec.T
        ranks_i2r = (sim > sim.diagonal().unsqueeze(1)).sum(1)
        ranks_r2i = (sim.T > sim.diagonal().unsqueeze(1)).sum(1)
        rank_s = time.perf_counter() - tic
        del ranks_i2r, ranks_r2i
        tokens, recipe = torch.cat(tok_parts[:1]), out_parts[0]
        rows = torch.randint(0, tokens.shape[0], (pair_sample,), generator=gen)
        cols = torch.randint(0, recipe.tokens.shape[0], (pair_sample,), generator=gen)
        tic = time.perf_counter()
        for i in range(0, pair_sample, chunk):
            r, c = rows[i : i + chunk], cols[i : i + chunk]
            model.itm_logits(tokens[r], RecipeOutput(recipe.embedding[c], recipe.tokens[c], recipe.valid[c]))
        pair_s = (time.perf_counter() - tic) / pair_sample
    dual = embed_s + rank_s
    cross = pair_s * n * n
    return {
        "n": n,
        "threads": torch.get_num_threads(),
        "dual_embed_s": embed_s,
        "dual_rank_s": rank_s,
        "dual_total_s": dual,
        "cross_s_per_pair": pair_s,
        "cross_all_pairs_s_extrapolated": cross,
        "ratio_cross_over_dual": cross / dual,
    }
