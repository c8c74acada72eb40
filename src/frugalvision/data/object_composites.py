"""Objects composited on real photo/texture crops, with the compositing ground truth kept per image.

``composite = alpha * foreground + (1 - alpha) * background``: a gray object image (e.g. a Fashion-MNIST item)
gives ``alpha`` (its intensity / 255), tinted with a random hue (``foreground``) and pasted at a random offset onto a
crop of one of ten real images shipped in scikit-image and scikit-learn (``background``). Training and test crops come
from disjoint column ranges of each image (left 60 % / right 40 % by default), so test backgrounds are never seen in
training. Every field is kept, so an exact in-class mix ``alpha_A * foreground_A + (1 - alpha_A) * background_B``
(:func:`frugalvision.ssl.composite_mix`) and background metrics are available.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import torch
import torch.nn.functional as F

from frugalvision.data import provenance
from frugalvision.data.shifts import load_texture
from frugalvision.errors import DataError
from frugalvision.seeding import derive_seed

__all__ = ["BACKGROUNDS", "CompositeSet", "background_image", "composite_objects", "crop_backgrounds"]

BACKGROUNDS: tuple[str, ...] = (
    "brick", "grass", "gravel", "astronaut", "coffee", "chelsea", "rocket", "camera", "china", "flower",
)  # fmt: skip
"""Real images that ship offline: scikit-image's ``skimage.data`` and scikit-learn's sample images (china, flower)."""

Region = Literal["train", "test", "all"]


@lru_cache(maxsize=32)
def background_image(name: str, short_side: int = 64) -> torch.Tensor:
    """A background photo/texture as uint8 RGB ``[3, H, W]``, resized so that its short side is ``short_side``.

    Raises:
        DataError: unknown name or an image that cannot be loaded offline.
    """
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        image = torch.from_numpy(load_sample_image(f"{name}.jpg").copy()).permute(2, 0, 1).contiguous()
        provenance.record_source(f"sklearn sample image {name}.jpg", "scikit-learn package")
    elif name in BACKGROUNDS:
        image = load_texture(name)
    else:
        raise DataError(f"unknown background {name!r}; use one of {', '.join(BACKGROUNDS)}")
    scale = short_side / min(image.shape[1:])
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[2] * scale)))
    resized = F.interpolate(image[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return resized[0].round_().clamp_(0, 255).to(torch.uint8)


def _region_columns(width: int, region: Region, train_fraction: float) -> tuple[int, int]:
    split = int(round(width * train_fraction))
    return {"train": (0, split), "test": (split, width), "all": (0, width)}[region]


def crop_backgrounds(
    background_ids: torch.Tensor,
    size: int,
    seed: int,
    region: Region = "train",
    names: Sequence[str] = BACKGROUNDS,
    short_side: int = 64,
    train_fraction: float = 0.6,
) -> torch.Tensor:
    """One ``size`` x ``size`` crop per id, at a uniform position inside the id's image region.

    Args:
        background_ids: index into ``names`` per crop.
        size: crop side.
        seed: seed of the positions.
        region: "train" (the left ``train_fraction`` of each image's columns), "test" (the rest) or "all".
        names: background names.
        short_side: every image is first resized to this short side.
        train_fraction: share of the columns in the training region.

    Returns:
        uint8 ``[N, 3, size, size]``.
    """
    gen = torch.Generator().manual_seed(derive_seed(seed, "crops", region))
    ids = torch.as_tensor(background_ids).long()
    out = torch.empty(len(ids), 3, size, size, dtype=torch.uint8)
    u = torch.rand(len(ids), 2, generator=gen, dtype=torch.float64)
    rows, cols = torch.arange(size), torch.arange(size)
    for index, name in enumerate(names):
        chosen = torch.nonzero(ids == index).flatten()
        if len(chosen) == 0:
            continue
        image = background_image(name, short_side)
        c0, c1 = _region_columns(image.shape[2], region, train_fraction)
        if c1 - c0 < size or image.shape[1] < size:
            raise DataError(f"background {name!r} region {region} is smaller than {size} px; raise short_side")
        y = torch.floor(u[chosen, 0] * (image.shape[1] - size + 1)).long()
        x = c0 + torch.floor(u[chosen, 1] * (c1 - c0 - size + 1)).long()
        out[chosen] = image[:, (y[:, None] + rows)[:, :, None], (x[:, None] + cols)[:, None, :]].permute(1, 0, 2, 3)
    return out


def _hue_colors(count: int, gen: torch.Generator, saturation: float = 0.8) -> torch.Tensor:
    hue = torch.rand(count, generator=gen)
    k = (torch.tensor([5.0, 3.0, 1.0]) + hue[:, None] * 6.0) % 6.0
    return 1.0 - saturation * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)  # [count, 3] in [0, 1]


@dataclass
class CompositeSet:
    """Composited images with their ground truth (all uint8 images; see the module docstring).

    Attributes:
        images: ``[N, 3, S, S]`` composites.
        labels: object classes ``[N]``.
        background_ids: background index per image ``[N]``.
        alpha: ``[N, 1, S, S]`` object opacity.
        foreground: ``[N, 3, S, S]`` the tinted object layer.
        background: ``[N, 3, S, S]`` the clean background crop.
        classes: object class names.
        backgrounds: background names.
    """

    images: torch.Tensor
    labels: torch.Tensor
    background_ids: torch.Tensor
    alpha: torch.Tensor
    foreground: torch.Tensor
    background: torch.Tensor
    classes: list[str] = field(default_factory=list)
    backgrounds: list[str] = field(default_factory=lambda: list(BACKGROUNDS))

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> CompositeSet:
        """The rows ``index``."""
        return CompositeSet(
            self.images[index], self.labels[index], self.background_ids[index], self.alpha[index],
            self.foreground[index], self.background[index], list(self.classes), list(self.backgrounds),
        )  # fmt: skip

    def fields(self) -> dict[str, torch.Tensor]:
        """``image``, ``label``, ``background_id``, ``alpha``, ``foreground``, ``background`` (for dict datasets)."""
        return {
            "image": self.images,
            "label": self.labels,
            "background_id": self.background_ids,
            "alpha": self.alpha,
            "foreground": self.foreground,
            "background": self.background,
        }


def composite_objects(
    objects: torch.Tensor,
    labels: torch.Tensor,
    background_ids: torch.Tensor,
    seed: int,
    region: Region = "train",
    size: int = 16,
    object_size: int = 12,
    classes: Sequence[str] = (),
    names: Sequence[str] = BACKGROUNDS,
    short_side: int = 64,
    alpha_gain: float = 1.0,
) -> CompositeSet:
    """Paste gray objects (alpha = intensity) in a random hue at a random offset onto real background crops.

    Args:
        objects: uint8 ``[N, 1, h, w]`` gray object images (e.g. Fashion-MNIST), resized to ``object_size``.
        labels: object class per image.
        background_ids: background index per image (into ``names``).
        seed: seed of hues, offsets and crops.
        region: background region of :func:`crop_backgrounds`.
        size: composite side.
        object_size: object side after resizing (offset uniform in ``[0, size - object_size]`` per axis).
        classes: class names.
        names: background names.
        short_side: background images' short side before cropping.
        alpha_gain: ``alpha = min(1, alpha_gain * intensity / 255)`` (> 1 makes the objects' dark parts opaque).

    Returns:
        The composites and their ground truth.
    """
    if objects.dtype != torch.uint8 or objects.ndim != 4 or objects.shape[1] != 1:
        raise DataError(f"objects must be uint8 [N, 1, h, w], got {objects.dtype} {tuple(objects.shape)}")
    if not 0 < object_size <= size:
        raise DataError(f"object_size={object_size} must lie in [1, size={size}]")
    count = len(objects)
    gen = torch.Generator().manual_seed(derive_seed(seed, "composite", region))
    small = F.interpolate(objects.float(), size=(object_size, object_size), mode="bilinear", antialias=True)
    alpha = torch.zeros(count, 1, size, size)
    offsets = torch.randint(size - object_size + 1, (count, 2), generator=gen)
    for index in range(count):
        y, x = offsets[index].tolist()
        alpha[index, :, y : y + object_size, x : x + object_size] = small[index] / 255.0

    def as_bytes(x: torch.Tensor) -> torch.Tensor:
        return (x * 255.0).round_().clamp_(0, 255).to(torch.uint8)

    alpha_bytes = as_bytes((alpha * alpha_gain).clamp_(0.0, 1.0))
    color_bytes = as_bytes(_hue_colors(count, gen)[:, :, None, None].expand(count, 3, size, size).contiguous())
    background = crop_backgrounds(background_ids, size, seed, region, names, short_side)
    a = alpha_bytes.float() / 255.0  # composite from the stored (quantised) layers: exact up to the final rounding
    images = a * color_bytes.float() / 255.0 + (1.0 - a) * background.float() / 255.0
    return CompositeSet(
        as_bytes(images), torch.as_tensor(labels).long(), torch.as_tensor(background_ids).long(), alpha_bytes,
        color_bytes, background, list(classes), list(names),
    )  # fmt: skip
