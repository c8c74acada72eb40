"""Learned static ordering of the latents (``selection="ranked"``, spec §2.4) and batched evaluation helpers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch.nn import functional as F

from frugalvision.methods.perceiver.model import PerceiverClassifier


@torch.no_grad()
def latent_importance(
    model: PerceiverClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 250
) -> torch.Tensor:
    """Leave-one-out importance: increase of the mean CE when latent q alone is removed from the full set.

    The first cross-attention is computed once for all Q latents (query rows are independent); only the latent
    layers and the head run again for each removed latent.

    Args:
        model: a prefix-selection Perceiver (no scorer).
        images: validation images (≤ 1,000 in the spec).
        labels: their labels.
        batch_size: images per forward pass.

    Returns:
        (Q,) importance per latent (larger: more important).
    """
    was_training = model.training
    model.eval()
    q = model.num_latents
    full = torch.zeros(())
    dropped = torch.zeros(q)
    for start in range(0, images.shape[0], batch_size):
        device = next(model.parameters()).device
        x, y = images[start : start + batch_size].to(device), labels[start : start + batch_size].to(device)
        prep = model.prepare(x)
        first = model.first_rows(prep, 0, q)
        full += F.cross_entropy(model.finish(first, prep), y, reduction="sum").cpu()
        for latent in range(q):
            kept = torch.cat([first[:, :latent], first[:, latent + 1 :]], dim=1)
            dropped[latent] += F.cross_entropy(model.finish(kept, prep), y, reduction="sum").cpu()
    model.train(was_training)
    return (dropped - full) / images.shape[0]


@torch.no_grad()
def reorder_latents(model: PerceiverClassifier, order: torch.Tensor) -> None:
    """Permute the learned latents in place so that prefix ``Z0[:k]`` keeps the ``order[:k]`` latents."""
    latents = model.encoder.latents
    latents.copy_(latents[order.to(latents.device)].clone())


def rank_latents(model: PerceiverClassifier, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Order latents by decreasing leave-one-out importance and apply it (returns the order used)."""
    order = torch.argsort(latent_importance(model, images, labels), descending=True, stable=True)
    reorder_latents(model, order)
    return order


@torch.no_grad()
def collect_logits(
    model: PerceiverClassifier,
    batches: Iterable[torch.Tensor],
    widths: Sequence[int],
    stages: Sequence[int],
) -> tuple[dict[int, torch.Tensor], list[torch.Tensor]]:
    """Logits of a whole set at every width and at every cascade stage (one shared pass per batch).

    Args:
        model: the Perceiver.
        batches: image batches of the set, in order.
        widths: static Q' values.
        stages: cascade stages.

    Returns:
        ({width: logits (n, C)}, [stage logits (n, C)]).
    """
    was_training = model.training
    model.eval()
    per_width: dict[int, list[torch.Tensor]] = {k: [] for k in widths}
    per_stage: list[list[torch.Tensor]] = [[] for _ in stages]
    device = next(model.parameters()).device
    for batch in batches:
        x = batch.to(device)
        for k, out in model.widths_logits(x, widths).items():
            per_width[k].append(out.float().cpu())
        for j, out in enumerate(model.cascade_stage_logits(x, stages)):
            per_stage[j].append(out.float().cpu())
    model.train(was_training)
    return {k: torch.cat(v) for k, v in per_width.items()}, [torch.cat(v) for v in per_stage]
