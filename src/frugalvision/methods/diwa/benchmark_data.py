"""The offline diversity-shift benchmark: "RotatedFashion" (DomainBed RotatedMNIST style, on real images).

Real images (Fashion-MNIST, or MNIST-5k / scikit-learn digits as fall-backs) are resized, split into a disjoint
upright "pre-training" set (stand-in for ImageNet) and one disjoint share per rotation angle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from frugalvision.data import ImageArrays, load_source, rotated_domains, split_indices, stratified_subset
from frugalvision.errors import ConfigError
from frugalvision.seeding import derive_seed

__all__ = ["RotatedBenchmark", "resize_arrays", "rotated_benchmark", "texture_benchmark"]


@dataclass
class RotatedBenchmark:
    """Pre-training images and rotated domains.

    Attributes:
        pretrain: upright images disjoint from every domain.
        domains: ``{"rot<angle>": images}`` in angle order.
        source: name of the image source.
    """

    pretrain: ImageArrays
    domains: dict[str, ImageArrays]
    source: str


def resize_arrays(arrays: ImageArrays, size: int) -> ImageArrays:
    """Resize images to ``size x size`` (area averaging when shrinking, bilinear when enlarging)."""
    if arrays.image_shape[1:] == (size, size):
        return arrays
    x = arrays.images.float()
    mode = "area" if size < x.shape[-1] else "bilinear"
    y = F.interpolate(x, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return ImageArrays(y.round().clamp(0, 255).to(torch.uint8), arrays.labels, arrays.classes, arrays.name)


def rotated_benchmark(
    source: str,
    *,
    root: str | Path | None = None,
    image_size: int = 14,
    angles: Sequence[float] = (0, 15, 30, 45, 60, 75),
    per_domain: int = 1000,
    pretrain_images: int = 3000,
    seed: int = 0,
) -> RotatedBenchmark:
    """Build the RotatedFashion benchmark from a registered image source.

    Args:
        source: image source ("fashion-mnist", "mnist5k", "digits").
        root: data root of the source.
        image_size: side of the resized images.
        angles: one domain per rotation angle (degrees).
        per_domain: images per domain (disjoint slices of the source).
        pretrain_images: upright images for pre-training (disjoint from the domains).
        seed: seed of the slicing (fixed across trials: the trials change the in/out splits, not the domains).

    Raises:
        ConfigError: the source has fewer images than requested.
    """
    base = load_source(source, root=root, train=True)
    needed = per_domain * len(angles) + pretrain_images
    if needed > len(base):
        raise ConfigError(
            f"{source} has {len(base)} training images but per_domain x {len(angles)} domains + pretrain_images "
            f"= {needed}; lower per_domain or pretrain_images"
        )
    chosen = stratified_subset(base.labels, total=needed, seed=derive_seed(seed, "diwa-subset"))
    base = resize_arrays(base.subset(chosen), image_size)
    pre_idx, dom_idx = split_indices(len(base), (pretrain_images / needed, 1 - pretrain_images / needed), seed)
    pretrain = base.subset(pre_idx).renamed("pretrain-upright")
    domains = rotated_domains(base.subset(dom_idx), angles, seed=seed)
    return RotatedBenchmark(pretrain=pretrain, domains=domains, source=source)


def texture_benchmark(
    source: str,
    *,
    root: str | Path | None = None,
    image_size: int = 64,
    families: Sequence[str] = ("brick", "grass", "gravel", "photo"),
    per_domain: int = 1000,
    seed: int = 0,
) -> dict[str, ImageArrays]:
    """Clothing items on real backgrounds: one domain per scikit-image texture family (a diversity shift).

    Fashion-MNIST items (or the fall-back source's digits), resized to ``image_size``, are painted onto random crops
    of real textures and photographs that ship inside scikit-image (:func:`frugalvision.data.shifts.
    texture_background_domains`); every domain gets its own disjoint, class-balanced items.

    Args:
        source: image source ("fashion-mnist", "mnist5k", "digits").
        root: data root of the source.
        image_size: side of the RGB images.
        families: texture families, one domain each (see ``TEXTURE_FAMILIES``; "photo" = astronaut, camera, chelsea,
            coffee, rocket).
        per_domain: images per domain.
        seed: seed of the items and the crops (fixed across trials: the trials change the in/out splits).

    Raises:
        ConfigError: the source has fewer images than requested.
    """
    from frugalvision.data.shifts import texture_background_domains

    base = load_source(source, root=root, train=True)
    needed = per_domain * len(families)
    if needed > len(base):
        raise ConfigError(
            f"{source} has {len(base)} training images but per_domain x {len(families)} domains = {needed}; "
            "lower per_domain"
        )
    chosen = stratified_subset(base.labels, total=needed, seed=derive_seed(seed, "diwa-texture-subset"))
    items = resize_arrays(base.subset(chosen), image_size)
    return texture_background_domains(items, list(families), seed=seed)
