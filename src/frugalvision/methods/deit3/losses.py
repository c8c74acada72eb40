"""Mixup/CutMix with the flipped-batch pairing, target binarisation, and the two losses of the recipe.

Pre-training (DeiT III, Sec. 2.2 of our spec): ``L = mean_{i,c} BCE(z_ic, 1[y_ic > 0])`` on the mixed targets
``y_i = lam * e_{c_i} + (1 - lam) * e_{c_{B-1-i}}``. Fine-tuning and the DeiT baseline: soft-target cross-entropy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class MixedBatch:
    """A mixed batch.

    Attributes:
        inputs: mixed images ``[B, C, H, W]``.
        targets: soft targets ``[B, num_classes]`` (rows sum to 1).
        lam: weight of each image's own label (after the CutMix area correction).
        cutmix: True when CutMix was used, False for Mixup (or no mixing).
        box: CutMix box ``(y0, y1, x0, x1)`` (half-open), None for Mixup.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    lam: float
    cutmix: bool
    box: tuple[int, int, int, int] | None = None


def one_hot_smooth(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """One-hot targets with label smoothing as timm: off = s / C, on = 1 - s + off."""
    off = smoothing / num_classes
    out = torch.full((labels.shape[0], num_classes), off, device=labels.device, dtype=torch.float32)
    return out.scatter_(1, labels.long().view(-1, 1), 1.0 - smoothing + off)


def mix_targets(labels: torch.Tensor, num_classes: int, lam: float, smoothing: float = 0.0) -> torch.Tensor:
    """Soft targets of a flipped-batch mix: ``lam * onehot(y) + (1 - lam) * onehot(flip(y))``."""
    y1 = one_hot_smooth(labels, num_classes, smoothing)
    y2 = one_hot_smooth(labels.flip(0), num_classes, smoothing)
    return y1 * lam + y2 * (1.0 - lam)


def cutmix_box(height: int, width: int, lam: float, generator: torch.Generator | None = None) -> tuple[int, ...]:
    """Sample a CutMix box of area about ``(1 - lam) * H * W`` with a uniform centre, clipped to the image.

    Returns:
        ``(y0, y1, x0, x1)``, half-open.
    """
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy = int(torch.randint(0, height, (1,), generator=generator))
    cx = int(torch.randint(0, width, (1,), generator=generator))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return y0, y1, x0, x1


def apply_mix(
    images: torch.Tensor, lam: float, box: tuple[int, int, int, int] | None = None
) -> tuple[torch.Tensor, float]:
    """Mix image ``i`` with image ``B-1-i``: blend with weight ``lam`` (box None) or paste the box (CutMix).

    Returns:
        ``(mixed images, lam)`` where for CutMix ``lam = 1 - box area / image area`` (after clipping).
    """
    flipped = images.flip(0)
    if box is None:
        return images * lam + flipped * (1.0 - lam), lam
    y0, y1, x0, x1 = box
    out = images.clone()
    out[:, :, y0:y1, x0:x1] = flipped[:, :, y0:y1, x0:x1]
    area = (y1 - y0) * (x1 - x0)
    return out, 1.0 - area / float(images.shape[-2] * images.shape[-1])


def mix_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    mixup_alpha: float = 0.8,
    cutmix_alpha: float = 1.0,
    switch_prob: float = 0.5,
    prob: float = 1.0,
    smoothing: float = 0.0,
    generator: torch.Generator | None = None,
) -> MixedBatch:
    """Mixup/CutMix, one lambda per batch (timm mode "batch"), pairing sample ``i`` with ``B-1-i``.

    Args:
        images: ``[B, C, H, W]``.
        labels: ``[B]`` class indices.
        num_classes: number of classes.
        mixup_alpha: Beta parameter of Mixup (0 disables Mixup).
        cutmix_alpha: Beta parameter of CutMix (0 disables CutMix).
        switch_prob: probability of CutMix when both are on.
        prob: probability of mixing this batch at all.
        smoothing: label smoothing of the targets.
        generator: random source (default: torch's global one).

    Returns:
        The mixed batch with soft targets.
    """
    rand = torch.rand(2, generator=generator).tolist()
    use_mix = (mixup_alpha > 0 or cutmix_alpha > 0) and rand[0] < prob
    if not use_mix:
        return MixedBatch(images, one_hot_smooth(labels, num_classes, smoothing), 1.0, False)
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rand[1] < switch_prob)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    g1, g2 = _gamma(alpha, generator), _gamma(alpha, generator)
    lam = float(g1 / (g1 + g2))
    box = cutmix_box(images.shape[-2], images.shape[-1], lam, generator) if use_cutmix else None
    mixed, lam = apply_mix(images, lam, box)
    return MixedBatch(mixed, mix_targets(labels.to(images.device), num_classes, lam, smoothing), lam, use_cutmix, box)


def _gamma(alpha: float, generator: torch.Generator | None) -> torch.Tensor:
    """Gamma(alpha, 1) sample from ``generator`` or the global RNG (Marsaglia-Tsang, with the alpha < 1 boost)."""
    boost = alpha < 1.0
    a = alpha + 1.0 if boost else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        x = float(torch.randn(1, generator=generator))
        v = (1.0 + c * x) ** 3
        u = float(torch.rand(1, generator=generator))
        if v > 0 and math.log(u) < 0.5 * x * x + d - d * v + d * math.log(v):
            sample = d * v
            break
    if boost:
        sample *= float(torch.rand(1, generator=generator)) ** (1.0 / alpha)
    return torch.tensor([sample])


def binarize_targets(targets: torch.Tensor) -> torch.Tensor:
    """DeiT III target binarisation: every class present in the mix gets target 1 (``1[y > 0]``)."""
    return (targets > 0).to(targets.dtype)


def mixed_bce_loss(logits: torch.Tensor, targets: torch.Tensor, binarize: bool = True) -> torch.Tensor:
    """Binary cross-entropy with logits, mean over batch and classes, on (binarised) mixed targets."""
    target = binarize_targets(targets) if binarize else targets
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with soft targets, mean over the batch: ``mean_i sum_c -y_ic log softmax(z_i)_c``."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
