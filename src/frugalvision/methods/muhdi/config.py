"""MuHDi experiment settings and presets.

Procedural street domains offline; GTA5 -> Cityscapes -> IDD (-> Mapillary) in the paper preset.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from frugalvision.data.streets import STREET_DOMAINS
from frugalvision.engine.config import FabricConfig, LoopConfig
from frugalvision.errors import ConfigError
from frugalvision.harness import RunConfig
from frugalvision.methods.muhdi.labels import LABEL_MAPS
from frugalvision.methods.muhdi.model import ModelSettings
from frugalvision.methods.muhdi.task import StepSettings

#: continual arms: each adapts step by step to the targets in order, never seeing an earlier target again
CONTINUAL_ARMS = (
    "advent", "muhdi", "muhdi-fresh-specialist", "muhdi-no-pod", "muhdi-no-kd", "muhdi-no-specialist", "bn-only",
)  # fmt: skip
#: references: the source-pretrained model, ADVENT on all targets at once, supervised on labelled targets
REFERENCE_ARMS = ("source-only", "joint", "oracle")
ARM_NAMES = ("source-only", *CONTINUAL_ARMS, "joint", "oracle")
DATASETS = ("auto", "streets", "benchmark")
BENCHMARK_TARGETS = ("cityscapes", "idd", "mapillary")

#: the toy's POD weight: the official 1e-5 times the ratio of the mean per-layer sqrt(POD embedding size) of the
#: paper's ResNet-101 at 320 x 640 (887.7) to the tiny backbone's at 32 x 64 (70.2): README, "our readings"
TOY_LAMBDA_POD = 1.26e-4
#: the toy's specialist heads start as a copy of the agnostic ones (README, "our readings": a toy step is 0.25 % of
#: the paper's 60k iterations, too short for fresh heads to become a competent teacher); the paper preset: "fresh"
TOY_SPECIALIST_INIT = "agnostic"


def toy_loop(max_steps: int, lr: float, batch_size: int = 4, **changes: object) -> LoopConfig:
    """The toy recipe: SGD with poly decay (power 0.9), the given peak learning rate and batch (source + target)."""
    loop = LoopConfig(max_steps=max_steps, batch_size=batch_size, lr=lr, weight_decay=0.0, schedule="poly")
    return replace(loop, **{"log_every": max(1, max_steps // 10), "eval_batch_size": 50, **changes})  # type: ignore[arg-type]


def arm_settings(base: StepSettings, arm: str) -> StepSettings:
    """The step settings of an arm at steps >= 2 (``base`` holds the MuHDi values)."""
    changes: dict[str, object] = {
        "advent": {"method": "advent"},
        "muhdi": {},
        "muhdi-fresh-specialist": {"specialist_init": "fresh"},
        "muhdi-no-pod": {"lambda_pod": 0.0},
        "muhdi-no-kd": {"lambda_kd": 0.0},
        "muhdi-no-specialist": {"specialist": False},
        "bn-only": {"method": "advent", "lambda_adv_main": 0.0, "lambda_adv_aux": 0.0},
        "joint": {"method": "advent"},
        "oracle": {"method": "supervised"},
    }.get(arm, {})
    return replace(base, **changes)  # type: ignore[arg-type]


@dataclass
class MuhdiConfig(RunConfig):
    """MuHDi experiment settings.

    Attributes:
        dataset: "streets" (procedural, offline), "benchmark" (GTA5 and the real targets under --data-root) or "auto".
        arms: rows to run: source-only, advent, muhdi, muhdi-fresh-specialist (the official N(0, 0.01) specialist
            at the first MuHDi step), muhdi-no-pod, muhdi-no-kd, muhdi-no-specialist, bn-only (sequential ADVENT
            without the adversarial term: the target only moves the BatchNorm statistics), joint, oracle.
        source_domain: the labelled street domain (streets).
        targets: street target domains, in the order they arrive (streets); T1 is adapted to at step 1.
        benchmark_targets: real target datasets in order (benchmark).
        image_size: (height, width) of every image.
        source_images: labelled source training images (streets).
        target_images: unlabelled training images per target (streets).
        val_images: labelled validation images per domain (best-on-validation selection; streets).
        test_images: labelled test images per domain (every reported number; streets).
        data_seed: seed of the rendered scenes (the same scenes for every training seed).
        label_map: 7-class mapping of the real datasets: "consistent" or "muhdi_official".
        list_dir: folder of the official ``<dataset>_list/<split>.txt`` files (benchmark).
        model: architecture.
        step: MuHDi's step settings (the other arms change the method or one term, see ``arm_settings``).
        pretrain_loop: source-only pretraining (streets; the paper starts from ImageNet weights instead).
        step1_loop: step 1, ADVENT source -> T1 (shared by every continual arm of a seed).
        loop: every later step of every continual arm.
        reference_steps: iterations of the joint and oracle references (0: step 1 plus every later step).
        select_every: validation period of the best-on-validation snapshot (0: last iterate only).
        figure_images: test images per target in the prediction figure.
        noninferiority_margin: how much lower MuHDi's mean mIoU may be and still count as "equal or better".
    """

    dataset: str = "auto"
    arms: tuple[str, ...] = ("source-only", "advent", "muhdi")
    source_domain: str = "synthetic"
    targets: tuple[str, ...] = ("city", "dusty")
    benchmark_targets: tuple[str, ...] = ("cityscapes", "idd")
    image_size: tuple[int, int] = (32, 64)
    source_images: int = 600
    target_images: int = 400
    val_images: int = 100
    test_images: int = 100
    data_seed: int = 0
    label_map: str = "consistent"
    list_dir: str | None = None
    model: ModelSettings = field(
        default_factory=lambda: ModelSettings(
            backbone="tiny", maxpool=False, aspp_dilations=(1, 2, 3, 4), discriminator_width=16
        )
    )
    step: StepSettings = field(
        default_factory=lambda: StepSettings(lambda_pod=TOY_LAMBDA_POD, specialist_init=TOY_SPECIALIST_INIT)
    )
    pretrain_loop: LoopConfig = field(default_factory=lambda: toy_loop(300, 0.05, batch_size=8))
    step1_loop: LoopConfig = field(default_factory=lambda: toy_loop(100, 2.5e-3))
    loop: LoopConfig = field(default_factory=lambda: toy_loop(100, 2.5e-3))
    reference_steps: int = 0
    select_every: int = 50
    figure_images: int = 3
    noninferiority_margin: float = 0.01

    def validate(self) -> None:
        """Check every field (one-line ConfigError naming the field and the fix)."""
        super().validate()
        for loop in (self.pretrain_loop, self.step1_loop, self.loop):
            loop.validate()
        self.step.validate()
        if self.dataset not in DATASETS:
            raise ConfigError(f"dataset={self.dataset!r} is invalid; use streets or benchmark (with --data-root)")
        if self.dataset == "benchmark" and self.data_root is None:
            raise ConfigError("dataset='benchmark' needs --data-root holding GTA5/, cityscapes/, IDD/, mapillary/")
        if not self.arms or any(a not in ARM_NAMES for a in self.arms) or len(set(self.arms)) != len(self.arms):
            raise ConfigError(f"arms={self.arms!r} is invalid; choose distinct arms among {', '.join(ARM_NAMES)}")
        if self.label_map not in LABEL_MAPS:
            raise ConfigError(f"label_map={self.label_map!r} is invalid; use 'consistent' or 'muhdi_official'")
        self._validate_domains()
        counts = ("source_images", "target_images", "val_images", "test_images", "figure_images")
        for name in counts:
            if getattr(self, name) < (0 if name == "figure_images" else 1):
                raise ConfigError(f"{name}={getattr(self, name)} is invalid; it must be a positive integer")
        if self.reference_steps < 0 or self.select_every < 0 or self.noninferiority_margin < 0:
            raise ConfigError("reference_steps, select_every and noninferiority_margin must be >= 0")
        if min(self.image_size) < 32:
            raise ConfigError(f"image_size={self.image_size} is too small for the discriminators; use >= 32 x 32")

    def _validate_domains(self) -> None:
        if self.source_domain not in STREET_DOMAINS or any(t not in STREET_DOMAINS for t in self.targets):
            raise ConfigError(f"source_domain / targets must be street domains: {', '.join(STREET_DOMAINS)}")
        if self.source_domain in self.targets or len(set(self.targets)) != len(self.targets) or not self.targets:
            raise ConfigError(f"targets={self.targets!r} must be distinct and differ from the source domain")
        if any(t not in BENCHMARK_TARGETS for t in self.benchmark_targets) or not self.benchmark_targets:
            raise ConfigError(f"benchmark_targets={self.benchmark_targets!r}: choose among {BENCHMARK_TARGETS}")

    @property
    def source(self) -> str:
        """The data source actually used."""
        return "benchmark" if self.dataset == "benchmark" else "streets"

    @property
    def target_names(self) -> tuple[str, ...]:
        """The targets of the sequence, in order."""
        return self.benchmark_targets if self.source == "benchmark" else self.targets

    @property
    def total_reference_steps(self) -> int:
        """Iterations of the joint and oracle references."""
        later = (len(self.target_names) - 1) * self.loop.max_steps
        return self.reference_steps or self.step1_loop.max_steps + later


def smoke() -> MuhdiConfig:
    """Seconds: 1 seed, 32 source / 16 target images, 10 iterations per stage."""
    return MuhdiConfig(
        preset="smoke",
        threads=1,
        seeds=(0,),
        source_images=32,
        target_images=16,
        val_images=8,
        test_images=8,
        figure_images=2,
        select_every=5,
        pretrain_loop=toy_loop(10, 0.05, batch_size=8),
        step1_loop=toy_loop(10, 2.5e-3),
        loop=toy_loop(10, 2.5e-3),
    )


def standard() -> MuhdiConfig:
    """Source -> city -> dusty, source-only / ADVENT / MuHDi, 3 seeds (about 2 minutes on 2 idle cores)."""
    return MuhdiConfig(preset="standard", threads=2)


def extended() -> MuhdiConfig:
    """The evidence: source -> city -> dusty -> varied, ablations, joint and oracle references, 3 seeds."""
    arms = ("source-only", "advent", "muhdi", "muhdi-fresh-specialist", "muhdi-no-pod", "muhdi-no-specialist",
            "bn-only", "joint", "oracle")  # fmt: skip
    return MuhdiConfig(
        preset="extended",
        threads=2,
        arms=arms,
        targets=("city", "dusty", "varied"),
        pretrain_loop=toy_loop(600, 0.05, batch_size=8),
        step1_loop=toy_loop(200, 2.5e-3),
        loop=toy_loop(160, 2.5e-3),
        reference_steps=320,
        select_every=40,
    )


def paper() -> MuhdiConfig:
    """The official recipe on GTA5 -> Cityscapes -> IDD (GPU): DeepLab-V2 ResNet-101, 320 x 640, batch 1 + 1.

    Step 1 ADVENT 120k iterations (poly over 240k in the official config), MuHDi steps 60k (poly over 120k): our
    loop decays over ``max_steps``, so these are the early-stop iteration counts with a full decay. ImageNet
    weights of the ResNet come from a local torchvision checkpoint (``--model.backbone-weights``).
    """
    return MuhdiConfig(
        preset="paper",
        dataset="benchmark",
        seeds=(1234,),
        arms=("advent", "muhdi"),
        benchmark_targets=("cityscapes", "idd"),
        image_size=(320, 640),
        model=ModelSettings(backbone="resnet101", normalization="imagenet"),
        step=StepSettings(),
        fabric=FabricConfig(precision="32-true"),
        step1_loop=LoopConfig(
            max_steps=120_000,
            batch_size=1,
            lr=2.5e-4,
            weight_decay=0.0,
            schedule="poly",
            log_every=100,
            ckpt_every=2000,
            num_workers=4,
            eval_batch_size=1,
        ),
        loop=LoopConfig(
            max_steps=60_000,
            batch_size=1,
            lr=2.5e-4,
            weight_decay=0.0,
            schedule="poly",
            log_every=100,
            ckpt_every=2000,
            num_workers=4,
            eval_batch_size=1,
        ),
        select_every=2000,
    )


PRESETS = {"smoke": smoke, "standard": standard, "extended": extended, "paper": paper}
