"""Data for the SInGE experiments: the offline sources, the CIFAR-10 binary release and ImageNet (ImageFolder).

Every experiment sees its data as :class:`Splits`: a training set (with augmentation), the same training images with
the evaluation transform (calibration set D_c), a validation split held out of the training file (variant study) and
a test split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import Dataset, Subset, default_collate

from frugalvision.data.arrays import ArrayDataset, ImageArrays
from frugalvision.data.folders import ImageFolderDataset
from frugalvision.data.sources import available_default_source, load_source
from frugalvision.data.splits import stratified_subset, train_val_indices
from frugalvision.errors import DataError
from frugalvision.seeding import derive_seed

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_RECORD = 1 + 3 * 32 * 32


def load_cifar10_binary(root: str | Path, train: bool = True) -> ImageArrays:
    """Read the CIFAR-10 *binary* release (``data_batch_{1..5}.bin``, ``test_batch.bin``; never unpickles).

    Each record is one label byte followed by 3,072 bytes of channel-planar 32x32 RGB.
    """
    root = Path(root)
    folder = root / "cifar-10-batches-bin" if (root / "cifar-10-batches-bin").is_dir() else root
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if train else ["test_batch.bin"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DataError(
            f"CIFAR-10 binary files {missing} not found under {folder}; fix: pass --data-root to the "
            "extracted cifar-10-binary.tar.gz (the pickled Python release is not read)"
        )
    raw = np.concatenate([np.fromfile(folder / n, dtype=np.uint8) for n in names])
    if raw.size % _RECORD:
        raise DataError(f"CIFAR-10 files under {folder} are truncated ({raw.size} bytes); re-extract them")
    records = raw.reshape(-1, _RECORD)
    images = torch.from_numpy(records[:, 1:].reshape(-1, 3, 32, 32).copy())
    labels = torch.from_numpy(records[:, 0].astype(np.int64))
    return ImageArrays(images, labels, CIFAR10_CLASSES, "cifar10")


def load_split(dataset: str, root: str | None, train: bool) -> tuple[str, ImageArrays]:
    """(source name, split) for "auto", a registered source name, or "cifar10" (binary release under ``root``)."""
    if dataset == "cifar10":
        if root is None:
            raise DataError("dataset=cifar10 needs --data-root pointing at the CIFAR-10 binary release")
        return "cifar10", load_cifar10_binary(root, train)
    source = available_default_source(root) if dataset == "auto" else dataset
    return source, load_source(source, root=root, train=train)


class Batch(tuple):
    """An (images, labels) pair that is already a batch (what :meth:`TensorImages.__getitems__` returns)."""


def collate_batches(items: Any) -> Any:
    """Collate for the loaders of this method: a :class:`Batch` passes through, a list of samples is stacked."""
    return tuple(items) if isinstance(items, Batch) else default_collate(items)


class TensorImages(Dataset):
    """An in-memory image set as one float tensor in [0, 1], read a whole batch at a time.

    PyTorch's DataLoader calls ``__getitems__`` with the batch's indices, so a batch is one tensor index instead of
    one Python call per image (pair it with :func:`collate_batches`). ``dataset[i]`` gives what ``ArrayDataset``
    gives.

    Args:
        arrays: the images (uint8) and labels.
    """

    def __init__(self, arrays: ImageArrays) -> None:
        self.images = arrays.images.float().div_(255.0)
        self.labels = arrays.labels.long()
        self.classes = list(arrays.classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index], int(self.labels[index])

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return Batch((self.images[index], self.labels[index]))

    @property
    def targets(self) -> Tensor:
        """Labels of all items."""
        return self.labels


def augment_crop_flip(image: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Random crop with 4-pixel zero padding and a random horizontal flip of one [C, H, W] image."""
    _, h, w = image.shape
    padded = torch.nn.functional.pad(image, (4, 4, 4, 4))
    top, left = torch.randint(0, 9, (2,), generator=generator).tolist()
    out = padded[:, top : top + h, left : left + w]
    return out.flip(-1) if torch.rand((), generator=generator) < 0.5 else out


class _Augmented(Dataset):
    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image, label = self.base[index]
        return augment_crop_flip(image), label


@dataclass
class Splits:
    """The data of one seed.

    Attributes:
        source: dataset name.
        train: training set (with the training augmentation, if any).
        calib: the training images with the evaluation transform (the calibration set is drawn from it).
        val: validation split held out of the training file (None when ``val_size`` is 0).
        test: test split (ImageNet: the official validation folder).
        image_shape: [C, H, W] of the model input.
        num_classes: number of classes.
        fingerprint: a cheap checksum of the training labels (dense-model cache key).
    """

    source: str
    train: Dataset
    calib: Dataset
    val: Dataset | None
    test: Dataset
    image_shape: tuple[int, int, int]
    num_classes: int
    fingerprint: int


def _resize(arrays: ImageArrays, size: int) -> ImageArrays:
    if size <= 0 or arrays.image_shape[1:] == (size, size):
        return arrays
    images = F.interpolate(arrays.images.float(), size=(size, size), mode="area").round().clamp(0, 255)
    return ImageArrays(images.to(torch.uint8), arrays.labels, arrays.classes, arrays.name)


def array_splits(
    dataset: str,
    root: str | None,
    train_size: int,
    val_size: int,
    test_size: int,
    seed: int,
    augment: bool = False,
    image_size: int = 0,
) -> Splits:
    """Splits of an in-memory source (Fashion-MNIST, digits, CIFAR-10 binary), optionally resized (area)."""
    source, train_full = load_split(dataset, root, True)
    _, test_full = load_split(dataset, root, False)
    train_idx, val_idx = train_val_indices(train_full.labels, train_size, val_size, seed)
    test_idx = stratified_subset(test_full.labels, total=min(test_size, len(test_full)), seed=seed)
    train = _resize(train_full.subset(train_idx), image_size)
    val = _resize(train_full.subset(val_idx), image_size) if len(val_idx) else None
    test = _resize(test_full.subset(test_idx), image_size)
    plain = TensorImages(train)
    return Splits(
        source,
        _Augmented(ArrayDataset(train)) if augment else plain,
        plain,
        TensorImages(val) if val else None,
        TensorImages(test),
        train.image_shape,
        train.num_classes,
        int(train.labels[:64].sum()),
    )


def imagenet_transforms(image_size: int = 224, resize_size: int = 256) -> tuple[Callable, Callable]:
    """Standard ImageNet transforms: (RandomResizedCrop + flip, Resize + CenterCrop), both normalised."""
    from torchvision import transforms as tv

    normalize = [tv.ToTensor(), tv.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    train = tv.Compose([tv.RandomResizedCrop(image_size), tv.RandomHorizontalFlip(), *normalize])
    evaluation = tv.Compose([tv.Resize(resize_size), tv.CenterCrop(image_size), *normalize])
    return train, evaluation


def imagefolder_splits(
    root: str | Path,
    train_size: int,
    val_size: int,
    test_size: int,
    seed: int,
    image_size: int = 224,
    resize_size: int = 256,
    skip_bad_files: bool = False,
) -> Splits:
    """ImageNet-style splits from ``root/train/<class>/*`` and ``root/val/<class>/*`` (the test split).

    Raises:
        DataError: ``root/train`` or ``root/val`` is missing.
    """
    root = Path(root)
    for part in ("train", "val"):
        if not (root / part).is_dir():
            raise DataError(
                f"{root / part} not found; fix: --data-root must hold train/<wnid>/ and val/<wnid>/ "
                "(validation images sorted into class folders)"
            )
    train_tf, eval_tf = imagenet_transforms(image_size, resize_size)
    train_full = ImageFolderDataset(root / "train", train_tf, skip_bad_files=skip_bad_files)
    test_full = ImageFolderDataset(root / "val", eval_tf, skip_bad_files=skip_bad_files, classes=train_full.classes)
    labels = torch.as_tensor(train_full.targets, dtype=torch.long)
    train_idx, val_idx = train_val_indices(labels, train_size, val_size, seed)
    test_labels = torch.as_tensor(test_full.targets, dtype=torch.long)
    if test_size >= len(test_full):
        test_idx = torch.arange(len(test_full))
    else:
        test_idx = stratified_subset(test_labels, total=test_size, seed=seed)
    evaluation = train_full.with_transform(eval_tf)
    val = Subset(evaluation, val_idx.tolist()) if len(val_idx) else None
    return Splits(
        "imagenet",
        Subset(train_full, train_idx.tolist()),
        Subset(evaluation, train_idx.tolist()),
        val,
        Subset(test_full, test_idx.tolist()),
        (3, image_size, image_size),
        train_full.num_classes,
        int(labels[train_idx[:64]].sum()),
    )


def calibration_batches(
    data: Dataset, size: int, seed: int, device: torch.device, batch: int = 128
) -> list[tuple[Tensor, Tensor]]:
    """The calibration set D_c: ``size`` images of ``data`` chosen by the seed, as (inputs, targets) batches."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(derive_seed(seed, "calibration")))  # type: ignore[arg-type]
    idx = order[: min(size, len(order))].tolist()
    out = []
    for start in range(0, len(idx), batch):
        items = [data[i] for i in idx[start : start + batch]]
        images = torch.stack([image for image, _ in items])
        labels = torch.as_tensor([int(label) for _, label in items], dtype=torch.long)
        out.append((images.to(device), labels.to(device)))
    return out
