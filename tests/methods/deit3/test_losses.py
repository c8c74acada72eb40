"""Mixup/CutMix pairing and lambda, soft targets vs timm, binarisation and BCE vs brute-force loops."""

from __future__ import annotations

import math

import pytest
import torch
from timm.data.mixup import mixup_target
from timm.loss import SoftTargetCrossEntropy

from frugalvision.methods.deit3.losses import (
    apply_mix,
    binarize_targets,
    cutmix_box,
    mix_batch,
    mix_targets,
    mixed_bce_loss,
    soft_target_cross_entropy,
)


def test_mixup_pairs_i_with_b_minus_1_minus_i() -> None:
    x = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1).expand(5, 1, 2, 2).contiguous()
    out, lam = apply_mix(x, 0.7)
    for i in range(5):
        assert torch.allclose(out[i], 0.7 * x[i] + 0.3 * x[4 - i])
    assert lam == 0.7


def test_cutmix_lambda_is_one_minus_clipped_box_area() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 2, 10, 12).contiguous()
    for _ in range(50):
        lam0 = float(torch.rand(1, generator=g))
        box = cutmix_box(10, 12, lam0, g)
        y0, y1, x0, x1 = box
        assert 0 <= y0 <= y1 <= 10 and 0 <= x0 <= x1 <= 12
        out, lam = apply_mix(x, lam0, box)
        assert lam == pytest.approx(1 - (y1 - y0) * (x1 - x0) / 120)
        for i in range(4):
            pasted = torch.zeros(10, 12, dtype=torch.bool)
            pasted[y0:y1, x0:x1] = True
            assert torch.all(out[i, :, pasted] == 3 - i) and torch.all(out[i, :, ~pasted] == i)
            # the share of the image's own pixels is lam
            assert (out[i, 0] == i).float().mean().item() == pytest.approx(lam) or i == 3 - i


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_soft_targets_match_timm_and_sum_to_one(smoothing: float) -> None:
    labels = torch.tensor([0, 3, 2, 3, 1, 4])
    ours = mix_targets(labels, 5, 0.37, smoothing)
    ref = mixup_target(labels, 5, lam=0.37, smoothing=smoothing)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(ours.sum(1), torch.ones(6))


def test_binarised_targets_are_the_union_of_the_two_one_hots() -> None:
    labels = torch.tensor([0, 3, 2, 2, 1, 4, 0])
    b = len(labels)
    for lam in (0.2, 0.5, 0.93, 1.0):
        t = binarize_targets(mix_targets(labels, 5, lam))
        for i in range(b):
            for c in range(5):
                present = (labels[i] == c and lam > 0) or (labels[b - 1 - i] == c and lam < 1)
                assert t[i, c] == float(present)


def test_bce_equals_brute_force_double_loop() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 4, generator=g) * 3
    targets = mix_targets(torch.tensor([0, 1, 2, 3, 1, 1]), 4, 0.6)
    t = binarize_targets(targets)
    total = 0.0
    for i in range(6):
        for c in range(4):
            p = 1 / (1 + math.exp(-float(logits[i, c])))
            total -= float(t[i, c]) * math.log(p) + (1 - float(t[i, c])) * math.log(1 - p)
    assert mixed_bce_loss(logits, targets).item() == pytest.approx(total / 24, rel=1e-5)
    # not binarised: the soft targets are used as they are
    assert mixed_bce_loss(logits, targets, binarize=False).item() != pytest.approx(total / 24, rel=1e-3)


def test_soft_target_cross_entropy_matches_timm() -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(5, 7, generator=g)
    targets = mix_targets(torch.tensor([0, 1, 6, 3, 2]), 7, 0.3, 0.1)
    torch.testing.assert_close(soft_target_cross_entropy(logits, targets), SoftTargetCrossEntropy()(logits, targets))


def test_mix_batch_switch_lambda_distribution_and_targets() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 3, 16, 16)
    labels = torch.tensor([0, 1, 2, 3])
    cut, mix_lams = 0, []
    for _ in range(400):
        mb = mix_batch(x, labels, 4, generator=g)
        torch.testing.assert_close(mb.targets, mix_targets(labels, 4, mb.lam))
        if mb.cutmix:
            cut += 1
            assert mb.box is not None
        else:
            mix_lams.append(mb.lam)
            torch.testing.assert_close(mb.inputs, x * mb.lam + x.flip(0) * (1 - mb.lam))
    assert 160 < cut < 240  # switch probability 0.5
    # Beta(0.8, 0.8): mean 1/2, variance 1/(4 * 2.6) ~ 0.096
    lam = torch.tensor(mix_lams)
    assert abs(lam.mean().item() - 0.5) < 0.06 and abs(lam.var().item() - 1 / 10.4) < 0.025
    none = mix_batch(x, labels, 4, mixup_alpha=0.0, cutmix_alpha=0.0, generator=g)
    assert none.lam == 1.0 and torch.equal(none.inputs, x)
