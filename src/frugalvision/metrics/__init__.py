"""Evaluation metrics shared by the methods: classification, calibration, retrieval and segmentation.

Functions take torch tensors and return Python floats (or dicts of floats); the ``*Meter`` classes are torchmetrics
``Metric`` subclasses that accumulate over batches and sync their states across DDP ranks on ``compute()``.
"""

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
    "bagged_retrieval",
    "bidirectional_retrieval",
    "binary_iou",
    "confusion_matrix",
    "ece",
    "miou",
    "miou_from_confusion",
    "nll",
    "retrieval_metrics",
    "retrieval_ranks",
    "top1",
    "topk",
]
