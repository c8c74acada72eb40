"""SInGE experiment configuration and presets.

Smoke: seconds; standard: <= 2 minutes on 2 cores; extended: <= 10 minutes; paper and paper_cifar10: GPUs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from frugalvision.errors import ConfigError
from frugalvision.harness import RunConfig

CRITERIA = (
    "random",
    "l1",
    "l2",
    "bn_scale",
    "taylor_tp",
    "magnitude_tp",
    "fpgm_tp",
    "lamp_tp",
    "ig_norm",
    "taylor_path",
    "ig_signed",
    "ig_variation",
    "oracle",
)
PATH_CRITERIA = ("ig_norm", "taylor_path", "ig_signed", "ig_variation")
#: the Torch-Pruning baselines the criterion claim is voted against (issue 18: L1, Taylor, FPGM, LAMP)
VOTED_BASELINES = ("l1", "taylor_tp", "fpgm_tp", "lamp_tp")
LR_READINGS = ("cosine", "restarts")


@dataclass
class SingeCriterion:
    """The SInGE criterion (all OUR reading; defaults frozen by the standard variant study, see the README).

    Chosen: taylor_path, gate granularity, layer scope, K = 8, trapezoid (best mean validation top-1 after BN
    re-estimation in the variant study of the current standard preset; the earlier preset had chosen ig_norm).

    Attributes:
        criterion: "ig_norm" (norm of per-weight integrated gradients), "taylor_path" (Taylor averaged on the path),
            "ig_signed" (signed gate integral) or "ig_variation" (the literal reading: integral over the path of
            the norm of the gradient's variation from the intact network, Σ_k ω_k ‖G_c(μ_k) − G_c(1)‖_p).
        granularity: "weight" (folded producer weights) or "gate" (one scalar per channel).
        scope: "layer" (the whole group moves along the path) or "neuron" (one channel at a time).
        steps: K quadrature intervals.
        rule: "trapezoid", "midpoint" or "right".
        p: norm (1 or 2).
    """

    criterion: str = "taylor_path"
    granularity: str = "gate"
    scope: str = "layer"
    steps: int = 8
    rule: str = "trapezoid"
    p: float = 1.0

    def validate(self) -> None:
        """Raise ConfigError on an invalid value."""
        if self.criterion not in PATH_CRITERIA:
            raise ConfigError(f"singe.criterion={self.criterion!r} is invalid; use one of {', '.join(PATH_CRITERIA)}")
        if self.granularity not in ("weight", "gate"):
            raise ConfigError(f"singe.granularity={self.granularity!r} is invalid; use weight or gate")
        if self.criterion in ("ig_norm", "ig_variation") and self.granularity == "gate":
            raise ConfigError(
                f"singe.criterion={self.criterion} needs singe.granularity=weight; use taylor_path for gates"
            )
        if self.scope not in ("layer", "neuron"):
            raise ConfigError(f"singe.scope={self.scope!r} is invalid; use layer or neuron")
        if self.steps < 1:
            raise ConfigError(f"singe.steps={self.steps} is invalid; use K >= 1")
        if self.rule not in ("trapezoid", "midpoint", "right"):
            raise ConfigError(f"singe.rule={self.rule!r} is invalid; use trapezoid, midpoint or right")
        if self.p not in (1.0, 2.0):
            raise ConfigError(f"singe.p={self.p} is invalid; use 1 or 2")


@dataclass
class SingeConfig(RunConfig):
    """SInGE experiment settings (spec §6).

    Attributes:
        singe: the SInGE criterion.
        arch: "cifar_resnet" (CIFAR ResNet-(6n+2), ``depth``/``width``) or "resnet50" (torchvision, built offline).
        pretrained: local safetensors state dict of the dense model (e.g. ImageNet ResNet-50 weights converted with
            ``pruning.convert_checkpoint``); None trains the dense model here (cached per seed).
        image_size: model input size (0: the source's native size; ImageNet: 224); in-memory sources are resized.
        resize_size: ImageNet evaluation resize before the centre crop (0: image_size / 0.875).
        num_workers: DataLoader workers of the training loops.
        depth: CIFAR ResNet depth (6n+2).
        width: first-stage width.
        train_size: training images per seed (stratified subset of the training file).
        val_size: validation images (disjoint; used by the variant study only).
        test_size: test images (stratified subset of the test file).
        augment: random crop (padding 4) and horizontal flip during training (CIFAR).
        dense_seed: one dense model for every seed, trained with this seed on the data split it fixes (the seeds
            then vary the calibration set and the fine-tuning order); None: one dense model per seed, each on the
            seed's own split.
        dense_min_top1: the dense model must reach this test top-1 (and 2 x chance) before the claim is judged.
        dense_steps: dense training steps (SGD, Nesterov, cosine).
        dense_batch: dense training batch size.
        dense_lr: dense training peak LR.
        calibration: calibration images D_c.
        targets: MAC fractions kept in E1 (criterion quality without fine-tuning).
        e1_criteria: E1 rows ("singe" is the configured SInGE criterion).
        k_ablation: K values of the ablation (E1 at the first target); empty disables.
        e2_targets: MAC fractions kept in E2 (one-shot pruning + the short fine-tuning, every E2 criterion).
        e2_criteria: E2 criteria (one-shot, then ``finetune_steps`` of fine-tuning).
        voted_baselines: baselines the criterion claim compares SInGE with (in E1 and E2; Torch-Pruning's L1,
            Taylor, FPGM and LAMP by default).
        global_criteria: criteria ranked globally (all groups together, pruned to the same MACs by bisection):
            LAMP's scores are built for it; every other criterion prunes locally.
        flow_targets: MAC fractions where SInGE also runs entwined (the flowchart claim; a subset of e2_targets).
        lr_readings: learning-rate readings of the entwined schedule, each a row: "cosine" (one cosine over all F
            steps) and/or "restarts" (one cosine per round); the flowchart claim takes the better one at alpha / k.
        e2_target: the target whose SInGE entwined model is saved and timed (E3); one of ``flow_targets``.
        sparse_steps: steps of group-sparse training (Torch-Pruning ``GroupNormPruner``) before the DepGraph
            baseline prunes, taken out of the same ``finetune_steps`` budget; 0 drops that row.
        sparse_reg: ``GroupNormPruner`` regularisation coefficient.
        rounds: entwined rounds T.
        finetune_steps: total fine-tuning steps F (same for every schedule).
        finetune_batch: fine-tuning batch size.
        finetune_lr: fine-tuning peak LR (one cosine over F).
        latency: measure CPU latency of the pruned vs dense model (E3).
        latency_multiple: the E3 rounded variant keeps channel counts that are multiples of this (0: no rounded
            variant); E2 also fine-tunes SInGE with it at ``e2_target`` (accuracy of the rounded model).
        latency_threads: torch threads of the latency measurement.
        latency_rounds: interleaved timing rounds of the latency measurement (dense and pruned alternate).
        latency_batches: batch sizes of the latency measurement.
        latency_size: input side of the latency measurement (0: the training input size). Latency depends on the
            architecture only, so a fully convolutional model can be timed at a larger resolution than it was
            trained at.
        study_criteria: variant study candidates as "criterion/granularity/scope".
        study_steps: K values of the variant study.
        study_targets: MAC fractions of the variant study.
        study_metric: what the study maximises: "val_top1" (right after pruning) or "val_top1_bn_recal" (after
            re-estimating the BatchNorm statistics on the calibration set).
    """

    singe: SingeCriterion = field(default_factory=SingeCriterion)
    arch: str = "cifar_resnet"
    pretrained: str | None = None
    image_size: int = 0
    resize_size: int = 0
    num_workers: int = 0
    depth: int = 8
    width: int = 16
    train_size: int = 12000
    val_size: int = 2000
    test_size: int = 3000
    augment: bool = False
    dense_seed: int | None = None
    dense_min_top1: float = 0.0
    dense_steps: int = 140
    dense_batch: int = 128
    dense_lr: float = 0.1
    calibration: int = 256
    targets: tuple[float, ...] = (0.7, 0.5, 0.3)
    e1_criteria: tuple[str, ...] = (
        "random",
        "l1",
        "l2",
        "bn_scale",
        "taylor_tp",
        "fpgm_tp",
        "lamp_tp",
        "singe",
        "taylor_path",
        "oracle",
    )
    k_ablation: tuple[int, ...] = (1, 4, 8, 16, 32)
    e2_targets: tuple[float, ...] = (0.7, 0.5, 0.3)
    e2_criteria: tuple[str, ...] = ("l1", "taylor_tp", "fpgm_tp", "lamp_tp", "singe")
    voted_baselines: tuple[str, ...] = VOTED_BASELINES
    global_criteria: tuple[str, ...] = ("lamp_tp",)
    flow_targets: tuple[float, ...] = (0.5,)
    lr_readings: tuple[str, ...] = LR_READINGS
    e2_target: float = 0.5
    sparse_steps: int = 50
    sparse_reg: float = 5e-4
    rounds: int = 5
    finetune_steps: int = 150
    finetune_batch: int = 64
    finetune_lr: float = 0.02
    latency: bool = True
    latency_multiple: int = 8
    latency_threads: int = 2
    latency_rounds: int = 15
    latency_batches: tuple[int, ...] = (1, 64)
    latency_size: int = 0
    study_criteria: tuple[str, ...] = (
        "ig_norm/weight/layer",
        "taylor_path/weight/layer",
        "taylor_path/gate/layer",
        "ig_variation/weight/layer",
    )
    study_steps: tuple[int, ...] = (1, 4, 8, 16)
    study_targets: tuple[float, ...] = (0.5, 0.35)
    study_metric: str = "val_top1_bn_recal"

    def validate(self) -> None:
        """Raise ConfigError naming the field and the fix."""
        super().validate()
        self.singe.validate()
        if self.arch not in ("cifar_resnet", "resnet50"):
            raise ConfigError(f"arch={self.arch!r} is invalid; use cifar_resnet or resnet50")
        if self.dataset == "imagenet" and self.arch != "resnet50":
            raise ConfigError("dataset=imagenet needs --arch resnet50")
        if self.pretrained is not None and not self.pretrained.endswith(".safetensors"):
            raise ConfigError(
                f"pretrained={self.pretrained!r} must be a .safetensors file (pickles are refused); "
                "convert it with frugalvision.methods.singe.pruning.convert_checkpoint"
            )
        if self.pretrained is not None and not Path(self.pretrained).is_file():
            raise ConfigError(f"pretrained={self.pretrained!r} does not exist; pass an existing safetensors file")
        if min(self.image_size, self.resize_size, self.num_workers, self.latency_size) < 0:
            raise ConfigError("image_size, resize_size, num_workers and latency_size must be >= 0")
        if (self.depth - 2) % 6 or self.depth < 8:
            raise ConfigError(f"depth={self.depth} is invalid; use 6n+2 (8, 20, 56, ...)")
        for name in (
            "width",
            "train_size",
            "test_size",
            "dense_steps",
            "dense_batch",
            "calibration",
            "rounds",
            "finetune_batch",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} is invalid; it must be a positive integer")
        if self.finetune_steps < 0:
            raise ConfigError(f"finetune_steps={self.finetune_steps} is invalid; use >= 0")
        for name in ("targets", "study_targets"):
            if not all(0.0 < t < 1.0 for t in getattr(self, name)):
                raise ConfigError(f"{name}={getattr(self, name)} is invalid; MAC fractions kept must be in (0, 1)")
        if not all(0.0 < t < 1.0 for t in self.e2_targets):
            raise ConfigError(f"e2_targets={self.e2_targets} is invalid; MAC fractions kept must be in (0, 1)")
        if not set(self.flow_targets) <= set(self.e2_targets):
            raise ConfigError(f"flow_targets={self.flow_targets} must be among e2_targets={self.e2_targets}")
        if self.e2_target not in self.flow_targets:
            raise ConfigError(f"e2_target={self.e2_target} is not in flow_targets={self.flow_targets}; add it there")
        if not self.lr_readings or not set(self.lr_readings) <= set(LR_READINGS):
            raise ConfigError(f"lr_readings={self.lr_readings} is invalid; use some of {', '.join(LR_READINGS)}")
        if self.latency_multiple < 0 or self.dense_min_top1 < 0:
            raise ConfigError("latency_multiple and dense_min_top1 must be >= 0")
        if self.sparse_steps < 0 or self.sparse_steps > self.finetune_steps:
            raise ConfigError(
                f"sparse_steps={self.sparse_steps} is invalid; use 0..finetune_steps "
                f"({self.finetune_steps}), it is part of the same budget"
            )
        if self.latency_rounds < 1:
            raise ConfigError(f"latency_rounds={self.latency_rounds} is invalid; use >= 1 timing rounds")
        if not self.latency_batches or min(self.latency_batches) < 1:
            raise ConfigError(f"latency_batches={self.latency_batches} is invalid; use positive batch sizes")
        allowed = set(CRITERIA) | {"singe"}
        for name in ("e1_criteria", "e2_criteria"):
            bad = [c for c in getattr(self, name) if c not in allowed]
            if bad:
                raise ConfigError(f"{name} has unknown criteria {bad}; choose among {', '.join(sorted(allowed))}")
        voted = set(self.voted_baselines)
        if not voted or not voted <= set(VOTED_BASELINES):
            raise ConfigError(f"voted_baselines={self.voted_baselines} is invalid; use some of {VOTED_BASELINES}")
        for name in ("e1_criteria", "e2_criteria"):
            missing = sorted(({"singe"} | voted) - set(getattr(self, name)))
            if missing:
                raise ConfigError(f"{name} lacks {missing}; the verdict compares singe with the voted baselines")
        bad_global = [c for c in self.global_criteria if c not in CRITERIA]
        if bad_global:
            raise ConfigError(f"global_criteria has unknown criteria {bad_global}; e.g. lamp_tp")
        for candidate in self.study_criteria:
            parts = candidate.split("/")
            if len(parts) != 3:
                raise ConfigError(f"study_criteria entry {candidate!r} is invalid; write criterion/granularity/scope")
            SingeCriterion(parts[0], parts[1], parts[2]).validate()
        if self.study_metric not in ("val_top1", "val_top1_bn_recal"):
            raise ConfigError(f"study_metric={self.study_metric!r} is invalid; use val_top1 or val_top1_bn_recal")
        if self.study == "variants" and self.val_size <= 0:
            raise ConfigError("val_size must be > 0 for --study variants; pass --val-size 2000")


# E1 rows of the CPU presets: the voted baselines, random, SInGE and the exact leave-one-out oracle (reference).
E1_CPU = ("random", "l1", "taylor_tp", "fpgm_tp", "lamp_tp", "singe", "oracle")


def extended() -> SingeConfig:
    """<= 10 minutes on 2 CPU cores: one dense ResNet-8 trained once on the full 60k Fashion-MNIST (14x14), cached.

    Three seeds (calibration sets and fine-tuning orders) on the full 10k test set: E1 (one-shot, BatchNorm
    re-estimated, no fine-tuning) and E2 (one-shot + a short fine-tuning of 100 steps of 64 images, 3.6 % of the
    dense training's images) at 30/50/70 % MACs removed for SInGE and Torch-Pruning's L1, Taylor, FPGM and LAMP
    (global); SInGE entwined under both learning-rate readings at 50 %; E3 latency with and without channel
    rounding.
    """
    return SingeConfig(
        preset="extended",
        threads=2,
        image_size=14,
        train_size=60000,
        val_size=0,
        test_size=10000,
        dense_seed=0,
        dense_min_top1=0.85,
        dense_steps=1400,
        calibration=256,
        e1_criteria=E1_CPU,
        k_ablation=(),
        e2_targets=(0.7, 0.5, 0.3),
        flow_targets=(0.5,),
        rounds=4,
        finetune_steps=100,
        sparse_steps=0,
        latency_size=28,
        latency_rounds=30,
    )


def standard() -> SingeConfig:
    """<= 2 minutes on 2 CPU cores: the extended design scaled down, 3 seeds.

    One dense model on 12,000 images, 2,000 test images, E1 and E2 at 50 % MACs removed; its validation split
    serves ``--study variants``.
    """
    return dataclasses.replace(
        extended(),
        preset="standard",
        train_size=12000,
        val_size=2000,
        test_size=2000,
        dense_min_top1=0.0,
        dense_steps=280,
        calibration=128,
        targets=(0.5,),
        e1_criteria=E1_CPU[:-1],
        e2_targets=(0.5,),
        rounds=3,
        finetune_steps=60,
        study_steps=(1, 4, 8),
        latency_rounds=15,
    )


def smoke() -> SingeConfig:
    """Seconds: one seed, width 8, 1,000 images at 14x14, every row kind and code path exercised."""
    return dataclasses.replace(
        standard(),
        preset="smoke",
        threads=1,
        seeds=(0,),
        width=8,
        train_size=1000,
        val_size=300,
        test_size=500,
        dense_steps=40,
        dense_batch=64,
        calibration=64,
        singe=SingeCriterion(steps=2),
        e1_criteria=E1_CPU,
        voted_baselines=("l1", "lamp_tp"),
        e2_criteria=("l1", "lamp_tp", "singe"),
        k_ablation=(1, 2),
        rounds=2,
        finetune_steps=20,
        finetune_batch=32,
        sparse_steps=6,
        study_steps=(1, 2),
        study_targets=(0.5,),
        latency_threads=1,
        latency_size=0,
        latency_rounds=3,
        latency_multiple=4,
    )


def paper() -> SingeConfig:
    """GPU scale: ResNet-50 on ImageNet (ImageFolder under --data-root, dense weights via --pretrained), 50/30 % MACs.

    Fine-tuning 30 epochs in total at batch 256 (150,000 steps; OURS), T = 8 entwined rounds, 10,000 calibration
    images; the DepGraph baseline trains group-sparse for the first 30,000 of those steps. Without ``--pretrained``
    the dense ResNet-50 is trained here first (90 epochs).
    """
    return SingeConfig(
        preset="paper",
        dataset="imagenet",
        arch="resnet50",
        image_size=224,
        resize_size=256,
        train_size=1_281_167,
        val_size=10000,
        test_size=50000,
        num_workers=8,
        dense_steps=450_000,
        dense_batch=256,
        dense_lr=0.1,
        calibration=10000,
        targets=(0.5, 0.3),
        dense_seed=0,
        e1_criteria=("random", "l1", "l2", "bn_scale", "taylor_tp", "fpgm_tp", "lamp_tp", "singe", "taylor_path"),
        k_ablation=(1, 8),
        e2_targets=(0.5, 0.3),
        flow_targets=(0.5, 0.3),
        e2_target=0.5,
        rounds=8,
        finetune_steps=150_000,
        finetune_batch=256,
        finetune_lr=0.01,
        sparse_steps=30_000,
        latency_threads=8,
        latency_batches=(1, 16),
        study_targets=(0.5, 0.3),
        threads=0,
    )


def paper_cifar10() -> SingeConfig:
    """GPU scale, second benchmark: ResNet-56 on CIFAR-10 (binary release under --data-root), 2x MAC reduction.

    An extra preset: ``frugal run singe --preset paper_cifar10 --data-root <dir>``.
    """
    return SingeConfig(
        preset="paper_cifar10",
        dataset="cifar10",
        depth=56,
        width=16,
        train_size=45000,
        val_size=5000,
        test_size=10000,
        augment=True,
        dense_seed=0,
        e1_criteria=(*E1_CPU, "taylor_path"),
        dense_steps=70000,
        dense_batch=128,
        dense_lr=0.1,
        calibration=4096,
        targets=(0.5, 0.3),
        e2_targets=(0.5, 0.3),
        flow_targets=(0.5, 0.3),
        e2_target=0.5,
        rounds=8,
        finetune_steps=35000,
        finetune_batch=128,
        finetune_lr=0.01,
        sparse_steps=7000,
        k_ablation=(1, 8, 32),
        threads=0,
    )
