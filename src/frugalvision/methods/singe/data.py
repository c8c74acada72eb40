"""Data for the SInGE experiments: the offline sources, and the CIFAR-10 binary release for the paper preset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from frugalvision.data.arrays import ImageArrays
from frugalvision.data.sources import available_default_source, load_source
from frugalvision.errors import DataError

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
        raise DataError(f"CIFAR-10 binary files {missing} not found under {folder}; fix: pass --data-root to the "
                        "extracted cifar-10-binary.tar.gz (the pickled Python release is not read)")
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


def augment_crop_flip(image: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Random crop with 4-pixel zero padding and a random horizontal flip of one [C, H, W] image."""
    _, h, w = image.shape
    padded = torch.nn.functional.pad(image, (4, 4, 4, 4))
    top, left = torch.randint(0, 9, (2,), generator=generator).tolist()
    out = padded[:, top : top + h, left : left + w]
    return out.flip(-1) if torch.rand((), generator=generator) < 0.5 else out
