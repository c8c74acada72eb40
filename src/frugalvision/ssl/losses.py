"""The loss terms of the semi-supervised frameworks, as pure functions of logits (and their parameter groups).

- :func:`softmax_mse`: Mean Teacher's consistency, ``sum_c (softmax(s) - softmax(t))^2 / C`` per sample
  (``softmax_mse_loss`` of CuriousAI/mean-teacher, summed and divided by the class count), no gradient to the target.
- :func:`fixmatch_unlabeled_loss`: FixMatch's ``mean(1[max p >= tau] CE(strong, argmax p))`` with
  ``p = stopgrad softmax(weak)`` over **all** unlabeled samples (``fixmatch.py``).
- :func:`kernel_decay_groups`: FixMatch's L2 ``wd * sum(l2_loss(kernel))`` with ``l2_loss = sum(k^2) / 2`` has gradient
  ``wd * k`` on conv/linear kernels only: SGD ``weight_decay = wd`` on those kernels, 0 on biases and norms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "PseudoLabels",
    "fixmatch_unlabeled_loss",
    "kernel_decay_groups",
    "kernel_l2",
    "kernel_parameters",
    "mean_teacher_class_loss",
    "pseudo_labels",
    "soft_cross_entropy",
    "softmax_mse",
    "symmetric_mse",
]


def softmax_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Mean Teacher's consistency cost: ``sum_c (softmax(s)_c - softmax(t)_c)^2 / C`` per sample.

    The target side is detached. ``reduction="mean"`` averages over the batch (the official code sums over the
    batch and divides by the minibatch size), "none" returns one value per sample.
    """
    student = F.softmax(student_logits.float(), dim=1)
    teacher = F.softmax(teacher_logits.detach().float(), dim=1)
    per_sample = (student - teacher).pow(2).sum(1) / student_logits.shape[1]
    return per_sample.mean() if reduction == "mean" else per_sample


def symmetric_mse(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Mean Teacher's logit-distance cost between its two heads: ``sum_c (a - b)^2 / C``, averaged over the batch."""
    return (first.float() - second.float()).pow(2).sum(1).mean() / first.shape[1]


def mean_teacher_class_loss(logits: torch.Tensor, labels: torch.Tensor, minibatch_size: int) -> torch.Tensor:
    """Mean Teacher's classification cost: cross-entropy **summed** over labeled samples / the full minibatch size.

    Labels ``< 0`` (unlabeled) are ignored, as ``NO_LABEL`` in the official code.
    """
    return F.cross_entropy(logits.float(), labels, reduction="sum", ignore_index=-1) / minibatch_size


@dataclass(frozen=True)
class PseudoLabels:
    """Hard pseudo-labels from the weak view.

    Attributes:
        labels: ``argmax p`` per sample.
        mask: 1.0 where ``max p >= threshold``, else 0.0.
        confidence: ``max p``.
    """

    labels: torch.Tensor
    mask: torch.Tensor
    confidence: torch.Tensor


def pseudo_labels(weak_logits: torch.Tensor, threshold: float) -> PseudoLabels:
    """``p = stopgrad softmax(weak)``; the label is ``argmax p``, kept where ``max p >= threshold``."""
    probs = F.softmax(weak_logits.detach().float(), dim=1)
    confidence, labels = probs.max(1)
    return PseudoLabels(labels, (confidence >= threshold).float(), confidence)


def fixmatch_unlabeled_loss(
    strong_logits: torch.Tensor, weak_logits: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, PseudoLabels]:
    """FixMatch's unlabeled term, averaged over every unlabeled sample (masked ones count as 0).

    Returns:
        ``(loss, pseudo)`` with the pseudo-labels and mask used.
    """
    pseudo = pseudo_labels(weak_logits, threshold)
    per_sample = F.cross_entropy(strong_logits.float(), pseudo.labels, reduction="none")
    return (per_sample * pseudo.mask).mean(), pseudo


def soft_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """``-sum_c t_c log softmax(logits)_c``, averaged over the batch (optionally weighted per sample first)."""
    per_sample = -(targets * F.log_softmax(logits.float(), dim=1)).sum(1)
    if weights is not None:
        per_sample = per_sample * weights
    return per_sample.mean()


def kernel_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(kernels, others)``: conv/linear weights (and any other trainable tensor with 2+ dimensions) vs the rest."""
    kernels, others = [], []
    for module in model.modules():
        for parameter in module.parameters(recurse=False):
            if parameter.requires_grad:
                is_kernel = parameter.ndim >= 2 and not isinstance(module, nn.Embedding)
                (kernels if is_kernel else others).append(parameter)
    return kernels, others


def kernel_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Parameter groups: ``weight_decay`` on kernels (``'kernel' in v.name`` in FixMatch), 0 on biases and norms."""
    kernels, others = kernel_parameters(model)
    groups = [{"params": kernels, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def kernel_l2(model: nn.Module) -> torch.Tensor:
    """FixMatch's ``loss_wd = sum(tf.nn.l2_loss(kernel)) = sum(k^2) / 2`` over the kernels."""
    return sum((k.float().pow(2).sum() / 2 for k in kernel_parameters(model)[0]), torch.zeros(()))
