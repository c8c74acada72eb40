"""Batched FixMatch augmentations: brute-force crops, per-image randomness, ranges, determinism."""

import pytest
import torch
import torch.nn.functional as F

from frugalvision.ssl import RANDAUGMENT_OPS, cutout, rand_augment, strong_augment, weak_augment
from frugalvision.ssl.augment import _apply_op


def test_weak_view_is_a_flip_then_a_reflect_padded_crop():
    x = torch.rand(6, 3, 8, 8)
    out = weak_augment(x, translate=0.25, generator=torch.Generator().manual_seed(3))
    padded_plain = F.pad(x, (2, 2, 2, 2), mode="reflect")
    padded_flip = F.pad(x.flip(-1), (2, 2, 2, 2), mode="reflect")
    for i in range(6):
        found = any(
            torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 8])
            for padded in (padded_plain, padded_flip)
            for dy in range(5)
            for dx in range(5)
        )
        assert found, i


def test_augmentations_are_deterministic_per_generator_and_differ_per_image():
    x = torch.rand(1, 3, 16, 16).expand(32, 3, 16, 16).contiguous()
    a = strong_augment(x, generator=torch.Generator().manual_seed(1))
    b = strong_augment(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert len({tuple(v.flatten()[:50].tolist()) for v in a}) > 20  # each image draws its own parameters
    assert a.min() >= 0 and a.max() <= 1 and a.shape == x.shape


def test_cutout_fills_a_clipped_square_with_grey():
    x = torch.zeros(50, 1, 16, 16)
    out = cutout(x, size=0.5, generator=torch.Generator().manual_seed(0))
    filled = (out == 0.5).float().sum((1, 2, 3))
    assert filled.max() == 64 and filled.min() >= 8  # 8x8 square, clipped at the borders


@pytest.mark.parametrize("name", RANDAUGMENT_OPS)
def test_every_operation_keeps_shape_and_range(name):
    x = torch.rand(5, 3, 12, 12)
    out = _apply_op(name, x.clone(), torch.tensor([1.0, 3.0, 5.0, 7.0, 9.0]), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_operations_match_their_closed_forms():
    x = torch.rand(2, 3, 8, 8)
    level = torch.tensor([5.0, 9.0])
    brightness = _apply_op("brightness", x, level, None)
    torch.testing.assert_close(brightness, (x * (level * 0.18 + 0.1).view(-1, 1, 1, 1)).clamp(0, 1))
    solarized = _apply_op("solarize", x, level, None)
    threshold = ((256 - torch.floor(level * 25.6)) / 255).view(-1, 1, 1, 1)
    torch.testing.assert_close(solarized, torch.where(x >= threshold, 1 - x, x))
    shifted = _apply_op("translate_x", torch.arange(32.0).view(1, 1, 1, 32).repeat(1, 1, 2, 1) / 31, level[:1], None)
    row = shifted[0, 0, 0]
    assert (row == 0.5).sum() == 5  # int(level) = 5 pixels of a 32-pixel image, filled with grey


def test_rand_augment_with_probability_zero_is_identity():
    x = torch.rand(4, 3, 8, 8)
    assert torch.equal(rand_augment(x, probability=0.0), x)
