"""MixMo's training loss: ratio-weighted cross-entropy per member, and its L2 penalty over every parameter."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from frugalvision.methods.mimo.mixing import loss_weights

__all__ = ["l2_penalty", "mimo_loss"]


def mimo_loss(logits: Tensor, targets: Tensor, ratios: Tensor, root: float) -> tuple[Tensor, Tensor]:
    """``sum_m mean_n w_nm * CE(logits_nm, y_nm)`` with MixMo's weights ``w = M lambda^(1/r) / sum lambda^(1/r)``.

    MixMo multiplies each member's one-hot target by ``w_nm`` and sums the members' soft cross-entropies, which is
    this expression; with M = 1 and ``ratios = 1`` it is the plain cross-entropy.

    Args:
        logits: ``[N, M, K]`` member logits.
        targets: ``[N, M]`` member labels.
        ratios: ``[N, M]`` mixing ratios (mask areas).
        root: weight root r (3 for Linear/Cut-MixMo, 1 for MIMO).

    Returns:
        ``(loss, [M] per-member weighted cross-entropies)``.
    """
    count, members, classes = logits.shape
    ce = F.cross_entropy(logits.reshape(-1, classes), targets.reshape(-1), reduction="none").view(count, members)
    per_member = (loss_weights(ratios, root) * ce).mean(0)
    return per_member.sum(), per_member.detach()


def l2_penalty(model: nn.Module) -> Tensor:
    """``sum_w ||w||^2`` over every parameter, BN scales and biases included (MixMo's ``l2_reg``, no 1/2)."""
    return torch.stack([p.pow(2).sum() for p in model.parameters() if p.requires_grad]).sum()
