"""Training-time augmentation of the paper column (spec §2.5): RandAugment, Mixup/CutMix and label smoothing.

:func:`mix_batch` is a pure function (images, labels, generator in; mixed images and soft targets out) that follows
timm's ``Mixup`` in its default "batch" mode: one λ per batch, the batch mixed with its reverse, Mixup or CutMix
chosen with probability 1/2 when both are on, CutMix's λ corrected to the pasted box's area, and targets
``λ·smooth(y) + (1 − λ)·smooth(flip(y))``. Its randomness comes from the given generator, so a resumed run draws
the same boxes and λ as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["cutmix_box", "mix_batch", "randaugment_transform", "smooth_one_hot"]


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """One-hot targets with label smoothing: ``1 − s + s/C`` on the label, ``s/C`` elsewhere (timm's convention)."""
    off = smoothing / num_classes
    return F.one_hot(labels.long(), num_classes).float() * (1.0 - smoothing) + off


def cutmix_box(height: int, width: int, lam: float, generator: torch.Generator) -> tuple[int, int, int, int]:
    """A box of area ≈ (1 − λ)·H·W centred uniformly at random and clipped to the image (timm's ``rand_bbox``).

    Returns:
        (top, bottom, left, right), bottom/right exclusive.
    """
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy = int(torch.randint(0, height, (), generator=generator))
    cx = int(torch.randint(0, width, (), generator=generator))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, bottom, left, right


def _beta(alpha: float, generator: torch.Generator) -> float:
    seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mix_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    mixup_alpha: float,
    cutmix_alpha: float,
    smoothing: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or CutMix of a batch with its reverse, and the matching soft targets.

    Args:
        images: (B, C, H, W) float.
        labels: (B,) class indices.
        num_classes: C of the targets.
        mixup_alpha: Beta(α, α) of Mixup (0: off).
        cutmix_alpha: Beta(α, α) of CutMix (0: off).
        smoothing: label smoothing of both targets.
        generator: RNG of the draw (seed it by the step for exact resumption).

    Returns:
        (mixed images, soft targets (B, C)); with both alphas 0, the images and the smoothed one-hot targets.
    """
    targets = smooth_one_hot(labels, num_classes, smoothing)
    use_mixup, use_cutmix = mixup_alpha > 0, cutmix_alpha > 0
    if not (use_mixup or use_cutmix):
        return images, targets
    if use_mixup and use_cutmix:
        use_cutmix = bool(torch.rand((), generator=generator) < 0.5)
    lam = _beta(cutmix_alpha if use_cutmix else mixup_alpha, generator)
    flipped = images.flip(0)
    if use_cutmix:
        height, width = images.shape[-2:]
        top, bottom, left, right = cutmix_box(height, width, lam, generator)
        mixed = images.clone()
        mixed[..., top:bottom, left:right] = flipped[..., top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / float(height * width)
    else:
        mixed = images * lam + flipped * (1.0 - lam)
    return mixed, targets * lam + targets.flip(0) * (1.0 - lam)


def randaugment_transform(num_ops: int = 2, magnitude: int = 9) -> Callable[[torch.Tensor], torch.Tensor]:
    """RandAugment of torchvision (``num_ops`` ops at ``magnitude`` of 31 bins) on a float [0, 1] (C, H, W) image."""
    from torchvision.transforms import RandAugment

    augment = RandAugment(num_ops=num_ops, magnitude=magnitude)

    def apply(image: torch.Tensor) -> torch.Tensor:
        as_bytes = image.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
        return augment(as_bytes).float().div_(255.0)

    return apply
