"""MIMO with unmixing (arXiv 2205.10139): M subnetworks in one network, mixed inputs, and an unmixing step (ours).

Central functions, for your own backbone and data:

* :func:`wrap_backbone` ``(backbone, num_members=2, unmix="none")``: any CIFAR/Pre-activation/Wide ResNet of
  ``frugalvision.nn`` or torchvision/timm ResNet as a MIMO network (:class:`MimoNetwork`): M input encoders, the
  mixing block, the shared core, an optional unmixing step and M heads;
* :class:`MixMo` ``(mixing="cut", batch_repetition=2)``: the mixing plug-in; ``mixer.training_loss(model, images,
  labels, progress)`` is one step of MIMO / Linear-MixMo / Cut-MixMo training (batch repetition, masks, weighted loss);
* :func:`evaluate_mimo` ``(model, images, labels, calibration=(val_images, val_labels))``: ensemble top-1, NLL, ECE,
  Brier, member accuracy, disagreement and temperature-scaled metrics (the temperature fitted on validation);
* :func:`feature_sharing` ``(model, images, labels)``: encoder/head overlap, active filters, channel ablation, CKA.

Pure functions: :func:`draw_plan`, :func:`mix_features`, :func:`loss_weights`, :func:`cut_probability`,
:func:`member_batch`. The names are imported on first use, so ``import frugalvision.methods.mimo`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from frugalvision.methods.mimo.api import evaluate_mimo, feature_sharing
    from frugalvision.methods.mimo.batching import member_batch
    from frugalvision.methods.mimo.config import MimoRunConfig
    from frugalvision.methods.mimo.mixing import MixingPlan, cut_probability, draw_plan, loss_weights, mix_features
    from frugalvision.methods.mimo.model import MimoNetwork, split_backbone, wrap_backbone
    from frugalvision.methods.mimo.plugin import MixMo
    from frugalvision.methods.mimo.task import MimoTask

_EXPORTS = {
    "evaluate_mimo": "api",
    "feature_sharing": "api",
    "member_batch": "batching",
    "MimoRunConfig": "config",
    "MixingPlan": "mixing",
    "cut_probability": "mixing",
    "draw_plan": "mixing",
    "loss_weights": "mixing",
    "mix_features": "mixing",
    "MimoNetwork": "model",
    "split_backbone": "model",
    "wrap_backbone": "model",
    "MixMo": "plugin",
    "MimoTask": "task",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
