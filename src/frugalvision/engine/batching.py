"""Batched fetching for in-memory datasets: one indexing call per batch instead of one ``__getitem__`` per sample.

A DataLoader over an in-memory dataset calls ``__getitem__`` once per sample and then stacks the samples
(``default_collate``); on a tiny model that costs more than the step itself. A dataset that can return a whole
collated batch at once declares it with a ``fetch_batch(indices)`` method returning exactly what
``default_collate([dataset[i] for i in indices])`` returns (same values, dtypes and container: a tuple sample
collates to a list). :func:`batch_fetcher` finds that method, and also knows ``torch.utils.data.TensorDataset`` and
``Subset``s of either; the engine then bypasses the DataLoader when no collate function and no worker processes are
asked for. The batches, and hence the weights, are bitwise those of the DataLoader path (tested).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

__all__ = ["BatchFetcher", "batch_fetcher", "fetched_batches"]

BatchFetcher = Callable[[Sequence[int] | torch.Tensor], Any]


def batch_fetcher(dataset: Dataset) -> BatchFetcher | None:
    """Return ``fetch(indices) -> collated batch`` for a dataset that supports it, else None.

    Supported: any dataset with a ``fetch_batch(indices)`` method (e.g. :class:`frugalvision.data.ArrayDataset`),
    ``TensorDataset``, and ``Subset`` of a supported dataset.
    """
    fetch = getattr(dataset, "fetch_batch", None)
    if callable(fetch):
        return fetch
    if type(dataset) is TensorDataset:
        tensors = dataset.tensors

        def fetch_tensors(indices: Sequence[int] | torch.Tensor) -> list[torch.Tensor]:
            index = torch.as_tensor(indices, dtype=torch.long)
            return [tensor[index] for tensor in tensors]

        return fetch_tensors
    if type(dataset) is Subset:
        inner = batch_fetcher(dataset.dataset)
        if inner is None:
            return None
        mapping = torch.as_tensor(dataset.indices, dtype=torch.long)
        return lambda indices: inner(mapping[torch.as_tensor(indices, dtype=torch.long)])
    return None


def fetched_batches(
    fetch: BatchFetcher, batches: Iterator[Sequence[int] | torch.Tensor] | Sequence[Sequence[int]]
) -> Iterator[Any]:
    """Yield ``fetch(indices)`` for each index list (or int64 tensor) of ``batches``."""
    for indices in batches:
        yield fetch(indices)
