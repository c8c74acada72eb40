"""Structured configs of the DeiT III experiment: training stages and recipes, the claims and their arms, presets.

The experiment's arms are single-ingredient swaps of one base recipe; each claim of the paper's ablation tables is a
pair of arms that differ in one ingredient (see :data:`CLAIMS` and :func:`claim_pair`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from frugalvision.errors import ConfigError
from frugalvision.harness import RunConfig

#: The claims an experiment can test, each a pair of arms (expected winner, reference):
#: recipe: the DeiT III recipe (the base) vs the DeiT recipe; loss: BCE on binarised Mixup/CutMix targets vs
#: soft-target CE; augment: 3-Augment vs RandAugment; crop: the crop of ``Deit3Config.crop_winner`` vs the other one;
#: resolution: low-resolution training then a fine-tune at full resolution vs full resolution throughout, at equal
#: training FLOPs.
CLAIMS = ("recipe", "loss", "augment", "crop", "resolution")
#: Every arm name: "base" is the base recipe itself; the others change one ingredient of it ("deit": the DeiT recipe).
ARMS = ("base", "deit", "bce", "ce", "three_augment", "randaugment", "src", "rrc", "lowres", "fullres")
#: Offline evaluation sets: clean test (the headline), validation, held-out tint band, Gaussian blur sigma 1.
EVAL_SPLITS = ("test", "val", "hue", "blur")
#: 3-Augment's Gaussian-blur radius range of the official ``augment.py`` (PIL radius = standard deviation, in pixels).
OFFICIAL_BLUR_SIGMA = (0.1, 2.0)
#: Mixup / CutMix of the official ImageNet-1k commands, given to both arms of the loss claim when the base has none.
PAPER_MIXUP, PAPER_CUTMIX = 0.8, 1.0
#: Colour jitter of the official 3-Augment commands (timm disables colour jitter when RandAugment is on).
PAPER_COLOR_JITTER = 0.3


def toy_src_padding(img_size: int, official: int = 4, reference: int = 224) -> int:
    """Simple Random Crop padding scaled to the image size: 4 px at 224 px is a 1.8 % shift; at least 1 px."""
    return max(1, round(official * img_size / reference))


@dataclass
class StageConfig:
    """One training stage (pre-training, or fine-tuning at the target resolution).

    Attributes:
        steps_fraction: share of the arm's optimiser steps spent in this stage.
        img_size: training resolution of this stage.
        global_batch: global batch of this stage (0: ``Deit3Config.batch_size`` x devices); the official commands
            pre-train at 2048 and fine-tune at 512, so each stage has its own.
        optimizer: "lamb" or "adamw" (timm).
        lr: peak learning rate (after ``lr_scaling``).
        lr_scaling: "none" (absolute LR, DeiT III) or "linear_512" (``lr * global batch / 512``, DeiT).
        weight_decay: weight decay (not on biases, norms, tokens, LayerScale).
        warmup_fraction: linear warm-up share of the stage's steps (from ``warmup_start_lr``).
        warmup_start_lr: learning rate at the first step.
        min_lr: final learning rate of the cosine.
        loss: "bce" (binarised mixed targets) or "ce" (soft-target cross-entropy).
        smoothing: label smoothing of the targets (must be 0 with "bce": smoothing makes every target positive).
        mixup_alpha: Mixup Beta parameter (0: off).
        cutmix_alpha: CutMix Beta parameter (0: off).
        mix_switch_prob: probability of CutMix when both are on.
        augment: "three_augment" (DeiT III), "randaugment" (DeiT) or "none".
        crop: "rrc" (RandomResizedCrop + flip), "src" (Simple Random Crop + flip) or "none".
        rrc_scale: area range of RandomResizedCrop (official (0.08, 1.0)).
        src_padding: reflect padding of SRC in pixels.
        blur_sigma: 3-Augment blur standard-deviation range in pixels (official U(0.1, 2.0) at 224 px). A blur
            of sigma pixels removes the same share of an image's sampled spectrum at any image size, so the
            official range is kept at toy sizes too (see :data:`OFFICIAL_BLUR_SIGMA`).
        color_jitter: brightness/contrast/saturation jitter (0 off).
        random_erasing: random-erasing probability (0 off).
        repeated_aug: repeated-augmentation copies (1 off).
        drop_path: stochastic-depth rate in this stage.
        clip_grad_norm: engine-side gradient clipping (0 off; timm LAMB clips at 1.0 internally anyway).
    """

    steps_fraction: float = 1.0
    img_size: int = 224
    global_batch: int = 0
    optimizer: Literal["lamb", "adamw"] = "lamb"
    lr: float = 4e-3
    lr_scaling: Literal["none", "linear_512"] = "none"
    weight_decay: float = 0.05
    warmup_fraction: float = 5 / 800
    warmup_start_lr: float = 1e-6
    min_lr: float = 1e-5
    loss: Literal["bce", "ce"] = "bce"
    smoothing: float = 0.0
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    mix_switch_prob: float = 0.5
    augment: Literal["three_augment", "randaugment", "none"] = "three_augment"
    crop: Literal["rrc", "src", "none"] = "rrc"
    rrc_scale: tuple[float, float] = (0.08, 1.0)
    src_padding: int = 4
    blur_sigma: tuple[float, float] = OFFICIAL_BLUR_SIGMA
    color_jitter: float = 0.3
    random_erasing: float = 0.0
    repeated_aug: int = 3
    drop_path: float = 0.05
    clip_grad_norm: float = 0.0

    def validate(self, where: str) -> None:
        """Raise ConfigError on an invalid value; ``where`` prefixes the field names."""
        if not 0 < self.steps_fraction <= 1:
            raise ConfigError(f"{where}.steps_fraction={self.steps_fraction} must be in (0, 1]")
        if self.img_size <= 0:
            raise ConfigError(f"{where}.img_size={self.img_size} must be positive")
        if self.global_batch < 0:
            raise ConfigError(f"{where}.global_batch={self.global_batch} must be >= 0 (0: batch_size x devices)")
        if self.loss == "bce" and self.smoothing > 0:
            raise ConfigError(
                f"{where}.smoothing={self.smoothing} with loss='bce' would binarise every target to 1; "
                "set smoothing to 0 or use loss='ce'"
            )
        if self.loss not in ("bce", "ce"):
            raise ConfigError(f"{where}.loss={self.loss!r} is invalid; use 'bce' or 'ce'")
        if self.repeated_aug < 1:
            raise ConfigError(f"{where}.repeated_aug={self.repeated_aug} must be >= 1 (1 disables it)")
        if not 0 <= self.drop_path < 1:
            raise ConfigError(f"{where}.drop_path={self.drop_path} must be in [0, 1)")
        if not 0 < self.rrc_scale[0] <= self.rrc_scale[1] <= 1:
            raise ConfigError(f"{where}.rrc_scale={self.rrc_scale} must satisfy 0 < low <= high <= 1")
        if self.blur_sigma[0] <= 0 or self.blur_sigma[1] < self.blur_sigma[0]:
            raise ConfigError(f"{where}.blur_sigma={self.blur_sigma} must be 0 < low <= high")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"{where}.warmup_fraction={self.warmup_fraction} must be in [0, 1)")
        for name in (
            "lr",
            "weight_decay",
            "smoothing",
            "mixup_alpha",
            "cutmix_alpha",
            "color_jitter",
            "random_erasing",
            "src_padding",
            "clip_grad_norm",
            "min_lr",
            "warmup_start_lr",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}.{name}={getattr(self, name)} must be >= 0")


@dataclass
class RecipeConfig:
    """A training recipe: model-side switches plus one or two stages.

    Attributes:
        layer_scale: use LayerScale.
        layer_scale_init: LayerScale init value (official DeiT III 1e-4).
        drop_path_schedule: "uniform" (DeiT III) or "linear" (DeiT / timm).
        class_pos_embed: give the class token a position embedding (DeiT) or not (DeiT III).
        pretrain: the (low-resolution) pre-training stage.
        finetune: the fine-tuning stage at the target resolution (None: no fine-tuning).
        eval_crop_ratio: evaluation resize ``int(size / ratio)`` then centre crop (official recipe 1.0).
    """

    layer_scale: bool = True
    layer_scale_init: float = 1e-4
    drop_path_schedule: Literal["uniform", "linear"] = "uniform"
    class_pos_embed: bool = False
    pretrain: StageConfig = field(default_factory=StageConfig)
    finetune: StageConfig | None = None
    eval_crop_ratio: float = 1.0

    def validate(self, where: str) -> None:
        """Raise ConfigError on an invalid value."""
        self.pretrain.validate(f"{where}.pretrain")
        if self.finetune is not None:
            self.finetune.validate(f"{where}.finetune")
            total = self.pretrain.steps_fraction + self.finetune.steps_fraction
            if abs(total - 1.0) > 1e-6:
                raise ConfigError(f"{where}: pretrain + finetune steps_fraction = {total:.3f}; they must sum to 1")
        if not 0 < self.eval_crop_ratio <= 1:
            raise ConfigError(f"{where}.eval_crop_ratio={self.eval_crop_ratio} must be in (0, 1]")
        if self.drop_path_schedule not in ("uniform", "linear"):
            raise ConfigError(f"{where}.drop_path_schedule={self.drop_path_schedule!r} is invalid; uniform or linear")


@dataclass
class ModelConfig:
    """ViT size: a named preset (tiny ... huge) or the explicit toy sizes.

    Attributes:
        preset: "tiny", "small", "medium", "base", "large", "huge", or "custom" (use the fields below).
        patch_size: patch size (custom).
        embed_dim: width (custom).
        depth: blocks (custom).
        num_heads: heads (custom).
    """

    preset: Literal["tiny", "small", "medium", "base", "large", "huge", "custom"] = "custom"
    patch_size: int = 7
    embed_dim: int = 64
    depth: int = 6
    num_heads: int = 4


@dataclass
class LowResConfig:
    """How the ``lowres`` arm is built from a base recipe that trains at one resolution (the toy presets).

    The arm spends ``finetune_share`` of the base's training FLOPs fine-tuning at the base's resolution and the rest
    at ``img_size``, so it gets more optimiser steps than the base for the same FLOPs (the paper's point: low-res
    training is cheaper per step, and the fine-tune removes the train/test resolution gap).

    Attributes:
        img_size: resolution of the low-resolution stage.
        finetune_share: share of the FLOPs budget spent in the full-resolution fine-tune.
        finetune_lr_scale: fine-tune peak LR = this x the base stage's LR (our reading; the paper's fine-tune LR
            follows 800 epochs of LAMB and does not transfer).
        finetune_warmup_fraction: warm-up share of the fine-tune's steps.
    """

    img_size: int = 21
    finetune_share: float = 0.1
    finetune_lr_scale: float = 0.1
    finetune_warmup_fraction: float = 0.1


@dataclass
class StabilityConfig:
    """The LayerScale stability sweep: the base recipe on a deeper ViT over learning rates, with and without LayerScale.

    Attributes:
        depth: blocks of the deeper ViT (12).
        lrs: peak learning rates of the sweep.
        optimizer: optimiser of the sweep: AdamW, whose steps do not adapt to each layer's weight norm (LAMB's trust
            ratio does), so that LayerScale's role in stabilising deep ViTs can show.
        steps: optimiser steps per run.
    """

    depth: int = 12
    lrs: tuple[float, ...] = (2e-3, 6e-3, 1.8e-2)
    optimizer: Literal["lamb", "adamw"] = "adamw"
    steps: int = 200


@dataclass
class FileListConfig:
    """Optional ``path,label`` CSV file lists instead of class folders (clusters where listing folders is slow).

    Labels are integers or class names (``frugalvision.data.ImageFolderDataset.from_csv``); the evaluation lists are
    labelled with the training list's classes. Used when ``train`` is set and the dataset is "imagenet" or
    "imagenet21k"; ``--data-root`` is then not needed.

    Attributes:
        train: CSV of the training images (None: read the class folders under ``--data-root``).
        val: CSV of the validation images (the headline metric).
        v2: CSV of ImageNet-V2 (optional).
        root: folder that relative paths resolve against (None: the folder of each CSV).
    """

    train: str | None = None
    val: str | None = None
    v2: str | None = None
    root: str | None = None


@dataclass
class Deit3Config(RunConfig):
    """The DeiT III experiment: single-ingredient swaps of a base recipe, paired over seeds.

    Attributes:
        claims: the claims to test (see :data:`CLAIMS`); their arms are trained, each once per seed. Empty: train
            the base recipe only (a model, no verdict: the ImageNet-21k -> 1k preset).
        crop_winner: the crop the crop claim expects to win: "rrc" (the paper's ImageNet-1k row) or "src" (its
            ImageNet-21k row, where the model does not over-fit the data; our toy regime of 2 epochs is this one).
        sanity_floor: a comparison is judged only when one of its arms reaches this mean top-1 (the regime learns).
        model: ViT size.
        base: the recipe every arm starts from (each arm changes one ingredient of it).
        deit: the DeiT (first version) recipe: the reference arm of the recipe claim.
        deit_steps: optimiser steps of the DeiT arm (0: ``steps``; the paper preset: DeiT's own 300 epochs).
        lowres: how the ``lowres`` arm is built when the base trains at one resolution.
        steps: optimiser steps of the base recipe (swapped arms get the same; the resolution arm built from the base
            gets the base's training FLOPs).
        batch_size: per-device batch size of stages without a ``global_batch``.
        n_train: training images (offline data).
        n_val: validation images (offline data).
        n_test: test images (offline data).
        eval_splits: offline evaluation sets of :data:`EVAL_SPLITS` ("test", the headline, is always one of them).
        num_workers: DataLoader workers (augmentation runs in them).
        eval_every: evaluate every N steps (0: end only).
        stability: settings of the ``--study stability`` sweep.
        file_list: CSV file lists instead of class folders (real data).
        init_weights: safetensors file of pre-trained weights (timm or official keys) that every arm starts from,
            e.g. the ImageNet-21k model for the 21k -> 1k fine-tune (None: train from scratch).
        reset_head: with ``init_weights``: a new classifier instead of the checkpoint's (always when the number of
            classes differs).
    """

    claims: tuple[str, ...] = ("loss", "augment", "crop", "resolution")
    crop_winner: Literal["src", "rrc"] = "src"
    sanity_floor: float = 0.5
    model: ModelConfig = field(default_factory=ModelConfig)
    base: RecipeConfig = field(default_factory=RecipeConfig)
    deit: RecipeConfig = field(default_factory=RecipeConfig)
    deit_steps: int = 0
    lowres: LowResConfig = field(default_factory=LowResConfig)
    steps: int = 400
    batch_size: int = 64
    n_train: int = 12000
    n_val: int = 2000
    n_test: int = 5000
    eval_splits: tuple[str, ...] = EVAL_SPLITS
    num_workers: int = 0
    eval_every: int = 0
    stability: StabilityConfig = field(default_factory=StabilityConfig)
    file_list: FileListConfig = field(default_factory=FileListConfig)
    init_weights: str | None = None
    reset_head: bool = True

    def validate(self) -> None:
        """Raise ConfigError on an invalid value."""
        super().validate()
        unknown = [c for c in self.claims if c not in CLAIMS]
        if unknown or len(set(self.claims)) != len(self.claims):
            raise ConfigError(f"claims={self.claims} is invalid; choose distinct claims among {', '.join(CLAIMS)}")
        if "test" not in self.eval_splits or not set(self.eval_splits) <= set(EVAL_SPLITS):
            raise ConfigError(
                f"eval_splits={self.eval_splits} must include 'test' and be among {', '.join(EVAL_SPLITS)}"
            )
        if self.crop_winner not in ("src", "rrc"):
            raise ConfigError(f"crop_winner={self.crop_winner!r} is invalid; use 'src' or 'rrc'")
        if self.steps <= 0 or self.batch_size <= 0 or self.deit_steps < 0:
            raise ConfigError(f"steps={self.steps} and batch_size={self.batch_size} must be positive, deit_steps >= 0")
        st = self.stability
        if st.depth <= 0 or st.steps <= 0 or not st.lrs or min(st.lrs) <= 0:
            raise ConfigError("stability.depth, stability.steps and every stability.lrs value must be positive")
        low = self.lowres
        if not 0 < low.finetune_share < 1 or low.img_size <= 0 or low.finetune_lr_scale <= 0:
            raise ConfigError("lowres.finetune_share must be in (0, 1), lowres.img_size and finetune_lr_scale > 0")
        if "resolution" in self.claims and self.base.finetune is None and low.img_size >= self.base.pretrain.img_size:
            raise ConfigError(
                f"lowres.img_size={low.img_size} must be below the base resolution {self.base.pretrain.img_size}"
            )
        self.base.validate("base")
        self.deit.validate("deit")
        if self.preset == "paper_21k_ft" and self.init_weights is None:
            raise ConfigError("preset paper_21k_ft fine-tunes a 21k model; pass --init-weights <model.safetensors>")
        if self.file_list.train is not None and self.file_list.val is None:
            raise ConfigError("file_list.train is set but file_list.val is not; pass --file-list.val <val.csv>")
        if self.file_list.train is not None and self.dataset not in ("imagenet", "imagenet21k"):
            raise ConfigError(f"file_list needs dataset imagenet or imagenet21k, not {self.dataset!r}; set --dataset")


# --------------------------------------------------------------------------------------------- arms and claims
def _with_stage(recipe: RecipeConfig, **changes: object) -> RecipeConfig:
    """The recipe with ``changes`` applied to its pre-training stage (the stage the paper's ablations change)."""
    return dataclasses.replace(recipe, pretrain=dataclasses.replace(recipe.pretrain, **changes))


def _lowres(config: Deit3Config) -> RecipeConfig:
    """Low-res training then a full-res fine-tune: the base itself when it has both stages, else built from it."""
    base = config.base
    if base.finetune is not None:
        return base
    low, pre = config.lowres, base.pretrain
    finetune = dataclasses.replace(
        pre,
        steps_fraction=low.finetune_share,
        lr=pre.lr * low.finetune_lr_scale,
        warmup_fraction=low.finetune_warmup_fraction,
        min_lr=min(pre.min_lr, pre.lr * low.finetune_lr_scale),
    )
    first = dataclasses.replace(pre, steps_fraction=1.0 - low.finetune_share, img_size=low.img_size)
    return dataclasses.replace(base, pretrain=first, finetune=finetune)


def _fullres(config: Deit3Config) -> RecipeConfig:
    """Full resolution throughout: the base itself when it has one stage, else its pre-training at the final size."""
    base = config.base
    if base.finetune is None:
        return base
    return dataclasses.replace(base, finetune=None, pretrain=_stage_at(base.pretrain, base.finetune.img_size))


def _stage_at(stage: StageConfig, img_size: int) -> StageConfig:
    return dataclasses.replace(stage, steps_fraction=1.0, img_size=img_size)


def arm_recipe(config: Deit3Config, arm: str) -> RecipeConfig:
    """The recipe of one arm: the base with one ingredient set, or the DeiT recipe (see :data:`ARMS`)."""
    base, pre = config.base, config.base.pretrain
    mixing = (
        {}
        if pre.mixup_alpha > 0 or pre.cutmix_alpha > 0
        else {"mixup_alpha": PAPER_MIXUP, "cutmix_alpha": PAPER_CUTMIX}
    )
    if arm == "base":
        return base
    if arm == "deit":
        return config.deit
    if arm == "bce":
        return _with_stage(base, loss="bce", smoothing=0.0, **mixing)
    if arm == "ce":
        return _with_stage(base, loss="ce", **mixing)
    if arm == "three_augment":
        return _with_stage(base, augment="three_augment", color_jitter=PAPER_COLOR_JITTER)
    if arm == "randaugment":
        return _with_stage(base, augment="randaugment", color_jitter=0.0)
    if arm in ("src", "rrc"):
        return _with_stage(base, crop=arm)
    if arm == "lowres":
        return _lowres(config)
    if arm == "fullres":
        return _fullres(config)
    raise ConfigError(f"arm {arm!r} is unknown; choose among {', '.join(ARMS)}")


def arm_name(config: Deit3Config, arm: str) -> str:
    """``arm``, or "base" when its recipe is the base recipe (so that the base is trained once)."""
    return "base" if arm != "deit" and arm_recipe(config, arm) == config.base else arm


def claim_pair(config: Deit3Config, claim: str) -> tuple[str, str]:
    """The arms (expected winner, reference) of one claim, named as they are trained."""
    pairs = {
        "recipe": ("base", "deit"),
        "loss": ("bce", "ce"),
        "augment": ("three_augment", "randaugment"),
        "crop": (config.crop_winner, "rrc" if config.crop_winner == "src" else "src"),
        "resolution": ("lowres", "fullres"),
    }
    if claim not in pairs:
        raise ConfigError(f"claim {claim!r} is unknown; choose among {', '.join(CLAIMS)}")
    winner, reference = pairs[claim]
    return arm_name(config, winner), arm_name(config, reference)


def experiment_arms(config: Deit3Config) -> tuple[str, ...]:
    """Every arm the claims need, each once, in claim order ("base" alone when there is no claim)."""
    arms: list[str] = []
    for claim in config.claims:
        arms += [a for a in claim_pair(config, claim) if a not in arms]
    return tuple(arms) or ("base",)


# ---------------------------------------------------------------------------------------------------- presets
def toy_base(size: int) -> RecipeConfig:
    """The base of the toy ablations: a ViT that learns fast (plain AdamW 2e-3, cross-entropy, no augmentation).

    The DeiT III ViT (LayerScale 1e-4, class token without position, uniform drop-path, here 0) at ``size`` px, one
    stage, 10 % warm-up then cosine, no mixing, no repeated augmentation. Every swap sets one ingredient on top.
    """
    return RecipeConfig(
        layer_scale=True,
        layer_scale_init=1e-4,
        drop_path_schedule="uniform",
        class_pos_embed=False,
        pretrain=StageConfig(
            steps_fraction=1.0,
            img_size=size,
            optimizer="adamw",
            lr=2e-3,
            weight_decay=0.05,
            warmup_fraction=0.1,
            warmup_start_lr=1e-6,
            min_lr=1e-5,
            loss="ce",
            smoothing=0.0,
            mixup_alpha=0.0,
            cutmix_alpha=0.0,
            augment="none",
            crop="none",
            src_padding=toy_src_padding(size),
            blur_sigma=OFFICIAL_BLUR_SIGMA,
            color_jitter=0.0,
            random_erasing=0.0,
            repeated_aug=1,
            drop_path=0.0,
        ),
        finetune=None,
        eval_crop_ratio=1.0,
    )


def toy_deit(size: int, lr: float = 3e-4) -> RecipeConfig:
    """DeiT (first version) recipe on the toy data, at ``size`` px throughout (AdamW ``lr``, absolute).

    The recipe claim's reference arm at toy scale; not in the toy presets' claims (at 2 epochs it stays near chance).
    """
    return RecipeConfig(
        layer_scale=False,
        drop_path_schedule="linear",
        class_pos_embed=True,
        pretrain=StageConfig(
            steps_fraction=1.0,
            img_size=size,
            optimizer="adamw",
            lr=lr,
            weight_decay=0.05,
            warmup_fraction=0.05,
            warmup_start_lr=1e-6,
            min_lr=1e-5,
            loss="ce",
            smoothing=0.1,
            mixup_alpha=PAPER_MIXUP,
            cutmix_alpha=PAPER_CUTMIX,
            augment="randaugment",
            crop="rrc",
            color_jitter=0.0,
            random_erasing=0.25,
            repeated_aug=3,
            drop_path=0.1,
        ),
        finetune=None,
        eval_crop_ratio=1.0,
    )


def _toy() -> Deit3Config:
    """The toy presets' base: ColourFashion 28 px, the fast base recipe, every toy claim, 400 steps, 3 seeds.

    The clean test set only is evaluated (5,000 images); ``--eval-splits test val hue blur`` adds the validation
    split and the two shifted test sets (each evaluation costs about a third of a training step per image).
    """
    return Deit3Config(
        preset="standard",
        seeds=(0, 1, 2),
        dataset="auto",
        claims=("loss", "augment", "crop", "resolution"),
        crop_winner="src",
        sanity_floor=0.5,
        model=ModelConfig(preset="custom", patch_size=7, embed_dim=64, depth=6, num_heads=4),
        base=toy_base(28),
        deit=toy_deit(28),
        lowres=LowResConfig(img_size=21, finetune_share=0.1, finetune_lr_scale=0.1, finetune_warmup_fraction=0.1),
        steps=400,
        batch_size=64,
        n_test=5000,
        eval_splits=("test",),
        threads=2,
        stability=StabilityConfig(depth=12, lrs=(2e-3, 6e-3, 1.8e-2), optimizer="adamw", steps=200),
    )


def smoke() -> Deit3Config:
    """Seconds: digits at 16 px, depth 2, 25 steps per arm, one seed, the augment and resolution claims."""
    return dataclasses.replace(
        _toy(),
        preset="smoke",
        seeds=(0,),
        dataset="digits",
        claims=("augment", "resolution"),
        steps=25,
        batch_size=32,
        n_test=400,
        model=ModelConfig(preset="custom", patch_size=4, embed_dim=32, depth=2, num_heads=2),
        base=toy_base(16),
        deit=toy_deit(16),
        lowres=LowResConfig(img_size=12),
        threads=1,
        progress=False,
        stability=StabilityConfig(depth=12, lrs=(2e-3, 2e-2), optimizer="adamw", steps=20),
    )


def standard() -> Deit3Config:
    """Under 2 minutes on 2 idle cores (part of ``make demo``): 3-Augment vs RandAugment, 3 seeds, 300 steps.

    300 instead of the extended preset's 400 steps so that the six runs fit the demo's budget (about 16 s each on
    one idle core, measured as CPU time on the shared machine).
    """
    return dataclasses.replace(_toy(), preset="standard", claims=("augment",), steps=300, n_test=2000)


def extended() -> Deit3Config:
    """The evidence run: four single-ingredient claims on the fast base, 400 steps per arm, 3 seeds (8 arms)."""
    return dataclasses.replace(_toy(), preset="extended")


# Official README_revenge.md commands: size -> (LAMB lr, drop-path, pre-training resolution), ImageNet-1k.
PAPER_IN1K = {
    "small": (4e-3, 0.05, 224),
    "base": (3e-3, 0.2, 192),
    "large": (3e-3, 0.45, 192),
    "huge": (3e-3, 0.6, 160),
}
# Fine-tune drop-path after ImageNet-1k pre-training, by target resolution.
PAPER_FT_DROP_PATH = {224: {"base": 0.2, "large": 0.45, "huge": 0.55}, 384: {"small": 0.0, "base": 0.15, "large": 0.4}}
# ImageNet-21k: size -> (pre-training drop-path, 21k -> 1k fine-tune drop-path).
PAPER_IN21K_DROP_PATH = {"small": (0.05, 0.05), "base": (0.1, 0.15), "large": (0.3, 0.4), "huge": (0.5, 0.45)}
# ImageNet-21k pre-training schedule: size -> (epochs, resolution); ViT-H is 90 epochs at 128 px in the commands.
PAPER_IN21K_SCHEDULE = {"small": (240, 224), "base": (240, 224), "large": (240, 224), "huge": (90, 128)}
# Global batches of the official commands: pre-training and 21k stages 2048, every fine-tune after 1k 512.
PAPER_BATCH, PAPER_FT_BATCH, DEIT_BATCH = 2048, 512, 1024
IN1K_TRAIN_IMAGES = 1281167
IN21K_TRAIN_IMAGES = 13_000_000  # about 13 M images in the 21k release (the loader counts the real set)


def _deit_paper() -> RecipeConfig:
    """The DeiT (first version) ImageNet-1k recipe (300 epochs at global batch 1024, AdamW 5e-4 x batch / 512)."""
    return RecipeConfig(
        layer_scale=False,
        drop_path_schedule="linear",
        class_pos_embed=True,
        pretrain=StageConfig(
            steps_fraction=1.0,
            img_size=224,
            global_batch=DEIT_BATCH,
            optimizer="adamw",
            lr=5e-4,
            lr_scaling="linear_512",
            weight_decay=0.05,
            warmup_fraction=5 / 300,
            warmup_start_lr=1e-6,
            min_lr=1e-5,
            loss="ce",
            smoothing=0.1,
            mixup_alpha=PAPER_MIXUP,
            cutmix_alpha=PAPER_CUTMIX,
            augment="randaugment",
            crop="rrc",
            color_jitter=0.0,
            random_erasing=0.25,
            repeated_aug=3,
            drop_path=0.1,
        ),
    )


def paper_in1k(size: str = "small", finetune_res: int = 384, epochs: int = 800, ft_epochs: int = 20) -> Deit3Config:
    """ImageNet-1k DeiT III recipe of the official commands for ViT-S/B/L/H, with the ablation claims' arms.

    Pre-training (global batch 2048): LAMB (absolute LR), wd 0.05, BCE, 3-Augment with RRC, RA x3, uniform
    drop-path, 5 warm-up epochs from 1e-6, at the size's low resolution. Fine-tuning at ``finetune_res`` (skipped when
    it equals the pre-training resolution; global batch 512): AdamW 1e-5, wd 0.1, CE + smoothing 0.1, Mixup/CutMix,
    RandAugment, no RA. The claims (3 seeds): the recipe against DeiT's (its own 300 epochs at batch 1024), CE,
    RandAugment, SRC (RRC expected to win on ImageNet-1k) and full resolution at equal FLOPs, each one swap of it.
    """
    if size not in PAPER_IN1K:
        raise ConfigError(f"paper size {size!r} is unknown; use one of {', '.join(PAPER_IN1K)}")
    lr, dp, res = PAPER_IN1K[size]
    pre_steps = epochs * (IN1K_TRAIN_IMAGES // PAPER_BATCH)
    ft_steps = ft_epochs * (IN1K_TRAIN_IMAGES // PAPER_FT_BATCH) if finetune_res != res else 0
    total = pre_steps + ft_steps
    pre = StageConfig(
        steps_fraction=pre_steps / total,
        img_size=res,
        global_batch=PAPER_BATCH,
        optimizer="lamb",
        lr=lr,
        lr_scaling="none",
        weight_decay=0.05,
        warmup_fraction=5 / epochs,
        warmup_start_lr=1e-6,
        min_lr=1e-5,
        loss="bce",
        smoothing=0.0,
        mixup_alpha=PAPER_MIXUP,
        cutmix_alpha=PAPER_CUTMIX,
        augment="three_augment",
        crop="rrc",
        blur_sigma=OFFICIAL_BLUR_SIGMA,
        color_jitter=PAPER_COLOR_JITTER,
        random_erasing=0.0,
        repeated_aug=3,
        drop_path=dp,
    )
    ft = None
    if ft_steps:
        ft = StageConfig(
            steps_fraction=ft_steps / total,
            img_size=finetune_res,
            global_batch=PAPER_FT_BATCH,
            optimizer="adamw",
            lr=1e-5,
            lr_scaling="none",
            weight_decay=0.1,
            warmup_fraction=5 / ft_epochs,
            warmup_start_lr=1e-6,
            min_lr=1e-5,
            loss="ce",
            smoothing=0.1,
            mixup_alpha=PAPER_MIXUP,
            cutmix_alpha=PAPER_CUTMIX,
            augment="randaugment",
            crop="rrc",
            color_jitter=0.0,
            random_erasing=0.0,
            repeated_aug=1,
            drop_path=PAPER_FT_DROP_PATH.get(finetune_res, {}).get(size, dp),
        )
    per_device = 256 if size in ("small", "base") else 64
    steps_per_epoch = IN1K_TRAIN_IMAGES // PAPER_BATCH
    return Deit3Config(
        preset="paper",
        seeds=(0, 1, 2),
        dataset="imagenet",
        claims=CLAIMS,
        crop_winner="rrc",
        model=ModelConfig(preset=size),  # type: ignore[arg-type]
        base=RecipeConfig(pretrain=pre, finetune=ft, eval_crop_ratio=1.0),
        deit=_deit_paper(),
        deit_steps=300 * (IN1K_TRAIN_IMAGES // DEIT_BATCH),
        steps=total,
        batch_size=per_device,
        num_workers=10,
        eval_every=10 * steps_per_epoch,
        stability=StabilityConfig(depth=24, lrs=(1e-3, 3e-3, 1e-2), optimizer="adamw", steps=20 * steps_per_epoch),
    )


def _in21k_recipe_stage(epochs: int, lr: float, drop_path: float, img_size: int = 224) -> StageConfig:
    """The stage shared by 21k pre-training and the 21k -> 1k fine-tune.

    LAMB, wd 0.02, CE + smoothing 0.1, CutMix only, 3-Augment with Simple Random Crop, no repeated augmentation,
    global batch 2048, 5 warm-up epochs (all in the official commands).
    """
    return StageConfig(
        steps_fraction=1.0,
        img_size=img_size,
        global_batch=PAPER_BATCH,
        optimizer="lamb",
        lr=lr,
        lr_scaling="none",
        weight_decay=0.02,
        warmup_fraction=5 / epochs,
        warmup_start_lr=1e-6,
        min_lr=1e-5,
        loss="ce",
        smoothing=0.1,
        mixup_alpha=0.0,
        cutmix_alpha=PAPER_CUTMIX,
        augment="three_augment",
        crop="src",
        blur_sigma=OFFICIAL_BLUR_SIGMA,
        color_jitter=PAPER_COLOR_JITTER,
        random_erasing=0.0,
        repeated_aug=1,
        drop_path=drop_path,
    )


def paper_in21k(size: str = "small", epochs: int | None = None) -> Deit3Config:
    """ImageNet-21k pre-training (LAMB 1e-3, wd 0.02, CE + smoothing 0.1, CutMix only, SRC, no RA) with the crop claim.

    240 epochs at 224 px, ViT-H 90 epochs at 128 px (official commands). The arms: the recipe and its RRC swap (the
    paper's ImageNet-21k crop row: SRC expected to win), 3 seeds. The 21k -> 1k fine-tune is
    :func:`paper_in21k_to_1k` (preset ``paper_21k_ft``).
    """
    if size not in PAPER_IN21K_DROP_PATH:
        raise ConfigError(f"paper size {size!r} is unknown; use one of {', '.join(PAPER_IN21K_DROP_PATH)}")
    default_epochs, res = PAPER_IN21K_SCHEDULE[size]
    epochs = epochs or default_epochs
    pre = _in21k_recipe_stage(epochs, lr=1e-3, drop_path=PAPER_IN21K_DROP_PATH[size][0], img_size=res)
    steps_per_epoch = IN21K_TRAIN_IMAGES // PAPER_BATCH
    return Deit3Config(
        preset="paper",
        seeds=(0, 1, 2),
        dataset="imagenet21k",
        claims=("crop",),
        crop_winner="src",
        steps=epochs * steps_per_epoch,
        batch_size=128 if size == "small" else 64,  # official: 128 x 16 GPUs (S), 64 x 32 (B/L/H)
        model=ModelConfig(preset=size),  # type: ignore[arg-type]
        base=RecipeConfig(pretrain=pre, finetune=None),
        deit=_deit_paper(),
        num_workers=10,
        eval_every=10 * steps_per_epoch,
    )


def paper_in21k_to_1k(size: str = "small", epochs: int = 50, init_weights: str | None = None) -> Deit3Config:
    """ImageNet-21k -> 1k fine-tune: start from the 21k model, new 1000-class head, fine-tune on ImageNet-1k.

    Official settings: 50 epochs, LAMB 3e-4 (absolute), wd 0.02, global batch 2048, 5 warm-up epochs, the 21k
    augmentation (3-Augment with SRC, CutMix only, CE + smoothing 0.1, no repeated augmentation), drop-path S 0.05,
    B 0.15, L 0.4, H 0.45, 224 px. No claim: this preset produces the 21k -> 1k model of the paper's table (no
    ablation of the paper is about this stage), so it trains the base arm only and its verdict is "inconclusive".

    Args:
        size: ViT size of the 21k checkpoint.
        epochs: fine-tuning epochs.
        init_weights: safetensors file of the 21k model (``--init-weights``; required to run).
    """
    if size not in PAPER_IN21K_DROP_PATH:
        raise ConfigError(f"paper size {size!r} is unknown; use one of {', '.join(PAPER_IN21K_DROP_PATH)}")
    stage = _in21k_recipe_stage(epochs, lr=3e-4, drop_path=PAPER_IN21K_DROP_PATH[size][1])
    steps_per_epoch = IN1K_TRAIN_IMAGES // PAPER_BATCH
    return Deit3Config(
        preset="paper",
        seeds=(0,),
        dataset="imagenet",
        claims=(),
        steps=epochs * steps_per_epoch,
        batch_size=128 if size == "small" else 64,
        model=ModelConfig(preset=size),  # type: ignore[arg-type]
        base=RecipeConfig(pretrain=stage, finetune=None, eval_crop_ratio=1.0),
        deit=_deit_paper(),
        num_workers=10,
        eval_every=5 * steps_per_epoch,
        init_weights=init_weights,
        reset_head=True,
    )


def paper() -> Deit3Config:
    """ViT-S, ImageNet-1k: 800 epochs at 224 px, then a 20-epoch fine-tune at 384 px, with every claim's arm."""
    return paper_in1k("small", finetune_res=384)


def paper_21k_ft() -> Deit3Config:
    """ViT-S ImageNet-21k -> 1k fine-tune (pass ``--init-weights <21k model.safetensors> --data-root <dir>``)."""
    return dataclasses.replace(paper_in21k_to_1k("small"), preset="paper_21k_ft")


PRESET_FNS = {
    "smoke": smoke,
    "standard": standard,
    "extended": extended,
    "paper": paper,
    "paper_21k_ft": paper_21k_ft,
}
