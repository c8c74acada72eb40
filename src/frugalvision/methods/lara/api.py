"""LaRa on your own cameras: pack images and calibration into a batch, predict the BEV vehicle map.

Every model of this method (:func:`~frugalvision.methods.lara.model.build_model`: LaRa, the geometric lift, the dense
attention) reads the same batch dict; :func:`camera_batch` builds it from images, intrinsics and camera-to-ego
transforms, and :func:`predict_bev` turns a model's logits into per-cell probabilities.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["camera_batch", "predict_bev"]


def _batched(tensor: torch.Tensor, tail: int, batch: int, name: str) -> torch.Tensor:
    """Add (or broadcast to) the batch axis of a per-camera tensor with ``tail`` trailing axes after the camera."""
    if tensor.dim() == tail + 1:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != tail + 2:
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}; pass (N, ...) or (B, N, ...) per camera")
    return tensor.expand(batch, *tensor.shape[1:]) if tensor.shape[0] == 1 else tensor


def camera_batch(images: torch.Tensor, intrinsics: torch.Tensor, cam_to_ego: torch.Tensor) -> dict[str, torch.Tensor]:
    """The batch dict a BEV model reads, from N cameras' images and calibration.

    Frames: ego x forward, y left, z up; camera x right, y down, z forward (OpenCV). The calibration may be given
    once for the whole batch ((N, ...) shapes) or per sample ((B, N, ...)).

    Args:
        images: (N, 3, H, W) or (B, N, 3, H, W) in [0, 1].
        intrinsics: (N, 3, 3) or (B, N, 3, 3) pinhole matrices in pixels of these images.
        cam_to_ego: (N, 4, 4) or (B, N, 4, 4) camera-to-ego transforms, ``p_ego = R p_cam + t`` (invert an
            ego-to-camera extrinsic first).

    Returns:
        ``{"images", "intrinsics", "rotation", "translation"}``, each with a batch axis.

    Raises:
        ValueError: inconsistent shapes.
    """
    images = images.unsqueeze(0) if images.dim() == 4 else images
    if images.dim() != 5 or images.shape[2] != 3:
        raise ValueError(f"images has shape {tuple(images.shape)}; pass (N, 3, H, W) or (B, N, 3, H, W)")
    b, n = images.shape[:2]
    k = _batched(intrinsics, 2, b, "intrinsics")
    pose = _batched(cam_to_ego, 2, b, "cam_to_ego")
    for name, value, tail in (("intrinsics", k, (3, 3)), ("cam_to_ego", pose, (4, 4))):
        if tuple(value.shape) != (b, n, *tail):
            raise ValueError(f"{name} has shape {tuple(value.shape)}; expected {(b, n, *tail)} for these images")
    pose = pose.to(images.dtype)
    return {
        "images": images,
        "intrinsics": k.to(images.dtype),
        "rotation": pose[..., :3, :3],
        "translation": pose[..., :3, 3],
    }


@torch.no_grad()
def predict_bev(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Vehicle probabilities (B, rows, cols) of a BEV model on a :func:`camera_batch` (eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    logits = model({k: v.to(device) for k, v in batch.items()})
    model.train(was_training)
    return logits.float().sigmoid()[:, 0]
