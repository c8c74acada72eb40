"""Engine adapter of one continual-UDA step: source supervision, ADVENT / MinEnt on the target, MuHDi's distillation.

One :class:`UdaStep` trains one step of the sequence with the engine: ``method="source"`` (source cross-entropy only:
the source-pretrained model), ``"supervised"`` (cross-entropy on the source and on *labelled* target images: the
oracle), ``"advent"`` (ADVENT / MinEnt on the single agnostic branch: step 1 and the sequential baseline) or
``"muhdi"`` (the paper's objective, spec 2.3). Every optimiser (SGD for the segmenter with x10 on the classifier
heads, Adam for the discriminators) sits behind one :class:`~frugalvision.engine.CompositeOptimizer` that the
engine schedules (``poly``) and checkpoints. The whole objective is one backward: the adversarial term sees the
discriminators through detached weights and the discriminator loss sees detached maps, so each part gets exactly
the gradients of the official three-backward loop; the teacher runs under ``no_grad``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from frugalvision.engine import CompositeOptimizer, LoopConfig, Task
from frugalvision.errors import ConfigError
from frugalvision.methods.muhdi.functional import (
    bce_with_constant,
    entropy_loss,
    kl_distillation,
    mse_distillation,
    pod_loss,
    segmentation_loss,
    upsample,
)
from frugalvision.methods.muhdi.labels import IGNORE, SUPER_CLASSES
from frugalvision.methods.muhdi.model import (
    AGNOSTIC,
    SPECIALIST,
    AdaptationModel,
    make_discriminators,
    make_teacher,
    with_branches,
)
from frugalvision.metrics import miou_from_confusion
from frugalvision.nn.deeplab import DeepLabV2
from frugalvision.seeding import derive_seed

__all__ = [
    "PairedDomains",
    "SegmentationEval",
    "StepSettings",
    "UdaStep",
    "confusion_per_sample",
    "segmentation_metrics",
]

Method = Literal["source", "supervised", "advent", "muhdi"]
METHODS = ("source", "supervised", "advent", "muhdi")
UDA = ("advent", "minent", "advent+minent")
SOURCE_LABEL, TARGET_LABEL = 0.0, 1.0


@dataclass(frozen=True)
class StepSettings:
    """What one step optimises (defaults: the official MuHDi values, spec 2.5).

    Attributes:
        method: "source", "supervised" (oracle), "advent" or "muhdi".
        uda: target alignment of the adapted branch: "advent" (entropy-map discriminators), "minent" (entropy
            minimisation) or "advent+minent" (both losses, our reading of the combination).
        specialist: MuHDi's target-specialist branch (False: the ablation that adapts the agnostic branch itself
            and keeps only the distillation).
        lambda_seg_main: source cross-entropy weight of the main head.
        lambda_seg_aux: source cross-entropy weight of the aux head (also the aux weight of L_kd and L_kt).
        lambda_adv_main: adversarial weight, main level.
        lambda_adv_aux: adversarial weight, aux level.
        lambda_ent_main: MinEnt weight, main level.
        lambda_ent_aux: MinEnt weight, aux level.
        lambda_pod: feature (POD) distillation weight.
        lambda_kd: output (KL) distillation weight.
        lambda_kt: specialist -> agnostic transfer weight on the target.
        pod_scales: POD pyramid scales.
        kl_reduction: "elementwise_mean" (official, KL / C) or "pixel_mean".
        teacher_loss: transfer loss specialist -> agnostic: "kl" (official default) or "mse".
        head_init: heads across steps: "carry" (agnostic <- agnostic) or "official" (agnostic <- specialist).
        specialist_init: the specialist heads at the first MuHDi step: "fresh" (official, N(0, 0.01)) or
            "agnostic" (a copy of the previous agnostic heads: the warm start of the toy presets, README).
        momentum: SGD momentum.
        weight_decay: SGD weight decay (the discriminators have none).
        head_lr_scale: learning-rate multiplier of the classifier heads.
        discriminator_lr: peak learning rate of Adam (the segmenter's is ``loop.lr``; both follow the schedule).
        discriminator_betas: Adam betas.
    """

    method: Method = "muhdi"
    uda: str = "advent"
    specialist: bool = True
    lambda_seg_main: float = 1.0
    lambda_seg_aux: float = 0.1
    lambda_adv_main: float = 1e-3
    lambda_adv_aux: float = 2e-4
    lambda_ent_main: float = 1e-3
    lambda_ent_aux: float = 2e-4
    lambda_pod: float = 1e-5
    lambda_kd: float = 1e-5
    lambda_kt: float = 1.0
    pod_scales: tuple[int, ...] = (1, 2, 4)
    kl_reduction: str = "elementwise_mean"
    teacher_loss: str = "kl"
    head_init: str = "carry"
    specialist_init: str = "fresh"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    head_lr_scale: float = 10.0
    discriminator_lr: float = 1e-4
    discriminator_betas: tuple[float, float] = (0.9, 0.99)

    def validate(self) -> None:
        """Raise ConfigError on an invalid value."""
        if self.method not in METHODS:
            raise ConfigError(f"method={self.method!r} is invalid; use one of {', '.join(METHODS)}")
        if self.uda not in UDA:
            raise ConfigError(f"uda={self.uda!r} is invalid; use advent, minent or advent+minent")
        if self.kl_reduction not in ("elementwise_mean", "pixel_mean"):
            raise ConfigError(f"kl_reduction={self.kl_reduction!r} is invalid; use elementwise_mean or pixel_mean")
        if self.teacher_loss not in ("kl", "mse"):
            raise ConfigError(f"teacher_loss={self.teacher_loss!r} is invalid; use 'kl' or 'mse'")
        if self.head_init not in ("carry", "official"):
            raise ConfigError(f"head_init={self.head_init!r} is invalid; use 'carry' or 'official'")
        if self.specialist_init not in ("fresh", "agnostic"):
            raise ConfigError(f"specialist_init={self.specialist_init!r} is invalid; use 'fresh' or 'agnostic'")
        if not self.pod_scales or min(self.pod_scales) < 1:
            raise ConfigError(f"pod_scales={self.pod_scales} is invalid; give positive scales, e.g. (1, 2, 4)")
        weights = {k: v for k, v in vars(self).items() if k.startswith("lambda_") or k.endswith("_lr")}
        for name, value in weights.items():
            if value < 0:
                raise ConfigError(f"{name}={value} is invalid; it must be >= 0")

    @property
    def adversarial(self) -> bool:
        """Whether this step trains discriminators."""
        return self.method in ("advent", "muhdi") and "advent" in self.uda

    @property
    def minent(self) -> bool:
        """Whether this step minimises the target entropy."""
        return self.method in ("advent", "muhdi") and "minent" in self.uda

    @property
    def branches(self) -> tuple[str, ...]:
        """Branches of the segmenter this step trains."""
        return (AGNOSTIC, SPECIALIST) if self.method == "muhdi" and self.specialist else (AGNOSTIC,)

    @property
    def adapt_branch(self) -> str:
        """The branch supervised on the source and aligned on the target."""
        return self.branches[-1]


def _image_and_label(item: Any) -> tuple[Tensor, Tensor | None]:
    if isinstance(item, (tuple, list)):
        return item[0], (item[1] if len(item) > 1 else None)
    return item, None


class PairedDomains(Dataset):
    """(source image, source labels, target image[, target labels]) pairs; :meth:`order` draws the epoch's pairs.

    Index ``s * len(target) + t`` is the pair (source s, target t); an epoch has ``max(len(source), len(target))``
    pairs, each domain shuffled independently. Without a target set the items hold the source only.
    """

    def __init__(self, source: Dataset, target: Dataset | None, target_labels: bool = False) -> None:
        self.source, self.target, self.target_labels = source, target, target_labels
        self.n_source = len(source)  # type: ignore[arg-type]
        self.n_target = len(target) if target is not None else 1  # type: ignore[arg-type]
        if not self.n_source or not self.n_target:
            raise ConfigError("the source and target training sets must both hold images; check the data")

    def __len__(self) -> int:
        return self.n_source * self.n_target

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        s, t = divmod(int(index), self.n_target)
        source_image, source_labels = _image_and_label(self.source[s])
        item = {"source": source_image, "source_labels": source_labels}
        if self.target is None:
            return item
        item["target"], target_labels = _image_and_label(self.target[t])
        if self.target_labels:
            if target_labels is None:
                raise ConfigError("the oracle needs labelled target images; its target set returned none")
            item["target_labels"] = target_labels
        return item

    def order(self, epoch: int, seed: int) -> Tensor:
        """The epoch's pair indices (a pure function of (seed, epoch))."""
        generator = torch.Generator().manual_seed(derive_seed("muhdi-pairs", seed, epoch))
        length = max(self.n_source, self.n_target)
        s = torch.randperm(self.n_source, generator=generator).repeat(-(-length // self.n_source))[:length]
        t = torch.randperm(self.n_target, generator=generator).repeat(-(-length // self.n_target))[:length]
        return s * self.n_target + t


def confusion_per_sample(pred: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``(N, C, C)`` confusion matrices (rows: label, columns: prediction), pixels labelled 255 dropped."""
    n = pred.shape[0]
    valid = labels != IGNORE
    index = labels.clamp(0, num_classes - 1).long() * num_classes + pred.long()
    index = index + torch.arange(n, device=pred.device).view(n, *([1] * (pred.ndim - 1))) * num_classes**2
    counts = torch.bincount(index[valid], minlength=n * num_classes**2)
    return counts.view(n, num_classes, num_classes)


class SegmentationEval(Task):
    """Evaluation of a segmenter (its inference output: the agnostic main head) on labelled sets: mIoU, per-class IoU.

    Args:
        num_classes: classes of the label maps.
    """

    def __init__(self, num_classes: int = len(SUPER_CLASSES)) -> None:
        self.num_classes = num_classes

    @torch.no_grad()
    def eval_step(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        """Per-image confusion matrices of the agnostic main head."""
        images, labels = _image_and_label(batch)
        pred = model(images).argmax(dim=1)
        return {"confusion": confusion_per_sample(pred, labels, self.num_classes)}

    def eval_metrics(self, outputs: dict[str, Tensor]) -> dict[str, float]:
        """MIoU and per-class IoU over the whole set (classes absent from labels and predictions left out)."""
        return segmentation_metrics(outputs["confusion"].sum(dim=0))


class UdaStep(SegmentationEval):
    """One step of the continual sequence as an engine task.

    Args:
        settings: what the step optimises.
        source: labelled source set of (image in [0, 1], labels).
        target: target set (images; labels only read by the oracle); None for ``method="source"``.
        previous: the previous step's segmenter (the new one starts from it; MuHDi's teacher is a frozen copy).
        scratch: builds a fresh segmenter when there is no previous step (source pretraining).
        previous_discriminators: the previous step's discriminator state (restored when present).
        discriminator_width: base channels of new discriminators.
        select: labelled validation set of the current target (best-on-validation snapshot), or None.
    """

    def __init__(
        self,
        settings: StepSettings,
        source: Dataset,
        target: Dataset | None,
        previous: DeepLabV2 | None = None,
        scratch: Callable[[], DeepLabV2] | None = None,
        previous_discriminators: Mapping[str, Tensor] | None = None,
        discriminator_width: int = 64,
        select: Dataset | None = None,
    ) -> None:
        settings.validate()
        if previous is None and scratch is None:
            raise ConfigError("a step needs the previous segmenter or a builder of a fresh one (scratch=...)")
        if settings.method == "muhdi" and previous is None:
            raise ConfigError("a MuHDi step needs the previous model (its teacher); run an ADVENT step first")
        self.settings, self.previous, self.scratch = settings, previous, scratch
        self.pairs = PairedDomains(
            source, None if settings.method == "source" else target, target_labels=settings.method == "supervised"
        )
        self.previous_discriminators, self.discriminator_width = previous_discriminators, discriminator_width
        self.select = select
        self.teacher = make_teacher(previous) if settings.method == "muhdi" and previous is not None else None
        self.num_classes = previous.num_classes if previous is not None else 0
        self.head_origin: dict[str, str] = {}
        self.best: dict[str, Any] = {"miou": -1.0, "step": -1, "state": {}}

    # -------------------------------------------------------------------------------------------- model
    def build_model(self) -> nn.Module:
        """The step's segmenter (grown from the previous step's) and its discriminators (restored)."""
        s = self.settings
        if self.previous is not None:
            segmenter, self.head_origin = with_branches(
                self.previous,
                s.branches,
                s.head_init,
                s.specialist_init,  # type: ignore[arg-type]
            )
        else:
            assert self.scratch is not None
            fresh = self.scratch()
            segmenter, self.head_origin = with_branches(fresh, s.branches)
        self.num_classes = segmenter.num_classes
        discriminators = None
        if s.adversarial:
            discriminators = make_discriminators(self.num_classes, self.discriminator_width)
            if self.previous_discriminators:
                discriminators.load_state_dict(dict(self.previous_discriminators))
        return AdaptationModel(segmenter, discriminators, s.adapt_branch)

    def build_optimizer(self, model: nn.Module, loop: LoopConfig) -> torch.optim.Optimizer:
        """SGD (backbone x1, heads x``head_lr_scale``) and Adam for the discriminators, behind one optimiser."""
        s = self.settings
        segmenter = model.segmenter  # type: ignore[union-attr]
        groups = [
            {"params": list(segmenter.backbone_parameters()), "lr_scale": 1.0},
            {"params": list(segmenter.classifier_parameters()), "lr_scale": s.head_lr_scale},
        ]
        parts: dict[str, torch.optim.Optimizer] = {
            "segmenter": torch.optim.SGD(groups, lr=loop.lr, momentum=s.momentum, weight_decay=s.weight_decay)
        }
        if model.discriminators is not None:  # type: ignore[union-attr]
            scale = s.discriminator_lr / loop.lr if loop.lr > 0 else 0.0
            parameters = [{"params": list(model.discriminators.parameters()), "lr_scale": scale}]  # type: ignore[union-attr]
            parts["discriminators"] = torch.optim.Adam(parameters, lr=s.discriminator_lr, betas=s.discriminator_betas)
        return CompositeOptimizer(parts)

    # -------------------------------------------------------------------------------------------- data
    def train_dataset(self) -> Dataset:
        """Source/target pairs."""
        return self.pairs

    def batch_order(self) -> Callable[[int, int], Tensor]:
        """Each epoch draws fresh source/target pairs."""
        return self.pairs.order

    def eval_datasets(self) -> dict[str, Dataset]:
        """The current target's validation set when best-on-validation selection is on."""
        return {"select": self.select} if self.select is not None else {}

    # -------------------------------------------------------------------------------------------- training
    def training_step(self, model: nn.Module, batch: dict[str, Tensor], step: int) -> tuple[Tensor, dict[str, float]]:
        """The step's whole objective (segmenter and discriminator terms, one backward)."""
        out = model(batch["source"], batch.get("target"), train=True)
        terms = self.loss_terms(out, batch)
        loss = torch.stack(list(terms.values())).sum()
        return loss, {k: float(v.detach()) for k, v in terms.items()}

    def loss_terms(self, out: dict[str, Any], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Each weighted loss term of spec 2.3 (only those the step uses)."""
        s = self.settings
        terms = {"seg": self._segmentation(out["source"]["logits"][s.adapt_branch], batch["source_labels"])}
        if s.method == "supervised":
            terms["seg_target"] = self._segmentation(out["target"]["logits"][s.adapt_branch], batch["target_labels"])
        if s.adversarial:
            terms.update(self._adversarial(out))
        if s.minent:
            terms["ent"] = self._minent(out["target"]["logits"][s.adapt_branch], batch["target"].shape[-2:])
        if s.method == "muhdi":
            terms.update(self._distillation(out, batch))
        return terms

    def _segmentation(self, logits: tuple[Tensor | None, Tensor], labels: Tensor) -> Tensor:
        aux, main = logits
        loss = self.settings.lambda_seg_main * segmentation_loss(main, labels)
        if aux is not None:
            loss = loss + self.settings.lambda_seg_aux * segmentation_loss(aux, labels)
        return loss

    def _minent(self, logits: tuple[Tensor | None, Tensor], size: torch.Size) -> Tensor:
        """MinEnt on the upsampled target logits of the adapted branch (ADVENT's ``train_minent``)."""
        aux, main = logits
        loss = self.settings.lambda_ent_main * entropy_loss(upsample(main, size))
        if aux is not None:
            loss = loss + self.settings.lambda_ent_aux * entropy_loss(upsample(aux, size))
        return loss

    def _adversarial(self, out: dict[str, Any]) -> dict[str, Tensor]:
        """Fool the frozen discriminators on the target (label "source"); train them on detached maps."""
        s = self.settings
        weights = {"main": s.lambda_adv_main, "aux": s.lambda_adv_aux}
        adversarial = sum(weights[k] * bce_with_constant(v, SOURCE_LABEL) for k, v in out["adversarial"].items())
        disc = sum(
            0.5 * bce_with_constant(out["d_source"][k], SOURCE_LABEL)
            + 0.5 * bce_with_constant(out["d_target"][k], TARGET_LABEL)
            for k in out["d_source"]
        )
        return {"adv": adversarial, "disc": disc}  # type: ignore[dict-item]

    def _distillation(self, out: dict[str, Any], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """L_pod and L_kd on the source (teacher -> agnostic), L_kt on the target (specialist -> agnostic)."""
        s, terms = self.settings, {}
        assert self.teacher is not None
        self.teacher.to(batch["source"].device)
        with torch.no_grad():
            teacher = self.teacher.forward_all(batch["source"])
        student_aux, student_main = out["source"]["logits"][AGNOSTIC]
        teacher_aux, teacher_main = teacher.logits[AGNOSTIC]
        if s.lambda_pod:
            terms["pod"] = s.lambda_pod * pod_loss(teacher.features, out["source"]["features"], s.pod_scales)
        if s.lambda_kd:
            kd = kl_distillation(teacher_main, student_main, s.kl_reduction)  # type: ignore[arg-type]
            if student_aux is not None and teacher_aux is not None:
                aux_weight = s.lambda_seg_aux / s.lambda_seg_main
                kd = kd + aux_weight * kl_distillation(teacher_aux, student_aux, s.kl_reduction)  # type: ignore[arg-type]
            terms["kd"] = s.lambda_kd * kd
        if s.specialist and s.lambda_kt:
            terms["kt"] = s.lambda_kt * self._transfer(out, batch["target"].shape[-2:])
        return terms

    def _transfer(self, out: dict[str, Any], size: torch.Size) -> Tensor:
        s = self.settings
        divergence: Callable[[Tensor, Tensor], Tensor] = (
            (lambda t, x: kl_distillation(t, x, s.kl_reduction)) if s.teacher_loss == "kl" else mse_distillation  # type: ignore[arg-type]
        )
        (spec_aux, spec_main), (agn_aux, agn_main) = (
            out["target"]["logits"][SPECIALIST],
            out["target"]["logits"][AGNOSTIC],
        )
        loss = divergence(upsample(spec_main, size).detach(), upsample(agn_main, size))
        if spec_aux is not None and agn_aux is not None:
            loss = loss + s.lambda_seg_aux * divergence(upsample(spec_aux, size).detach(), upsample(agn_aux, size))
        return loss

    # -------------------------------------------------------------------------------------------- selection

    def on_evaluate(self, model: nn.Module, step: int, metrics: dict[str, dict[str, float]]) -> None:
        """Keep the snapshot with the best validation mIoU (the official "best" mode, reported separately)."""
        if "select" in metrics and metrics["select"]["miou"] > self.best["miou"]:
            state = model.segmenter.state_dict()  # type: ignore[union-attr]
            self.best = {
                "miou": metrics["select"]["miou"],
                "step": step,
                "state": {k: v.detach().cpu().clone() for k, v in state.items()},
            }

    def state_dict(self) -> dict[str, Any]:
        """The best snapshot so far (exact resume)."""
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the best snapshot."""
        self.best = state.get("best", self.best)


def segmentation_metrics(confusion: Tensor) -> dict[str, float]:
    """``{"miou", "iou_<class>"...}`` from a ``(C, C)`` confusion matrix (NaN for a class never seen)."""
    result = miou_from_confusion(confusion)
    names = SUPER_CLASSES if confusion.shape[0] == len(SUPER_CLASSES) else [str(i) for i in range(len(confusion))]
    return {"miou": float(result["miou"]), **{f"iou_{n}": float(v) for n, v in zip(names, result["per_class"])}}
