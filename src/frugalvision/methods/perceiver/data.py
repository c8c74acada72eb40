"""The experiment's image sets: offline sources in memory, or an ImageNet-style folder (``dataset="imagefolder"``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from frugalvision.data.arrays import ArrayDataset, ImageArrays
from frugalvision.data.cifar import load_cifar
from frugalvision.data.folders import ImageFolderDataset
from frugalvision.data.sources import available_default_source, load_source
from frugalvision.data.splits import stratified_subset, train_val_indices
from frugalvision.errors import ConfigError
from frugalvision.methods.perceiver.augment import randaugment_transform
from frugalvision.methods.perceiver.config import PerceiverRunConfig
from frugalvision.methods.perceiver.mosaic import majority_mosaics


class Split:
    """One labelled image set: a dataset to train on, its labels, and image batches in order."""

    def __init__(
        self,
        dataset: Dataset,
        labels: torch.Tensor,
        num_classes: int,
        image_shape: tuple[int, int, int],
        arrays: ImageArrays | None = None,
        num_workers: int = 0,
    ) -> None:
        self.dataset, self.labels, self.num_classes, self.image_shape = dataset, labels.long(), num_classes, image_shape
        self.arrays, self.num_workers = arrays, num_workers

    @classmethod
    def from_arrays(cls, arrays: ImageArrays, transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Split:
        """A split held in memory (``transform``: a training augmentation of each float image)."""
        return cls(ArrayDataset(arrays, transform), arrays.labels, arrays.num_classes, arrays.image_shape, arrays)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batches(self, batch_size: int = 250, limit: int | None = None) -> Iterator[torch.Tensor]:
        """Float image batches in order (the first ``limit`` images when given)."""
        count = len(self) if limit is None else min(limit, len(self))
        if self.arrays is not None:
            for start in range(0, count, batch_size):
                yield self.arrays.images[start : min(start + batch_size, count)].float().div_(255.0)
            return
        subset = Subset(self.dataset, range(count))
        for images, _ in DataLoader(subset, batch_size=batch_size, num_workers=self.num_workers):
            yield images

    def head(self, count: int) -> torch.Tensor:
        """The first ``count`` images as one tensor."""
        return torch.cat(list(self.batches(limit=count)))

    def subset(self, indices: Sequence[int]) -> Split:
        """The images at ``indices``."""
        index = list(indices)
        if self.arrays is not None:
            return Split.from_arrays(self.arrays.subset(index))
        return Split(
            Subset(self.dataset, index), self.labels[index], self.num_classes, self.image_shape, None, self.num_workers
        )


def train_augment(config: PerceiverRunConfig) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """RandAugment of the training images when ``randaugment_magnitude`` > 0 (paper column), else None."""
    if config.randaugment_magnitude <= 0 or config.randaugment_ops <= 0:
        return None
    return randaugment_transform(config.randaugment_ops, config.randaugment_magnitude)


def _folder_splits(config: PerceiverRunConfig, seed: int) -> tuple[Split, Split, Split, list[str]]:
    """ImageNet-style splits of ``data_root/{train,val}``: validation is a stratified hold-out of ``train/``.

    Returns the three splits and the corrupt files skipped (only with ``skip_bad_files``).
    """
    from torchvision import transforms

    if config.data_root is None:
        raise ConfigError("dataset='imagefolder' needs --data-root with train/ and val/ class folders")
    size = config.model.img_size
    to_tensor = transforms.ToTensor()
    augment = (
        [transforms.RandAugment(config.randaugment_ops, config.randaugment_magnitude)] if train_augment(config) else []
    )
    train_tf = transforms.Compose(
        [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(), *augment, to_tensor]
    )
    eval_tf = transforms.Compose([transforms.Resize(round(size * 256 / 224)), transforms.CenterCrop(size), to_tensor])
    root, skip = Path(config.data_root), config.skip_bad_files
    train_full = ImageFolderDataset(root / "train", train_tf, skip_bad_files=skip)
    train_eval = ImageFolderDataset(root / "train", eval_tf, classes=train_full.classes, skip_bad_files=skip)
    test_full = ImageFolderDataset(root / "val", eval_tf, classes=train_full.classes, skip_bad_files=skip)
    skipped = sorted({str(p) for d in (train_full, test_full) for p in d.skipped})
    labels = torch.tensor(train_full.targets)
    train_idx, val_idx = (i.tolist() for i in train_val_indices(labels, config.train_size, config.val_size, seed))
    test_labels = torch.tensor(test_full.targets)
    test_idx = stratified_subset(test_labels, total=min(config.test_size, len(test_labels)), seed=seed).tolist()
    shape, classes, workers = (3, size, size), train_full.num_classes, config.loop.num_workers
    return (
        Split(Subset(train_full, train_idx), labels[train_idx], classes, shape, num_workers=workers),
        Split(Subset(train_eval, val_idx), labels[val_idx], classes, shape, num_workers=workers),
        Split(Subset(test_full, test_idx), test_labels[test_idx], classes, shape, num_workers=workers),
        skipped,
    )


def _array_sources(config: PerceiverRunConfig) -> tuple[str, ImageArrays, ImageArrays]:
    """(source, train file, test file) of an in-memory dataset: CIFAR from ``data_root`` or an offline source."""
    if config.dataset in ("cifar10", "cifar100"):
        assert config.data_root is not None  # checked by validate()
        variant = config.dataset
        train = load_cifar(config.data_root, variant, train=True, allow_pickle=True)  # type: ignore[arg-type]
        return variant, train, load_cifar(config.data_root, variant, train=False, allow_pickle=True)  # type: ignore[arg-type]
    source = available_default_source(config.data_root) if config.dataset == "auto" else config.dataset
    return (
        source,
        load_source(source, root=config.data_root, train=True),
        load_source(source, root=config.data_root, train=False),
    )


class SeedData(NamedTuple):
    """One seed's data: the source actually used, the three splits, and the corrupt files skipped."""

    source: str
    train: Split
    val: Split
    test: Split
    skipped: list[str]


def load_data(config: PerceiverRunConfig, seed: int) -> SeedData:
    """One seed's data: disjoint stratified train/val subsets of the training file and a test subset.

    ``dataset``: an offline source ("auto", "fashion-mnist", ...), "cifar10"/"cifar100" (the official binary or
    Python release under ``data_root``, pickles read by a restricted unpickler) or "imagefolder" (ImageNet layout).
    ``task="majority"`` turns each in-memory split into majority-class mosaics of its own images.
    """
    if config.dataset == "imagefolder":
        train, val, test, skipped = _folder_splits(config, seed)
        return SeedData("imagefolder", train, val, test, skipped)
    source, train_full, test_full = _array_sources(config)
    train_idx, val_idx = train_val_indices(train_full.labels, config.train_size, config.val_size, seed)
    test_idx = stratified_subset(test_full.labels, total=min(config.test_size, len(test_full)), seed=seed)
    parts = [train_full.subset(train_idx), train_full.subset(val_idx), test_full.subset(test_idx)]
    if config.task == "majority":  # each split's mosaics are built from that split's own images
        sizes = (config.train_size, config.val_size, config.test_size)
        grid, item, planted = config.mosaic_grid, config.mosaic_item, config.mosaic_planted
        parts = [
            majority_mosaics(part, size, grid, item, planted, seed=1000 * seed + index)
            for index, (part, size) in enumerate(zip(parts, sizes, strict=True))
        ]
        source = parts[0].name
    train, val, test = parts
    return SeedData(
        source, Split.from_arrays(train, train_augment(config)), Split.from_arrays(val), Split.from_arrays(test), []
    )
