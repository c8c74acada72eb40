"""Evaluation metrics shared by the methods: classification, calibration, retrieval and segmentation.

Functions take torch tensors and return Python floats (or dicts of floats); the ``*Meter`` classes are torchmetrics
``Metric`` subclasses that accumulate over batches and sync their states across DDP ranks on ``compute()``.
"""

from frugalvision.metrics.calibration import (
    apply_temperature,
    brier_score,
    disagreement,
    ensemble_log_probs,
    ensemble_metrics,
    fit_temperature,
)
from frugalvision.metrics.classification import ClassificationMeter, ece, nll, top1, topk
from frugalvision.metrics.retrieval import (
    bagged_retrieval,
    bidirectional_retrieval,
    retrieval_metrics,
    retrieval_ranks,
)
from frugalvision.metrics.segmentation import (
    BinaryIoUMeter,
    SegmentationMeter,
    binary_iou,
    confusion_matrix,
    miou,
    miou_from_confusion,
)

__all__ = [
    "BinaryIoUMeter",
    "ClassificationMeter",
    "SegmentationMeter",
    "apply_temperature",
    "bagged_retrieval",
    "bidirectional_retrieval",
    "binary_iou",
    "brier_score",
    "confusion_matrix",
    "disagreement",
    "ece",
    "ensemble_log_probs",
    "ensemble_metrics",
    "fit_temperature",
    "miou",
    "miou_from_confusion",
    "nll",
    "retrieval_metrics",
    "retrieval_ranks",
    "top1",
    "topk",
]
