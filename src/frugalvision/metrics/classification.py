"""Classification metrics: top-1 / top-k accuracy, negative log-likelihood and expected calibration error.

All functions take ``logits`` of shape ``[N, C]`` (unnormalised scores) and integer ``targets`` of shape ``[N]`` and
return Python floats. :class:`ClassificationMeter` accumulates the same quantities over batches as a torchmetrics
``Metric``, so its states are summed across DDP ranks on ``compute()``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import MulticlassCalibrationError

from frugalvision.errors import ConfigError
from frugalvision.metrics._checks import check_logits_targets, check_positive_int

__all__ = ["ClassificationMeter", "ece", "nll", "top1", "topk"]


def top1(logits: Tensor, targets: Tensor) -> float:
    """Top-1 accuracy: fraction of rows whose arg-max logit is the target class.

    Args:
        logits: Scores of shape ``[N, C]``.
        targets: Class indices of shape ``[N]``.

    Returns:
        Accuracy in ``[0, 1]``.

    """
    logits, targets = check_logits_targets(logits, targets)
    return float((logits.argmax(dim=1) == targets).double().mean())


def topk(logits: Tensor, targets: Tensor, k: int) -> float:
    """Top-k accuracy: fraction of rows whose target is among the ``k`` highest logits.

    Args:
        logits: Scores of shape ``[N, C]``.
        targets: Class indices of shape ``[N]``.
        k: Number of highest-scoring classes that count as a hit (``1 <= k <= C``).

    Returns:
        Accuracy in ``[0, 1]``.

    """
    logits, targets = check_logits_targets(logits, targets)
    check_positive_int(k, "k")
    if k > logits.shape[1]:
        raise ConfigError(f"k={k} exceeds the number of classes C={logits.shape[1]}; pass k <= {logits.shape[1]}")
    hits = (logits.topk(k, dim=1).indices == targets[:, None]).any(dim=1)
    return float(hits.double().mean())


def nll(logits: Tensor, targets: Tensor) -> float:
    """Mean negative log-likelihood of the targets under ``softmax(logits)`` (natural log).

    Args:
        logits: Scores of shape ``[N, C]``.
        targets: Class indices of shape ``[N]``.

    Returns:
        ``mean_i -log softmax(logits_i)[targets_i]``.

    """
    logits, targets = check_logits_targets(logits, targets)
    return float(F.cross_entropy(logits.double(), targets, reduction="mean"))


def ece(logits: Tensor, targets: Tensor, n_bins: int = 15) -> float:
    """Compute the expected calibration error (L1, top-label, equal-width confidence bins).

    ``ECE = sum_b |B_b| / N * |acc(B_b) - conf(B_b)|`` with bins ``[b/n, (b+1)/n)`` over the top-1 softmax
    probability, computed with torchmetrics ``MulticlassCalibrationError(norm="l1")`` (which puts a confidence of
    exactly 1.0 in a bin of its own).

    Args:
        logits: Scores of shape ``[N, C]`` (softmax is applied here).
        targets: Class indices of shape ``[N]``.
        n_bins: Number of equal-width bins over ``[0, 1]``.

    Returns:
        ECE in ``[0, 1]``.

    """
    logits, targets = check_logits_targets(logits, targets)
    check_positive_int(n_bins, "n_bins")
    probs = logits.float().softmax(dim=1)  # explicit: torchmetrics would skip softmax on logits that lie in [0, 1]
    metric = MulticlassCalibrationError(num_classes=probs.shape[1], n_bins=n_bins, norm="l1").to(probs.device)
    return float(metric(probs, targets))


class ClassificationMeter(Metric):
    """Streaming top-1, NLL and ECE over batches (a torchmetrics ``Metric``: states sync across DDP ranks).

    The state is a handful of sums (correct count, NLL sum, sample count and per-bin counts / confidence sums /
    accuracy sums), so memory does not grow with the dataset. The ECE equals :func:`ece` on the concatenated
    batches (same binning as torchmetrics).

    Example:
        >>> meter = ClassificationMeter()
        >>> meter.update(torch.randn(8, 3), torch.randint(0, 3, (8,)))
        >>> sorted(meter.compute())
        ['ece', 'nll', 'top1']

    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    correct: Tensor
    nll_sum: Tensor
    total: Tensor
    bin_count: Tensor
    bin_conf: Tensor
    bin_acc: Tensor

    def __init__(self, n_bins: int = 15, **kwargs: object) -> None:
        """Create the meter.

        Args:
            n_bins: Number of equal-width ECE bins.
            **kwargs: Forwarded to ``torchmetrics.Metric`` (e.g. ``sync_on_compute``).

        """
        super().__init__(**kwargs)
        self.n_bins = check_positive_int(n_bins, "n_bins")
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("nll_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        # n_bins + 1 slots: torchmetrics bins with bucketize(right=True) over linspace(0, 1, n_bins + 1).
        self.add_state("bin_count", default=torch.zeros(n_bins + 1, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("bin_conf", default=torch.zeros(n_bins + 1, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("bin_acc", default=torch.zeros(n_bins + 1, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, targets: Tensor) -> None:  # type: ignore[override]
        """Accumulate one batch of ``[N, C]`` logits and ``[N]`` class indices."""
        logits, targets = check_logits_targets(logits, targets)
        dev = self.correct.device
        probs = logits.float().softmax(dim=1)
        conf, pred = probs.max(dim=1)
        acc = (pred == targets).double()
        boundaries = torch.linspace(0, 1, self.n_bins + 1, dtype=conf.dtype, device=conf.device)
        idx = torch.bucketize(conf, boundaries, right=True) - 1
        onehot = F.one_hot(idx, self.n_bins + 1).double()  # deterministic alternative to scatter_add_
        self.bin_count += onehot.sum(dim=0).to(dev)
        self.bin_conf += (onehot.T @ conf.double()).to(dev)
        self.bin_acc += (onehot.T @ acc).to(dev)
        self.correct += (pred == targets).sum().to(dev)
        self.nll_sum += F.cross_entropy(logits.double(), targets, reduction="sum").to(dev)
        self.total += targets.numel()

    def compute(self) -> dict[str, float]:  # type: ignore[override]
        """Return ``{"top1", "nll", "ece"}`` over everything seen so far (NaN before the first update)."""
        n = int(self.total)
        if n == 0:
            return {"top1": float("nan"), "nll": float("nan"), "ece": float("nan")}
        gap = (self.bin_acc - self.bin_conf).abs()  # |sum acc - sum conf| = count * |acc_b - conf_b|
        return {
            "top1": int(self.correct) / n,
            "nll": float(self.nll_sum) / n,
            "ece": float(gap.sum()) / float(self.bin_count.sum()),
        }
