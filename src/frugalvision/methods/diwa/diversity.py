"""Prediction diversity between members (the paper's ratio-error) and prediction disagreement."""

from __future__ import annotations

import math

import torch

from frugalvision.errors import ConfigError

__all__ = ["disagreement", "ratio_error"]


def _check(pred_a: torch.Tensor, pred_b: torch.Tensor) -> None:
    if pred_a.shape != pred_b.shape or pred_a.ndim != 1:
        raise ConfigError(
            f"predictions must be 1-D and of equal shape, got {tuple(pred_a.shape)} and {tuple(pred_b.shape)}"
        )


def ratio_error(pred_a: torch.Tensor, pred_b: torch.Tensor, targets: torch.Tensor) -> float:
    """Ratio-error diversity: #(exactly one member errs) / #(both members err) (Aksela 2003, used by DiWA).

    Returns ``inf`` when the members never err together but one of them errs, and ``nan`` when neither ever errs.
    """
    _check(pred_a, pred_b)
    wrong_a, wrong_b = pred_a != targets, pred_b != targets
    single = int((wrong_a ^ wrong_b).sum())
    both = int((wrong_a & wrong_b).sum())
    if both == 0:
        return math.inf if single > 0 else math.nan
    return single / both


def disagreement(pred_a: torch.Tensor, pred_b: torch.Tensor) -> float:
    """Fraction of examples on which two members predict different classes."""
    _check(pred_a, pred_b)
    if pred_a.numel() == 0:
        return math.nan
    return float((pred_a != pred_b).float().mean())
