"""Public API: evaluate a trained MIMO network (or a deep ensemble) and measure how much its members share."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from frugalvision.methods.mimo.evaluation import evaluate_members, member_logits
from frugalvision.methods.mimo.model import MimoNetwork
from frugalvision.methods.mimo.sharing import (
    active_filters,
    channel_ablation,
    encoder_overlap,
    head_overlap,
    solo_cka,
)

__all__ = ["evaluate_mimo", "feature_sharing"]


def evaluate_mimo(
    models: MimoNetwork | Sequence[MimoNetwork],
    images: Tensor,
    labels: Tensor,
    calibration: tuple[Tensor, Tensor] | None = None,
    normalise: Callable[[Tensor], Tensor] | None = None,
) -> dict[str, float]:
    """Ensemble top-1, NLL, ECE, Brier, member top-1 and disagreement (+ temperature-scaled NLL/ECE).

    Args:
        models: a MIMO network, or the networks of a deep ensemble (their members are pooled).
        images: ``[N, C, H, W]`` test images (uint8, or float in [0, 1]).
        labels: ``[N]`` test labels.
        calibration: ``(images, labels)`` of a validation set; fits the temperature (never pass the test set).
        normalise: applied to every float batch.

    Returns:
        The metrics of :func:`frugalvision.methods.mimo.evaluation.evaluate_members`.
    """
    networks = [models] if isinstance(models, MimoNetwork) else list(models)
    test = member_logits(networks, images, normalise)
    if calibration is None:
        return evaluate_members(test, labels)
    val = member_logits(networks, calibration[0], normalise)
    return evaluate_members(test, labels, val, calibration[1])


def feature_sharing(model: MimoNetwork, images: Tensor, labels: Tensor) -> dict[str, float]:
    """Encoder and head overlap, active core filters, channel-ablation Spearman and transfer, solo-pass CKA.

    Args:
        model: a MIMO network with M >= 2.
        images: ``[N, C, H, W]`` normalised float images (validation; about 1,000 are enough).
        labels: ``[N]`` labels.
    """
    with torch.no_grad():
        metrics = {"enc_overlap": encoder_overlap(model.encoders)}
        if len(model.heads) > 1:
            metrics["head_overlap"] = head_overlap(model.heads)  # type: ignore[arg-type]
        metrics.update({f"active_t{round(100 * t)}": v for t, v in active_filters(model).items()})
        ablation = channel_ablation(model, images, labels)
        metrics.update({"ablation_spearman": ablation["spearman"], "ablation_transfer": ablation["transfer"]})
        metrics["solo_cka"] = solo_cka(model, images)
    return metrics
