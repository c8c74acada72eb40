"""MuHDi (arXiv:2204.11667): multi-head distillation for continual unsupervised domain adaptation in segmentation.

Central function, for your own segmenter and data:

* :func:`adapt_to_next_domain` ``(previous, source, target, method="muhdi")``: one continual-UDA step from the
  previous step's DeepLab-V2 with the labelled source and the new target's *unlabelled* images (no earlier target);
  returns :class:`Adapted`, whose ``inference_model()`` is the test model (agnostic main head only).
* :func:`deeplab_v2` builds the segmenter (torchvision ResNet-101/50 or a tiny CPU ResNet, ASPP heads on stages 3
  and 4); :func:`evaluate_domains` and :func:`accuracy_summary` give mIoU per domain, the accuracy matrix's mean
  mIoU and forgetting.
* The loss terms as pure functions: :func:`pod_loss`, :func:`kl_distillation`, :func:`self_information`,
  :func:`entropy_loss`; the 7-class label maps: :func:`label_table`, :func:`mapillary_table`; real-format loaders:
  :func:`load_benchmark`.

The names are imported on first use, so ``import frugalvision.methods.muhdi`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from frugalvision.methods.muhdi.api import (
        Adapted,
        accuracy_summary,
        adapt_to_next_domain,
        evaluate_domains,
        step_loop,
    )
    from frugalvision.methods.muhdi.datasets import load_benchmark
    from frugalvision.methods.muhdi.functional import (
        entropy_loss,
        forgetting,
        kl_distillation,
        pod_loss,
        self_information,
    )
    from frugalvision.methods.muhdi.labels import label_table, mapillary_table
    from frugalvision.methods.muhdi.model import export_agnostic
    from frugalvision.methods.muhdi.task import StepSettings, UdaStep
    from frugalvision.nn.deeplab import deeplab_v2

_EXPORTS = {
    "Adapted": "api",
    "accuracy_summary": "api",
    "adapt_to_next_domain": "api",
    "evaluate_domains": "api",
    "step_loop": "api",
    "load_benchmark": "datasets",
    "entropy_loss": "functional",
    "forgetting": "functional",
    "kl_distillation": "functional",
    "pod_loss": "functional",
    "self_information": "functional",
    "label_table": "labels",
    "mapillary_table": "labels",
    "export_agnostic": "model",
    "StepSettings": "task",
    "UdaStep": "task",
}

__all__ = sorted([*_EXPORTS, "deeplab_v2"])


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    if name == "deeplab_v2":
        from frugalvision.nn.deeplab import deeplab_v2

        return deeplab_v2
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
