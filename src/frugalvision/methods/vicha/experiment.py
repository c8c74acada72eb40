"""ViCHA experiment on the harness: the ALBEF-style baseline, + H-ITC, + U-MIM, + visual concepts, full ViCHA.

Every arm is pre-trained at equal data, steps and batch on a procedural caption world, then evaluated by zero-shot
retrieval on held-out pairs.

Data pipeline (as the paper's, offline): the caption world is written as ALBEF-format JSON + PNGs into
``<out>/vicha/cache/``; the concept vocabulary is mined from the training captions; a CLIP-like dual encoder trained
on the training pairs scores every image against it; the top-k concepts are written into the JSON as ``kwords``;
pre-training reads those files with the real loader.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from frugalvision.engine import FitResult
from frugalvision.engine.config import FabricConfig, LoopConfig
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
    benchmark_result,
    claim_verdict,
    compare,
    interleaved_timings,
    metric_values,
    ratio_entry,
)
from frugalvision.methods.vicha.concepts import assign_concepts, mine_vocabulary, open_clip_scorer, train_dual_encoder
from frugalvision.methods.vicha.config import ABLATION_ARMS, ARM_PARTS, ARMS, ViCHAConfig
from frugalvision.methods.vicha.data import (
    CaptionDataset,
    CaptionEntry,
    eval_transform,
    image_to_tensor,
    load_caption_json,
    pretrain_files,
    pretrain_transform,
    write_caption_json,
)
from frugalvision.methods.vicha.model import (
    Batch,
    ConceptViT,
    ViCHAModel,
    count_parameters,
    load_vision_weights,
    momentum_copy,
)
from frugalvision.methods.vicha.objectives import FeatureQueue
from frugalvision.methods.vicha.studies import STUDIES
from frugalvision.methods.vicha.task import OfficialSchedule, ViCHATask
from frugalvision.methods.vicha.text import SubsetTokenizer, TextTokenizer, WordTokenizer, special_ids

__all__ = ["ABLATION_ARMS", "ARMS", "EXPERIMENT", "METRIC", "ViCHAConfig", "benchmark", "vicha_verdict"]

METHOD = "vicha"
CLAIM = (
    "Hierarchical image-text alignment (H-ITC), unimodal masked image modelling and visual concepts injected into "
    "the image encoder make ALBEF-style vision-language pre-training more data-efficient: at equal data and steps, "
    "ViCHA's zero-shot image-text retrieval beats the ALBEF-style baseline."
)
#: zero-shot retrieval R@1 on the held-out pairs, mean of image->text (TR) and text->image (IR)
METRIC = "r1_mean"
#: a pre-trained model must reach this many times chance R@1 before the comparison counts
LEARNED_FACTOR = 5.0


# ------------------------------------------------------------------------------------------------ presets
def smoke() -> ViCHAConfig:
    """Seconds: 256 pairs, ALBEF vs ViCHA, 12 steps of batch 16, 1 seed."""
    return ViCHAConfig(
        preset="smoke",
        threads=1,
        seeds=(0,),
        train_pairs=256,
        test_pairs=64,
        val_pairs=64,
        scorer_steps=20,
        queue_size=64,
        finetune_train=24,
        finetune_test=12,
        finetune_steps=4,
        finetune_batch=8,
        finetune_k_test=4,
        loop=LoopConfig(max_steps=12, batch_size=16, lr=1e-3, weight_decay=0.02, warmup_steps=2, log_every=4),
    )


def offline_pretrained(preset: str) -> ViCHAConfig:
    """The offline stand-in for the paper's regime: pre-trained encoders, then vision-language pre-training.

    Text: the offline MiniLM-L6's first four layers (3 text-only + 1 fusion, as ALBEF splits BERT), its WordPiece
    vocabulary restricted to the caption world's pieces, read by mean pooling (its [CLS] is constant in the lower
    layers). Image: a ViT (width 128, 6 blocks, 16 px patches on 48 px images: one patch per scene cell) pre-trained
    once on the training world's cell attributes, the stand-in for ImageNet DeiT. Batch 16, AdamW 1e-4 (the paper's
    rate; best of 1e-4 / 3e-4 / 1e-3 for the baseline on the validation world, README), queue 64.
    """
    return ViCHAConfig(
        preset=preset,
        threads=2,
        image_size=48,
        patch_size=16,
        vision_width=128,
        vision_depth=6,
        vision_heads=4,
        vision_init="caption-world",
        vision_init_steps=300,
        text="pretrained",
        prune_vocabulary=True,
        text_layers=3,
        fusion_layers=1,
        text_pool="mean",
        embed_dim=64,
        mim_width=128,
        mim_heads=4,
        queue_size=64,
        scorer_steps=200,
        scorer_batch=64,
        loop=LoopConfig(
            max_steps=40, batch_size=16, lr=1e-4, weight_decay=0.02, warmup_steps=4, min_lr=1e-5, log_every=10
        ),
    )


def standard() -> ViCHAConfig:
    """About 2 minutes on 2 idle cores: ALBEF-style baseline vs full ViCHA, 40 steps of batch 16, 3 seeds."""
    return offline_pretrained("standard")


def extended() -> ViCHAConfig:
    """The evidence (<= 15 minutes on 2 idle cores): the ablation ladder, 150 steps of batch 16, 3 seeds.

    Arms: baseline, + H-ITC, + MIM, + VC, ViCHA; the image stand-in pre-trained for 600 steps. The downstream studies
    (``--study <task>``, <= 10 minutes each once this preset's albef/vicha models are cached) fine-tune every row
    200 steps of batch 16 at 1e-4 on 1,000 generated training images and test on 300.
    """
    config = replace(offline_pretrained("extended"), arms=ABLATION_ARMS, vision_init_steps=600, finetune_steps=200)
    config.loop = replace(config.loop, max_steps=150, warmup_steps=15)
    return config


def paper() -> ViCHAConfig:
    """ViCHA-1M on GPUs: COCO + VG + SBU ALBEF-format JSON with ``kwords`` under ``--data-root``.

    ViT-B/16 at 256 px (``--vision-weights`` DeiT-B), BERT-base split 6/6 (``--text-dir``), batch 32 per GPU, AdamW
    1e-4 wd 0.02, the official per-epoch cosine over 11 epochs with the 2,000-iteration warm-up, bf16, gradient
    checkpointing.
    """
    steps_per_epoch = 1_000_000 // (32 * 4)
    return ViCHAConfig(
        preset="paper",
        dataset="albef-json",
        seeds=(42,),
        arms=("vicha",),
        image_size=256,
        text="pretrained",
        patch_size=16,
        vision_width=768,
        vision_depth=12,
        vision_heads=12,
        text_layers=6,
        fusion_layers=6,
        dropout=0.1,
        embed_dim=256,
        hitc_levels=5,
        concept_layers=2,
        mim_width=768,
        mim_depth=2,
        mim_heads=16,
        grad_checkpointing=True,
        queue_size=65536,
        concept_k=15,
        concept_fraction=0.3,
        official_schedule=True,
        epochs=11,
        finetune_steps=0,
        finetune_lr=0.0,
        finetune_k_test=256,
        finetune_distill=True,
        finetune_layer=2,
        fabric=FabricConfig(precision="bf16-mixed"),
        loop=LoopConfig(
            max_steps=11 * steps_per_epoch,
            batch_size=32,
            lr=1e-4,
            weight_decay=0.02,
            ckpt_every=steps_per_epoch,
            log_every=50,
            num_workers=8,
        ),
    )


PRESETS = {"smoke": smoke, "standard": standard, "extended": extended, "paper": paper}


# ------------------------------------------------------------------------------------------------ data
@dataclass(frozen=True)
class PretrainData:
    """Pairs, preloaded images (caption world), tokenizer and where they came from."""

    train: list[CaptionEntry]
    test: list[CaptionEntry]
    train_images: np.ndarray | None
    test_images: np.ndarray | None
    tokenizer: TextTokenizer
    root: Path
    stats: dict[str, Any]
    vision_weights: Path | None = None


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def world_root(ctx: Context[ViCHAConfig]) -> Path:
    """Generate the caption world once into the cache (rank 0 first): ``train.json``, ``test.json`` and PNGs."""
    from frugalvision.data.caption_world import caption_world, write_caption_world

    c = ctx.config
    sizes = (c.train_pairs, c.test_pairs, c.val_pairs)
    root = ctx.cache_path(f"world-{_key(*sizes, c.image_size, c.max_objects, c.data_seed, 'val')}")

    def build() -> Path:
        if not (root / "val.json").is_file():
            train = caption_world(c.train_pairs, c.data_seed, c.image_size, c.max_objects)
            test = caption_world(c.test_pairs, c.data_seed + 1, c.image_size, c.max_objects, unique_captions=True)
            val = caption_world(c.val_pairs, c.data_seed + 2, c.image_size, c.max_objects, unique_captions=True)
            for name, world in (("train", train), ("test", test), ("val", val)):
                write_caption_world(world, root, name)
        return root

    return ctx.main_first(build)


def _read_images(entries: list[CaptionEntry]) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(e.image).convert("RGB")) for e in entries])


def concept_files(ctx: Context[ViCHAConfig], root: Path) -> tuple[Path, Path, dict[str, Any]]:
    """Mine the vocabulary, score the images with the offline dual encoder, write ``kwords`` JSON (cached)."""
    c = ctx.config
    out = concepts_dir(ctx, root)

    def build() -> tuple[Path, Path, dict[str, Any]]:
        if not (out / "stats.json").is_file():
            write_concepts(c, root, out)
        return out / "train.json", out / f"{c.eval_split}.json", json.loads((out / "stats.json").read_text())

    return ctx.main_first(build)


def concepts_dir(ctx: Context[ViCHAConfig], root: Path) -> Path:
    """The folder of the concept pipeline's outputs (kwords JSON, stats, the scorer)."""
    c = ctx.config
    scorer = (c.scorer, c.scorer_steps, c.scorer_batch, c.scorer_size)
    return root / f"concepts-{_key(c.concept_k, c.concept_threshold, c.concept_modifiers, *scorer, c.data_seed)}"


def concept_scorer(c: ViCHAConfig, root: Path, out: Path) -> tuple[Any, Any]:
    """The CLIP stand-in of the concept pipeline: trained once on the training pairs (seed 0) and saved under ``out``.

    Returns ``(scorer, report)``; a saved scorer is loaded (report None), so the downstream tasks score their images
    with the very scorer that assigned the pre-training concepts. With ``scorer="clip"``, open-clip-torch.
    """
    from frugalvision.engine import load_weights, save_weights
    from frugalvision.methods.vicha.concepts import DualEncoderScorer

    if c.scorer == "clip":
        return open_clip_scorer(c.clip_weights or "")[0], None
    train = load_caption_json(root / "train.json", root)
    tokenizer = WordTokenizer.fit(cap for e in train for cap in e.captions)
    path = out / "scorer.safetensors"
    if path.is_file():
        scorer = DualEncoderScorer(tokenizer, input_size=c.scorer_size)
        scorer.load_state_dict(load_weights(path))
        return scorer.eval(), None
    images = torch.stack([image_to_tensor(im) for im in _read_images(train)])
    captions = [e.captions for e in train]
    scorer, report = train_dual_encoder(
        images, captions, tokenizer, c.scorer_steps, c.scorer_batch, seed=0, input_size=c.scorer_size
    )
    save_weights(scorer.state_dict(), path)
    return scorer, report


def write_concepts(c: ViCHAConfig, root: Path, out: Path) -> None:
    """The offline visual-concept pipeline of spec 2.3 on the caption world (stats: exact precision@k)."""
    train = load_caption_json(root / "train.json", root)
    vocabulary = mine_vocabulary((cap for e in train for cap in e.captions), c.concept_threshold, c.concept_modifiers)
    scorer, report = concept_scorer(c, root, out)
    k = min(c.concept_k, len(vocabulary))
    stats: dict[str, Any] = {"vocabulary": vocabulary, "k": k, "scorer_loss": report.final_loss if report else None}
    for name in ("train", "test", "val"):
        entries = train if name == "train" else load_caption_json(root / f"{name}.json", root)
        images = torch.stack([image_to_tensor(im) for im in _read_images(entries)])
        kwords = assign_concepts(scorer, images, vocabulary, k)
        truth = [set(r["concepts"]) for r in json.loads((root / f"{name}.json").read_text())]
        hits = [len(set(kw) & t) / k for kw, t in zip(kwords, truth, strict=True)]
        stats[f"{name}_precision_at_k"] = float(np.mean(hits))
        with_kwords = [replace(e, kwords=tuple(kw)) for e, kw in zip(entries, kwords, strict=True)]
        write_caption_json(with_kwords, out / f"{name}.json", root)
    (out / "stats.json").write_text(json.dumps(stats))


def vision_init_file(ctx: Context[ViCHAConfig]) -> tuple[Path, dict[str, Any]]:
    """The caption-world ViT (the stand-in for the paper's ImageNet DeiT): pre-trained once, cached (rank 0 first)."""
    c = ctx.config
    sizes = (c.image_size, c.patch_size, c.vision_width, c.vision_depth, c.vision_heads)
    key = _key(*sizes, c.train_pairs, c.test_pairs, c.max_objects, c.data_seed, c.vision_init_steps, c.vision_init_lr)
    path = ctx.cache_path(f"vision-init-{key}.safetensors")
    report_path = path.with_suffix(".json")

    def build() -> tuple[Path, dict[str, Any]]:
        if not report_path.is_file():
            write_vision_init(c, path)
        return path, json.loads(report_path.read_text())

    return ctx.main_first(build)


def write_vision_init(c: ViCHAConfig, path: Path) -> None:
    """Pre-train the ViT on the training world's cell attributes; accuracy on the test world; write both files."""
    from frugalvision.data.caption_world import caption_world, scene_cell_labels
    from frugalvision.engine import save_weights
    from frugalvision.methods.vicha.backbone import VisionPretrainConfig, pretrain_vision, stack_labels

    def tensors(world: Any) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.stack([image_to_tensor(im) for im in world.images])
        return images, stack_labels([scene_cell_labels(s) for s in world.scenes])

    train = caption_world(c.train_pairs, c.data_seed, c.image_size, c.max_objects)
    test = caption_world(c.test_pairs, c.data_seed + 1, c.image_size, c.max_objects, unique_captions=True)
    with torch.random.fork_rng():
        torch.manual_seed(c.data_seed)
        vit = ConceptViT(c.model(8, "albef")).vit
        settings = VisionPretrainConfig(steps=c.vision_init_steps, lr=c.vision_init_lr)
        report = pretrain_vision(vit, *tensors(train), settings, heldout=tensors(test), seed=c.data_seed)
    save_weights(vit.state_dict(), path)
    summary = {"steps": c.vision_init_steps, "final_loss": report.final_loss, "seconds": report.seconds}
    path.with_suffix(".json").write_text(json.dumps({**summary, "heldout_cell_accuracy": report.heldout_accuracy}))


def _tokenizer(c: ViCHAConfig, train: list[CaptionEntry]) -> TextTokenizer:
    texts = [t for e in train for t in (*e.captions, " ".join(e.kwords))]
    if c.dataset == "caption-world":  # the words of the downstream tasks too
        from frugalvision.data.caption_world import vocabulary

        texts.append(" ".join(vocabulary()))
    if c.text == "pretrained":
        from frugalvision.nn.minilm import WordPieceTokenizer

        base = WordPieceTokenizer(c.text_dir)
        return SubsetTokenizer.fit(base, texts) if c.prune_vocabulary else base
    return WordTokenizer.fit(texts)


def load_data(ctx: Context[ViCHAConfig]) -> PretrainData:
    """The caption world with concepts (generated and cached), or the user's ALBEF-format files."""
    c = ctx.config
    if c.dataset == "albef-json":
        assert c.data_root is not None
        train = [
            e
            for path, images in pretrain_files(c.data_root, c.sources)
            for e in load_caption_json(path, images, c.strip_prefix)
        ]
        test = load_caption_json(Path(c.data_root) / c.test_json, c.data_root, c.strip_prefix)
        return PretrainData(train, test, None, None, _tokenizer(c, train), Path(c.data_root), {})
    root = world_root(ctx)
    train_json, test_json, stats = concept_files(ctx, root)
    train, test = load_caption_json(train_json, root), load_caption_json(test_json, root)
    vision = None
    if c.vision_init == "caption-world":
        vision, report = vision_init_file(ctx)
        stats = {**stats, "vision_init": report}
    tokenizer = _tokenizer(c, train)
    return PretrainData(train, test, _read_images(train), _read_images(test), tokenizer, root, stats, vision)


def shuffled_concepts(entries: list[CaptionEntry], seed: int = 0) -> list[CaptionEntry]:
    """Every entry gets the concepts of another entry (a seeded derangement): the control arm's input."""
    order = torch.randperm(len(entries), generator=torch.Generator().manual_seed(seed)).tolist()
    source = {order[i]: order[(i + 1) % len(order)] for i in range(len(order))}
    return [replace(e, kwords=entries[source[i]].kwords) for i, e in enumerate(entries)]


# ------------------------------------------------------------------------------------------------ units
def arm_task(c: ViCHAConfig, arm: str, data: PretrainData, world_size: int) -> ViCHATask:
    """The task of one arm: its model, datasets, losses and schedule."""
    uses_vc = ARM_PARTS[arm][2]
    train, test = data.train, data.test
    if arm == "vicha_shuffled_vc":
        train, test = shuffled_concepts(train), shuffled_concepts(test, seed=1)
    common = {"use_concepts": uses_vc, "max_tokens": c.max_tokens, "max_concept_tokens": c.max_concept_tokens}
    train_set = CaptionDataset(
        train,
        data.tokenizer,
        train=True,
        images=data.train_images,
        transform=pretrain_transform(c.image_size),
        concept_fraction=c.concept_fraction,
        **common,
    )
    test_set = CaptionDataset(
        test, data.tokenizer, train=False, images=data.test_images, transform=eval_transform(c.image_size), **common
    )
    kept = data.tokenizer.kept if isinstance(data.tokenizer, SubsetTokenizer) else ()
    model_cfg = c.model(len(data.tokenizer), arm, kept)
    vision_weights = data.vision_weights or c.vision_weights

    def build() -> ViCHAModel:
        model = ViCHAModel(model_cfg)
        if vision_weights:
            load_vision_weights(model, str(vision_weights))
        return model

    steps_per_epoch = max(1, len(train_set) // (c.loop.batch_size * world_size))
    schedule = OfficialSchedule(steps_per_epoch, c.epochs, c.loop.lr, c.loop.min_lr) if c.official_schedule else None
    return ViCHATask(
        build,
        train_set,
        {"test": test_set} if test else {},
        c.objectives(special_ids(data.tokenizer)),
        queue_size=c.queue_size,
        momentum=c.momentum,
        alpha=c.alpha,
        alpha_ramp_steps=int(c.alpha_ramp_epochs * steps_per_epoch),
        schedule=schedule,
    )


#: config fields a pre-trained model does not depend on (bookkeeping, evaluation, downstream fine-tuning)
NOT_PRETRAINING = ("preset", "out", "seeds", "arms", "resume", "progress", "study", "threads", "eval_split")
#: arms whose pre-trained models are kept for the downstream studies
TRANSFER_ARMS = ("albef", "vicha")


def pretrained_path(ctx: Context[ViCHAConfig], arm: str, seed: int) -> Path:
    """Cache file of one arm's pre-trained model for one seed (keyed by every field pre-training depends on)."""
    fields = {k: v for k, v in asdict(ctx.config).items() if k not in NOT_PRETRAINING and not k.startswith("finetune_")}
    return ctx.cache_path(f"pretrained-{_key(fields)}") / f"{arm}-seed{ctx.loop_seed(seed)}.safetensors"


def pretrain_arm(
    ctx: Context[ViCHAConfig], arm: str, data: PretrainData, name: str = ""
) -> tuple[FitResult, ViCHATask]:
    """Pre-train one arm for the current unit's seed; keep the albef/vicha models in the cache (rank 0).

    The global generators are seeded as the harness seeds the main study's unit of this arm, so a model pre-trained
    inside a downstream unit is the one the main study makes.
    """
    from frugalvision.engine import seed_everything
    from frugalvision.methods.vicha.api import Pretrained, save_pretrained
    from frugalvision.seeding import derive_seed

    seed_everything(derive_seed(ctx.method, arm, ctx.seed, *ctx.seed_offsets))
    task = arm_task(ctx.config, arm, data, ctx.engine.world_size)
    result = ctx.fit(task, ctx.config.loop, name=name, seed=ctx.seed)
    if arm in TRANSFER_ARMS:
        if ctx.is_main:
            assert task.momentum is not None
            pretrained = Pretrained(result.model, task.momentum, data.tokenizer, {})
            save_pretrained(pretrained_path(ctx, arm, ctx.seed), pretrained)
        ctx.engine.barrier()
    return result, task


def run_unit(ctx: Context[ViCHAConfig], unit: Unit) -> UnitResult:
    """Pre-train one arm for one seed, then zero-shot retrieval on the held-out pairs."""
    data = ctx.memo("data", lambda: load_data(ctx))
    result, _ = pretrain_arm(ctx, unit.name, data)
    metrics = dict(result.metrics["test"])
    metrics["train_s"] = result.wall_s
    metrics["step_ms"] = 1e3 * result.wall_s / max(1, result.steps)
    metrics["params_m"] = count_parameters(result.model) / 1e6
    metrics["test_pairs"] = float(len(data.test))
    curves = {
        key: [[h["step"], h[key]] for h in result.history if key in h]
        for key in ("loss_itc", "loss_itm", "loss_mlm", "loss_hitc", "loss_mim")
    }
    extras = {"curves": curves, "sizes": [len(data.train), len(data.test)], "root": str(data.root), **data.stats}
    return UnitResult.one_row(unit, metrics, dataset=ctx.config.dataset, **extras)


# ------------------------------------------------------------------------------------------------ verdict
def learned(rows: list[dict[str, Any]], name: str, chance: float) -> Precondition:
    """Precondition: the arm's mean R@1 reaches ``LEARNED_FACTOR`` x chance (pre-training learned at all)."""
    values = list(metric_values(rows, METRIC, name).values())
    mean = sum(values) / len(values) if values else math.nan
    floor = LEARNED_FACTOR * chance
    return Precondition(
        f"{name} learns (mean {METRIC} >= {LEARNED_FACTOR:g} x chance)", mean >= floor, f"{mean:.4f} vs {floor:.4f}"
    )


def _paired(rows: list[dict[str, Any]], better: str, reference: str) -> Comparison:
    if metric_values(rows, METRIC, better) and metric_values(rows, METRIC, reference):
        return compare(rows, METRIC, better=better, reference=reference)
    return Comparison(METRIC, better, reference, ())


def vicha_verdict(rows: list[dict[str, Any]], chance: float) -> Verdict:
    """Supported iff both models learn and ViCHA's paired R@1 gain over ALBEF has its 95 % lower bound above 0.

    The other arms are reported as secondary evidence, outside the rule.
    """
    main = claim_verdict(
        [_paired(rows, "vicha", "albef")],
        [learned(rows, "albef", chance), learned(rows, "vicha", chance)],
        claim="ViCHA beats the ALBEF-style baseline at equal data and steps",
    )
    names = {row["name"] for row in rows}
    secondary = [
        "secondary (outside the rule): " + _paired(rows, arm, "albef").describe()
        for arm in ARMS
        if arm in names and arm not in ("albef", "vicha")
    ]
    if "vicha_shuffled_vc" in names:
        secondary.append("secondary (outside the rule): " + _paired(rows, "vicha", "vicha_shuffled_vc").describe())
    rule = main.rule + "; rows other than vicha and albef are secondary evidence outside the rule"
    return Verdict(main.verdict, rule, main.evidence + tuple(secondary), main.comparisons)


def chance_r1(rows: list[dict[str, Any]]) -> float:
    """Chance R@1: one over the number of held-out pairs."""
    pairs = [row["metrics"]["test_pairs"] for row in rows if "test_pairs" in row["metrics"]]
    return 1.0 / (sum(pairs) / len(pairs)) if pairs else 1.0


def verdict(config: ViCHAConfig, rows: list[dict[str, Any]]) -> Verdict:
    """Main verdict (see :func:`vicha_verdict`)."""
    return vicha_verdict(rows, chance_r1(rows))


# ------------------------------------------------------------------------------------------------ report
def figures(fig: FigureInput[ViCHAConfig]) -> list[str]:
    """Mean ITC-loss curve per arm (band: std over seeds)."""
    from frugalvision.report import line_plot

    series, steps = {}, []
    for name in dict.fromkeys(r.unit.name for r in fig.records):
        curves = [e["curves"]["loss_itc"] for e in fig.extras(name) if e.get("curves", {}).get("loss_itc")]
        if curves and all(len(cv) == len(curves[0]) for cv in curves):
            stacked = torch.tensor(curves, dtype=torch.float64)
            steps = stacked[0, :, 0].tolist()
            series[name] = (stacked[..., 1].mean(0).tolist(), stacked[..., 1].std(0, unbiased=False).tolist())
    if not series:
        return []
    return [line_plot(fig.out_dir / "itc_loss.png", steps, series, "step", "ITC loss", "ViCHA arms").name]


def notes(config: ViCHAConfig, records: list[UnitRecord]) -> str:
    """Data sizes, loop, concept quality."""
    extras = records[0].extras if records else {}
    sizes = extras.get("sizes", [0, 0])
    precision = extras.get("test_precision_at_k")
    concept_words = (
        f"; visual concepts: top-{extras.get('k')} of {len(extras.get('vocabulary', []))} mined words by the offline "
        f"dual encoder, exact precision@k train {extras.get('train_precision_at_k', float('nan')):.3f} / test "
        f"{precision:.3f}"
        if precision is not None
        else ""
    )
    return (
        f"data at {extras.get('root')}; pairs train/test = {sizes[0]}/{sizes[1]}; {config.loop.max_steps} steps x "
        f"batch {config.loop.batch_size} per process for every arm (equal data and steps); zero-shot retrieval with "
        f"the ITC features{concept_words}"
    )


# ------------------------------------------------------------------------------------------------ benchmark
def benchmark(out_dir: Path, rounds: int = 15, batch_size: int | None = None) -> dict[str, Any]:
    """One pre-training step (forward, backward, AdamW, queue, EMA) of ViCHA vs the ALBEF-style baseline.

    Standard-preset sizes (MiniLM layers with the caption world's word pieces, the 48 px ViT, batch 16) on caption
    -world captions and concepts and random images, interleaved rounds (:mod:`frugalvision.harness.timing`).
    """
    from frugalvision.data.caption_world import caption_world
    from frugalvision.methods.vicha.data import pad_ids
    from frugalvision.methods.vicha.functional import ema_update

    config = standard()
    batch_size = batch_size or config.loop.batch_size
    tokenizer = _tokenizer(config, [])
    kept = tokenizer.kept if isinstance(tokenizer, SubsetTokenizer) else ()
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    scenes = caption_world(batch_size, seed=0, image_size=8).scenes
    images = torch.randn(batch_size, 3, config.image_size, config.image_size, generator=gen)
    text = pad_ids([tokenizer.encode(s.captions[0], config.max_tokens) for s in scenes])
    concepts = pad_ids([tokenizer.encode(" ".join(sorted({o.colour for o in s.objects})), 55) for s in scenes])
    objectives = config.objectives(special_ids(tokenizer))
    steps = {}
    for arm in ("albef", "vicha"):
        model = ViCHAModel(config.model(len(tokenizer), arm, kept))
        momentum, queue = momentum_copy(model), FeatureQueue(config.queue_size, config.embed_dim)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        batch = Batch(images, text, concepts if model.uses_concepts else None)

        def step(model=model, momentum=momentum, queue=queue, optimizer=optimizer, batch=batch) -> None:
            out = model(batch, momentum, queue, 0.4, objectives)
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
            queue.push(out.image_feat_m, out.text_feat_m)
            ema_update(momentum, model, config.momentum)

        steps[arm] = step
    timings = interleaved_timings(steps, rounds=rounds, warmup=2)
    row = ratio_entry(
        timings,
        "vicha",
        "albef",
        name=f"pre-training step, standard sizes (batch {batch_size})",
        arm_label="ViCHA (H-ITC, MIM, concept tokens)",
        peer_label="ALBEF-style step (ITC, ITM, MLM)",
        batch_size=batch_size,
    )
    return benchmark_result([row])


# ------------------------------------------------------------------------------------------------ declaration
MAIN = Study(
    claim=CLAIM,
    primary_metric=METRIC,
    run_unit=run_unit,
    verdict=verdict,
    arms=lambda config: config.arms,
    figures=figures,
    notes=notes,
)

EXPERIMENT = Experiment(
    name=METHOD, config_class=ViCHAConfig, presets=PRESETS, main=MAIN, studies=STUDIES, benchmark=benchmark
)
