"""Reproducible DataLoaders: a seeded generator for the shuffle order and seeded workers."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from frugalvision.errors import DataError

__all__ = ["default_num_workers", "make_loader", "seed_worker"]


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - macOS / Windows
        return os.cpu_count() or 1


def default_num_workers() -> int:
    """Loader worker processes suited to this machine.

    ``$FRUGALVISION_NUM_WORKERS`` wins when set; otherwise 0 (load in the main process) on machines with at most 2
    usable cores, where in-memory data gains nothing from workers, else ``min(8, cores // 2)``.
    """
    env = os.environ.get("FRUGALVISION_NUM_WORKERS", "").strip()
    if env:
        if not env.isdigit():
            raise DataError(f"FRUGALVISION_NUM_WORKERS={env!r} is not a count; fix: set it to an integer >= 0")
        return int(env)
    cores = _cpu_count()
    return 0 if cores <= 2 else min(8, cores // 2)


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn`` that seeds ``random`` and NumPy from the worker's torch seed.

    PyTorch already gives each worker the torch seed ``base_seed + worker_id``, where ``base_seed`` comes from the
    loader's generator; this extends it to the other RNGs a transform may use.
    """
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    num_workers: int | None = None,
    drop_last: bool = False,
    pin_memory: bool = False,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> DataLoader:
    """Build a DataLoader whose order and worker randomness depend only on ``seed``.

    Two loaders built with the same arguments yield the same batches in the same order, epoch after epoch. An
    in-memory dataset that can fetch a whole batch at once (``fetch_batch``, e.g. :class:`ArrayDataset`, or a
    ``TensorDataset``; see :func:`frugalvision.engine.batching.batch_fetcher`) is read one batch per indexing call
    when no ``collate_fn`` is given: the same batches, in the same order, without one ``__getitem__`` per sample.

    Args:
        dataset: Map-style dataset.
        batch_size: Items per batch.
        shuffle: Shuffle every epoch (with the seeded generator).
        seed: Seed of the shuffle order and of the workers' RNGs.
        num_workers: Worker processes; ``None`` uses :func:`default_num_workers`.
        drop_last: Drop the last incomplete batch.
        pin_memory: Pin batches in page-locked memory (for GPU training).
        collate_fn: Optional custom collate function.

    Returns:
        The DataLoader.

    Raises:
        DataError: If ``batch_size`` or ``num_workers`` is invalid.

    """
    if batch_size < 1:
        raise DataError(f"batch_size={batch_size} must be >= 1; fix: pass a positive batch size")
    workers = default_num_workers() if num_workers is None else num_workers
    if workers < 0:
        raise DataError(f"num_workers={workers} must be >= 0; fix: pass 0 to load in the main process")
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    fetch = _batch_fetcher(dataset) if collate_fn is None else None
    if fetch is not None:
        order = RandomSampler(dataset, generator=gen) if shuffle else SequentialSampler(dataset)  # type: ignore[arg-type]
        return DataLoader(
            _BatchView(dataset, fetch),
            sampler=BatchSampler(order, batch_size, drop_last),
            batch_size=None,
            num_workers=workers,
            generator=gen,
            worker_init_fn=seed_worker,
            pin_memory=pin_memory,
            persistent_workers=workers > 0,
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        num_workers=workers,
        generator=gen,
        worker_init_fn=seed_worker,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        collate_fn=collate_fn,
    )


def _batch_fetcher(dataset: Dataset) -> Callable[[list[int]], Any] | None:
    from frugalvision.engine.batching import batch_fetcher  # torch only: no Lightning

    return batch_fetcher(dataset)


class _BatchView(Dataset):
    """A dataset whose item ``[i, j, ...]`` is the collated batch of those indices (for ``batch_size=None``)."""

    def __init__(self, dataset: Dataset, fetch: Callable[[list[int]], Any]) -> None:
        self.dataset = dataset
        self.fetch = fetch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, indices: list[int]) -> Any:
        return self.fetch(indices)
