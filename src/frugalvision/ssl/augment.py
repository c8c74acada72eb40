"""Batched weak and strong augmentations of FixMatch on float images ``[N, C, H, W]`` in ``[0, 1]``.

Every image of a batch draws its own parameters. Randomness comes from ``generator`` (or the global RNG, which the
engine reseeds from (seed, rank, step) before each step, so a resumed run draws the same views).

- weak (FixMatch ``d``): horizontal flip with probability 1/2, then a translation by up to 12.5 % of the side
  (reflect padding, uniform crop), as ``libml/augment.py`` (``augment_shift`` with 4 px on 32 px images).
- strong (FixMatch's RandAugment ablation, ``d.d.rac``): the weak view, then ``num_ops`` = 2 operations drawn with
  replacement from the 14 of ``RANDOM_POLICY_OPS``, each applied with probability 1/2 at a level drawn in 1..9 of 10,
  then Cutout of half the side (the ``cutout_numpy`` default 16 on 32 px). Operation ranges follow the AutoAugment
  code FixMatch ships (``third_party/auto_augment/augmentations.py``); geometric operations and Cutout fill with
  grey 0.5 (the code's zero of its [-1, 1] scale) and resample with nearest neighbour (PIL's default).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "RANDAUGMENT_OPS",
    "cutout",
    "rand_augment",
    "strong_augment",
    "weak_augment",
]

RANDAUGMENT_OPS: tuple[str, ...] = (
    "identity", "autocontrast", "equalize", "rotate", "solarize", "color", "contrast", "brightness",
    "sharpness", "shear_x", "translate_x", "translate_y", "posterize", "shear_y",
)  # fmt: skip
"""The 14 operations of FixMatch's RandAugment (``RANDOM_POLICY_OPS``)."""

_LEVEL_MAX = 10.0
_FILL = 0.5
_GRAY = (0.299, 0.587, 0.114)


def _uniform(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=generator).to(device)


def _randint(
    high: int, shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None
) -> torch.Tensor:
    return torch.randint(high, shape, generator=generator).to(device)


# ------------------------------------------------------------------------------------------------ weak
def weak_augment(
    images: torch.Tensor, translate: float = 0.125, flip: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random horizontal flip, then a random translation of up to ``translate`` x side (reflect padding).

    Args:
        images: float ``[N, C, H, W]``.
        translate: largest shift as a fraction of the side (FixMatch: 4 px of 32 = 0.125).
        flip: flip each image with probability 1/2.
        generator: random source (None: the global RNG).

    Returns:
        The augmented batch (a new tensor).
    """
    n, _, h, w = images.shape
    device = images.device
    out = images
    if flip:
        flipped = _uniform((n,), device, generator) < 0.5
        out = torch.where(flipped[:, None, None, None], images.flip(-1), images)
    pad = int(round(translate * min(h, w)))
    if pad == 0:
        return out.clone() if out is images else out
    padded = F.pad(out, (pad, pad, pad, pad), mode="reflect")
    offsets = _randint(2 * pad + 1, (n, 2), device, generator)
    rows = (offsets[:, 0, None] + torch.arange(h, device=device))[:, None, :, None]  # [n, 1, h, 1]
    cols = (offsets[:, 1, None] + torch.arange(w, device=device))[:, None, None, :]  # [n, 1, 1, w]
    batch = torch.arange(n, device=device)[:, None, None, None]
    channels = torch.arange(images.shape[1], device=device)[None, :, None, None]
    return padded[batch, channels, rows, cols]


# ------------------------------------------------------------------------------------------------ strong
def cutout(
    images: torch.Tensor, size: float = 0.5, fill: float = _FILL, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Cutout: a square of ``size`` x side centred on a uniform pixel, clipped at the borders, filled with ``fill``."""
    n, _, h, w = images.shape
    device = images.device
    half = int(size * min(h, w)) // 2
    if half == 0:
        return images.clone()
    cy, cx = _randint(h, (n,), device, generator), _randint(w, (n,), device, generator)
    ys, xs = torch.arange(h, device=device), torch.arange(w, device=device)
    inside_y = (ys[None] >= (cy - half)[:, None]) & (ys[None] < (cy + half)[:, None])
    inside_x = (xs[None] >= (cx - half)[:, None]) & (xs[None] < (cx + half)[:, None])
    box = (inside_y[:, :, None] & inside_x[:, None, :])[:, None]
    return torch.where(box, torch.full_like(images, fill), images)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    weights = torch.tensor(_GRAY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(1, keepdim=True)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ImageEnhance: ``degenerate + factor (x - degenerate)``, clipped."""
    return (degenerate + factor.view(-1, 1, 1, 1) * (x - degenerate)).clamp_(0.0, 1.0)


def _enhance_factor(level: torch.Tensor) -> torch.Tensor:
    return level * 1.8 / _LEVEL_MAX + 0.1


def _signed(value: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    flip = _uniform(tuple(value.shape), value.device, generator) > 0.5
    return torch.where(flip, -value, value)


def _affine(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Sample ``x`` at ``matrix @ (u, v, 1)`` for each output pixel centre (pixel units, origin top-left)."""
    n, _, h, w = x.shape
    ys = torch.arange(h, device=x.device, dtype=x.dtype) + 0.5
    xs = torch.arange(w, device=x.device, dtype=x.dtype) + 0.5
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    coords = torch.stack([grid_x, grid_y, torch.ones_like(grid_x)], -1).view(1, h * w, 3)
    source = coords @ matrix.transpose(1, 2)  # [n, h*w, 2] in pixel units
    norm = torch.stack([source[..., 0] / w * 2 - 1, source[..., 1] / h * 2 - 1], -1).view(n, h, w, 2)
    # grid_sample pads with zeros; shifting by the fill makes the padding equal the fill value
    sampled = F.grid_sample(x - _FILL, norm, mode="nearest", padding_mode="zeros", align_corners=False)
    return sampled + _FILL


def _geometric(name: str, x: torch.Tensor, level: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    n, _, h, w = x.shape
    matrix = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    matrix[:, 0, 0] = matrix[:, 1, 1] = 1.0
    if name == "rotate":
        degrees = _signed(torch.floor(level * 30.0 / _LEVEL_MAX), generator)
        theta = degrees * math.pi / 180.0
        cos, sin = torch.cos(theta), torch.sin(theta)
        cx, cy = w / 2.0, h / 2.0
        matrix[:, 0, 0], matrix[:, 0, 1], matrix[:, 1, 0], matrix[:, 1, 1] = cos, sin, -sin, cos
        matrix[:, 0, 2] = cx - cos * cx - sin * cy
        matrix[:, 1, 2] = cy + sin * cx - cos * cy
    elif name in ("shear_x", "shear_y"):
        shear = _signed(level * 0.3 / _LEVEL_MAX, generator)
        matrix[:, 0 if name == "shear_x" else 1, 1 if name == "shear_x" else 0] = shear
    else:  # translate: int(level) pixels of a 32-pixel image, scaled to this size
        shift = _signed(torch.floor(level * 10.0 / _LEVEL_MAX), generator) / 32.0
        if name == "translate_x":
            matrix[:, 0, 2] = shift * w
        else:
            matrix[:, 1, 2] = shift * h
    return _affine(x, matrix)


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    low = x.amin(dim=(2, 3), keepdim=True)
    high = x.amax(dim=(2, 3), keepdim=True)
    scale = torch.where(high > low, 1.0 / (high - low).clamp_min(1e-12), torch.ones_like(high))
    offset = torch.where(high > low, low, torch.zeros_like(low))
    return ((x - offset) * scale).clamp_(0.0, 1.0)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    as_bytes = (x * 255.0).round_().clamp_(0, 255).to(torch.uint8)
    return TF.equalize(as_bytes).to(x.dtype) / 255.0


def _sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    kernel = torch.ones(3, 3, device=x.device, dtype=x.dtype)
    kernel[1, 1] = 5.0
    kernel = (kernel / kernel.sum()).expand(x.shape[1], 1, 3, 3)
    smooth = F.conv2d(x, kernel, groups=x.shape[1])
    degenerate = x.clone()
    degenerate[:, :, 1:-1, 1:-1] = smooth  # PIL keeps the border pixels
    return _blend(degenerate, x, factor)


def _posterize(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    bits = 4 - torch.floor(level * 4.0 / _LEVEL_MAX)
    step = (2.0 ** (8 - bits)).view(-1, 1, 1, 1)
    as_bytes = (x * 255.0).round()
    return torch.floor(as_bytes / step) * step / 255.0


def _apply_op(name: str, x: torch.Tensor, level: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One RandAugment operation on a sub-batch, each image with its own level in 1..9."""
    if name == "identity":
        return x
    if name == "autocontrast":
        return _autocontrast(x)
    if name == "equalize":
        return _equalize(x)
    if name == "solarize":
        threshold = (256.0 - torch.floor(level * 256.0 / _LEVEL_MAX)) / 255.0
        return torch.where(x >= threshold.view(-1, 1, 1, 1), 1.0 - x, x)
    if name == "posterize":
        return _posterize(x, level)
    factor = _enhance_factor(level)
    if name == "color":
        return _blend(_gray(x).expand_as(x), x, factor)
    if name == "contrast":
        mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
        return _blend(mean.expand_as(x), x, factor)
    if name == "brightness":
        return _blend(torch.zeros_like(x), x, factor)
    if name == "sharpness":
        return _sharpness(x, factor)
    return _geometric(name, x, level, generator)


def rand_augment(
    images: torch.Tensor,
    num_ops: int = 2,
    probability: float = 0.5,
    ops: tuple[str, ...] = RANDAUGMENT_OPS,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """FixMatch's RandAugment, random magnitude: ``num_ops`` operations per image, each applied with ``probability``.

    Args:
        images: float ``[N, C, H, W]`` in ``[0, 1]``.
        num_ops: operations per image, drawn with replacement from ``ops``.
        probability: chance that each drawn operation is applied.
        ops: operation names (a subset of :data:`RANDAUGMENT_OPS`).
        generator: random source (None: the global RNG).

    Returns:
        The augmented batch.
    """
    unknown = [op for op in ops if op not in RANDAUGMENT_OPS]
    if unknown:
        raise ValueError(f"unknown RandAugment operations {unknown}; choose from {RANDAUGMENT_OPS}")
    n, device = images.shape[0], images.device
    out = images.clone()
    for _ in range(num_ops):
        which = _randint(len(ops), (n,), device, generator)
        applied = _uniform((n,), device, generator) < probability
        level = (_randint(int(_LEVEL_MAX) - 1, (n,), device, generator) + 1).to(images.dtype)
        for index, name in enumerate(ops):
            chosen = torch.nonzero((which == index) & applied).flatten()
            if len(chosen):
                out[chosen] = _apply_op(name, out[chosen], level[chosen], generator).clamp_(0.0, 1.0)
    return out


def strong_augment(
    images: torch.Tensor,
    translate: float = 0.125,
    num_ops: int = 2,
    cutout_size: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """FixMatch's strong view (RandAugment variant): weak flip + shift, RandAugment, then Cutout."""
    out = weak_augment(images, translate=translate, generator=generator)
    out = rand_augment(out, num_ops=num_ops, generator=generator)
    return cutout(out, size=cutout_size, generator=generator)


Augment = Callable[[torch.Tensor], torch.Tensor]
