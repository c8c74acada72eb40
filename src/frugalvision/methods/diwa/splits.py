"""DomainBed protocol pieces: seeded per-domain 80/20 splits, one-batch-per-domain ordering, training-domain val."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import torch

from frugalvision.data.splits import split_indices
from frugalvision.engine.sampler import EpochOrder
from frugalvision.errors import ConfigError
from frugalvision.seeding import derive_seed

__all__ = ["DomainSplit", "domain_batch_order", "domain_splits", "exact_val", "training_domain_val"]


class DomainSplit:
    """The in (train) and out (validation) indices of one training domain.

    Attributes:
        domain: domain index.
        train: indices of the 80 % in-split.
        val: indices of the 20 % hold-out (out-split).
    """

    def __init__(self, domain: int, train: torch.Tensor, val: torch.Tensor) -> None:
        self.domain, self.train, self.val = domain, train, val


def domain_splits(sizes: Sequence[int], trial_seed: int, holdout_fraction: float = 0.2) -> list[DomainSplit]:
    """Split each domain into in/out parts, seeded by (trial seed, domain index) as in DomainBed.

    Args:
        sizes: number of examples of each training domain.
        trial_seed: data-split seed (DomainBed's ``trial_seed``); a new trial gives new splits.
        holdout_fraction: fraction of each domain held out for validation.

    Returns:
        One disjoint (train, val) split per domain, covering the domain.
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise ConfigError(f"holdout_fraction={holdout_fraction} must lie in (0, 1)")
    out = []
    for index, size in enumerate(sizes):
        fractions = (holdout_fraction, 1.0 - holdout_fraction)  # out-split = floor(n * fraction), as in DomainBed
        val, train = split_indices(size, fractions, derive_seed(trial_seed, "split", index))
        out.append(DomainSplit(index, train, val))
    return out


def domain_batch_order(sizes: Sequence[int], per_domain: int) -> EpochOrder:
    """Epoch order over the concatenated domains: one batch of ``per_domain`` from each domain per step.

    Every chunk of ``per_domain * D`` indices holds ``per_domain`` examples of each domain (DomainBed minibatch = one
    batch per training domain, concatenated).

    An "epoch" has as many batches as the largest domain needs; smaller domains are cycled with fresh permutations.
    Use it as ``Task.batch_order`` with ``loop.batch_size = per_domain * len(sizes)``.
    """
    if per_domain <= 0 or not sizes or min(sizes) <= 0:
        raise ConfigError(f"domain_batch_order needs per_domain > 0 and non-empty domains, got {per_domain}, {sizes}")
    offsets = torch.tensor([0, *list(sizes)]).cumsum(0)[:-1].tolist()
    batches = max(-(-size // per_domain) for size in sizes)

    def order(epoch: int, seed: int) -> torch.Tensor:
        columns = []
        for index, size in enumerate(sizes):
            generator = torch.Generator().manual_seed(derive_seed(seed, "domain-order", index, epoch))
            needed = batches * per_domain
            reps = -(-needed // size)
            perm = torch.cat([torch.randperm(size, generator=generator) for _ in range(reps)])[:needed]
            columns.append(perm.view(batches, per_domain) + offsets[index])
        return torch.cat(columns, dim=1).flatten()

    return order


def exact_val(correct_per_domain: Sequence[torch.Tensor]) -> tuple[Fraction, Fraction]:
    """Training-domain validation scores as exact fractions of the correct counts (see :func:`training_domain_val`)."""
    if not correct_per_domain:
        raise ConfigError("training_domain_val got no domains")
    counts = [(int(c.sum()), c.numel()) for c in correct_per_domain]
    if any(n == 0 for _, n in counts):
        raise ConfigError("a training domain has an empty hold-out split; raise holdout_fraction or the domain size")
    per_domain = sum(Fraction(k, n) for k, n in counts) / len(counts)
    return per_domain, Fraction(sum(k for k, _ in counts), sum(n for _, n in counts))


def training_domain_val(correct_per_domain: Sequence[torch.Tensor]) -> tuple[float, float]:
    """Training-domain validation scores from per-example correctness of each domain's hold-out split.

    Both are computed exactly from the correct counts (fractions) and rounded once to float64, so two runs with
    the same counts tie exactly, as in the official selection (float32 means broke such ties by rounding noise).

    Returns:
        (mean over domains of the per-domain accuracy — DomainBed's model-selection score,
        accuracy on the union of the hold-outs — the "val_merged" used by greedy selection).
    """
    per_domain, merged = exact_val(correct_per_domain)
    return float(per_domain), float(merged)
