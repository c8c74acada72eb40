"""T-Food's losses as pure functions: instance and semantic triplets with dynamic margins, and image-text matching.

Conventions: ``dist[i, j] = 1 - cos(image_i, recipe_j)`` for a batch of matched pairs (the positives on the diagonal).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from frugalvision.errors import ConfigError

__all__ = [
    "ITMPairs",
    "TripletWeights",
    "adaptive_margin",
    "cosine_distance",
    "incremental_margin",
    "instance_triplet_costs",
    "itm_loss",
    "itm_pairs",
    "sample_hard_negatives",
    "semantic_triplet_costs",
    "triplet_loss",
    "valid_mean",
]


def cosine_distance(image_emb: Tensor, recipe_emb: Tensor) -> Tensor:
    """``D[i, j] = 1 - cos(image_i, recipe_j)``, shape ``[B_image, B_recipe]``."""
    return 1.0 - F.normalize(image_emb, dim=-1) @ F.normalize(recipe_emb, dim=-1).T


def instance_triplet_costs(dist: Tensor, margin: float | Tensor, anchor: str = "image") -> Tensor:
    """All instance triplet costs of a batch of matched pairs (AdaMine IRR / RII).

    Args:
        dist: ``[B, B]`` image-recipe distances with the matched pairs on the diagonal.
        margin: the margin alpha.
        anchor: ``"image"`` (IRR: ``C[i, j] = [D_ii - D_ij + a]_+``, image i, negative recipe j) or ``"recipe"``
            (RII: ``C[j, i] = [D_jj - D_ij + a]_+``, recipe j, negative image i).

    Returns:
        ``[B, B]`` costs, row = anchor, column = negative, zero on the diagonal.
    """
    if anchor == "image":
        d = dist
    elif anchor == "recipe":
        d = dist.T
    else:
        raise ConfigError(f"anchor={anchor!r} is invalid; use 'image' or 'recipe'")
    costs = (d.diagonal().unsqueeze(1) - d + margin).clamp_min(0.0)
    eye = torch.eye(d.shape[0], dtype=torch.bool, device=d.device)
    return costs.masked_fill(eye, 0.0)


def valid_mean(costs: Tensor) -> Tensor:
    """AdaMine's "valid" aggregation: sum of the costs over the number of non-zero (active) costs; 0 if none."""
    active = (costs > 0).sum()
    if active == 0:
        return costs.sum() * 0.0
    return costs.sum() / active


def semantic_triplet_costs(dist: Tensor, classes: Tensor, margin: float | Tensor, anchor: str = "image") -> Tensor:
    """Semantic triplets (AdaMine SIRR / SRII) among the items whose class is not background (0).

    For each anchor (an item of class != 0 in the anchor modality, taken in batch order), the positive is the first
    *other* item of the other modality with the same class; the negatives are the other-modality items (class != 0)
    of a different class, in batch order, truncated so that every anchor keeps the same number (the minimum over
    anchors). Anchors without a positive are dropped (our reading: the official code assumes the class-pair sampler
    always provides one).

    Args:
        dist: ``[B, B]`` image-recipe distances (image i and recipe i share ``classes[i]``).
        classes: ``[B]`` class ids, 0 = background.
        margin: the margin alpha.
        anchor: ``"image"`` (SIRR) or ``"recipe"`` (SRII).

    Returns:
        ``[A, K]`` costs ``[d(a, p) - d(a, n) + alpha]_+`` (A anchors, K negatives each); ``[0, 0]`` when empty.
    """
    if anchor not in ("image", "recipe"):
        raise ConfigError(f"anchor={anchor!r} is invalid; use 'image' or 'recipe'")
    d = dist if anchor == "image" else dist.T
    keep = classes != 0
    d = d[keep][:, keep]
    cls = classes[keep]
    n = cls.shape[0]
    same = cls.unsqueeze(1) == cls.unsqueeze(0)
    eye = torch.eye(n, dtype=torch.bool, device=d.device)
    pos_mask = same & ~eye
    has_pos = pos_mask.any(dim=1)
    neg_mask = ~same
    if not has_pos.any():
        return d.new_zeros((0, 0))
    k = int(neg_mask[has_pos].sum(dim=1).min())
    if k == 0:
        return d.new_zeros((0, 0))
    order = torch.arange(n, device=d.device)
    first_pos = torch.where(pos_mask, order, n).min(dim=1).values
    rows = has_pos.nonzero().squeeze(1)
    pos = d[rows, first_pos[rows]]
    # the first k negatives of each row, in batch order
    neg_rank = neg_mask.long().cumsum(dim=1)
    chosen = neg_mask & (neg_rank <= k)
    neg = d[rows][chosen[rows]].view(rows.shape[0], k)
    return (pos.unsqueeze(1) - neg + margin).clamp_min(0.0)


def incremental_margin(epoch: float, start: float = 0.18, delta: float = 0.005, maximum: float = 0.3) -> float:
    """Incremental margin ``alpha_e = min(alpha_0 + delta * e, alpha_max)`` (closed form, exact on resume)."""
    return min(start + delta * epoch, maximum)


def adaptive_margin(
    dist: Tensor, base_margin: float, anchor: str = "image", minimum: float = 0.05, maximum: float = 0.7
) -> tuple[Tensor, float, float]:
    """Adaptive margin: recompute the costs with a margin set by the share of active triplets.

    First pass with the base margin; rho = non-zero fraction of the full B x B matrix (diagonal included); then
    ``alpha' = clip(alpha_max * (1 - rho), alpha_min, alpha_max)`` and the costs recomputed with it.

    Args:
        dist: ``[B, B]`` distances.
        base_margin: the margin of the first pass.
        anchor: ``"image"`` (IRR) or ``"recipe"`` (RII); each direction adapts its own margin.
        minimum: alpha_min.
        maximum: alpha_max.

    Returns:
        (costs with alpha', alpha', rho).
    """
    with torch.no_grad():
        first = instance_triplet_costs(dist, base_margin, anchor)
        rho = float((first > 0).float().mean())
    alpha = min(max(maximum * (1.0 - rho), minimum), maximum)
    return instance_triplet_costs(dist, alpha, anchor), alpha, rho


@dataclass(frozen=True)
class TripletWeights:
    """Weights of the four triplet terms; the weighted sum is divided by the number of terms (official code).

    Attributes:
        irr: image-anchor instance triplets.
        rii: recipe-anchor instance triplets.
        sirr: image-anchor semantic triplets (0 disables).
        srii: recipe-anchor semantic triplets (0 disables).
    """

    irr: float = 1.0
    rii: float = 1.0
    sirr: float = 0.1
    srii: float = 0.1


def triplet_loss(
    image_emb: Tensor,
    recipe_emb: Tensor,
    classes: Tensor | None,
    margin: float,
    weights: TripletWeights = TripletWeights(),  # noqa: B008
    adaptive: bool = False,
    adaptive_bounds: tuple[float, float] = (0.05, 0.7),
) -> tuple[Tensor, dict[str, float]]:
    """``L_tri = (w_irr L_IRR + w_rii L_RII + w_sirr L_SIRR + w_srii L_SRII) / (number of terms)``.

    Every term uses the "valid" aggregation. Terms with weight 0 (or no classes) are left out of the sum and of the
    count, so the baseline (IRR + RII) is ``(L_IRR + L_RII) / 2`` and T-Food is ``(... ) / 4``.

    Args:
        image_emb: ``[B, D]`` image embeddings.
        recipe_emb: ``[B, D]`` recipe embeddings (pair i = image i, recipe i).
        classes: ``[B]`` class ids (0 = background), or None to skip the semantic terms.
        margin: alpha (the instance margin, or the base margin of the adaptive variant); the semantic terms use it too.
        weights: term weights.
        adaptive: use the adaptive margin for IRR and RII.
        adaptive_bounds: (alpha_min, alpha_max) of the adaptive margin.

    Returns:
        (loss, logs with each term and the margins used).
    """
    dist = cosine_distance(image_emb, recipe_emb)
    terms: list[Tensor] = []
    logs: dict[str, float] = {}
    for name, anchor, weight in (("irr", "image", weights.irr), ("rii", "recipe", weights.rii)):
        if weight == 0:
            continue
        if adaptive:
            costs, alpha, _ = adaptive_margin(dist, margin, anchor, *adaptive_bounds)
        else:
            costs, alpha = instance_triplet_costs(dist, margin, anchor), margin
        value = valid_mean(costs)
        terms.append(weight * value)
        logs[f"loss_{name}"] = float(value.detach())
        logs[f"margin_{name}"] = float(alpha)
    if classes is not None:
        for name, anchor, weight in (("sirr", "image", weights.sirr), ("srii", "recipe", weights.srii)):
            if weight == 0:
                continue
            value = valid_mean(semantic_triplet_costs(dist, classes, margin, anchor))
            terms.append(weight * value)
            logs[f"loss_{name}"] = float(value.detach())
    if not terms:
        raise ConfigError("every triplet weight is 0; enable at least one of irr, rii, sirr, srii")
    return torch.stack(terms).sum() / len(terms), logs


def sample_hard_negatives(
    sim: Tensor, temperature: float = 1.0, generator: torch.Generator | None = None, eps: float = 1e-8
) -> Tensor:
    """One in-batch negative per row, drawn with probability ``softmax(sim / T)`` over the off-diagonal entries.

    Safe on degenerate batches: the positive (diagonal) is never drawn, ``eps`` keeps every negative drawable, and a
    row whose weights are not finite or sum to zero falls back to the uniform distribution over its negatives.

    Args:
        sim: ``[B, B]`` similarities with the positives on the diagonal (B >= 2).
        temperature: softmax temperature (official: 1 on raw cosines; T -> 0 picks the hardest negative).
        generator: optional random generator.
        eps: added to every negative's probability.

    Returns:
        ``[B]`` long tensor of sampled column indices, never equal to the row index.
    """
    b = sim.shape[0]
    if sim.ndim != 2 or sim.shape[1] != b or b < 2:
        raise ConfigError(
            f"hard-negative sampling needs a square similarity matrix with B >= 2 (got {tuple(sim.shape)})"
        )
    if temperature <= 0:
        raise ConfigError(f"temperature={temperature} is invalid; use a positive value")
    off = ~torch.eye(b, dtype=torch.bool, device=sim.device)
    logits = (sim.detach().float() / temperature).masked_fill(~off, float("-inf"))
    weights = torch.softmax(logits, dim=1)
    weights = torch.where(off, weights + eps, torch.zeros_like(weights))
    bad = ~torch.isfinite(weights).all(dim=1) | (weights.sum(dim=1) <= 0)
    weights[bad] = off[bad].float()
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


@dataclass(frozen=True)
class ITMPairs:
    """Index pairs (image, recipe) for the ITM head and their labels.

    Attributes:
        image_index: ``[3B]`` image index of each pair.
        recipe_index: ``[3B]`` recipe index of each pair.
        labels: ``[3B]`` 1 for the B positives, then 0 for 2B negatives.
    """

    image_index: Tensor
    recipe_index: Tensor
    labels: Tensor


def itm_pairs(
    image_emb: Tensor, recipe_emb: Tensor, temperature: float = 1.0, generator: torch.Generator | None = None
) -> ITMPairs:
    """ALBEF-style ITM pairs: B positives, B (sampled hard image, recipe_i), B (image_i, sampled hard recipe).

    ``S = cos(e_v, e_r)``; each recipe draws a negative image from column i of S, each image a negative recipe
    from row i (see :func:`sample_hard_negatives`).
    """
    sim = F.normalize(image_emb, dim=-1) @ F.normalize(recipe_emb, dim=-1).T
    b = sim.shape[0]
    idx = torch.arange(b, device=sim.device)
    neg_image_for_recipe = sample_hard_negatives(sim.T, temperature, generator)
    neg_recipe_for_image = sample_hard_negatives(sim, temperature, generator)
    return ITMPairs(
        image_index=torch.cat([idx, neg_image_for_recipe, idx]),
        recipe_index=torch.cat([idx, idx, neg_recipe_for_image]),
        labels=torch.cat([torch.ones(b, dtype=torch.long), torch.zeros(2 * b, dtype=torch.long)]).to(sim.device),
    )


def itm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of the 2-way ITM head over all pairs."""
    return F.cross_entropy(logits, labels)
