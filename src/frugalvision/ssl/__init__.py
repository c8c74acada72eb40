"""Semi-supervised frameworks shared by the methods: Mean Teacher, FixMatch, and their reusable pieces.

Each framework (and the few-label supervised baseline) takes a mixing plug-in: none, MixUp, CutMix, or semantic
(in-class) mixing.

Public API:

- frameworks: :class:`FixMatch`, :class:`MeanTeacher`, :class:`Supervised` (``loss(model, labeled, unlabeled, step,
  plugin)``, ``after_step``), and :class:`SemiSupervisedTask` to train them on any model and data with the engine;
- plug-ins: :class:`MixUp`, :class:`CutMix`, :class:`SemanticMix` (e.g. a SciMix generator), :func:`composite_mix`;
- pieces: :class:`EmaTeacher` / :func:`ema_update_` / :func:`mean_teacher_decay`, :func:`weak_augment`,
  :func:`strong_augment` (RandAugment + Cutout), :func:`softmax_mse`, :func:`fixmatch_unlabeled_loss`,
  :func:`sigmoid_rampup`, :func:`labeled_split` (seeded N-labels-per-class splits), :func:`fixmatch_wrn` (FixMatch's
  WRN-28-2).

``SemiSupervisedTask`` is imported on first use (it brings in the engine).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from frugalvision.ssl.augment import RANDAUGMENT_OPS, cutout, rand_augment, strong_augment, weak_augment
from frugalvision.ssl.data import TensorDictDataset
from frugalvision.ssl.ema import EmaTeacher, ema_update_, mean_teacher_decay
from frugalvision.ssl.frameworks import FixMatch, Framework, MeanTeacher, Supervised, take
from frugalvision.ssl.losses import (
    PseudoLabels,
    fixmatch_unlabeled_loss,
    kernel_decay_groups,
    kernel_l2,
    mean_teacher_class_loss,
    pseudo_labels,
    soft_cross_entropy,
    softmax_mse,
    symmetric_mse,
)
from frugalvision.ssl.mixing import (
    CutMix,
    MixUp,
    SemanticMix,
    composite_mix,
    cutmix,
    mix_plugin,
    mixup,
    rand_box,
    sample_lambda,
)
from frugalvision.ssl.ramps import cosine_rampdown, fixmatch_lr_factor, linear_rampup, sigmoid_rampup
from frugalvision.ssl.splits import LabeledSplit, labeled_split, read_labeled_json, split_name, write_labeled_json
from frugalvision.ssl.wrn import FixMatchWideResNet, fixmatch_wrn

__all__ = [
    "RANDAUGMENT_OPS",
    "CutMix",
    "EmaTeacher",
    "FixMatch",
    "FixMatchWideResNet",
    "Framework",
    "LabeledSplit",
    "MeanTeacher",
    "MixUp",
    "PseudoLabels",
    "SemanticMix",
    "SemiSupervisedTask",
    "Supervised",
    "TensorDictDataset",
    "as_batch",
    "composite_mix",
    "cosine_rampdown",
    "cutmix",
    "cutout",
    "ema_update_",
    "fixmatch_lr_factor",
    "fixmatch_unlabeled_loss",
    "fixmatch_wrn",
    "kernel_decay_groups",
    "kernel_l2",
    "labeled_split",
    "linear_rampup",
    "mean_teacher_class_loss",
    "mean_teacher_decay",
    "mix_plugin",
    "mixup",
    "pseudo_labels",
    "rand_augment",
    "rand_box",
    "read_labeled_json",
    "sample_lambda",
    "sigmoid_rampup",
    "soft_cross_entropy",
    "softmax_mse",
    "split_name",
    "strong_augment",
    "symmetric_mse",
    "take",
    "weak_augment",
    "write_labeled_json",
]

_LAZY = {"SemiSupervisedTask": "task", "as_batch": "task"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'frugalvision.ssl' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"frugalvision.ssl.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from frugalvision.ssl.task import SemiSupervisedTask, as_batch
