"""Perceiver architecture (:class:`PerceiverConfig`), experiment settings (:class:`PerceiverRunConfig`) and presets."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from frugalvision.engine.config import FabricConfig, LoopConfig
from frugalvision.errors import ConfigError
from frugalvision.harness import RunConfig

SELECTIONS = ("prefix", "ranked", "scorer")
DEFAULT_TAUS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 1.0)


@dataclass
class PerceiverConfig:
    """Architecture of the Perceiver classifier (spec §2.2, §2.5; all values are our reading).

    Attributes:
        img_size: input resolution (square).
        in_chans: input channels.
        num_classes: classes.
        patch_size: tokenizer kernel = stride p.
        token_dim: token width D.
        num_latents: Q, the largest query set.
        latent_dim: latent width d.
        cross_heads: heads of the cross-attention.
        self_heads: heads of the latent self-attention.
        layers: latent layers L.
        num_blocks: repetitions of cross-attention + latent layers.
        mlp_ratio: MLP ratio r.
        pos: "learned" (additive) or "fourier" (2-D Fourier features concatenated).
        fourier_bands: Fourier bands per axis.
        head: "mean" (MeanPoolHead) or "query" (one learned query through a QueryDecoder).
        scorer: add the per-latent scorer (selection="scorer").
        drop_path: stochastic depth of the latent layers.
        attn_impl: "sdpa" or "math".
    """

    img_size: int = 28
    in_chans: int = 1
    num_classes: int = 10
    patch_size: int = 4
    token_dim: int = 64
    num_latents: int = 32
    latent_dim: int = 64
    cross_heads: int = 1
    self_heads: int = 4
    layers: int = 4
    num_blocks: int = 1
    mlp_ratio: float = 4.0
    pos: Literal["learned", "fourier"] = "learned"
    fourier_bands: int = 64
    head: Literal["mean", "query"] = "mean"
    scorer: bool = False
    drop_path: float = 0.0
    attn_impl: Literal["sdpa", "math"] = "sdpa"

    @property
    def num_tokens(self) -> int:
        """N = (H/p)·(W/p)."""
        return (self.img_size // self.patch_size) ** 2

    def validate(self, prefix: str = "model") -> None:
        """Raise ConfigError on an invalid value."""
        if self.img_size % self.patch_size:
            raise ConfigError(f"{prefix}.patch_size={self.patch_size} must divide img_size={self.img_size}")
        for name in ("latent_dim", "token_dim", "num_latents", "cross_heads", "self_heads", "num_blocks"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{prefix}.{name}={getattr(self, name)} is invalid; it must be positive")
        for heads in ("cross_heads", "self_heads"):
            if self.latent_dim % getattr(self, heads):
                raise ConfigError(f"{prefix}.latent_dim={self.latent_dim} is not divisible by {prefix}.{heads}")
        if self.pos not in ("learned", "fourier"):
            raise ConfigError(f"{prefix}.pos={self.pos!r} is invalid; use learned or fourier")
        if self.head not in ("mean", "query"):
            raise ConfigError(f"{prefix}.head={self.head!r} is invalid; use mean or query")
        if self.attn_impl not in ("sdpa", "math"):
            raise ConfigError(f"{prefix}.attn_impl={self.attn_impl!r} is invalid; use sdpa or math")


@dataclass
class PerceiverRunConfig(RunConfig):
    """DQS Perceiver experiment settings (all method values are our reading, spec §2.5).

    Attributes:
        model: architecture (Q = model.num_latents; its size and classes follow the data).
        task: "classify" (the source images) or "majority" (mosaics of ``mosaic_grid``² source items labelled by
            the class planted ``mosaic_planted`` times: a task in which the number of queries matters).
        mosaic_grid: items per mosaic side.
        mosaic_item: item side in pixels.
        mosaic_planted: copies of the majority class per mosaic.
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
        latency_rounds: interleaved timing rounds per width (median of the per-round ratios reported).
        min_speedup: measured latency speed-up at Q/4 vs Q the claim requires.
        epsilon: non-inferiority margin (top-1) of the nested model against the dedicated models at Q/4 and Q.
        variant_betas: β values of the variant study.
        randaugment_ops: RandAugment operations per training image.
        randaugment_magnitude: RandAugment magnitude (0 of 31 bins: RandAugment off).
        mixup_alpha: Mixup Beta(α, α) of the training batches (0: off).
        cutmix_alpha: CutMix Beta(α, α) of the training batches (0: off).
        label_smoothing: label smoothing of the training targets.
        loop: optimisation settings (the seed is the unit's).
    """

    model: PerceiverConfig = field(default_factory=PerceiverConfig)
    task: str = "classify"
    mosaic_grid: int = 3
    mosaic_item: int = 14
    mosaic_planted: int = 4
    train_size: int = 16000
    val_size: int = 2000
    test_size: int = 2500
    min_latents: int = 4
    num_random: int = 1
    beta: float = 0.5
    temperature: float = 1.0
    selection: str = "prefix"
    stages: tuple[int, ...] = ()
    scratch_widths: tuple[int, ...] = (8,)
    taus: tuple[float, ...] = DEFAULT_TAUS
    budgets: tuple[float, ...] = (0.4, 0.6, 0.8)
    rank_images: int = 300
    latency_batch: int = 128
    latency_rounds: int = 20
    min_speedup: float = 1.5
    epsilon: float = 0.02
    variant_betas: tuple[float, ...] = (0.0, 0.5, 1.0)
    randaugment_ops: int = 2
    randaugment_magnitude: int = 0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    label_smoothing: float = 0.0
    loop: LoopConfig = field(
        default_factory=lambda: LoopConfig(
            max_steps=160, batch_size=64, lr=1e-3, weight_decay=0.05, warmup_steps=8, clip_grad_norm=1.0, log_every=10
        )
    )

    @property
    def quarter(self) -> int:
        """Q/4, the query budget the claim is judged at."""
        return self.model.num_latents // 4

    def cascade_stages(self) -> tuple[int, ...]:
        """The cascade stages (default (Q/4, Q))."""
        return self.stages or (max(1, self.quarter), self.model.num_latents)

    def eval_widths(self) -> list[int]:
        """Q' evaluated: Q, 3Q/4, Q/2, Q/4, Q/8 (and Q_min), deduplicated, decreasing."""
        q = self.model.num_latents
        return sorted({q, 3 * q // 4, q // 2, q // 4, max(1, q // 8), self.min_latents} - {0}, reverse=True)

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
        if not 0.0 <= self.beta <= 1.0 or not self.variant_betas or any(not 0 <= b <= 1 for b in self.variant_betas):
            raise ConfigError("beta and variant_betas must lie in [0, 1] (variant_betas non-empty), e.g. --beta 0.5")
        if self.temperature <= 0:
            raise ConfigError(f"temperature={self.temperature} must be positive, e.g. 1")
        for name in ("train_size", "val_size", "test_size", "rank_images", "latency_batch", "latency_rounds"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} is invalid; it must be a positive integer")
        if not self.budgets or any(not 0 < b <= 1 for b in self.budgets):
            raise ConfigError(f"budgets={self.budgets} must be fractions in (0, 1], e.g. --budgets 0.4 0.6 0.8")
        if not 0 <= self.randaugment_magnitude <= 30 or self.randaugment_ops < 0:
            raise ConfigError(
                "randaugment_magnitude must lie in 0..30 (0: off) and randaugment_ops be >= 0, e.g. 9 and 2"
            )
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0 or not 0 <= self.label_smoothing < 1:
            raise ConfigError(
                "mixup_alpha and cutmix_alpha must be >= 0 and label_smoothing in [0, 1), e.g. 0.8 1.0 0.1"
            )
        if self.task not in ("classify", "majority"):
            raise ConfigError(f"task={self.task!r} is invalid; use classify or majority")
        if self.task == "majority" and self.dataset == "imagefolder":
            raise ConfigError(
                "task='majority' builds mosaics in memory; use an offline source or CIFAR, not imagefolder"
            )
        if self.mosaic_grid < 2 or self.mosaic_item < 1 or not 2 <= self.mosaic_planted <= self.mosaic_grid**2:
            raise ConfigError("mosaic_grid must be >= 2, mosaic_item >= 1 and mosaic_planted in 2..mosaic_grid^2")
        if not 0 <= self.epsilon < 1:
            raise ConfigError(f"epsilon={self.epsilon} must lie in [0, 1), e.g. 0.02 (two points of top-1)")
        if self.min_speedup <= 0:
            raise ConfigError(f"min_speedup={self.min_speedup} must be positive, e.g. 1.5")
        if self.dataset in ("imagefolder", "cifar10", "cifar100") and self.data_root is None:
            raise ConfigError(
                f"dataset={self.dataset!r} needs --data-root (ImageNet train/ val/, or the CIFAR release)"
            )


BASE = PerceiverRunConfig()


def smoke() -> PerceiverRunConfig:
    """Seconds: Q = 8, d = 32, L = 2, 1,000 images, 30 steps, 2 seeds, every row and both inference modes."""
    return replace(
        BASE,
        preset="smoke",
        seeds=(0, 1),
        threads=1,
        model=PerceiverConfig(num_latents=8, latent_dim=32, token_dim=32, layers=2, self_heads=2),
        train_size=1000,
        val_size=300,
        test_size=300,
        min_latents=2,
        scratch_widths=(2,),
        rank_images=100,
        latency_batch=64,
        latency_rounds=5,
        taus=(0.0, 0.5, 0.8, 0.95, 1.0),
        loop=replace(BASE.loop, max_steps=30, lr=2e-3, warmup_steps=3, log_every=5),
    )


def standard() -> PerceiverRunConfig:
    """About 2.7 minutes on 2 idle CPU cores: Fashion-MNIST 16k/2k/2.5k, Q = 32, d = 64, L = 4, 160 steps x 64, 3 seeds.

    Per seed: fixed-Q (13 s), nested (20 s) and scratch Q = 8 (6 s) training, evaluation, ranking and latency (~13 s).
    """
    return replace(BASE, preset="standard", threads=2)


def extended() -> PerceiverRunConfig:
    """The evidence run (<= 10 minutes on 2 CPU cores): a harder task, 300 steps of 128, 3 seeds.

    Majority-class mosaics of 3 x 3 Fashion-MNIST items at 14 px (42 x 42, patch 7: 36 tokens; 16,000 / 2,000 /
    5,000 mosaics built from disjoint train / validation / test images), chosen because the answer needs many
    items at once. Same model (Q = 32, d = 64, L = 4); ``--study calibration`` first checks that Q matters here.
    """
    return replace(
        BASE,
        preset="extended",
        threads=2,
        task="majority",
        model=replace(BASE.model, patch_size=7),
        test_size=5000,
        rank_images=1000,
        latency_batch=256,
        loop=replace(BASE.loop, max_steps=300, batch_size=128, warmup_steps=15, log_every=50),
    )


def paper() -> PerceiverRunConfig:
    """GPU scale, ImageNet-1k ImageFolder at ``--data-root`` (spec §2.5 paper column and §5; all values OURS).

    Q = 256, Q_min = 32, d = 512, D = 256, L = 12, patch 4 at 224 px (3,136 tokens), 2-D Fourier positions with 64
    bands concatenated, drop-path 0.1, bf16-mixed. The loop assumes 8 GPUs × 256 images (global batch 2,048):
    lr = 5e-4 · 2048 / 512, ≈ 300 epochs, 5 warm-up epochs, RandAugment (2 ops, magnitude 9), Mixup 0.8, CutMix 1.0,
    label smoothing 0.1. Run through ``torchrun``/SLURM with ``--fabric.strategy ddp``.
    """
    return replace(
        BASE,
        preset="paper",
        dataset="imagefolder",
        model=PerceiverConfig(
            img_size=224,
            in_chans=3,
            num_classes=1000,
            token_dim=256,
            num_latents=256,
            latent_dim=512,
            layers=12,
            self_heads=8,
            pos="fourier",
            drop_path=0.1,
        ),
        train_size=10_000_000,
        val_size=10_000,
        test_size=50_000,
        min_latents=32,
        scratch_widths=(32, 64, 128, 192),
        rank_images=1000,
        randaugment_magnitude=9,
        mixup_alpha=0.8,
        cutmix_alpha=1.0,
        label_smoothing=0.1,
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


PRESETS = {"smoke": smoke, "standard": standard, "extended": extended, "paper": paper}
