"""Deterministic index splits: random, stratified, and stratified subsets.

Every function takes an explicit ``seed`` and uses its own ``torch.Generator``, so results never depend on the global
RNG state and are identical across runs and machines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from frugalvision.errors import DataError
from frugalvision.seeding import derive_seed

__all__ = ["derive_seed", "split_indices", "stratified_split", "stratified_subset", "train_val_indices"]

_EPS = 1e-9


def _generator(seed: int) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return gen


def _check_fractions(fractions: Sequence[float]) -> list[float]:
    fracs = [float(f) for f in fractions]
    if not fracs:
        raise DataError("split fractions are empty; fix: pass at least one fraction, e.g. (0.8, 0.2)")
    if any(f < 0 or not math.isfinite(f) for f in fracs):
        raise DataError(f"split fractions {fracs} contain a negative or non-finite value; fix: use values in [0, 1]")
    if sum(fracs) > 1 + 1e-6:
        raise DataError(f"split fractions {fracs} sum to {sum(fracs):.6g} > 1; fix: make them sum to at most 1")
    return fracs


def _counts(n: int, fracs: list[float]) -> list[int]:
    counts = [int(math.floor(n * f + _EPS)) for f in fracs]
    if abs(sum(fracs) - 1.0) <= 1e-6:  # a full partition: the rounding remainder goes to the last part
        counts[-1] = n - sum(counts[:-1])
    return counts


def _as_labels(labels: torch.Tensor | Sequence[int]) -> torch.Tensor:
    lab = torch.as_tensor(labels)
    if lab.ndim != 1:
        raise DataError(f"labels must be a 1-D sequence, got shape {tuple(lab.shape)}; fix: pass one label per item")
    if lab.dtype.is_floating_point or lab.dtype == torch.bool:
        raise DataError(f"labels must be integers, got dtype {lab.dtype}; fix: pass integer class indices")
    return lab.long()


def split_indices(n: int, fractions: Sequence[float], seed: int) -> list[torch.Tensor]:
    """Randomly partition ``range(n)`` into disjoint parts with the given fractions.

    Part ``i`` gets ``floor(n * fractions[i])`` indices; when the fractions sum to 1 the last part also takes the
    rounding remainder, so the parts cover every index. Indices inside each part are sorted.

    Args:
        n: Number of items.
        fractions: Fraction per part; must be non-negative and sum to at most 1.
        seed: Seed of the permutation.

    Returns:
        One sorted int64 index tensor per fraction.

    Raises:
        DataError: If ``n`` is negative or the fractions are invalid.

    """
    if n < 0:
        raise DataError(f"cannot split {n} items; fix: pass a non-negative item count")
    fracs = _check_fractions(fractions)
    perm = torch.randperm(n, generator=_generator(seed))
    parts, start = [], 0
    for count in _counts(n, fracs):
        parts.append(perm[start : start + count].sort().values)
        start += count
    return parts


def stratified_split(labels: torch.Tensor | Sequence[int], fractions: Sequence[float], seed: int) -> list[torch.Tensor]:
    """Partition indices so that every part keeps the class proportions of ``labels``.

    Each class is split separately with :func:`split_indices` (seeded per class), then the parts are merged.

    Args:
        labels: Integer class label per item.
        fractions: Fraction per part; must be non-negative and sum to at most 1.
        seed: Base seed.

    Returns:
        One sorted int64 index tensor per fraction.

    Raises:
        DataError: If the labels or fractions are invalid.

    """
    lab = _as_labels(labels)
    fracs = _check_fractions(fractions)
    parts: list[list[torch.Tensor]] = [[] for _ in fracs]
    for cls in torch.unique(lab).tolist():
        members = torch.nonzero(lab == cls).flatten()
        for i, local in enumerate(split_indices(len(members), fracs, derive_seed(seed, "class", cls))):
            parts[i].append(members[local])
    return [torch.cat(p).sort().values if p else torch.empty(0, dtype=torch.long) for p in parts]


def stratified_subset(
    labels: torch.Tensor | Sequence[int],
    per_class: int | None = None,
    *,
    total: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Pick a class-balanced random subset of indices.

    Give exactly one of ``per_class`` (that many items of every class) or ``total`` (that many items overall,
    allocated in proportion to class frequencies with largest-remainder rounding).

    Args:
        labels: Integer class label per item.
        per_class: Items to keep per class.
        total: Items to keep overall.
        seed: Base seed.

    Returns:
        Sorted int64 indices of the subset.

    Raises:
        DataError: If both or neither size is given, or a class has too few items.

    """
    lab = _as_labels(labels)
    if (per_class is None) == (total is None):
        raise DataError("stratified_subset needs exactly one of per_class or total; fix: pass one of them")
    classes = torch.unique(lab).tolist()
    members = {c: torch.nonzero(lab == c).flatten() for c in classes}
    if per_class is not None:
        if per_class < 0:
            raise DataError(f"per_class={per_class} is negative; fix: pass a count >= 0")
        short = [c for c in classes if len(members[c]) < per_class]
        if short:
            c = short[0]
            raise DataError(
                f"class {c} has only {len(members[c])} items, fewer than per_class={per_class}; fix: lower per_class"
            )
        want = {c: per_class for c in classes}
    else:
        assert total is not None
        if not 0 <= total <= len(lab):
            raise DataError(f"total={total} is outside [0, {len(lab)}]; fix: pass a count no larger than the data")
        exact = {c: total * len(members[c]) / max(len(lab), 1) for c in classes}
        want = {c: int(math.floor(v + _EPS)) for c, v in exact.items()}
        by_remainder = sorted(classes, key=lambda c: (-(exact[c] - want[c]), c))
        for c in by_remainder[: total - sum(want.values())]:
            want[c] += 1
    chosen = []
    for c in classes:
        perm = torch.randperm(len(members[c]), generator=_generator(derive_seed(seed, "subset", c)))
        chosen.append(members[c][perm[: want[c]]])
    return torch.cat(chosen).sort().values if chosen else torch.empty(0, dtype=torch.long)


def train_val_indices(
    labels: torch.Tensor | Sequence[int], train_size: int, val_size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint, class-stratified training and validation indices drawn from one labelled file.

    Validation takes at most a fifth of the file and training at most the rest; both keep the class proportions.

    Args:
        labels: Integer class label per item of the file.
        train_size: Wanted training items.
        val_size: Wanted validation items (0: none).
        seed: Base seed.

    Returns:
        ``(train indices, validation indices)``, each sorted.
    """
    lab = _as_labels(labels)
    val_size = min(val_size, len(lab) // 5)
    train_size = min(train_size, len(lab) - val_size)
    picked = stratified_subset(lab, total=train_size + val_size, seed=seed)
    if val_size == 0:
        return picked, picked[:0]
    fractions = [train_size / len(picked), val_size / len(picked)]
    train_part, val_part = stratified_split(lab[picked], fractions, seed=seed)
    return picked[train_part], picked[val_part]
