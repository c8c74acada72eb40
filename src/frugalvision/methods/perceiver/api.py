"""Public API: a Perceiver built with a query budget, its nested training loss, and the cascade threshold.

A :class:`~frugalvision.methods.perceiver.model.PerceiverClassifier` runs at any Q' ≤ Q (``model(x, num_latents=k)``)
and dynamically per image (``model.cascade(x, stages, tau)``). Training it with :func:`nested_training_loss` makes
small query sets work; :func:`choose_threshold` picks the cascade's τ for a MAC budget on held-out data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from frugalvision.methods.perceiver.config import DEFAULT_TAUS, PerceiverConfig
from frugalvision.methods.perceiver.functional import cascade_outcome, nested_loss, sample_widths, step_generator
from frugalvision.methods.perceiver.model import PerceiverClassifier, cascade_stage_macs, model_macs

__all__ = ["build_perceiver", "choose_threshold", "nested_training_loss"]


def build_perceiver(num_latents: int = 32, **architecture: Any) -> PerceiverClassifier:
    """A Perceiver classifier with a query budget of ``num_latents`` (Q); any :class:`PerceiverConfig` field too.

    Example: ``build_perceiver(64, img_size=32, in_chans=3, num_classes=100)``.
    """
    return PerceiverClassifier(PerceiverConfig(num_latents=num_latents, **architecture))


def nested_training_loss(
    model: PerceiverClassifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    step: int,
    min_latents: int | None = None,
    num_random: int = 1,
    beta: float = 0.5,
    temperature: float = 1.0,
    seed: int = 0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The nested ("sandwich") loss of one batch: CE at Q plus CE/distillation at Q_min and random prefix widths.

    Widths are drawn from ``(seed, step)``, so every rank of a distributed run draws the same ones.

    Args:
        model: the Perceiver being trained (prefix or scorer selection).
        images: (B, C, H, W).
        labels: (B,).
        step: optimiser step (seeds the width draw).
        min_latents: Q_min of the width grid (default Q/8).
        num_random: random widths per step besides Q and Q_min.
        beta: distillation weight β (0: plain CE at every width).
        temperature: distillation temperature T.
        seed: seed of the width draws.

    Returns:
        (loss, logs): the differentiable loss and the CE at Q (``ce_full``) and summed student terms (``students``).
    """
    q = model.num_latents
    widths = sample_widths(q, min_latents or max(1, q // 8), num_random, step_generator(seed, step))
    return nested_loss(model(images, widths=widths), labels, beta, temperature)


@torch.no_grad()
def choose_threshold(
    model: PerceiverClassifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    mac_budget: float,
    stages: Sequence[int] | None = None,
    taus: Sequence[float] = DEFAULT_TAUS,
    batch_size: int = 250,
) -> float:
    """The cascade threshold τ with the best accuracy whose average MACs stay within ``mac_budget`` × MACs(Q).

    Use held-out (validation) images, never the test set.

    Args:
        model: a trained Perceiver.
        images: validation images.
        labels: their labels.
        mac_budget: fraction of the MACs at Q allowed on average.
        stages: cascade query-set sizes (default (Q/4, Q)).
        taus: thresholds tried.
        batch_size: images per forward pass.

    Raises:
        ValueError: no threshold fits the budget (the first stage alone costs more).
    """
    q = model.num_latents
    stages = tuple(stages or (max(1, q // 4), q))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    per_batch = [
        model.cascade_stage_logits(images[i : i + batch_size].to(device), stages)
        for i in range(0, images.shape[0], batch_size)
    ]
    model.train(was_training)
    stage_logits = [torch.cat([batch[j].float().cpu() for batch in per_batch]) for j in range(len(stages))]
    arch = model.config
    stage_macs, full = cascade_stage_macs(arch, stages), model_macs(arch, q)
    outcomes = [(cascade_outcome(stage_logits, labels, tau, stage_macs), tau) for tau in taus]
    fits = [(o["top1"], -o["macs"], tau) for o, tau in outcomes if o["macs"] <= mac_budget * full + 1e-9]
    if not fits:
        raise ValueError(f"no threshold keeps the MACs within {mac_budget:g} x MACs(Q); raise mac_budget")
    return max(fits)[2]
