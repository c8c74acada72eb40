"""SInGE experiment configuration and presets (smoke: seconds, standard: minutes on a 2-core CPU, paper: GPUs)."""

from __future__ import annotations

from dataclasses import dataclass, field

from frugalvision.errors import ConfigError
from frugalvision.experiment import RunConfig

CRITERIA = ("random", "l1", "l2", "bn_scale", "taylor_tp", "ig_norm", "taylor_path", "ig_signed", "oracle")


@dataclass
class SingeCriterion:
    """The SInGE criterion (all OUR reading; defaults frozen by the standard variant study, see the README).

    Chosen: ig_norm, weight granularity, layer scope, K = 8, trapezoid, p = 1 (best validation top-1 after BN
    re-estimation).

    Attributes:
        criterion: "ig_norm" (norm of per-weight integrated gradients) or "taylor_path" (Taylor averaged on the path).
        granularity: "weight" (folded producer weights) or "gate" (one scalar per channel).
        scope: "layer" (the whole group moves along the path) or "neuron" (one channel at a time).
        steps: K quadrature intervals.
        rule: "trapezoid", "midpoint" or "right".
        p: norm (1 or 2).
    """

    criterion: str = "ig_norm"
    granularity: str = "weight"
    scope: str = "layer"
    steps: int = 8
    rule: str = "trapezoid"
    p: float = 1.0

    def validate(self) -> None:
        """Raise ConfigError on an invalid value."""
        if self.criterion not in ("ig_norm", "taylor_path", "ig_signed"):
            raise ConfigError(f"singe.criterion={self.criterion!r} is invalid; use ig_norm, taylor_path or ig_signed")
        if self.granularity not in ("weight", "gate"):
            raise ConfigError(f"singe.granularity={self.granularity!r} is invalid; use weight or gate")
        if self.criterion == "ig_norm" and self.granularity == "gate":
            raise ConfigError("singe.criterion=ig_norm needs singe.granularity=weight; use taylor_path for gates")
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
        depth: CIFAR ResNet depth (6n+2).
        width: first-stage width.
        train_size: training images per seed (stratified subset of the training file).
        val_size: validation images (disjoint; used by the variant study only).
        test_size: test images (stratified subset of the test file).
        augment: random crop (padding 4) and horizontal flip during training (CIFAR).
        dense_steps: dense training steps (SGD, Nesterov, cosine).
        dense_batch: dense training batch size.
        dense_lr: dense training peak LR.
        calibration: calibration images D_c.
        targets: MAC fractions kept in E1 (criterion quality without fine-tuning).
        e1_criteria: E1 rows ("singe" is the configured SInGE criterion).
        k_ablation: K values of the ablation (E1 at the first target); empty disables.
        e2_target: MAC fraction kept in E2 (fine-tuning at equal budget).
        e2_criteria: E2 criteria (each run one-shot and entwined).
        rounds: entwined rounds T.
        finetune_steps: total fine-tuning steps F (same for every schedule).
        finetune_batch: fine-tuning batch size.
        finetune_lr: fine-tuning peak LR (one cosine over F).
        lr_restarts: variant: a cosine per entwined round instead of one over F (not the default).
        latency: measure CPU latency of the pruned vs dense model (E3).
        latency_threads: torch threads of the latency measurement.
        study_criteria: variant study candidates as "criterion/granularity/scope".
        study_steps: K values of the variant study.
        study_targets: MAC fractions of the variant study.
        study_metric: what the study maximises: "val_top1" (right after pruning) or "val_top1_bn_recal" (after
            re-estimating the BatchNorm statistics on the calibration set).
    """

    singe: SingeCriterion = field(default_factory=SingeCriterion)
    depth: int = 8
    width: int = 16
    train_size: int = 12000
    val_size: int = 2000
    test_size: int = 3000
    augment: bool = False
    dense_steps: int = 140
    dense_batch: int = 128
    dense_lr: float = 0.1
    calibration: int = 256
    targets: tuple[float, ...] = (0.5, 0.35)
    e1_criteria: tuple[str, ...] = ("random", "l1", "l2", "bn_scale", "taylor_tp", "singe", "taylor_path", "oracle")
    k_ablation: tuple[int, ...] = (1, 4, 8, 16, 32)
    e2_target: float = 0.5
    e2_criteria: tuple[str, ...] = ("l1", "taylor_tp", "singe")
    rounds: int = 5
    finetune_steps: int = 150
    finetune_batch: int = 64
    finetune_lr: float = 0.02
    lr_restarts: bool = False
    latency: bool = True
    latency_threads: int = 2
    study_criteria: tuple[str, ...] = ("ig_norm/weight/layer", "taylor_path/weight/layer", "taylor_path/gate/layer")
    study_steps: tuple[int, ...] = (1, 4, 8, 16)
    study_targets: tuple[float, ...] = (0.5, 0.35)
    study_metric: str = "val_top1_bn_recal"

    def validate(self) -> None:
        """Raise ConfigError naming the field and the fix."""
        super().validate()
        self.singe.validate()
        if (self.depth - 2) % 6 or self.depth < 8:
            raise ConfigError(f"depth={self.depth} is invalid; use 6n+2 (8, 20, 56, ...)")
        for name in ("width", "train_size", "test_size", "dense_steps", "dense_batch", "calibration", "rounds",
                     "finetune_batch"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} is invalid; it must be a positive integer")
        if self.finetune_steps < 0:
            raise ConfigError(f"finetune_steps={self.finetune_steps} is invalid; use >= 0")
        for name in ("targets", "study_targets"):
            if not all(0.0 < t < 1.0 for t in getattr(self, name)):
                raise ConfigError(f"{name}={getattr(self, name)} is invalid; MAC fractions kept must be in (0, 1)")
        if not 0.0 < self.e2_target < 1.0:
            raise ConfigError(f"e2_target={self.e2_target} is invalid; use a MAC fraction in (0, 1)")
        allowed = set(CRITERIA) | {"singe"}
        for name in ("e1_criteria", "e2_criteria"):
            bad = [c for c in getattr(self, name) if c not in allowed]
            if bad:
                raise ConfigError(f"{name} has unknown criteria {bad}; choose among {', '.join(sorted(allowed))}")
        if "singe" not in self.e2_criteria or not ({"l1", "taylor_tp"} & set(self.e2_criteria)):
            raise ConfigError("e2_criteria must contain singe and one of l1, taylor_tp (the verdict uses them)")
        for candidate in self.study_criteria:
            parts = candidate.split("/")
            if len(parts) != 3:
                raise ConfigError(f"study_criteria entry {candidate!r} is invalid; write criterion/granularity/scope")
            SingeCriterion(parts[0], parts[1], parts[2]).validate()
        if self.study_metric not in ("val_top1", "val_top1_bn_recal"):
            raise ConfigError(f"study_metric={self.study_metric!r} is invalid; use val_top1 or val_top1_bn_recal")
        if self.study is not None and self.val_size <= 0:
            raise ConfigError("val_size must be > 0 for --study variants; pass --val-size 2000")


def smoke() -> SingeConfig:
    """Seconds: 2 seeds, width 8, 1,000 images, every row and code path exercised."""
    return SingeConfig(
        preset="smoke", seeds=(0, 1), width=8, train_size=1000, val_size=300, test_size=500, dense_steps=40,
        dense_batch=64, calibration=64, singe=SingeCriterion(steps=2), k_ablation=(1, 2), rounds=2, finetune_steps=20,
        finetune_batch=32, study_steps=(1, 2), study_targets=(0.5,), latency_threads=1,
    )


def standard() -> SingeConfig:
    """Minutes on a 2-core CPU: 3 seeds, ResNet-8 width 16, 6,000 Fashion-MNIST images (spec §6 shrunk, see README)."""
    return SingeConfig(
        preset="standard", train_size=6000, val_size=1000, test_size=1000, dense_steps=70, calibration=128,
        singe=SingeCriterion(steps=8), k_ablation=(1, 4), rounds=4, finetune_steps=80, study_steps=(1, 4, 8),
    )


def paper() -> SingeConfig:
    """GPU scale: ResNet-56 on CIFAR-10 (binary release under --data-root), 2x MAC reduction, 100 fine-tune epochs."""
    return SingeConfig(
        preset="paper", dataset="cifar10", depth=56, width=16, train_size=45000, val_size=5000, test_size=10000,
        augment=True, dense_steps=70000, dense_batch=128, dense_lr=0.1, calibration=4096, targets=(0.5, 0.3),
        e2_target=0.5, rounds=8, finetune_steps=35000, finetune_batch=128, finetune_lr=0.01, k_ablation=(1, 8, 32),
        threads=0,
    )
