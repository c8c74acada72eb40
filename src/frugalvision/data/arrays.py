"""In-memory image sets: uint8 image tensors with labels, and a Dataset that serves them as floats."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from frugalvision.errors import DataError

__all__ = ["ArrayDataset", "ImageArrays", "concat_arrays"]


@dataclass
class ImageArrays:
    """A labelled image set held in memory.

    Attributes:
        images: uint8 tensor ``[N, C, H, W]``.
        labels: int64 tensor ``[N]`` of class indices.
        classes: Class names; ``classes[k]`` names label ``k``.
        name: Name of the set (source or domain name).

    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DataError(
                f"ImageArrays {self.name!r}: images must be uint8 [N, C, H, W], got {self.images.dtype} "
                f"{tuple(self.images.shape)}; fix: convert with (x * 255).round().to(torch.uint8)"
            )
        self.labels = torch.as_tensor(self.labels).long()
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"ImageArrays {self.name!r}: {tuple(self.labels.shape)} labels for {self.images.shape[0]} images; "
                "fix: pass one label per image"
            )
        self.classes = list(self.classes)
        if len(self.labels) and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.classes)):
            raise DataError(
                f"ImageArrays {self.name!r}: labels span [{int(self.labels.min())}, {int(self.labels.max())}] but "
                f"there are {len(self.classes)} classes; fix: pass the full class list"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Shape ``(C, H, W)`` of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ImageArrays:
        """Return the images at ``indices`` (copied), keeping classes and name.

        Args:
            indices: Integer indices (or a boolean mask) into this set.

        Returns:
            A new ImageArrays.

        """
        idx = torch.as_tensor(indices)
        if idx.dtype != torch.bool:
            idx = idx.long()
        return ImageArrays(self.images[idx], self.labels[idx], list(self.classes), self.name)

    def to_float(self) -> torch.Tensor:
        """Return all images as float32 in ``[0, 1]``, shape ``[N, C, H, W]``."""
        return self.images.float().div_(255.0)

    def renamed(self, name: str) -> ImageArrays:
        """Return a shallow copy with another name (tensors are shared)."""
        return ImageArrays(self.images, self.labels, list(self.classes), name)


def concat_arrays(parts: Sequence[ImageArrays], name: str | None = None) -> ImageArrays:
    """Concatenate image sets that share classes and image shape.

    Args:
        parts: Sets to join, in order.
        name: Name of the result; defaults to the part names joined with ``+``.

    Returns:
        One ImageArrays holding every image of ``parts``.

    Raises:
        DataError: If ``parts`` is empty or the sets disagree on classes or image shape.

    """
    if not parts:
        raise DataError("concat_arrays got no image sets; fix: pass at least one ImageArrays")
    first = parts[0]
    for p in parts[1:]:
        if p.classes != first.classes:
            raise DataError(f"cannot concatenate {p.name!r} with {first.name!r}: class lists differ; fix: remap labels")
        if p.image_shape != first.image_shape:
            raise DataError(
                f"cannot concatenate {p.name!r} {p.image_shape} with {first.name!r} {first.image_shape}: image shapes "
                "differ; fix: resize or convert channels first"
            )
    return ImageArrays(
        torch.cat([p.images for p in parts]),
        torch.cat([p.labels for p in parts]),
        list(first.classes),
        name if name is not None else "+".join(p.name for p in parts),
    )


class ArrayDataset(Dataset):
    """A ``Dataset`` over :class:`ImageArrays` returning ``(float image in [0, 1], int label)``.

    Args:
        arrays: The image set.
        transform: Optional callable applied to the float ``[C, H, W]`` image tensor.

    """

    def __init__(self, arrays: ImageArrays, transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        self.arrays = arrays
        self.transform = transform

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.arrays.images[index].float().div_(255.0)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.arrays.labels[index])

    def fetch_batch(self, indices: Sequence[int] | torch.Tensor) -> list[torch.Tensor]:
        """The collated batch ``[images, labels]`` of ``indices`` in one indexing call.

        Equal to ``default_collate([self[i] for i in indices])`` (the engine and :func:`frugalvision.data.make_loader`
        use it instead of one ``__getitem__`` per sample); a transform is still applied image by image, in order.
        """
        index = torch.as_tensor(indices, dtype=torch.long)
        images = self.arrays.images[index].float().div_(255.0)
        if self.transform is not None:
            images = torch.stack([self.transform(image) for image in images])
        return [images, self.arrays.labels[index]]

    @property
    def classes(self) -> list[str]:
        """Class names."""
        return self.arrays.classes

    @property
    def targets(self) -> torch.Tensor:
        """Labels of all items (int64)."""
        return self.arrays.labels
