"""LaRa's loss and evaluation protocol as pure functions.

* Loss: ``L = −(1/N) Σ [w₊ · y log σ(z) + (1 − y) log(1 − σ(z))]`` with ``w₊ = 2.13`` (LSS's pos_weight).
* Metric: IoU at 0.5 on σ(z), TP/FP/FN accumulated over the whole evaluation set (:class:`BevIoU`). Two protocols:
  "all" (no filter) and "vis ≥ 2" (cells of vehicles with visibility token 1, i.e. 0–40 % visible, are ignored in both
  prediction and label). Optional radial bins restrict the cells by their distance to the ego origin.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from frugalvision.methods.lara.geometry import BevGrid
from frugalvision.methods.lara.world import VISIBILITY_IGNORE
from frugalvision.metrics import BinaryIoUMeter

PAPER_POS_WEIGHT = 2.13


def bev_bce(logits: torch.Tensor, target: torch.Tensor, pos_weight: float = PAPER_POS_WEIGHT) -> torch.Tensor:
    """Positive-weighted binary cross-entropy averaged over every cell (LaRa / LSS loss).

    Args:
        logits: (B, 1, H, W) BEV logits.
        target: (B, 1, H, W) binary vehicle map.
        pos_weight: weight ``w₊`` of the positive term.

    Returns:
        Scalar loss.
    """
    weight = torch.tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), pos_weight=weight)


def positive_weight(bev: torch.Tensor) -> float:
    """``pos_weight`` from the class ratio of a set of BEV maps: negatives / positives (spec section 6)."""
    positives = float(bev.float().sum())
    if positives <= 0:
        raise ValueError("the training maps hold no positive cell; pos_weight cannot come from the class ratio")
    return (bev.numel() - positives) / positives


def ranking_metrics(scores: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Threshold-free quality of per-cell scores over a whole set: average precision and the best IoU.

    AP = Σ_i (R_i − R_{i−1})·P_i over the distinct score thresholds (scikit-learn's definition); the best IoU is
    ``max_t TP_t / (TP_t + FP_t + FN_t)`` over every threshold t (cells with score ≥ t are positive), reported with
    that threshold as a probability when the scores are probabilities.

    Args:
        scores: per-cell scores (any shape), larger = more likely positive.
        target: 0/1 labels of the same shape.

    Returns:
        ``{"ap", "iou_best", "iou_best_threshold"}`` (NaN without positives).
    """
    s, y = scores.flatten().double(), target.flatten().double()
    positives = float(y.sum())
    if positives == 0:
        return {"ap": float("nan"), "iou_best": float("nan"), "iou_best_threshold": float("nan")}
    s, order = torch.sort(s, descending=True, stable=True)
    y = y[order]
    tp, fp = torch.cumsum(y, 0), torch.cumsum(1 - y, 0)
    last = torch.ones_like(s, dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]  # the last cell of each group of tied scores closes a threshold
    tp, fp, thresholds = tp[last], fp[last], s[last]
    precision, recall = tp / (tp + fp), tp / positives
    ap = float((torch.diff(recall, prepend=torch.zeros(1, dtype=recall.dtype)) * precision).sum())
    iou = tp / (positives + fp)
    best = int(torch.argmax(iou))
    return {"ap": ap, "iou_best": float(iou[best]), "iou_best_threshold": float(thresholds[best])}


def visibility_valid_mask(visibility: torch.Tensor, min_visibility: int) -> torch.Tensor:
    """Cells that count under a visibility filter: background (255) or a vehicle with token ≥ ``min_visibility``.

    ``min_visibility = 1`` keeps every cell ("all"); ``2`` drops the cells of vehicles less than 40 % visible.
    """
    return (visibility == VISIBILITY_IGNORE) | (visibility >= min_visibility)


def radial_mask(grid: BevGrid, r_min: float, r_max: float) -> torch.Tensor:
    """(rows, cols) cells whose centre lies at distance ``[r_min, r_max)`` from the ego origin."""
    dist = grid.centers().norm(dim=-1)
    return (dist >= r_min) & (dist < r_max)


class BevIoU:
    """Dataset-level BEV IoU under several protocols at once.

    Args:
        grid: BEV grid (for the radial bins).
        radial_bins: ((r_min, r_max), ...) metres; each adds ``iou_r{min}-{max}`` (visibility filter "all").
        threshold: probability threshold.
    """

    def __init__(self, grid: BevGrid, radial_bins: tuple[tuple[float, float], ...] = (), threshold: float = 0.5):
        self.grid = grid
        self.meters = {"iou_all": BinaryIoUMeter(threshold), "iou_vis2": BinaryIoUMeter(threshold)}
        self.radial = {}
        for lo, hi in radial_bins:
            name = f"iou_r{lo:g}-{hi:g}"
            self.meters[name] = BinaryIoUMeter(threshold)
            self.radial[name] = radial_mask(grid, lo, hi)

    def update(self, logits: torch.Tensor, target: torch.Tensor, visibility: torch.Tensor) -> None:
        """Accumulate a batch: logits and target (B, 1, H, W) or (B, H, W), visibility (B, H, W)."""
        logits = logits.reshape(visibility.shape).float()
        target = target.reshape(visibility.shape)
        self.meters["iou_all"].update(logits, target)
        self.meters["iou_vis2"].update(logits, target, visibility_valid_mask(visibility, 2))
        for name, mask in self.radial.items():
            self.meters[name].update(logits, target, mask.to(logits.device).expand_as(target))

    def compute(self) -> dict[str, float]:
        """IoU per protocol (NaN when a protocol's union is empty)."""
        return {name: float(meter.compute()) for name, meter in self.meters.items()}
