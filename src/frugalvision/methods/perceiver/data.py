"""The experiment's image sets: offline sources in memory, or an ImageNet-style folder (``dataset="imagefolder"``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from frugalvision.data.arrays import ArrayDataset, ImageArrays
from frugalvision.data.folders import ImageFolderDataset
from frugalvision.data.sources import available_default_source, load_source
from frugalvision.data.splits import stratified_subset, train_val_indices
from frugalvision.errors import ConfigError
from frugalvision.methods.perceiver.config import PerceiverRunConfig


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
    def from_arrays(cls, arrays: ImageArrays) -> Split:
        """A split held in memory."""
        return cls(ArrayDataset(arrays), arrays.labels, arrays.num_classes, arrays.image_shape, arrays)

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


def _folder_splits(config: PerceiverRunConfig, seed: int) -> tuple[Split, Split, Split]:
    """ImageNet-style splits of ``data_root/{train,val}``: validation is a stratified hold-out of ``train/``."""
    from torchvision import transforms

    if config.data_root is None:
        raise ConfigError("dataset='imagefolder' needs --data-root with train/ and val/ class folders")
    size = config.model.img_size
    to_tensor = transforms.ToTensor()
    train_tf = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(), to_tensor])
    eval_tf = transforms.Compose([transforms.Resize(round(size * 256 / 224)), transforms.CenterCrop(size), to_tensor])
    root = Path(config.data_root)
    train_full = ImageFolderDataset(root / "train", train_tf)
    train_eval = ImageFolderDataset(root / "train", eval_tf, classes=train_full.classes)
    test_full = ImageFolderDataset(root / "val", eval_tf, classes=train_full.classes)
    labels = torch.tensor(train_full.targets)
    train_idx, val_idx = (i.tolist() for i in train_val_indices(labels, config.train_size, config.val_size, seed))
    test_labels = torch.tensor(test_full.targets)
    test_idx = stratified_subset(test_labels, total=min(config.test_size, len(test_labels)), seed=seed).tolist()
    shape, classes, workers = (3, size, size), train_full.num_classes, config.loop.num_workers
    return (
        Split(Subset(train_full, train_idx), labels[train_idx], classes, shape, num_workers=workers),
        Split(Subset(train_eval, val_idx), labels[val_idx], classes, shape, num_workers=workers),
        Split(Subset(test_full, test_idx), test_labels[test_idx], classes, shape, num_workers=workers),
    )


def load_data(config: PerceiverRunConfig, seed: int) -> tuple[str, Split, Split, Split]:
    """(source, train, val, test) for one seed: disjoint stratified train/val subsets and a test subset."""
    if config.dataset == "imagefolder":
        return ("imagefolder", *_folder_splits(config, seed))
    source = available_default_source(config.data_root) if config.dataset == "auto" else config.dataset
    train_full = load_source(source, root=config.data_root, train=True)
    test_full = load_source(source, root=config.data_root, train=False)
    train_idx, val_idx = train_val_indices(train_full.labels, config.train_size, config.val_size, seed)
    test_idx = stratified_subset(test_full.labels, total=min(config.test_size, len(test_full)), seed=seed)
    return (
        source,
        Split.from_arrays(train_full.subset(train_idx)),
        Split.from_arrays(train_full.subset(val_idx)),
        Split.from_arrays(test_full.subset(test_idx)),
    )
