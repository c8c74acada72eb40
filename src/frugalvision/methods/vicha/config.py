"""ViCHA experiment settings, the arms (the paper's ablation ladder) and the model and losses of an arm."""

from __future__ import annotations

from dataclasses import dataclass, field

from frugalvision.engine.config import LoopConfig
from frugalvision.errors import ConfigError
from frugalvision.harness import RunConfig
from frugalvision.methods.vicha.data import PRETRAIN_SOURCES
from frugalvision.methods.vicha.model import ModelConfig
from frugalvision.methods.vicha.objectives import ObjectiveConfig
from frugalvision.methods.vicha.text import SpecialIds

#: arm -> (H-ITC, U-MIM, visual concepts); "vicha_shuffled_vc" is ViCHA fed the concepts of another image (control)
ARM_PARTS = {
    "albef": (False, False, False),
    "albef_hitc": (True, False, False),
    "albef_mim": (False, True, False),
    "albef_vc": (False, False, True),
    "vicha": (True, True, True),
    "vicha_shuffled_vc": (True, True, True),
}
ARMS = tuple(ARM_PARTS)
#: rows of the downstream studies: no vision-language pre-training, ALBEF-style pre-training, ViCHA pre-training
FINETUNE_ROWS = ("scratch", "albef", "vicha")
ABLATION_ARMS = ("albef", "albef_hitc", "albef_mim", "albef_vc", "vicha")


@dataclass
class ViCHAConfig(RunConfig):
    """ViCHA pre-training experiment (paper values in brackets).

    Attributes:
        dataset: "caption-world" (generated offline into the method's cache) or "albef-json" (the user's ALBEF-format
            pre-training JSON files under ``data_root``: ``annotations/<source>_kw.json`` and image folders).
        arms: trained rows (see ``ARMS``).
        train_pairs: caption-world training images (each with three captions).
        test_pairs: caption-world held-out images (unique canonical captions) for zero-shot retrieval.
        val_pairs: caption-world validation images (another world, unique captions) for calibration.
        eval_split: "test" (the held-out pairs) or "val" (the validation pairs: calibration only).
        image_size: image side [256].
        max_objects: at most this many objects per caption-world scene.
        data_seed: seed of the caption world (the same world for every training seed).
        sources: pre-training sources of "albef-json" [coco, vg, sbu (1M); + cc3m (4M)].
        test_json: retrieval JSON (relative to ``data_root``) for the zero-shot evaluation of "albef-json".
        strip_prefix: leading path components dropped from the JSON image paths (the authors' files: 4).
        text: "scratch" (BERT of the sizes below, word tokenizer fitted on the captions) or "pretrained" (a BERT
            encoder from ``text_dir``, or the offline MiniLM-L6 when None, with its WordPiece tokenizer).
        text_dir: folder of a Hugging Face BERT (config.json, model.safetensors, tokenizer.json) [bert-base-uncased].
        vision_weights: optional timm-format ViT weights (safetensors) to start from [DeiT-B].
        vision_init: "scratch" (random ViT, or ``vision_weights``) or "caption-world": the offline stand-in for the
            paper's ImageNet-pretrained ViT, pre-trained once, supervised, on the caption world's training images
            (every cell's shape, colour and size; :mod:`.backbone`), cached and shared by every arm and seed.
        vision_init_steps: steps of that pre-training (batch 64).
        vision_init_lr: its peak learning rate.
        prune_vocabulary: with ``text="pretrained"``, keep only the word pieces of the corpus in the embedding table
            (speed on CPUs; the paper keeps BERT's 30,522).
        patch_size: ViT patch [16].
        vision_width: ViT width [768].
        vision_depth: ViT blocks [12].
        vision_heads: ViT heads [12].
        text_width: BERT width [768] (scratch only).
        text_heads: BERT heads [12] (scratch only).
        text_intermediate: BERT feed-forward width [3072] (scratch only).
        text_layers: text-only layers [6].
        fusion_layers: fusion layers [6] (scratch only; pretrained: the remaining layers).
        dropout: BERT dropout [0.1].
        text_pool: "cls" (ALBEF's [CLS]) or "mean" (mean of valid tokens, how MiniLM was trained to be read; its
            [CLS] is the same vector for every sentence in its first four layers) for ITC, H-ITC, ITM and the heads.
        embed_dim: contrastive width [256].
        hitc_levels: H-ITC levels of the H-ITC arms [5].
        concept_layers: concept-encoder layers of the VC arms [2].
        mim_width: MIM decoder width [768].
        mim_depth: MIM decoder blocks [2].
        mim_heads: MIM decoder heads [16].
        grad_checkpointing: recompute layers in the backward pass (GPU memory).
        queue_size: momentum queue [65,536]; 32 (one batch) offline: with 256 the small from-scratch encoders
            collapse onto telling fresh from stale queue entries within our budgets (README, calibration).
        momentum: EMA decay [0.995].
        alpha: distillation weight [0.4].
        alpha_ramp_epochs: epochs of the linear alpha ramp [1].
        hitc_weight: H-ITC global weight [0.1].
        hitc_detach_keys: official stop-gradient on the gathered H-ITC keys [True].
        mlm_probability: MLM masking probability [0.15].
        mask_ratio: MIM masking ratio [0.75].
        concept_k: concepts stored per image [15].
        concept_fraction: pre-training subsample fraction, drawn with replacement [0.3].
        concept_threshold: vocabulary count threshold [0; CC3M 2].
        concept_modifiers: vocabulary also keeps the modifiers of noun phrases (our caption-world reading: colours and
            sizes join the shape nouns, whose vocabulary alone is tiny).
        scorer: "dual-encoder" (trained offline on the training pairs) or "clip" (open-clip-torch, ``clip_weights``).
        scorer_steps: optimiser steps of the offline dual encoder.
        scorer_batch: pairs per step of the offline dual encoder.
        scorer_size: input side of the offline dual encoder (it resizes images first, as CLIP does).
        clip_weights: local open-clip checkpoint for ``scorer="clip"``.
        max_tokens: caption tokens [25].
        max_concept_tokens: concept-string tokens [55].
        official_schedule: the official per-epoch cosine with the 2,000-iteration stair warm-up (spec V2) instead of
            the engine's per-step schedule.
        epochs: epochs of the official schedule [11 for 1M].
        loop: optimisation [AdamW lr 1e-4, wd 0.02, batch 32 per GPU].
        finetune_rows: the downstream studies' rows: "scratch" (no vision-language pre-training: the unimodal
            encoders the pre-training starts from, fusion cross-attention and heads fresh), "albef" and "vicha" (the
            pre-trained arms of this config, made once and cached).
        finetune_train: caption-world training images of a downstream task (NLVR2: image pairs).
        finetune_test: caption-world test images of a downstream task (NLVR2: image pairs).
        finetune_steps: fine-tuning steps, equal for every row (0: the paper's epochs of the task).
        finetune_batch: fine-tuning batch [16 per GPU for retrieval].
        finetune_lr: fine-tuning peak learning rate (0: the paper's value of the task: 1e-5 retrieval and
            grounding, 2e-5 VQA, NLVR2, SNLI-VE).
        finetune_warmup: warm-up steps of the fine-tuning cosine.
        finetune_k_test: retrieval: candidates re-ranked by ITM per query [256 COCO, 128 Flickr].
        finetune_distill: momentum distillation in fine-tuning [on].
        finetune_layer: fusion layer whose cross-attention Grad-CAM reads (grounding) [the 3rd of 6].
    """

    dataset: str = "caption-world"
    seeds: tuple[int, ...] = (0, 1, 2)
    arms: tuple[str, ...] = ("albef", "vicha")
    train_pairs: int = 3000
    test_pairs: int = 500
    val_pairs: int = 500
    eval_split: str = "test"
    image_size: int = 32
    max_objects: int = 3
    data_seed: int = 0
    sources: tuple[str, ...] = ("coco", "vg", "sbu")
    test_json: str = "annotations/coco_test.json"
    strip_prefix: int = 0
    text: str = "scratch"
    text_dir: str | None = None
    vision_weights: str | None = None
    vision_init: str = "scratch"
    vision_init_steps: int = 600
    vision_init_lr: float = 1e-3
    prune_vocabulary: bool = False
    patch_size: int = 8
    vision_width: int = 64
    vision_depth: int = 6
    vision_heads: int = 4
    text_width: int = 64
    text_heads: int = 4
    text_intermediate: int = 256
    text_layers: int = 3
    fusion_layers: int = 3
    dropout: float = 0.0
    text_pool: str = "cls"
    embed_dim: int = 32
    hitc_levels: int = 2
    concept_layers: int = 1
    mim_width: int = 64
    mim_depth: int = 1
    mim_heads: int = 4
    grad_checkpointing: bool = False
    queue_size: int = 32
    momentum: float = 0.995
    alpha: float = 0.4
    alpha_ramp_epochs: float = 1.0
    hitc_weight: float = 0.1
    hitc_detach_keys: bool = True
    mlm_probability: float = 0.15
    mask_ratio: float = 0.75
    concept_k: int = 6
    concept_fraction: float = 0.5
    concept_threshold: int = 0
    concept_modifiers: bool = True
    scorer: str = "dual-encoder"
    scorer_steps: int = 300
    scorer_batch: int = 128
    scorer_size: int = 32
    clip_weights: str | None = None
    max_tokens: int = 25
    max_concept_tokens: int = 55
    official_schedule: bool = False
    epochs: int = 11
    loop: LoopConfig = field(
        default_factory=lambda: LoopConfig(
            max_steps=300, batch_size=32, lr=1e-3, weight_decay=0.02, warmup_steps=30, min_lr=1e-4, log_every=10
        )
    )
    finetune_rows: tuple[str, ...] = ("scratch", "albef", "vicha")
    finetune_train: int = 1000
    finetune_test: int = 300
    finetune_steps: int = 100
    finetune_batch: int = 16
    finetune_lr: float = 1e-4
    finetune_warmup: int = 10
    finetune_k_test: int = 16
    finetune_distill: bool = False
    finetune_layer: int = -1

    def validate(self) -> None:
        """Check every field (one-line ConfigError naming the field and the fix)."""
        super().validate()
        self.loop.validate()
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms:
            raise ConfigError(f"arms={self.arms!r} is invalid; choose among {', '.join(ARMS)}")
        if self.dataset not in ("caption-world", "albef-json"):
            raise ConfigError(
                f"dataset={self.dataset!r} is invalid; use caption-world or albef-json (with --data-root)"
            )
        if self.dataset == "albef-json" and self.data_root is None:
            raise ConfigError("dataset=albef-json needs --data-root (the folder with annotations/ and the images)")
        if any(s not in PRETRAIN_SOURCES for s in self.sources):
            raise ConfigError(f"sources={self.sources!r} is invalid; choose among {', '.join(PRETRAIN_SOURCES)}")
        if self.text not in ("scratch", "pretrained"):
            raise ConfigError(f"text={self.text!r} is invalid; use 'scratch' or 'pretrained'")
        if self.vision_init not in ("scratch", "caption-world"):
            raise ConfigError(f"vision_init={self.vision_init!r} is invalid; use 'scratch' or 'caption-world'")
        if self.vision_init == "caption-world" and self.dataset != "caption-world":
            raise ConfigError("vision_init=caption-world needs dataset=caption-world; pass --vision-weights instead")
        if self.eval_split not in ("test", "val"):
            raise ConfigError(f"eval_split={self.eval_split!r} is invalid; use 'test' or 'val'")
        if self.scorer not in ("dual-encoder", "clip"):
            raise ConfigError(f"scorer={self.scorer!r} is invalid; use dual-encoder or clip (with --clip-weights)")
        if self.scorer == "clip" and self.clip_weights is None:
            raise ConfigError("scorer=clip needs --clip-weights (a local open-clip checkpoint file)")
        if self.loop.batch_size < 2:
            raise ConfigError(f"loop.batch_size={self.loop.batch_size} is too small; ITM needs >= 2 pairs per batch")
        for name in ("train_pairs", "test_pairs", "val_pairs", "queue_size", "concept_k", "max_tokens", "embed_dim"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} is invalid; it must be a positive integer")
        if not 0 <= self.momentum < 1 or not 0 <= self.alpha <= 1:
            raise ConfigError(f"momentum={self.momentum} / alpha={self.alpha} are invalid; use values in [0, 1)")
        if not 0 < self.concept_fraction <= 1:
            raise ConfigError(f"concept_fraction={self.concept_fraction} is invalid; use a value in (0, 1]")
        bad_rows = [r for r in self.finetune_rows if r not in FINETUNE_ROWS]
        if bad_rows or not self.finetune_rows:
            rows = ", ".join(FINETUNE_ROWS)
            raise ConfigError(f"finetune_rows={self.finetune_rows!r} is invalid; choose among {rows}")
        for name in ("finetune_train", "finetune_test", "finetune_batch", "finetune_k_test"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} is invalid; it must be a positive integer")
        if self.finetune_steps < 0 or self.finetune_lr < 0:
            raise ConfigError("finetune_steps and finetune_lr must be >= 0 (0: the paper's value of the task)")
        self.objectives(SpecialIds(0, 2, 3, 4)).validate()
        self.model(2, "vicha").validate()

    def model(self, vocab_size: int, arm: str, text_vocab: tuple[int, ...] = ()) -> ModelConfig:
        """The model of one arm (``text_vocab``: the kept word-piece ids of a pruned vocabulary)."""
        hitc, mim, vc = ARM_PARTS[arm]
        return ModelConfig(
            vocab_size=vocab_size,
            text_vocab=text_vocab,
            image_size=self.image_size,
            patch_size=self.patch_size,
            vision_width=self.vision_width,
            vision_depth=self.vision_depth,
            vision_heads=self.vision_heads,
            text="scratch" if self.text == "scratch" else "minilm",
            text_dir=self.text_dir,
            text_width=self.text_width,
            text_heads=self.text_heads,
            text_intermediate=self.text_intermediate,
            text_layers=self.text_layers,
            fusion_layers=self.fusion_layers,
            max_text_positions=max(self.max_tokens, self.max_concept_tokens),
            dropout=self.dropout,
            embed_dim=self.embed_dim,
            hitc_levels=self.hitc_levels if hitc else 0,
            concept_layers=self.concept_layers if vc else 0,
            mim=mim,
            mim_width=self.mim_width,
            mim_depth=self.mim_depth,
            mim_heads=self.mim_heads,
            grad_checkpointing=self.grad_checkpointing,
            text_pool=self.text_pool,
        )

    def objectives(self, ids: SpecialIds) -> ObjectiveConfig:
        """Loss settings with the tokenizer's special ids."""
        return ObjectiveConfig(
            hitc_weight=self.hitc_weight,
            hitc_detach_keys=self.hitc_detach_keys,
            mlm_probability=self.mlm_probability,
            mask_ratio=self.mask_ratio,
            pad_id=ids.pad,
            cls_id=ids.cls,
            sep_id=ids.sep,
            mask_id=ids.mask,
        )
