"""The majority-mosaic task: the label is the strict majority class, items come from the given images only."""

from __future__ import annotations

import pytest
import torch

from frugalvision.data.arrays import ImageArrays
from frugalvision.errors import ConfigError
from frugalvision.methods.perceiver.mosaic import majority_mosaics


def _source(per_class: int = 5, classes: int = 10) -> ImageArrays:
    """Items whose pixels all equal 10 * class + copy index, so every mosaic cell can be traced back."""
    values = torch.tensor([10 * c + i for c in range(classes) for i in range(per_class)], dtype=torch.uint8)
    images = values.view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()
    labels = torch.arange(classes).repeat_interleave(per_class)
    return ImageArrays(images, labels, [str(c) for c in range(classes)], "toy")


def test_every_mosaic_is_labelled_by_its_strict_majority_class():
    mosaics = majority_mosaics(_source(), 200, grid=3, item=4, planted=4, seed=0)
    assert mosaics.images.shape == (200, 1, 12, 12) and mosaics.num_classes == 10
    for image, label in zip(mosaics.images, mosaics.labels, strict=True):
        cells = image[0].view(3, 4, 3, 4).permute(0, 2, 1, 3).reshape(9, 16)
        assert (cells == cells[:, :1]).all()  # each cell is one whole item
        classes = (cells[:, 0] // 10).long()
        counts = torch.bincount(classes, minlength=10)
        assert counts[label] == 4 and (counts[torch.arange(10) != label] < 4).all()


def test_mosaics_are_deterministic_and_use_only_the_given_images():
    source = _source()
    a, b = majority_mosaics(source, 50, seed=3), majority_mosaics(source, 50, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, majority_mosaics(source, 50, seed=4).images)
    half = ImageArrays(source.images[::2], source.labels[::2], source.classes, "half")
    allowed = set(half.images[:, 0, 0, 0].tolist())
    used = set(majority_mosaics(half, 50, grid=3, item=4, seed=0).images[:, 0, ::4, ::4].flatten().tolist())
    assert used <= allowed
    with pytest.raises(ConfigError):
        majority_mosaics(source, 5, grid=3, planted=1)
