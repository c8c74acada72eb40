"""MIMO experiment settings (:class:`MimoRunConfig`) and presets (spec sections 2.5, 5, 6 and 8).

``loop.batch_size`` counts *processed* samples per step and device (MixMo's unit: with batch repetition b a batch of
N holds N / b unique images); every row of a width trains for ``loop.max_steps`` steps of N samples, so rows compare
at equal processed samples and optimizer steps (the deep ensemble costs M times that).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from frugalvision.engine.config import FabricConfig, LoopConfig
from frugalvision.errors import ConfigError
from frugalvision.harness import RunConfig

#: arm -> (members, mixing, unmix on); "single" also trains the second network of the deep ensemble
ARMS = {
    "single": (1, "sum", False),
    "mimo": (2, "sum", False),
    "linearmixmo": (2, "linear", False),
    "cutmixmo": (2, "cut", False),
    "cutmixmo-unmix": (2, "cut", True),
}
#: unmixing readings compared by the variant study (OURS): "<unmix>" or "learned-<unmix_at>"
VARIANT_CANDIDATES = ("spatial", "learned-final", "learned-last_stage", "soft")


def parse_unmix(name: str) -> tuple[str, str]:
    """``(unmix, unmix_at)`` of a candidate name: "spatial" -> ("spatial", "final"), "learned-last_stage" -> ..."""
    kind, _, at = name.partition("-")
    return kind, at or "final"


DATASETS = ("auto", "fashion-mnist", "mnist5k", "digits", "cifar10", "cifar100", "imagefolder")


@dataclass
class MimoRunConfig(RunConfig):
    """MIMO / MixMo / unmixing experiment (values marked OURS in the spec are our reading).

    Attributes:
        backbone: "preact" (PreActResNet: stem and stages w, 2w, 4w, ``blocks`` per stage) or "wrn"
            (WideResNet-``depth``-k, k = width).
        blocks: blocks per stage of the PreActResNet (1: PreActResNet-8).
        depth: WideResNet depth (6n + 4).
        widths: widths swept (PreActResNet w, WideResNet k); the verdict is judged at the smallest.
        arms: rows trained per width and seed (see ``ARMS``); "single" also yields the deep ensemble row.
        members: M of the MIMO arms.
        alpha: Dirichlet concentration of the mixing ratios.
        weight_root: loss-weight root r of Linear/Cut-MixMo (MIMO uses 1).
        p_cut: Cut-MixMo's probability of cut mixing (decays to 0 over the last 1/12 of training).
        batch_repetition: b of the MIMO arms (each unique image appears b times per input per batch).
        input_repetition: probability that a sample shows the same image on every input.
        unmix: unmixing of the "cutmixmo-unmix" arm: a ``VARIANT_CANDIDATES`` entry (chosen by the variant study).
        unmix_norm_act: BN + ReLU after the learned unmixing convolution.
        mask_loss_weight: weight of the soft unmixing's mask BCE on cut-mixed samples.
        shared_head: one head for every member (ablation only).
        l2: MixMo's L2 penalty coefficient on the loss (sum of squares of every parameter).
        lr_per_repetition: divide loop.lr by the arm's b (MixMo's lr = 0.1 / (2 b) rule).
        image_size: images are resized (area) to this side.
        pad: random-crop padding in pixels, with random flips (0: no augmentation, the offline presets: spec section
            6 has none, and at 125 steps crop + flip cost the w = 4 single network 13 points of validation top-1).
        train_size: training images per seed (from the training file, disjoint from validation).
        val_size: validation images per seed (temperature scaling, variant study, ablation measures).
        test_size: stratified test subset per seed (official test file).
        label: CIFAR-100 "fine" or "coarse" labels.
        allow_pickle: read CIFAR's pickled Python release (safely) when no binary release is found.
        probe_images: validation images for the channel ablation and test images for the solo-pass CKA.
        latency_batch: batch of the latency rows.
        latency_rounds: interleaved timing rounds.
        variant_candidates: readings compared by ``--study variants``.
        loop: optimisation (batch_size = processed samples per step; SGD nesterov 0.9, wd on every parameter).
    """

    backbone: str = "preact"
    blocks: int = 1
    depth: int = 28
    widths: tuple[int, ...] = (4, 8)
    arms: tuple[str, ...] = ("single", "mimo", "cutmixmo", "cutmixmo-unmix")
    members: int = 2
    alpha: float = 2.0
    weight_root: float = 3.0
    p_cut: float = 0.5
    batch_repetition: int = 2
    input_repetition: float = 0.0
    unmix: str = "learned-final"
    unmix_norm_act: bool = True
    mask_loss_weight: float = 0.1
    shared_head: bool = False
    l2: float = 0.0
    lr_per_repetition: bool = False
    image_size: int = 16
    pad: int = 0
    train_size: int = 58000
    val_size: int = 2000
    test_size: int = 5000
    label: str = "fine"
    allow_pickle: bool = False
    probe_images: int = 1000
    latency_batch: int = 256
    latency_rounds: int = 15
    variant_candidates: tuple[str, ...] = VARIANT_CANDIDATES
    loop: LoopConfig = field(
        default_factory=lambda: LoopConfig(
            max_steps=125, batch_size=128, lr=0.05, weight_decay=5e-4, warmup_steps=6, log_every=25, eval_every=0
        )
    )

    def arm_settings(self, arm: str) -> tuple[int, str, bool, int]:
        """``(members, mixing, unmix on, batch repetition)`` of an arm."""
        members, mixing, unmixed = ARMS[arm]
        members = 1 if members == 1 else self.members
        return members, mixing, unmixed, 1 if members == 1 else self.batch_repetition

    def validate(self) -> None:
        """Check every field (one-line ConfigError naming the field and the fix)."""
        super().validate()
        self.loop.validate()
        if self.backbone not in ("preact", "wrn"):
            raise ConfigError(f"backbone={self.backbone!r} is invalid; use preact or wrn")
        if self.backbone == "wrn" and ((self.depth - 4) % 6 or self.depth < 10):
            raise ConfigError(f"depth={self.depth} is invalid for a WideResNet; use 6n + 4, e.g. 28")
        if self.blocks < 1 or not self.widths or min(self.widths) < 1:
            raise ConfigError(f"blocks={self.blocks}, widths={self.widths}: give positive values, e.g. --widths 8 16")
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms:
            raise ConfigError(f"arms={self.arms} is invalid; choose among {tuple(ARMS)}")
        if self.members < 2:
            raise ConfigError(f"members={self.members} is invalid; a MIMO network needs M >= 2")
        if self.batch_repetition < 1 or self.loop.batch_size % self.batch_repetition:
            raise ConfigError(
                f"batch_repetition={self.batch_repetition} must be >= 1 and divide loop.batch_size="
                f"{self.loop.batch_size} (processed samples per step)"
            )
        bad = [c for c in (self.unmix, *self.variant_candidates) if c not in VARIANT_CANDIDATES]
        if bad:
            raise ConfigError(f"unmix / variant_candidates {bad} are invalid; choose among {VARIANT_CANDIDATES}")
        if not 0 <= self.input_repetition <= 1 or not 0 <= self.p_cut <= 1:
            raise ConfigError("input_repetition and p_cut must lie in [0, 1]")
        if self.weight_root <= 0 or self.alpha < 0 or self.mask_loss_weight < 0 or self.l2 < 0:
            raise ConfigError("weight_root must be > 0; alpha, mask_loss_weight and l2 must be >= 0")
        if self.image_size < 8 or self.pad < 0:
            raise ConfigError(f"image_size={self.image_size} must be >= 8 and pad={self.pad} >= 0")
        for name in ("train_size", "val_size", "test_size", "probe_images", "latency_batch", "latency_rounds"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} is invalid; it must be a positive integer")
        if self.dataset not in DATASETS:
            raise ConfigError(f"dataset={self.dataset!r} is invalid; choose among {DATASETS}")
        if self.dataset in ("cifar10", "cifar100", "imagefolder") and self.data_root is None:
            raise ConfigError(f"dataset={self.dataset!r} needs --data-root pointing at the extracted release")
        if self.label not in ("fine", "coarse"):
            raise ConfigError(f"label={self.label!r} is invalid; use fine or coarse")


BASE = MimoRunConfig()


def smoke() -> MimoRunConfig:
    """Seconds: 2 seeds, width 4, 1,600 images, 5 steps of 64 per row, every row and every unmixing candidate."""
    return replace(
        BASE,
        preset="smoke",
        seeds=(0, 1),
        threads=1,
        widths=(4,),
        arms=tuple(ARMS),
        train_size=1600,
        val_size=200,
        test_size=200,
        probe_images=100,
        latency_batch=32,
        latency_rounds=3,
        loop=replace(BASE.loop, max_steps=5, batch_size=64, warmup_steps=1, log_every=5),
    )


def standard() -> MimoRunConfig:
    """Fashion-MNIST at 16x16, PreActResNet-8 at widths 4 and 8, 125 steps of 128 processed samples (16,000), 3 seeds.

    Per seed 10 trainings (single x 2, MIMO, Cut-MixMo, Cut-MixMo + unmixing at each width); planned from measured
    throughput (about 7k / 5k processed samples per second at w = 4 / 8 on 2 idle cores) at about 100 s.
    """
    return replace(BASE, preset="standard", threads=2)


def extended() -> MimoRunConfig:
    """The evidence: widths 4, 8, 16, 375 steps of 128 processed samples (48,000), Linear-MixMo row too, 3 seeds."""
    return replace(
        BASE,
        preset="extended",
        threads=2,
        widths=(4, 8, 16),
        arms=("single", "mimo", "linearmixmo", "cutmixmo", "cutmixmo-unmix"),
        loop=replace(BASE.loop, max_steps=375, warmup_steps=19, log_every=25),
    )


def paper() -> MimoRunConfig:
    """CIFAR-100, WRN-28-k (k = 2, 4, 10), M = 2, MixMo's recipe (spec 2.1 and section 8), GPUs.

    Batch 64 processed samples = 16 unique images x b = 4 (MixMo's unit, M1); lr = 0.1 / (2 b) (M2: 0.0125 for
    b = 4, 0.05 for the single network); SGD nesterov 0.9 without weight decay and L2 3e-4 * sum of squares of every
    parameter in the loss (M3); one MixMo epoch of warm-up; lr x 0.1 at epochs 101, 201, 226 of 300. An epoch is
    45,000 training images x b / 64 = 2,812 steps (5,000 of the 50,000 are held out for validation); every row runs
    the MixMo rows' 300 epochs of steps (equal steps; MixMo itself compares rows at equal epochs).
    """
    epoch = 45_000 * 4 // 64
    return replace(
        BASE,
        preset="paper",
        dataset="cifar100",
        backbone="wrn",
        depth=28,
        widths=(2, 4, 10),
        arms=tuple(ARMS),
        batch_repetition=4,
        l2=3e-4,
        lr_per_repetition=True,
        image_size=32,
        pad=4,
        train_size=45_000,
        val_size=5_000,
        test_size=10_000,
        latency_batch=128,
        fabric=FabricConfig(precision="bf16-mixed"),
        loop=LoopConfig(
            max_steps=300 * epoch,
            batch_size=64,
            lr=0.05,
            weight_decay=0.0,
            warmup_steps=epoch,
            schedule="step",
            milestones=(101 * epoch, 201 * epoch, 226 * epoch),
            gamma=0.1,
            ckpt_every=10 * epoch,
            log_every=100,
            num_workers=4,
        ),
    )


PRESETS = {"smoke": smoke, "standard": standard, "extended": extended, "paper": paper}
