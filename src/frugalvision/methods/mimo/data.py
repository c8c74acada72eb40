"""The experiment's image sets: an offline source, CIFAR (binary or safe pickles) or an ImageFolder tree.

Every split is held in memory as uint8 images resized to ``image_size`` and normalised on the fly with the training
set's statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from frugalvision.data.arrays import ArrayDataset, ImageArrays
from frugalvision.data.cifar import load_cifar
from frugalvision.data.folders import ImageFolderDataset
from frugalvision.data.sources import available_default_source, load_source
from frugalvision.data.splits import stratified_subset, train_val_indices
from frugalvision.errors import DataError
from frugalvision.methods.mimo.config import MimoRunConfig

__all__ = ["MimoData", "full_splits", "load_data", "resize_arrays"]


@dataclass
class MimoData:
    """Training, validation and test images of one seed, with the normalisation statistics.

    Attributes:
        source: data source actually used.
        train: training images (uint8).
        val: validation images.
        test: test images.
        mean: per-channel mean of the training images in [0, 1].
        std: per-channel standard deviation.
    """

    source: str
    train: ImageArrays
    val: ImageArrays
    test: ImageArrays
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return self.train.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)``."""
        return self.train.image_shape

    def train_dataset(self) -> ArrayDataset:
        """Float images in [0, 1] and labels (augmented and normalised in the training step)."""
        return ArrayDataset(self.train)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` per channel for float images in [0, 1] (channel axis -3)."""
        shape = (-1, 1, 1)
        mean = torch.tensor(self.mean, device=images.device).view(shape)
        std = torch.tensor(self.std, device=images.device).view(shape)
        return (images - mean) / std


def resize_arrays(arrays: ImageArrays, size: int) -> ImageArrays:
    """Area-resize uint8 images to ``size x size`` (no-op when they already have that size)."""
    if arrays.images.shape[-1] == size and arrays.images.shape[-2] == size:
        return arrays
    resized = F.interpolate(arrays.images.float(), size=(size, size), mode="area")
    return ImageArrays(resized.round().clamp(0, 255).to(torch.uint8), arrays.labels, arrays.classes, arrays.name)


def _folder_arrays(root: Path, size: int, classes: list[str] | None = None) -> ImageArrays:
    from torchvision import transforms

    tf = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.PILToTensor()])
    folder = ImageFolderDataset(root, tf, classes=classes)
    images = torch.stack([folder[i][0] for i in range(len(folder))])
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1).contiguous()
    return ImageArrays(images, torch.tensor(folder.targets), folder.classes, root.name)


def full_splits(config: MimoRunConfig) -> tuple[str, ImageArrays, ImageArrays]:
    """(source, whole training file, whole test file) at ``image_size``."""
    if config.dataset in ("cifar10", "cifar100"):
        assert config.data_root is not None
        kwargs = {"label": config.label, "allow_pickle": config.allow_pickle}
        train = load_cifar(config.data_root, config.dataset, train=True, **kwargs)  # type: ignore[arg-type]
        test = load_cifar(config.data_root, config.dataset, train=False, **kwargs)  # type: ignore[arg-type]
        source = config.dataset
    elif config.dataset == "imagefolder":
        root = Path(str(config.data_root))
        if not (root / "train").is_dir() or not (root / "val").is_dir():
            raise DataError(f"{root} needs train/ and val/ class folders for dataset='imagefolder'")
        train = _folder_arrays(root / "train", config.image_size)
        test = _folder_arrays(root / "val", config.image_size, train.classes)
        source = "imagefolder"
    else:
        source = available_default_source(config.data_root) if config.dataset == "auto" else config.dataset
        train = load_source(source, root=config.data_root, train=True)
        test = load_source(source, root=config.data_root, train=False)
    return source, resize_arrays(train, config.image_size), resize_arrays(test, config.image_size)


def load_data(config: MimoRunConfig, seed: int, full: tuple[str, ImageArrays, ImageArrays] | None = None) -> MimoData:
    """Disjoint stratified training/validation subsets of the training file and a stratified test subset, per seed.

    Args:
        config: the run's config.
        seed: seed of the subsets.
        full: the whole files as returned by an earlier call (to load and resize them once per process).
    """
    source, train_full, test_full = full or full_splits(config)
    train_idx, val_idx = train_val_indices(train_full.labels, config.train_size, config.val_size, seed)
    test_idx = stratified_subset(test_full.labels, total=min(config.test_size, len(test_full)), seed=seed)
    train = train_full.subset(train_idx)
    pixels = train.images[: min(len(train), 10_000)].double().div(255.0)
    mean = tuple(float(v) for v in pixels.mean((0, 2, 3)))
    std = tuple(max(float(v), 1e-3) for v in pixels.std((0, 2, 3)))
    return MimoData(source, train, train_full.subset(val_idx), test_full.subset(test_idx), mean, std)
