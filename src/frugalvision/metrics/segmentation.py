"""Segmentation metrics: confusion matrix, mean IoU, and binary (BEV) IoU with a validity mask.

* :func:`miou` follows the usual semantic-segmentation protocol: per-class ``IoU_c = TP / (TP + FP + FN)`` from the
  confusion matrix over all pixels of the evaluated set, pixels labelled ``ignore_index`` in the target dropped. A
  class that appears in neither prediction nor target has an undefined IoU: it is reported as NaN and left out of the
  mean (``nanmean``).
* :func:`binary_iou` / :class:`BinaryIoUMeter` follow the visibility-filtered BEV protocol: cells where
  ``valid_mask`` is false are ignored entirely (neither intersection nor union). The meter returns the
  *dataset-level* IoU ``sum(intersection) / sum(union)`` over all batches, not the mean of per-sample IoUs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric

from frugalvision.errors import ConfigError, DataError
from frugalvision.metrics._checks import as_tensor, bincount, check_positive_int

__all__ = [
    "BinaryIoUMeter",
    "SegmentationMeter",
    "binary_iou",
    "confusion_matrix",
    "miou",
    "miou_from_confusion",
]


def _check_ignore_index(ignore_index: int | None, num_classes: int) -> None:
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
        raise ConfigError(f"ignore_index must be an int or None (got {ignore_index!r})")
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        raise ConfigError(
            f"ignore_index={ignore_index} is a valid class id for num_classes={num_classes}; use 255 or -1"
        )


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = 255) -> Tensor:
    """Pixel confusion matrix ``cm[t, p]`` = number of pixels with target class ``t`` predicted as ``p``.

    Args:
        pred: Integer class map with the same shape as ``target``, or scores ``[N, C, ...]`` (arg-max over dim 1).
        target: Integer class map, e.g. ``[N, H, W]``.
        num_classes: Number of classes ``C``.
        ignore_index: Target value whose pixels are dropped (``None`` keeps all pixels).

    Returns:
        Long tensor ``[C, C]`` (rows: target, columns: prediction), on the device of ``target``.

    """
    check_positive_int(num_classes, "num_classes")
    _check_ignore_index(ignore_index, num_classes)
    pred_t = as_tensor(pred, "pred")
    target_t = as_tensor(target, "target")
    if target_t.is_floating_point() or target_t.dtype == torch.bool:
        raise DataError(f"target must be an integer class map (got dtype {target_t.dtype}); pass class indices")
    if pred_t.ndim == target_t.ndim + 1 and pred_t.shape[1] == num_classes:
        pred_t = pred_t.argmax(dim=1)
    elif pred_t.is_floating_point() or pred_t.dtype == torch.bool:
        raise DataError(
            f"pred must be an integer class map or [N, C={num_classes}, ...] scores (got dtype {pred_t.dtype},"
            f" shape {tuple(pred_t.shape)})"
        )
    if pred_t.shape != target_t.shape:
        raise DataError(
            f"pred shape {tuple(pred_t.shape)} does not match target shape {tuple(target_t.shape)}; pass one label"
            " per pixel"
        )
    pred_t = pred_t.reshape(-1).to(target_t.device).long()
    target_t = target_t.reshape(-1).long()
    if ignore_index is not None:
        keep = target_t != ignore_index
        pred_t, target_t = pred_t[keep], target_t[keep]
    if target_t.numel():
        for name, values in (("target", target_t), ("pred", pred_t)):
            lo, hi = int(values.min()), int(values.max())
            if lo < 0 or hi >= num_classes:
                raise DataError(
                    f"{name} has class ids in [{lo}, {hi}] outside [0, {num_classes - 1}]; check num_classes and"
                    f" ignore_index={ignore_index}"
                )
    counts = bincount(target_t * num_classes + pred_t, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def miou_from_confusion(confmat: Tensor) -> dict[str, float | list[float]]:
    """Mean IoU from a ``[C, C]`` confusion matrix (rows: target, columns: prediction).

    Args:
        confmat: Confusion matrix as returned by :func:`confusion_matrix`.

    Returns:
        ``{"miou": float, "per_class": [IoU_0, ..., IoU_{C-1}]}``; a class absent from both prediction and target
        has IoU NaN and is excluded from the mean; ``miou`` is NaN when every class is absent.

    """
    cm = as_tensor(confmat, "confmat")
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise DataError(f"confmat must be a square [C, C] matrix (got shape {tuple(cm.shape)})")
    cm = cm.double()
    tp = cm.diagonal()
    union = cm.sum(dim=0) + cm.sum(dim=1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    per_class = [float(v) for v in iou.cpu()]
    present = [v for v in per_class if not math.isnan(v)]
    return {"miou": sum(present) / len(present) if present else float("nan"), "per_class": per_class}


def miou(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = 255) -> dict:
    """Mean intersection over union over the classes present in prediction or target.

    Args:
        pred: Integer class map with the same shape as ``target``, or scores ``[N, C, ...]``.
        target: Integer class map.
        num_classes: Number of classes ``C``.
        ignore_index: Target value whose pixels are dropped (``None`` keeps all pixels).

    Returns:
        ``{"miou": float, "per_class": list[float]}``; absent classes are NaN in ``per_class`` and excluded from
        ``miou`` (nanmean).

    """
    return miou_from_confusion(confusion_matrix(pred, target, num_classes, ignore_index))


class SegmentationMeter(Metric):
    """Streaming mIoU: accumulates the confusion matrix over batches (summed across DDP ranks on ``compute()``).

    Example:
        >>> meter = SegmentationMeter(num_classes=3)
        >>> meter.update(torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, 1]]))
        >>> meter.compute()["per_class"]
        [1.0, 0.5, 0.0]

    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    confmat: Tensor

    def __init__(self, num_classes: int, ignore_index: int | None = 255, **kwargs: object) -> None:
        """Create the meter.

        Args:
            num_classes: Number of classes ``C``.
            ignore_index: Target value whose pixels are dropped (``None`` keeps all pixels).
            **kwargs: Forwarded to ``torchmetrics.Metric``.

        """
        super().__init__(**kwargs)
        self.num_classes = check_positive_int(num_classes, "num_classes")
        _check_ignore_index(ignore_index, num_classes)
        self.ignore_index = ignore_index
        self.add_state("confmat", default=torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:  # type: ignore[override]
        """Accumulate one batch (same arguments as :func:`confusion_matrix`)."""
        cm = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        self.confmat += cm.to(self.confmat.device)

    def compute(self) -> dict:  # type: ignore[override]
        """Return ``{"miou", "per_class"}`` over everything seen so far."""
        return miou_from_confusion(self.confmat)


def _binary_counts(
    pred: Tensor, target: Tensor, threshold: float, valid_mask: Tensor | None, from_logits: bool
) -> tuple[Tensor, Tensor]:
    """Return (intersection, union) counts as long scalars on the device of ``target``."""
    pred_t = as_tensor(pred, "pred")
    target_t = as_tensor(target, "target")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ConfigError(f"threshold={threshold} is a probability and must lie in [0, 1]")
    if pred_t.shape != target_t.shape:
        raise DataError(
            f"pred shape {tuple(pred_t.shape)} does not match target shape {tuple(target_t.shape)}; squeeze or"
            " unsqueeze the channel dimension so they agree"
        )
    if pred_t.dtype == torch.bool:
        pred_b = pred_t
    elif pred_t.is_floating_point():
        if not torch.isfinite(pred_t).all():
            raise DataError("pred contains NaN or inf; check the model output")
        prob = pred_t.float().sigmoid() if from_logits else pred_t.float()
        pred_b = prob > threshold
    else:
        pred_b = pred_t != 0
    if target_t.dtype == torch.bool:
        target_b = target_t
    else:
        if not ((target_t == 0) | (target_t == 1)).all():
            raise DataError("target must be binary (bool or values in {0, 1}); threshold soft targets first")
        target_b = target_t == 1
    pred_b = pred_b.to(target_b.device)
    if valid_mask is not None:
        mask = as_tensor(valid_mask, "valid_mask").to(target_b.device)
        if mask.dtype != torch.bool:
            mask = mask != 0
        try:
            mask = torch.broadcast_to(mask, target_b.shape)
        except RuntimeError as exc:
            raise DataError(
                f"valid_mask shape {tuple(mask.shape)} does not broadcast to target shape {tuple(target_b.shape)}"
            ) from exc
        pred_b, target_b = pred_b & mask, target_b & mask
    inter = (pred_b & target_b).sum()
    union = (pred_b | target_b).sum()
    return inter, union


def binary_iou(
    pred: Tensor,
    target: Tensor,
    threshold: float = 0.5,
    valid_mask: Tensor | None = None,
    from_logits: bool = True,
) -> float:
    """Binary IoU ``|P ∩ T| / |P ∪ T|`` over the valid cells (visibility-filtered BEV IoU).

    Args:
        pred: Bool map, integer 0/1 map, or float scores: logits if ``from_logits`` (sigmoid applied) else
            probabilities. A cell is positive when its probability is ``> threshold``.
        target: Binary map (bool or 0/1) of the same shape.
        threshold: Probability threshold.
        valid_mask: Optional bool map broadcastable to ``target``; cells where it is false are ignored entirely.
        from_logits: Whether float ``pred`` holds logits (True) or probabilities (False).

    Returns:
        IoU in ``[0, 1]``; NaN when the union over the valid cells is empty.

    """
    inter, union = _binary_counts(pred, target, threshold, valid_mask, from_logits)
    return float(inter) / float(union) if int(union) > 0 else float("nan")


class BinaryIoUMeter(Metric):
    """Streaming dataset-level binary IoU: ``sum(intersection) / sum(union)`` over all batches and DDP ranks.

    This is *not* the mean of per-sample IoUs: large objects weigh more and empty samples cost nothing, as in the
    BEV segmentation protocol.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    intersection: Tensor
    union: Tensor

    def __init__(self, threshold: float = 0.5, from_logits: bool = True, **kwargs: object) -> None:
        """Create the meter.

        Args:
            threshold: Probability threshold (see :func:`binary_iou`).
            from_logits: Whether float predictions are logits (True) or probabilities (False).
            **kwargs: Forwarded to ``torchmetrics.Metric``.

        """
        super().__init__(**kwargs)
        if not 0.0 <= float(threshold) <= 1.0:
            raise ConfigError(f"threshold={threshold} is a probability and must lie in [0, 1]")
        self.threshold = float(threshold)
        self.from_logits = bool(from_logits)
        self.add_state("intersection", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("union", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor, valid_mask: Tensor | None = None) -> None:  # type: ignore[override]
        """Accumulate one batch (same arguments as :func:`binary_iou`)."""
        inter, union = _binary_counts(pred, target, self.threshold, valid_mask, self.from_logits)
        self.intersection += inter.to(self.intersection.device)
        self.union += union.to(self.union.device)

    def compute(self) -> float:  # type: ignore[override]
        """Return the dataset-level IoU (NaN when the accumulated union is empty)."""
        union = int(self.union)
        return int(self.intersection) / union if union > 0 else float("nan")
