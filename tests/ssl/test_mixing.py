"""MixUp / CutMix against their closed forms (and timm's targets); the exact composite."""

import pytest
import torch
import torch.nn.functional as F

from frugalvision.errors import DataError
from frugalvision.ssl import CutMix, composite_mix, cutmix, mix_plugin, mixup, rand_box


def test_mixup_is_the_convex_combination():
    x, perm = torch.rand(4, 3, 5, 5), torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(mixup(x, 0.3, perm), 0.3 * x + 0.7 * x[perm])


def test_cutmix_pastes_the_box_and_lambda_is_the_kept_area():
    x, perm = torch.rand(3, 2, 8, 10), torch.tensor([1, 2, 0])
    out, lam = cutmix(x, (2, 6, 1, 4), perm)
    expected = x.clone()
    expected[:, :, 2:6, 1:4] = x[perm][:, :, 2:6, 1:4]
    torch.testing.assert_close(out, expected)
    assert lam == pytest.approx(1 - 4 * 3 / 80)
    changed = (out != x).any(1).float()
    assert changed.mean().item() == pytest.approx(1 - lam, abs=0.05)


def test_rand_box_has_the_cutmix_side_and_stays_inside():
    gen = torch.Generator().manual_seed(0)
    for lam in (0.1, 0.5, 0.9):
        for _ in range(20):
            y0, y1, x0, x1 = rand_box(16, 16, lam, gen)
            assert 0 <= y0 <= y1 <= 16 and 0 <= x0 <= x1 <= 16
            assert y1 - y0 <= int(16 * (1 - lam) ** 0.5) and x1 - x0 <= int(16 * (1 - lam) ** 0.5)


def test_mixed_targets_equal_timm_mixup_target():
    mixup_target = pytest.importorskip("timm.data.mixup").mixup_target
    labels = torch.tensor([0, 3, 1, 2])
    ours = 0.35 * F.one_hot(labels, 5).float() + 0.65 * F.one_hot(labels.flip(0), 5).float()
    torch.testing.assert_close(ours, mixup_target(labels, 5, lam=0.35, smoothing=0.0))


def test_cutmix_plugin_returns_its_corrected_lambda():
    torch.manual_seed(0)
    x = torch.zeros(2, 1, 6, 6)
    x[1] = 1.0
    out, lam = CutMix()(x, torch.tensor([1, 0]))
    assert out[0].mean().item() == pytest.approx(1 - lam)


def test_composite_mix_is_exact_and_names_missing_fields():
    alpha = torch.rand(2, 1, 4, 4)
    fg, bg_a, bg_b = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    semantic = {"alpha": alpha, "foreground": fg, "background": bg_a}
    out = composite_mix(semantic, {"background": bg_b})
    torch.testing.assert_close(out, alpha * fg + (1 - alpha) * bg_b)
    with pytest.raises(DataError, match="background"):
        composite_mix(semantic, {"image": bg_b})


def test_mix_plugin_names():
    assert mix_plugin("none") is None
    assert isinstance(mix_plugin("cutmix"), CutMix)
    with pytest.raises(ValueError, match="mixer"):
        mix_plugin("semantic")
