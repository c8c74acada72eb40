"""Paper-column augmentation: Mixup/CutMix against timm's reference formulas, RandAugment, the task's soft targets."""

from __future__ import annotations

import pytest
import torch
from timm.data.mixup import mixup_target

from frugalvision.methods.perceiver.augment import cutmix_box, mix_batch, randaugment_transform, smooth_one_hot
from frugalvision.methods.perceiver.functional import nested_loss


def test_smoothed_one_hot_equals_timm():
    labels = torch.tensor([0, 3, 9, 3])
    ours = smooth_one_hot(labels, 10, 0.1)
    assert torch.allclose(ours, mixup_target(labels, 10, lam=1.0, smoothing=0.1))
    assert torch.allclose(ours.sum(-1), torch.ones(4))


def test_mixup_is_a_convex_mix_with_the_reversed_batch_and_timm_targets():
    images, labels = torch.arange(6.0).view(6, 1, 1, 1).expand(6, 1, 8, 8).contiguous(), torch.arange(6)
    mixed, targets = mix_batch(images, labels, 10, 0.8, 0.0, 0.1, torch.Generator().manual_seed(0))
    lam = 1.0 - float(mixed[0, 0, 0, 0]) / 5.0  # image 0 is 0 everywhere, its partner (the reversed batch) 5
    assert 0 < lam < 1 and torch.allclose(mixed, images * lam + images.flip(0) * (1 - lam), atol=1e-6)
    assert torch.allclose(targets, mixup_target(labels, 10, lam=lam, smoothing=0.1), atol=1e-6)


def test_cutmix_pastes_one_box_and_corrects_lambda_by_its_area():
    images, labels = torch.zeros(4, 1, 16, 16), torch.tensor([0, 1, 2, 3])
    images[1:] = 1.0  # image 0 is black, the others white: the pasted region of image 0 comes from image 3
    mixed, targets = mix_batch(images, labels, 4, 0.0, 1.0, 0.0, torch.Generator().manual_seed(3))
    area = float(mixed[0].sum()) / 256
    assert 0 < area < 1
    assert targets[0, 0] == pytest.approx(1 - area) and targets[0, 3] == pytest.approx(area)
    top, bottom, left, right = cutmix_box(16, 16, 0.75, torch.Generator().manual_seed(1))
    assert 0 <= top <= bottom <= 16 and 0 <= left <= right <= 16 and (bottom - top) <= 8


def test_mixing_is_reproducible_from_the_generator_and_off_means_identity():
    images, labels = torch.rand(4, 3, 8, 8), torch.tensor([1, 2, 3, 4])
    a = mix_batch(images, labels, 5, 0.8, 1.0, 0.1, torch.Generator().manual_seed(7))
    b = mix_batch(images, labels, 5, 0.8, 1.0, 0.1, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    same, hard = mix_batch(images, labels, 5, 0.0, 0.0, 0.0, torch.Generator())
    assert same is images and torch.equal(hard.argmax(-1), labels)


def test_randaugment_keeps_shape_and_range_and_the_nested_loss_takes_soft_targets():
    torch.manual_seed(0)
    augment = randaugment_transform(2, 9)
    for image in (torch.rand(1, 28, 28), torch.rand(3, 32, 32)):
        out = augment(image)
        assert out.shape == image.shape and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    logits = {8: torch.randn(4, 5, requires_grad=True), 2: torch.randn(4, 5)}
    hard = torch.tensor([0, 1, 2, 3])
    loss_hard, _ = nested_loss(logits, hard, 0.5, 1.0)
    loss_soft, _ = nested_loss(logits, smooth_one_hot(hard, 5, 0.0), 0.5, 1.0)
    assert torch.allclose(loss_hard, loss_soft)
