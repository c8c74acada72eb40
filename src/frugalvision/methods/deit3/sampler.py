"""Repeated augmentation (RA) as an epoch order for the engine's :class:`GlobalBatchSampler`.

The official ``RASampler`` shuffles, repeats every index ``repeats`` times consecutively, deals the list to the
ranks round-robin (consecutive copies land on consecutive ranks) and keeps ``floor(N / 256) * 256 / world`` entries
per rank. The engine's sampler already deals every global batch round-robin, so the same semantics are an epoch
order: the repeated list truncated to ``floor(N / 256) * 256`` entries. Unlike the official code (which silently
falls back to a plain sampler in single-process runs), this order is used at every world size, and the epoch is
the same list whatever the world size.
"""

from __future__ import annotations

import torch

from frugalvision.engine.sampler import EpochOrder
from frugalvision.engine.seeding import derive_seed


def ra_epoch_length(num_samples: int, round_to: int = 256) -> int:
    """Entries per RA epoch: ``floor(N / round_to) * round_to`` (``N`` when the data is smaller than ``round_to``)."""
    return num_samples // round_to * round_to or num_samples


def repeated_aug_order(num_samples: int, repeats: int = 3, round_to: int = 256, truncate: bool = True) -> EpochOrder:
    """Return ``order(epoch, seed)``: a seeded permutation with every index repeated ``repeats`` times in a row.

    Args:
        num_samples: dataset length N.
        repeats: copies of each index (1: a plain shuffle, still truncated as above).
        round_to: the epoch keeps ``floor(N / round_to) * round_to`` entries (official: 256).
        truncate: False keeps the whole expanded list (``repeats * N`` entries: longer epochs than the official).

    Returns:
        A callable the engine's sampler calls once per epoch; about ``N / repeats`` unique images per epoch.
    """
    length = ra_epoch_length(num_samples, round_to) if truncate else repeats * num_samples

    def order(epoch: int, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(derive_seed("ra-order", seed, epoch))
        perm = torch.randperm(num_samples, generator=generator)
        return perm.repeat_interleave(repeats)[:length]

    return order
