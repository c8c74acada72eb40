"""Seeded N-labels-per-class splits, named and saved as the FixMatch / Mean Teacher code names them.

``labeled_split(labels, per_class=25, seed=1)`` picks ``per_class`` images of every class (FixMatch's
``cifar10.1@250``: seed 1, 250 labels); the rest is the unlabeled pool. The labeled indices are written to a
``labeled.json`` file so a run can be replayed, and read back with checks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from frugalvision.data.splits import stratified_subset
from frugalvision.errors import DataError
from frugalvision.seeding import derive_seed

__all__ = ["LabeledSplit", "labeled_split", "read_labeled_json", "split_name", "write_labeled_json"]


@dataclass(frozen=True)
class LabeledSplit:
    """A labeled / unlabeled partition of one training set.

    Attributes:
        labeled: sorted indices of the labeled images (``per_class`` of each class).
        unlabeled: sorted indices of the other images (FixMatch also feeds the labeled images as unlabeled: pass
            ``unlabeled_includes_labeled=True``).
        per_class: labels per class.
        seed: seed of the draw.
    """

    labeled: torch.Tensor
    unlabeled: torch.Tensor
    per_class: int
    seed: int


def labeled_split(
    labels: torch.Tensor | Sequence[int], per_class: int, seed: int, unlabeled_includes_labeled: bool = False
) -> LabeledSplit:
    """Draw ``per_class`` labeled images of every class with ``seed``; the others are unlabeled.

    Raises:
        DataError: a class has fewer than ``per_class`` images, or ``per_class < 1``.
    """
    if per_class < 1:
        raise DataError(f"per_class={per_class} is invalid; use at least 1 label per class")
    labels = torch.as_tensor(labels).long()
    labeled = stratified_subset(labels, per_class=per_class, seed=derive_seed(seed, "labeled-split"))
    if unlabeled_includes_labeled:
        unlabeled = torch.arange(len(labels))
    else:
        keep = torch.ones(len(labels), dtype=torch.bool)
        keep[labeled] = False
        unlabeled = torch.nonzero(keep).flatten()
    return LabeledSplit(labeled, unlabeled, per_class, seed)


def split_name(dataset: str, num_classes: int, per_class: int, seed: int) -> str:
    """FixMatch's name of a split: ``<dataset>.<seed>@<total labels>``, e.g. ``cifar10.1@250``."""
    return f"{dataset}.{seed}@{per_class * num_classes}"


def write_labeled_json(path: str | Path, split: LabeledSplit, files: Sequence[str] | None = None) -> Path:
    """Write the labeled indices (and, for a folder dataset, their relative paths) to ``path``."""
    path = Path(path)
    document: dict[str, object] = {
        "per_class": split.per_class,
        "seed": split.seed,
        "labeled": [int(i) for i in split.labeled],
    }
    if files is not None:
        document["files"] = [files[int(i)] for i in split.labeled]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1) + "\n")
    return path


def read_labeled_json(path: str | Path, num_items: int) -> torch.Tensor:
    """The labeled indices stored in a ``labeled.json`` file, checked against the dataset size.

    Raises:
        DataError: the file is missing, not JSON, has no ``labeled`` list, or holds an index out of range.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text())
        indices = [int(i) for i in document["labeled"]]
    except FileNotFoundError:
        raise DataError(f"labeled split file {path} does not exist; fix: pass a run's labeled.json") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"labeled split file {path} is unreadable ({error}); fix: rewrite it with a run") from None
    bad = [i for i in indices if not 0 <= i < num_items]
    if bad:
        raise DataError(f"labeled split file {path} has index {bad[0]} outside [0, {num_items}); fix: use its dataset")
    return torch.tensor(sorted(set(indices)), dtype=torch.long)
