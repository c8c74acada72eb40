"""LaRa (Latents and Rays, arXiv:2206.13294): multi-camera images + calibration -> BEV vehicle map via latents.

Central functions, for your own cameras and data:

* :func:`build_model` ``(arm, ModelConfig(...), BevGrid(...))``: LaRa (``"lara"``) or a baseline view transform
  (``"lift"``, ``"dense"``, ``"lara-camidx"``, ``"lara-noplucker"``), a plain ``nn.Module``;
* :func:`camera_batch` ``(images, intrinsics, cam_to_ego)``: the batch dict every model reads;
* :func:`predict_bev` ``(model, batch)``: per-cell vehicle probabilities;
* :func:`bev_bce` (the paper's weighted BCE) and :class:`BevIoU` (dataset-level IoU) to train and score it.

The names are imported on first use, so ``import frugalvision.methods.lara`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from frugalvision.methods.lara.api import camera_batch, predict_bev
    from frugalvision.methods.lara.functional import BevIoU, bev_bce
    from frugalvision.methods.lara.geometry import BevGrid, camera_rotation, pinhole_intrinsics
    from frugalvision.methods.lara.model import LaRa, ModelConfig, build_model, paper_model_config
    from frugalvision.methods.lara.task import BevSegmentation

_EXPORTS = {
    "camera_batch": "api",
    "predict_bev": "api",
    "BevIoU": "functional",
    "bev_bce": "functional",
    "BevGrid": "geometry",
    "camera_rotation": "geometry",
    "pinhole_intrinsics": "geometry",
    "LaRa": "model",
    "ModelConfig": "model",
    "build_model": "model",
    "paper_model_config": "model",
    "BevSegmentation": "task",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
