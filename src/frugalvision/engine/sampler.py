"""Deterministic, resumable, distributed batch sampling.

The order of each epoch is a pure function of (seed, epoch). Global batch ``k`` is the slice
``order[k * G : (k + 1) * G]`` with ``G = batch_size x world_size``, and rank ``r`` takes every world-th entry of it
starting at ``r``. Hence a run on N processes sees, step for step, the same samples as a single process with batch G,
and consecutive copies of an index (repeated augmentation) land on consecutive ranks, as in the DeiT code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Sampler

from frugalvision.engine.seeding import derive_seed

EpochOrder = Callable[[int, int], torch.Tensor]


def shuffled_order(num_samples: int, seed: int) -> EpochOrder:
    """Return ``order(epoch, seed) -> permutation`` of ``range(num_samples)``, fixed by (seed, epoch)."""

    def order(epoch: int, base_seed: int = seed) -> torch.Tensor:
        generator = torch.Generator().manual_seed(derive_seed("epoch-order", base_seed, epoch))
        return torch.randperm(num_samples, generator=generator)

    return order


class GlobalBatchSampler(Sampler[list[int]]):
    """Yield this rank's share of each global batch, for one epoch, starting at any batch.

    Args:
        num_samples: dataset length (used when ``order`` is None).
        batch_size: per-rank batch size.
        seed: base seed of the epoch order.
        rank: this process's global rank.
        world_size: number of processes.
        order: optional callable ``(epoch, seed) -> LongTensor`` giving the epoch's index order (e.g. repeated
            augmentation); defaults to a seeded permutation.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        order: EpochOrder | None = None,
    ) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.order = order or shuffled_order(num_samples, seed)
        self.epoch = 0
        self.start_batch = 0
        self._epoch_indices = self.order(0, seed)

    @property
    def global_batch_size(self) -> int:
        """Samples per step over all ranks."""
        return self.batch_size * self.world_size

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch and the first batch to yield (to resume mid-epoch)."""
        self.epoch = epoch
        self.start_batch = start_batch
        self._epoch_indices = self.order(epoch, self.seed)

    def __len__(self) -> int:
        return len(self._epoch_indices) // self.global_batch_size - self.start_batch

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.index_batches():
            yield batch.tolist()

    def index_batches(self) -> Iterator[torch.Tensor]:
        """This rank's batches of the epoch as int64 index tensors (what ``__iter__`` yields as lists)."""
        indices = torch.as_tensor(self._epoch_indices, dtype=torch.long)
        global_batch = self.global_batch_size
        for batch in range(self.start_batch, len(indices) // global_batch):
            chunk = indices[batch * global_batch : (batch + 1) * global_batch]
            yield chunk[self.rank :: self.world_size]
