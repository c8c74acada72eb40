"""SciMix experiment settings (:class:`ScimixConfig`) and presets (a base plus the fields that differ).

Everything about the generator is our reading (the paper's method section was not available); the Mean Teacher and
FixMatch values follow their authors' code (spec §2.3 and §8). Values marked "ours" in the field docs are ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from frugalvision.errors import ConfigError
from frugalvision.harness import RunConfig

__all__ = [
    "FRAMEWORKS",
    "MIXES",
    "FixMatchSettings",
    "GeneratorSettings",
    "MeanTeacherSettings",
    "ScimixConfig",
    "extended",
    "paper",
    "paper_cifar100",
    "smoke",
    "standard",
]

FRAMEWORKS = ("supervised", "mean_teacher", "fixmatch")
MIXES = ("none", "mixup", "cutmix", "scimix", "oracle")
DECISIVE = tuple(f"{framework}+{mix}" for framework in FRAMEWORKS for mix in ("none", "scimix"))
ALL_ROWS = tuple(f"{framework}+{mix}" for framework in FRAMEWORKS for mix in MIXES)
EXTENDED_ROWS = ("supervised+none", "supervised+scimix", "supervised+oracle") + tuple(
    f"{framework}+{mix}" for framework in ("mean_teacher", "fixmatch") for mix in MIXES
)


@dataclass
class GeneratorSettings:
    """The SciMix generator and its training (all ours, spec §2.2 and §2.5).

    Attributes:
        decoder: "modulated" (StyleGAN2-like), "adain" or "layered"; the default (adain, staged) is the variant study's
            choice (README), made although no reading produced valid mixes.
        schedule: "staged" (frozen warm-up classifier as teacher) or "joint" (a classifier trained alongside; its EMA
            is the teacher).
        style_dim: d_s.
        content_channels: C_b of the content code C_b x H/4 x W/4.
        width: base width of encoders and decoder.
        steps: generator optimisation steps.
        batch_size: unlabeled images per generator step.
        labeled_batch: labeled images per generator step (ours: the few labels in every batch).
        lr: Adam learning rate (betas 0.5, 0.99).
        threshold: teacher confidence tau_g for pseudo-labels of unlabeled images.
        rec: lambda_rec.
        sem: lambda_sem (0.1: with the spec's 1 the teacher's gradient collapsed the decoder to one input-independent
            image on the validation data, reconstruction L1 0.24, the untrained level).
        cls: lambda_cls.
        cyc: lambda_cyc.
        swap: lambda_swap (in-class swap reconstruction: ours, added because without it the semantic code also
            carried the background and mixes copied their semantic parent).
        bg: lambda_bg (layered only).
        a_max: largest mean object opacity before L_area applies (layered only).
        adv: lambda_adv (0: no discriminator).
        r1: gamma of the R1 penalty.
        joint_lr: SGD learning rate of the classifier trained alongside (joint schedule).
        joint_ema: EMA decay of that classifier (the teacher).
    """

    decoder: Literal["modulated", "adain", "layered"] = "adain"
    schedule: Literal["staged", "joint"] = "staged"
    style_dim: int = 64
    content_channels: int = 32
    width: int = 8
    steps: int = 600
    batch_size: int = 32
    labeled_batch: int = 32
    lr: float = 1e-3
    threshold: float = 0.8
    rec: float = 1.0
    sem: float = 0.1
    cls: float = 0.5
    cyc: float = 0.1
    swap: float = 1.0
    bg: float = 1.0
    a_max: float = 0.6
    adv: float = 0.0
    r1: float = 1.0
    joint_lr: float = 0.03
    joint_ema: float = 0.99

    def validate(self) -> None:
        """Raise ConfigError on an invalid value."""
        if self.decoder not in ("modulated", "adain", "layered"):
            raise ConfigError(f"generator.decoder={self.decoder!r} is invalid; use modulated, adain or layered")
        if self.schedule not in ("staged", "joint"):
            raise ConfigError(f"generator.schedule={self.schedule!r} is invalid; use staged or joint")
        for name in ("style_dim", "content_channels", "width", "steps", "batch_size", "labeled_batch"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"generator.{name}={getattr(self, name)} is invalid; use a positive integer")
        for name in ("lr", "rec", "sem", "cls", "cyc", "swap", "bg", "adv", "r1", "joint_lr"):
            if getattr(self, name) < 0:
                raise ConfigError(f"generator.{name}={getattr(self, name)} is invalid; it must be >= 0")
        if not 0 < self.threshold <= 1 or not 0 < self.a_max <= 1 or not 0 <= self.joint_ema < 1:
            raise ConfigError("generator.threshold and a_max must lie in (0, 1], joint_ema in [0, 1)")


@dataclass
class FixMatchSettings:
    """FixMatch (google-research/fixmatch defaults; mu = 2 and the eval EMA are ours for the CPU budget).

    Attributes:
        threshold: confidence threshold tau.
        lambda_u: weight of the unlabeled term.
        mu: unlabeled images per labeled image.
        lr: base learning rate (schedule lr cos(7 pi t / 16 T)).
        weight_decay: L2 on kernels.
    """

    threshold: float = 0.95
    lambda_u: float = 1.0
    mu: int = 2
    lr: float = 0.03
    weight_decay: float = 5e-4


@dataclass
class MeanTeacherSettings:
    """Mean Teacher (CuriousAI/mean-teacher; the ramp length as a fraction of the steps is ours).

    Attributes:
        alpha: EMA decay of the teacher (0.97: the official 1,000-label CIFAR-10 run).
        consistency: w_max.
        rampup_fraction: ramp-up length as a fraction of the row's steps (one "epoch" per step).
        mu: unlabeled images per labeled image (official: 97 unlabeled per 31 labeled, about 3).
        lr: learning rate (cosine schedule).
        weight_decay: SGD weight decay on every parameter (official).
    """

    alpha: float = 0.97
    consistency: float = 100.0
    rampup_fraction: float = 0.3
    mu: int = 2
    lr: float = 0.03
    weight_decay: float = 2e-4


@dataclass
class ScimixConfig(RunConfig):
    """SciMix on Mean Teacher, FixMatch and few-label supervised training (spec §6; paper preset §5).

    Attributes:
        dataset: "auto" / "fashion-composite" (Fashion-MNIST items on real photo/texture crops; falls back to the
            MNIST 5k items when Fashion-MNIST is missing), "cifar10", "cifar100" (binary or pickled release under
            data_root) or "imagefolder" (data_root/train/<class>/ and data_root/test/<class>/).
        allow_pickle: read CIFAR's Python (pickled) release through the restricted unpickler.
        labeled_json: replay a labeled split from a labeled.json file (cifar/imagefolder), instead of drawing it.
        labels_per_class: labeled images per class (FixMatch's naming: 4 / 25 / 400).
        unlabeled: unlabeled pool size (0: everything not labeled).
        val_size: labeled validation images (variant study; drawn from the training pool).
        test_size: test images (0: the whole test split).
        oracle_size: fully labeled images of the oracle classifier (composite data: a disjoint pool).
        nuisance: probability that a labeled image's background is tied to its class (composite data only; test,
            validation and unlabeled backgrounds are uniform).
        image_size: composite side (or the resize side of imagefolder images).
        object_size: object side inside a composite.
        alpha_gain: object opacity = min(1, alpha_gain x intensity / 255) (ours: 2 makes the items' dark parts
            opaque; with the intensity alone 16-pixel silhouettes on textures are barely learnable from few labels).
        classifier: "resnet8" (CIFAR ResNet-8) or "wrn28_2" (FixMatch's WRN-28-2).
        classifier_width: ResNet-8 base width.
        warmup_steps: supervised warm-up steps on the labeled set (the rows start from it; the staged teacher).
        warmup_lr: its SGD learning rate.
        reference_steps: training steps of the oracle and background classifiers.
        generator: the SciMix generator.
        rows: the "framework+mix" rows to run (framework in supervised / mean_teacher / fixmatch, mix in none /
            mixup / cutmix / scimix / oracle).
        steps: optimiser steps of every row (from the warm-up).
        labeled_batch: labeled images per step.
        lambda_mix: weight of the mixing term.
        mix_alpha: Beta concentration of MixUp / CutMix.
        eval_ema: weight-EMA decay of the evaluated supervised / FixMatch model (official 0.999 for 2^20 steps;
            ours: scaled to the row length).
        eval_every: evaluate every N steps.
        report_last: test accuracy reported = mean of the last N evaluations (FixMatch maintainers' protocol).
        fixmatch: FixMatch settings.
        mean_teacher: Mean Teacher settings.
        supervised_lr: learning rate of the supervised rows (FixMatch's optimiser and schedule).
        figure_pairs: example pairs in the mix figure.
    """

    dataset: str = "auto"
    allow_pickle: bool = False
    labeled_json: str | None = None
    labels_per_class: int = 25
    unlabeled: int = 10_000
    val_size: int = 1000
    test_size: int = 2000
    oracle_size: int = 10_000
    nuisance: float = 0.5
    image_size: int = 16
    object_size: int = 14
    alpha_gain: float = 2.0
    classifier: Literal["resnet8", "wrn28_2"] = "resnet8"
    classifier_width: int = 8
    warmup_steps: int = 200
    warmup_lr: float = 0.03
    reference_steps: int = 400
    generator: GeneratorSettings = field(default_factory=GeneratorSettings)
    rows: tuple[str, ...] = ALL_ROWS
    steps: int = 300
    labeled_batch: int = 32
    lambda_mix: float = 1.0
    mix_alpha: float = 1.0
    eval_ema: float = 0.99
    eval_every: int = 50
    report_last: int = 3
    fixmatch: FixMatchSettings = field(default_factory=FixMatchSettings)
    mean_teacher: MeanTeacherSettings = field(default_factory=MeanTeacherSettings)
    supervised_lr: float = 0.03
    figure_pairs: int = 8

    @property
    def synthetic(self) -> bool:
        """True for the composite data (with ground truth: oracle mixes, background metrics)."""
        return self.dataset in ("auto", "fashion-composite")

    def validate(self) -> None:
        """Raise ConfigError naming the bad field and the fix."""
        super().validate()
        if self.dataset not in ("auto", "fashion-composite", "cifar10", "cifar100", "imagefolder"):
            raise ConfigError(
                f"dataset={self.dataset!r} is invalid; use auto, fashion-composite, cifar10, cifar100 or imagefolder"
            )
        if not self.synthetic and self.data_root is None:
            raise ConfigError(f"dataset={self.dataset!r} needs --data-root holding the real dataset")
        for name in ("labels_per_class", "labeled_batch", "steps", "image_size", "object_size", "classifier_width"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} is invalid; use a positive integer")
        for name in ("unlabeled", "val_size", "test_size", "oracle_size", "warmup_steps", "reference_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} is invalid; use a count >= 0")
        if self.object_size > self.image_size:
            raise ConfigError(f"object_size={self.object_size} exceeds image_size={self.image_size}")
        if self.alpha_gain <= 0:
            raise ConfigError(f"alpha_gain={self.alpha_gain} must be > 0")
        if not 0 <= self.nuisance <= 1:
            raise ConfigError(f"nuisance={self.nuisance} must lie in [0, 1]")
        if not 0 <= self.eval_ema < 1:
            raise ConfigError(f"eval_ema={self.eval_ema} must lie in [0, 1)")
        if self.eval_every < 0 or self.report_last < 1:
            raise ConfigError("eval_every must be >= 0 and report_last >= 1")
        if self.classifier not in ("resnet8", "wrn28_2"):
            raise ConfigError(f"classifier={self.classifier!r} is invalid; use resnet8 or wrn28_2")
        self._validate_rows()
        self.generator.validate()

    def _validate_rows(self) -> None:
        if not self.rows:
            raise ConfigError("rows is empty; give framework+mix rows, e.g. fixmatch+none fixmatch+scimix")
        for row in self.rows:
            framework, _, mix = row.partition("+")
            if framework not in FRAMEWORKS or mix not in MIXES:
                raise ConfigError(
                    f"row {row!r} is invalid; use <framework>+<mix> with framework in {', '.join(FRAMEWORKS)} and "
                    f"mix in {', '.join(MIXES)}"
                )
            if mix == "oracle" and not self.synthetic:
                raise ConfigError(f"row {row!r} needs compositing ground truth; drop it for dataset={self.dataset}")
        missing = [row for row in DECISIVE if row not in self.rows]
        if missing and self.study is None:
            raise ConfigError(f"rows lack the rows the verdict compares: {missing}; add them")


def smoke() -> ScimixConfig:
    """Seconds: 2 seeds, 200 unlabeled images, 20 generator steps, 6 steps per row, every row."""
    return ScimixConfig(
        preset="smoke",
        seeds=(0, 1),
        threads=1,
        labels_per_class=2,
        unlabeled=200,
        val_size=60,
        test_size=100,
        oracle_size=400,
        classifier_width=8,
        warmup_steps=10,
        reference_steps=15,
        generator=GeneratorSettings(steps=20, batch_size=8, labeled_batch=8),
        steps=6,
        labeled_batch=8,
        eval_ema=0.9,
        eval_every=0,
        report_last=1,
        figure_pairs=4,
    )


def standard() -> ScimixConfig:
    """About 2 minutes on 2 idle cores: the six rows the verdict compares, a small generator, short rows, 3 seeds."""
    return ScimixConfig(
        preset="standard",
        threads=1,
        unlabeled=3000,
        val_size=500,
        test_size=800,
        oracle_size=4000,
        warmup_steps=200,
        reference_steps=300,
        generator=GeneratorSettings(steps=150, batch_size=16, labeled_batch=16),
        rows=DECISIVE,
        steps=100,
        labeled_batch=16,
        eval_ema=0.95,
        eval_every=25,
        report_last=2,
    )


def extended() -> ScimixConfig:
    """The evidence (<= 15 minutes on 2 idle cores): 13 rows, 800 generator steps, 400-step rows, 3 seeds."""
    return ScimixConfig(
        preset="extended",
        threads=1,
        unlabeled=10_000,
        test_size=2000,
        oracle_size=8000,
        warmup_steps=300,
        reference_steps=600,
        generator=GeneratorSettings(steps=800, batch_size=16, labeled_batch=16),
        rows=EXTENDED_ROWS,
        steps=400,
        labeled_batch=16,
        eval_ema=0.98,
        eval_every=50,
        report_last=3,
    )


def paper() -> ScimixConfig:
    """CIFAR-10 with 25 labels per class (FixMatch's cifar10@250), WRN-28-2, FixMatch's schedule; needs GPUs."""
    return ScimixConfig(
        preset="paper",
        dataset="cifar10",
        labels_per_class=25,
        unlabeled=0,
        val_size=5000,
        test_size=0,
        oracle_size=0,
        image_size=32,
        classifier="wrn28_2",
        classifier_width=32,
        warmup_steps=2**14,
        reference_steps=2**16,
        generator=GeneratorSettings(style_dim=256, content_channels=128, width=64, steps=100_000, adv=0.1),
        rows=tuple(row for row in ALL_ROWS if not row.endswith("+oracle")),
        steps=2**20,
        labeled_batch=64,
        eval_ema=0.999,
        eval_every=2**14,
        report_last=20,
        fixmatch=FixMatchSettings(mu=7),
        mean_teacher=MeanTeacherSettings(mu=3, lr=0.05, rampup_fraction=0.05),
        fabric=replace(RunConfig().fabric, precision="bf16-mixed"),
    )


def paper_cifar100() -> ScimixConfig:
    """CIFAR-100 with 25 labels per class (2,500 labels); FixMatch's wider WRN is left to --classifier-width."""
    return replace(paper(), preset="paper_cifar100", dataset="cifar100")
