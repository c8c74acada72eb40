"""T-Food experiment settings, the arms (one component added per arm) and the model of an arm."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from frugalvision.engine.config import LoopConfig
from frugalvision.errors import ConfigError
from frugalvision.harness import RunConfig
from frugalvision.methods.tfood.model import ImageEncoderConfig, RecipeEncoderConfig, TFoodModel
from frugalvision.methods.tfood.task import LossConfig

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
#: the paper's ITM loss weight (L = L_tri + 1.0 L_ITM)
PAPER_ITM_WEIGHT = 1.0


@dataclass
class TFoodConfig(RunConfig):
    """T-Food experiment settings.

    Attributes:
        arms: rows of the main study (see ``ARMS``); "tfood_rerank" is a row of the "tfood" unit (needs "tfood").
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
        itm_weight: weight of the ITM loss (paper 1.0; ``extended`` uses the weight chosen on validation).
        itm_grid: ITM weights the ``itm_weight`` study compares on validation (must hold the paper's 1.0).
        itm_temperature: hard-negative sampling temperature (1.0).
        freeze_image_epochs: epochs with the image backbone frozen (paper 20; 0 for a random-init backbone).
        image_lr_scale: image backbone learning rate / the rest (paper 0.1).
        rerank_k: candidates re-scored by the ITM head.
        pretrain_steps: steps of the contrastive image-encoder pretraining (image <-> bag of ingredient words,
            InfoNCE) run once on the training images, cached and loaded by every arm: the CLIP stand-in (0: off).
        pretrain_batch: global batch of the pretraining.
        pretrain_lr: AdamW learning rate of the pretraining (cosine, 5 % warm-up).
        pretrain_temperature: InfoNCE temperature.
        select_best: report the weights with the best validation R@1 (first protocol, mean of both directions) over
            the evaluations every ``loop.eval_every`` steps and at the end; False reports the last weights.
        protocols: ``(name, bag size, bags)`` of the evaluation (paper: 1k x 10 and 10k x 5).
        eval_seed: seed of the evaluation bags.
        loop: optimisation (Adam, no weight decay; clip 8). ``loop.batch_size`` is the **global** batch: each of
            the N processes trains on ``loop.batch_size / N`` pairs (the paper's 100 stays 100 on any GPU count).
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
    itm_weight: float = PAPER_ITM_WEIGHT
    itm_grid: tuple[float, ...] = (0.1, 0.3, PAPER_ITM_WEIGHT)
    itm_temperature: float = 1.0
    freeze_image_epochs: int = 0
    image_lr_scale: float = 1.0
    rerank_k: int = 10
    pretrain_steps: int = 0
    pretrain_batch: int = 64
    pretrain_lr: float = 1e-3
    pretrain_temperature: float = 0.07
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
        if self.pretrain_steps < 0 or self.pretrain_batch < 2 or self.pretrain_temperature <= 0:
            raise ConfigError("pretrain_steps must be >= 0, pretrain_batch >= 2 and pretrain_temperature > 0")
        if self.pretrain_steps and self.image.backbone != "vit":
            raise ConfigError("pretrain_steps pretrains the random-init ViT; set it to 0 with a pretrained backbone")
        if PAPER_ITM_WEIGHT not in self.itm_grid or len(set(self.itm_grid)) < 2 or min(self.itm_grid) <= 0:
            raise ConfigError(
                f"itm_grid={self.itm_grid} is invalid; give >= 2 positive weights including the paper's 1.0"
            )
        if not 0.0 <= self.background_fraction < 1.0:
            raise ConfigError(f"background_fraction={self.background_fraction} is invalid; use a value in [0, 1)")


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


def build_model(config: TFoodConfig, vocab_size: int, htd: bool, mmr: bool, max_title: int = 32) -> TFoodModel:
    """The model of one arm (``max_title``: title positions, the longest title of the data: titles are kept whole)."""
    recipe = RecipeEncoderConfig(
        vocab_size=vocab_size,
        width=config.recipe_width,
        heads=config.recipe_heads,
        layers=config.recipe_layers,
        htd_layers=config.htd_layers if htd else 0,
        ffn=config.recipe_ffn,
        dropout=config.dropout,
        max_title=max_title,
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
