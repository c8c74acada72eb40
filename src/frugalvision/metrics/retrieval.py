"""Cross-modal retrieval metrics: recall at K (R@K) and median rank (medR) from a paired similarity matrix.

Conventions used throughout:

* ``sim[i, j]`` is the similarity between item ``i`` of modality A (the *row* modality) and item ``j`` of modality B
  (the *column* modality); item ``i`` of A and item ``i`` of B are a matching pair, so the diagonal holds the
  positives.
* A query's rank is 1-based: ``rank = 1 + #{j : sim[i, j] > sim[i, i]}``. Ties are counted in the query's favour
  (optimistic): only *strictly* greater scores push the positive down.
* ``R@K`` is the fraction (in ``[0, 1]``, not percent) of queries whose rank is ``<= K``.
* ``medR`` is the median rank with ``numpy.median`` semantics: for an even number of queries it is the average of
  the two middle ranks (so it can end in ``.5``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from frugalvision.errors import ConfigError, DataError
from frugalvision.metrics._checks import as_tensor, check_positive_int

__all__ = ["bagged_retrieval", "bidirectional_retrieval", "retrieval_metrics", "retrieval_ranks"]


def _check_sim(sim: object) -> Tensor:
    sim_t = as_tensor(sim, "sim")
    if sim_t.ndim != 2 or sim_t.shape[0] != sim_t.shape[1] or sim_t.shape[0] == 0:
        raise DataError(
            f"sim must be a non-empty square [N, N] similarity matrix with the matching pairs on the diagonal"
            f" (got shape {tuple(sim_t.shape)})"
        )
    if not sim_t.is_floating_point():
        sim_t = sim_t.double()
    # one reduction: a NaN or inf anywhere makes the sum non-finite; only then (or on overflow) check every entry
    if not torch.isfinite(sim_t.sum()) and not torch.isfinite(sim_t).all():
        raise DataError("sim contains NaN or inf; check the embeddings (e.g. a zero vector before normalisation)")
    return sim_t


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    if isinstance(ks, int):
        ks = (ks,)
    ks = tuple(ks)
    if not ks:
        raise ConfigError("ks is empty; pass at least one K, e.g. ks=(1, 5, 10)")
    for k in ks:
        check_positive_int(k, "each K in ks")
    return ks


def retrieval_ranks(sim: Tensor) -> Tensor:
    """1-based rank of the matching item (the diagonal) for each query row.

    Args:
        sim: Similarities of shape ``[N, N]``; ``sim[i, j]`` scores query ``i`` against candidate ``j`` and
            ``sim[i, i]`` is the positive.

    Returns:
        Long tensor ``[N]`` with ``rank_i = 1 + #{j : sim[i, j] > sim[i, i]}`` (ties count in the query's favour).

    """
    return _row_ranks(_check_sim(sim))


def _row_ranks(sim: Tensor) -> Tensor:
    """Ranks of the row queries of a checked matrix."""
    return 1 + (sim > sim.diagonal().unsqueeze(1)).sum(dim=1)


def _column_ranks(sim: Tensor) -> Tensor:
    """Ranks of the column queries (those of ``sim.T``), without transposing (see :func:`_ranks_both_ways`)."""
    return _ranks_both_ways(sim)[1]


#: entries per block of rows compared at once by :func:`_ranks_both_ways` (a few MB of booleans: stays in cache)
RANK_BLOCK_ELEMENTS = 1 << 22


def _ranks_both_ways(sim: Tensor, block_elements: int = RANK_BLOCK_ELEMENTS) -> tuple[Tensor, Tensor]:
    """Ranks of the row queries and of the column queries in one pass over blocks of rows.

    Column ``j``'s rank counts the rows ``i`` with ``sim[i, j] > sim[j, j]``: each block of rows is compared once with
    the diagonal as a row vector (column counts, summed over the block) and once with its own diagonal entries as a
    column (row counts), into a reused boolean buffer. No transposed copy and no N x N temporary: on a 10k x 10k
    matrix this is about 1.5x faster than comparing the whole matrix and a contiguous copy of its transpose.
    """
    n = sim.shape[0]
    diagonal = sim.diagonal()
    block = max(1, min(n, block_elements // n))
    rows = torch.empty(n, dtype=torch.long, device=sim.device)
    columns = torch.zeros(n, dtype=torch.int64 if n >= 2**31 else torch.int32, device=sim.device)
    buffer = torch.empty((block, n), dtype=torch.bool, device=sim.device)
    for start in range(0, n, block):
        part = sim[start : start + block]
        above = buffer[: part.shape[0]]
        torch.gt(part, diagonal, out=above)
        columns += above.sum(0, dtype=columns.dtype)
        torch.gt(part, diagonal[start : start + block].unsqueeze(1), out=above)
        rows[start : start + block] = above.sum(1)
    return 1 + rows, 1 + columns.long()


def _metrics_from_ranks(ranks: Tensor, ks: tuple[int, ...]) -> dict[str, float]:
    ranks_np = ranks.cpu().numpy()
    out = {f"R@{k}": float((ranks_np <= k).mean()) for k in ks}
    out["medR"] = float(np.median(ranks_np))
    return out


def retrieval_metrics(sim: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """R@K and medR with the rows of ``sim`` as queries and its columns as candidates.

    Args:
        sim: Similarities of shape ``[N, N]`` with the positives on the diagonal.
        ks: Cut-offs K for ``R@K``.

    Returns:
        ``{"R@1": ..., "R@5": ..., "R@10": ..., "medR": ...}``; R@K is a fraction in ``[0, 1]``, medR the
        ``numpy.median`` of the ranks.

    """
    ks_t = _check_ks(ks)
    return _metrics_from_ranks(retrieval_ranks(sim), ks_t)


def bidirectional_retrieval(
    sim: Tensor, ks: Sequence[int] = (1, 5, 10), names: tuple[str, str] = ("a2b", "b2a")
) -> dict[str, dict[str, float]]:
    """R@K and medR in both directions of a paired similarity matrix.

    With ``sim[i, j] = similarity(A_i, B_j)``:

    * ``names[0]`` (default ``"a2b"``) uses the **rows**: query ``A_i`` retrieves among all ``B_j``.
    * ``names[1]`` (default ``"b2a"``) uses the **columns** (``sim.T``): query ``B_j`` retrieves among all ``A_i``.

    For T-Food, ``bidirectional_retrieval(sim[image, recipe], names=("image_to_recipe", "recipe_to_image"))``.

    Args:
        sim: Similarities of shape ``[N, N]`` with the positives on the diagonal.
        ks: Cut-offs K for ``R@K``.
        names: Keys of the row-query and the column-query results, in that order.

    Returns:
        ``{names[0]: retrieval_metrics(sim), names[1]: retrieval_metrics(sim.T)}``.

    """
    if len(names) != 2 or names[0] == names[1]:
        raise ConfigError(f"names must be two distinct keys (row queries, column queries); got {names!r}")
    sim_t, ks_t = _check_sim(sim), _check_ks(ks)  # one finiteness check, both directions in one blocked pass
    row_ranks, column_ranks = _ranks_both_ways(sim_t)
    return {names[0]: _metrics_from_ranks(row_ranks, ks_t), names[1]: _metrics_from_ranks(column_ranks, ks_t)}


def bagged_retrieval(
    img_emb: Tensor,
    txt_emb: Tensor,
    bag_size: int = 1000,
    n_bags: int = 10,
    seed: int = 0,
    ks: Sequence[int] = (1, 5, 10),
    names: tuple[str, str] = ("image_to_text", "text_to_image"),
    with_std: bool = False,
) -> dict[str, dict[str, float]]:
    """Recipe1M-style bagged evaluation (the 1k / 10k protocol): metrics averaged over random subsets.

    Draws ``n_bags`` random subsets of ``bag_size`` pairs (without replacement within a bag, independently across
    bags, from ``torch.Generator().manual_seed(seed)``), computes the cosine similarity
    ``sim[i, j] = cos(img_emb_i, txt_emb_j)`` inside each bag and averages every metric (R@K and medR) over the bags.

    Args:
        img_emb: Embeddings of modality A, shape ``[N, D]``; row ``i`` pairs with ``txt_emb[i]``.
        txt_emb: Embeddings of modality B, shape ``[N, D]``.
        bag_size: Pairs per bag (1000 or 10000 in the Recipe1M protocol); must be ``<= N``.
        n_bags: Number of bags.
        seed: Seed of the bag sampling.
        ks: Cut-offs K for ``R@K``.
        names: Keys for the ``img -> txt`` (row) and ``txt -> img`` (column) directions, as in
            :func:`bidirectional_retrieval`; e.g. ``("image_to_recipe", "recipe_to_image")``.
        with_std: also return each metric's standard deviation over the bags as ``"<metric>_std"`` (ddof 1; 0 for
            one bag).

    Returns:
        ``{names[0]: {"R@1", ..., "medR"}, names[1]: {...}}``, each value the mean over bags.

    """
    img = as_tensor(img_emb, "img_emb")
    txt = as_tensor(txt_emb, "txt_emb")
    if img.ndim != 2 or txt.ndim != 2 or img.shape != txt.shape:
        raise DataError(
            f"img_emb and txt_emb must be paired [N, D] tensors of the same shape (got {tuple(img.shape)} and"
            f" {tuple(txt.shape)})"
        )
    check_positive_int(bag_size, "bag_size")
    check_positive_int(n_bags, "n_bags")
    ks_t = _check_ks(ks)
    n = img.shape[0]
    if n < bag_size:
        raise ConfigError(f"bag_size={bag_size} exceeds the number of pairs N={n}; pass bag_size <= {n}")
    img = F.normalize(img.float(), dim=1)
    txt = F.normalize(txt.to(img.device).float(), dim=1)
    gen = torch.Generator().manual_seed(int(seed))
    per_bag: dict[str, dict[str, list[float]]] = {}
    for _ in range(n_bags):
        idx = torch.randperm(n, generator=gen)[:bag_size].to(img.device)
        bag = bidirectional_retrieval(img[idx] @ txt[idx].T, ks_t, names)
        for direction, metrics in bag.items():
            acc = per_bag.setdefault(direction, {key: [] for key in metrics})
            for key, value in metrics.items():
                acc[key].append(value)
    out: dict[str, dict[str, float]] = {}
    for direction, metrics in per_bag.items():
        out[direction] = {key: float(np.mean(values)) for key, values in metrics.items()}
        if with_std:
            out[direction] |= {
                f"{key}_std": float(np.std(values, ddof=1)) if n_bags > 1 else 0.0 for key, values in metrics.items()
            }
    return out
