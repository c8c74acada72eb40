"""Pure functions of Dynamic Query Selection (our reading, spec §2.3-2.6): widths, losses, selection, cascade."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F


def width_grid(num_latents: int, min_latents: int) -> list[int]:
    """The grid G = {Q_min, 2·Q_min, …, Q} of query-set sizes."""
    if min_latents < 1 or num_latents % min_latents:
        raise ValueError(f"min_latents={min_latents} must be >= 1 and divide num_latents={num_latents}")
    return list(range(min_latents, num_latents + 1, min_latents))


def sample_widths(num_latents: int, min_latents: int, num_random: int, generator: torch.Generator) -> list[int]:
    """Sandwich rule: {Q, Q_min} plus ``num_random`` distinct widths drawn uniformly from G minus {Q, Q_min}.

    Args:
        num_latents: Q.
        min_latents: Q_min.
        num_random: widths drawn besides Q and Q_min (capped by how many the grid has).
        generator: RNG (seed it by the global step so every rank draws the same widths).

    Returns:
        Widths in decreasing order, Q first.
    """
    grid = width_grid(num_latents, min_latents)
    inner = [w for w in grid if w not in (num_latents, min_latents)]
    picked: list[int] = []
    if inner and num_random > 0:
        order = torch.randperm(len(inner), generator=generator)[: min(num_random, len(inner))]
        picked = [inner[i] for i in order.tolist()]
    return sorted({num_latents, min_latents, *picked}, reverse=True)


def step_generator(seed: int, step: int) -> torch.Generator:
    """An RNG that depends only on (seed, step): identical on every rank."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63 - 1))


def distillation_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T² · KL(stopgrad(p_teacher^T) ‖ p_student^T)``, averaged over the batch."""
    log_p = F.log_softmax(teacher.detach() / temperature, dim=-1)
    log_q = F.log_softmax(student / temperature, dim=-1)
    return temperature**2 * F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")


def nested_loss(
    logits: dict[int, torch.Tensor], labels: torch.Tensor, beta: float, temperature: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Nested query-set loss (spec §2.3).

    ``CE(f_Q, y) + Σ_{k<Q} [(1 − β)·CE(f_k, y) + β·T²·KL(stopgrad(p_Q^T) ‖ p_k^T)]``, Q = the largest width.

    Args:
        logits: width -> logits (B, C); must contain the full width.
        labels: (B,) class indices, or (B, C) soft targets (Mixup/CutMix, label smoothing).
        beta: distillation weight β ∈ [0, 1].
        temperature: distillation temperature T.

    Returns:
        (loss, logs with the full-width CE and the summed student terms).
    """
    full = max(logits)
    loss = F.cross_entropy(logits[full], labels)
    logs = {"ce_full": float(loss.detach())}
    student_total = torch.zeros((), device=loss.device, dtype=loss.dtype)
    for width, out in logits.items():
        if width == full:
            continue
        term = (1.0 - beta) * F.cross_entropy(out, labels) if beta < 1 else out.new_zeros(())
        if beta > 0:
            term = term + beta * distillation_kl(out, logits[full], temperature)
        student_total = student_total + term
    logs["students"] = float(student_total.detach())
    return loss + student_total, logs


def straight_through_gate(z: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """``z · (1 + σ(s) − stopgrad(σ(s)))``: value exactly ``z``, gradient reaches the scores.

    Args:
        z: latents (B, k, d).
        scores: their scores (B, k).
    """
    gate = torch.sigmoid(scores)
    return z + z * (gate - gate.detach()).unsqueeze(-1)


def topk_gather(z: torch.Tensor, scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the ``k`` highest-scoring latents of each image (batched gather, ties broken by lower index).

    Args:
        z: latents (B, Q, d).
        scores: (B, Q).
        k: latents kept.

    Returns:
        (kept latents (B, k, d) in latent-index order, their indices (B, k)).
    """
    index = torch.topk(scores, k, dim=1, sorted=True).indices.sort(dim=1).values
    return torch.gather(z, 1, index.unsqueeze(-1).expand(-1, -1, z.shape[-1])), index


def cascade_decisions(stage_logits: Sequence[torch.Tensor], tau: float) -> torch.Tensor:
    """Stage at which each image stops: the first stage whose max softmax probability exceeds τ (last stage else).

    The comparison is strict, so τ = 0 always stops at the first stage (a max probability is >= 1/C > 0) and
    τ = 1 always reaches the last stage.

    Args:
        stage_logits: logits (B, C) of every stage, smallest first.
        tau: confidence threshold (0: always the first stage; >= 1: always the last).

    Returns:
        (B,) long stage indices.
    """
    last = len(stage_logits) - 1
    stage = torch.full((stage_logits[0].shape[0],), last, dtype=torch.long)
    decided = torch.zeros_like(stage, dtype=torch.bool)
    for j, logits in enumerate(stage_logits[:-1]):
        confident = logits.float().softmax(-1).amax(-1).cpu() > tau
        newly = confident & ~decided
        stage[newly] = j
        decided |= confident
    return stage


def cascade_outcome(
    stage_logits: Sequence[torch.Tensor], labels: torch.Tensor, tau: float, stage_macs: Sequence[float]
) -> dict[str, float]:
    """Accuracy and average MACs of a cascade at threshold τ, from cached per-stage logits.

    Average MACs = Σ_j P(reach stage j)·(incremental MACs of stage j).

    Args:
        stage_logits: logits (B, C) of every stage, smallest first.
        labels: (B,) targets.
        tau: confidence threshold.
        stage_macs: incremental MACs of each stage.
    """
    stage = cascade_decisions(stage_logits, tau)
    stacked = torch.stack([s.float().cpu() for s in stage_logits])
    chosen = stacked[stage, torch.arange(stage.shape[0])]
    correct = (chosen.argmax(-1) == labels.cpu()).float().mean().item()
    reach = [(stage >= j).float().mean().item() for j in range(len(stage_logits))]
    macs = sum(r * m for r, m in zip(reach, stage_macs, strict=True))
    return {"top1": correct, "macs": macs, "reach_last": reach[-1]}


def pareto_auc(rel_macs: Sequence[float], accuracy: Sequence[float], low: float = 0.125, high: float = 1.0) -> float:
    """Mean accuracy of the Pareto front over relative MACs in [low, high] (our scoring rule, spec §2.6).

    The front is the best accuracy reachable at or below each cost, linearly interpolated between measured points
    and held constant beyond them; its average over a fine grid of [low, high] is returned.
    """
    order = np.argsort(np.asarray(rel_macs, dtype=float))
    xs = np.asarray(rel_macs, dtype=float)[order]
    ys = np.maximum.accumulate(np.asarray(accuracy, dtype=float)[order])
    grid = np.linspace(low, high, 513)
    return float(np.interp(grid, xs, ys).mean())
