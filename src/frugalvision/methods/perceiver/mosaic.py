"""A harder task in which the number of queries matters: the majority class of a grid of real images.

Each image is a ``grid x grid`` mosaic of real items (e.g. Fashion-MNIST downsampled to ``item`` pixels); one class
is planted ``planted`` times and every other class appears fewer times; the label is the planted (majority) class.
Solving it needs the class of many items at once, so a latent bottleneck with few queries is at a disadvantage
that a plain single-object image does not show (on Fashion-MNIST itself a Perceiver with Q = 8 matches Q = 32).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from frugalvision.data.arrays import ImageArrays
from frugalvision.errors import ConfigError

__all__ = ["majority_mosaics"]


def _other_classes(count: int, cells: int, classes: int, majority: torch.Tensor, cap: int, g: torch.Generator):
    """(count, cells) classes != majority, each repeated at most ``cap`` times in a row (rejection sampling)."""
    out = torch.empty(count, cells, dtype=torch.long)
    todo = torch.arange(count)
    while len(todo):
        draw = torch.randint(0, classes - 1, (len(todo), cells), generator=g)
        draw = draw + (draw >= majority[todo, None]).long()  # skip the majority class
        counts = F.one_hot(draw, classes).sum(1).amax(1) if cells else torch.zeros(len(todo), dtype=torch.long)
        ok = counts <= cap
        out[todo[ok]] = draw[ok]
        todo = todo[~ok]
    return out


def majority_mosaics(
    source: ImageArrays, count: int, grid: int = 3, item: int = 14, planted: int = 4, seed: int = 0
) -> ImageArrays:
    """``count`` mosaics of ``grid x grid`` items of ``source``; the label is the class planted ``planted`` times.

    Items of one mosaic are drawn from ``source`` only (build the train, validation and test mosaics from disjoint
    image sets); every other class appears at most ``planted - 1`` times, so the planted class is the strict
    majority. Deterministic in ``seed``.

    Args:
        source: real labelled images (uint8 [N, C, H, W]).
        count: mosaics to build.
        grid: items per side.
        item: side of each item in pixels (items are resized with area averaging).
        planted: copies of the majority class (2 <= planted <= grid²).
        seed: seed of the draw.

    Returns:
        uint8 mosaics [count, C, grid·item, grid·item] with their majority labels and the source's class names.
    """
    cells, classes = grid * grid, source.num_classes
    if not 2 <= planted <= cells or classes < 2:
        raise ConfigError(f"mosaic planted={planted} must lie in 2..{cells} and the source needs >= 2 classes")
    if (cells - planted) > (classes - 1) * (planted - 1):
        raise ConfigError(f"mosaic planted={planted} cannot be a strict majority of {cells} cells; raise it")
    g = torch.Generator().manual_seed(seed)
    small = F.interpolate(source.images.float(), size=(item, item), mode="area").round().to(torch.uint8)
    majority = torch.randint(0, classes, (count,), generator=g)
    labels = _other_classes(count, cells - planted, classes, majority, planted - 1, g)
    labels = torch.cat([majority[:, None].expand(-1, planted), labels], dim=1)
    labels = torch.gather(labels, 1, torch.rand(count, cells, generator=g).argsort(1))  # shuffle the cells
    picks = torch.empty(count, cells, dtype=torch.long)
    for cls in range(classes):
        members = torch.nonzero(source.labels == cls).squeeze(1)
        where = labels == cls
        if where.any():
            if not len(members):
                raise ConfigError(f"class {cls} has no image in the mosaic source; use a source with every class")
            picks[where] = members[torch.randint(0, len(members), (int(where.sum()),), generator=g)]
    items = small[picks]  # (count, cells, C, item, item)
    channels = items.shape[2]
    mosaic = items.view(count, grid, grid, channels, item, item).permute(0, 3, 1, 4, 2, 5)
    mosaic = mosaic.reshape(count, channels, grid * item, grid * item).contiguous()
    return ImageArrays(mosaic, majority, source.classes, f"{source.name}-majority{grid}x{grid}")
