"""Pure functions of MuHDi and its ADVENT base: losses, the self-information map, POD, continual-learning metrics.

Notation (spec 2.3): ``up`` bilinear upsampling to the image size with ``align_corners=True``; ``p = softmax``;
``C`` classes; ``I(p) = -p log2(p + 1e-30) / log2(C)`` per class and pixel; ``KL_mean(t || s)`` averaged over all
N x H x W x C elements (the official ``size_average`` convention) or over pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "bce_with_constant",
    "entropy_loss",
    "forgetting",
    "kl_distillation",
    "mse_distillation",
    "pod_embedding",
    "pod_loss",
    "segmentation_loss",
    "self_information",
    "upsample",
]

KLReduction = Literal["elementwise_mean", "pixel_mean"]


def upsample(logits: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear upsampling of ``(N, C, h, w)`` logits to ``size = (H, W)`` with ``align_corners=True`` (ADVENT)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=True)


def segmentation_loss(logits: Tensor, labels: Tensor, ignore_index: int = 255) -> Tensor:
    """Cross-entropy of logits upsampled to the label size, averaged over the labelled pixels (0 when none is)."""
    logits = upsample(logits, labels.shape[-2:])
    if not bool((labels != ignore_index).any()):
        return logits.sum() * 0.0  # the official cross_entropy_2d returns 0; keep the graph for DDP
    return F.cross_entropy(logits, labels.long(), ignore_index=ignore_index)


def self_information(prob: Tensor) -> Tensor:
    """ADVENT's weighted self-information map ``-p log2(p + 1e-30) / log2(C)`` (same shape as ``prob``).

    Each entry lies in [0, 1/(e ln 2 log2 C)]; the class sum is the normalised entropy, 1 for a uniform ``p``.
    """
    return -prob * torch.log2(prob + 1e-30) / math.log2(prob.shape[1])


def entropy_loss(logits: Tensor) -> Tensor:
    """MinEnt: the normalised entropy of ``softmax(logits)`` averaged over pixels (ADVENT's ``entropy_loss``)."""
    return self_information(F.softmax(logits, dim=1)).sum(dim=1).mean()


def bce_with_constant(logits: Tensor, label: float) -> Tensor:
    """Binary cross-entropy of discriminator logits against a constant label (0 = source, 1 = target)."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(label)))


def kl_distillation(
    teacher_logits: Tensor, student_logits: Tensor, reduction: KLReduction = "elementwise_mean"
) -> Tensor:
    """``KL(softmax(teacher) || softmax(student))`` over the class dimension (dim 1), no temperature.

    Args:
        teacher_logits: ``(N, C, ...)`` logits of the teacher (detach them: the gradient goes to the student only
            when the caller detaches).
        student_logits: logits of the same shape.
        reduction: ``"elementwise_mean"``: the sum over classes averaged over all N x ... x C elements, i.e. the
            per-pixel KL divided by C (the official ``F.kl_div(size_average=True)`` the MuHDi weights were tuned
            with); ``"pixel_mean"``: the per-pixel KL averaged over pixels.
    """
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"teacher {tuple(teacher_logits.shape)} and student {tuple(student_logits.shape)} differ")
    log_t, log_s = F.log_softmax(teacher_logits, dim=1), F.log_softmax(student_logits, dim=1)
    per_pixel = (log_t.exp() * (log_t - log_s)).sum(dim=1)
    if reduction == "pixel_mean":
        return per_pixel.mean()
    if reduction == "elementwise_mean":
        return per_pixel.mean() / teacher_logits.shape[1]
    raise ValueError(f"reduction={reduction!r} is invalid; use 'elementwise_mean' or 'pixel_mean'")


def mse_distillation(teacher_logits: Tensor, student_logits: Tensor) -> Tensor:
    """Mean squared error between the two softmaxes (the official ``TEACHER_LOSS="MSE"`` variant)."""
    return F.mse_loss(F.softmax(student_logits, dim=1), F.softmax(teacher_logits, dim=1))


def pod_embedding(features: Tensor, scales: Sequence[int] = (1, 2, 4)) -> Tensor:
    """PLOP's local POD embedding of ``(N, C, H, W)`` features: ``(N, D)``.

    For each scale ``k`` the map is cut into k x k regions of ``floor(H / k) x floor(W / k)`` (the remainder rows
    and columns are dropped, as in the official code; a scale whose regions would be empty is skipped); each region
    contributes its width-pooled mean (C x h values) and its height-pooled mean (C x w values).
    """
    n, c, h, w = features.shape
    parts = []
    for k in scales:
        kh, kw = h // k, w // k
        if kh == 0 or kw == 0:
            continue
        regions = features[:, :, : k * kh, : k * kw].reshape(n, c, k, kh, k, kw)
        parts.append(regions.mean(dim=5).permute(0, 2, 4, 1, 3).reshape(n, -1))  # width-pooled: (k, k, C, kh)
        parts.append(regions.mean(dim=3).permute(0, 2, 3, 1, 4).reshape(n, -1))  # height-pooled: (k, k, C, kw)
    return torch.cat(parts, dim=1)


def pod_loss(
    old_features: Sequence[Tensor],
    new_features: Sequence[Tensor],
    scales: Sequence[int] = (1, 2, 4),
    square: bool = True,
) -> Tensor:
    """Multi-scale pooled feature distillation (PLOP "local POD", the official MuHDi settings).

    ``(1/L) sum_l mean_batch || POD(F_l_old^2) - POD(F_l^2) ||_2`` with the square pre-processing, no
    normalisation and the Frobenius (L2) distance per sample.
    """
    if len(old_features) != len(new_features) or not old_features:
        raise ValueError(f"got {len(old_features)} teacher and {len(new_features)} student feature maps")
    total = new_features[0].new_zeros(())
    for old, new in zip(old_features, new_features):
        if old.shape != new.shape:
            raise ValueError(f"teacher features {tuple(old.shape)} and student features {tuple(new.shape)} differ")
        if square:
            old, new = old * old, new * new
        total = total + torch.linalg.vector_norm(pod_embedding(old, scales) - pod_embedding(new, scales), dim=1).mean()
    return total / len(new_features)


def forgetting(matrix: Tensor) -> Tensor:
    """Per-domain forgetting of a continual run: ``F_j = max_{j <= i < last} A[i, j] - A[last, j]``.

    Args:
        matrix: ``A[step, domain]`` (mIoU of the model after each step on each target, target j learned at step j;
            square or with more domain columns than steps).

    Returns:
        ``(steps - 1,)``: the forgetting of every domain learned before the last step (empty with one step).
    """
    steps = matrix.shape[0]
    last = matrix[steps - 1]
    return (
        torch.stack([matrix[j : steps - 1, j].max() - last[j] for j in range(steps - 1)])
        if steps > 1
        else (matrix.new_zeros(0))
    )
