"""3-Augment and the baseline augmentations against closed forms, torchvision and statistics."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.functional as TF
from scipy.stats import chisquare

from frugalvision.methods.deit3.augment import (
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    color_jitter,
    crop_resize,
    equalize,
    eval_resize,
    gaussian_blur,
    grayscale,
    rand_augment_lite,
    random_erasing,
    random_resized_crop,
    simple_random_crop,
    solarize,
    three_augment,
)
from frugalvision.methods.deit3.config import OFFICIAL_BLUR_SIGMA, extended, smoke


def images(b: int = 8, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, size, size), generator=g).float() / 255


def test_grayscale_closed_form_equal_channels_and_torchvision() -> None:
    x = images()
    y = grayscale(x)
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])
    torch.testing.assert_close(y[:, 0], 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])
    # torchvision weighs red 0.2989 where PIL (the official pipeline) uses 0.299: equal to 1e-4.
    torch.testing.assert_close(y, TF.rgb_to_grayscale(x, num_output_channels=3), atol=1.1e-4, rtol=0)


def test_solarize_inverts_exactly_the_pixels_at_or_above_128() -> None:
    levels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    y = solarize(levels.float() / 255)
    expected = torch.where(levels >= 128, 255 - levels, levels)
    assert torch.equal((y * 255).round().to(torch.uint8), expected)
    assert torch.equal((y * 255).round().to(torch.uint8), TF.solarize(levels, 128))


def test_blur_matches_torchvision_per_image_sigma() -> None:
    x = images(3, 20)
    sigma = torch.tensor([0.5, 1.0, 1.7])
    y = gaussian_blur(x, sigma)
    radius = 6  # ceil(3 * 1.7)
    for i in range(3):
        ref = TF.gaussian_blur(x[i : i + 1], [2 * radius + 1] * 2, [float(sigma[i])] * 2)
        torch.testing.assert_close(y[i : i + 1], ref, atol=1e-5, rtol=0)
    assert torch.allclose(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.02)


def test_blur_removes_the_same_share_of_the_spectrum_at_28_and_224_px() -> None:
    """A blur of sigma pixels keeps the same share of a white-noise image's energy at any size: (sum_k g_k^2)^2."""
    g = torch.Generator().manual_seed(0)
    for sigma in (0.5, 1.0, 2.0):
        radius = math.ceil(3 * sigma)
        taps = torch.exp(-(torch.arange(-radius, radius + 1.0) ** 2) / (2 * sigma**2))
        closed = float(((taps / taps.sum()) ** 2).sum() ** 2)  # separable kernel: variance ratio on white noise
        for size, n in ((28, 256), (224, 4)):
            x = torch.rand(n, 1, size, size, generator=g)
            y = gaussian_blur(x, torch.full((n,), sigma))
            inner = (..., slice(radius, size - radius), slice(radius, size - radius))  # away from the padding
            kept = float(y[inner].var() / x[inner].var())
            assert kept == pytest.approx(closed, rel=0.06), (sigma, size)


def test_toy_presets_blur_like_the_official_range_not_the_identity_of_the_size_scaled_one() -> None:
    """The former toy range (official x 28 / 224, sigma <= 0.25 px) left a third of 3-Augment's draws unchanged."""
    edge = torch.zeros(300, 3, 28, 28)
    edge[..., 14:] = 1.0
    scaled = tuple(s * 28 / 224 for s in OFFICIAL_BLUR_SIGMA)
    assert float((gaussian_blur(edge[:1], torch.tensor([scaled[1]])) - edge[:1]).abs().max()) < 1e-3
    for config in (smoke(), extended()):
        assert config.base.pretrain.blur_sigma == OFFICIAL_BLUR_SIGMA
    changed = {}
    for name, sigma_range in (("scaled", scaled), ("official", OFFICIAL_BLUR_SIGMA)):
        g = torch.Generator().manual_seed(1)
        out, ops = three_augment(edge, 28, "none", blur_sigma=sigma_range, jitter=0.0, generator=g, return_ops=True)
        blurred = ops == 2
        delta = (out[blurred] - edge[blurred]).abs().flatten(1).amax(1)
        changed[name] = float((delta > 1 / 255).float().mean())
    # sigma < 0.3 px leaves an edge within one grey level: 0.2 / 1.9 of the official draws, all of the scaled ones
    assert changed["scaled"] == 0.0 and changed["official"] > 0.8


def test_three_augment_applies_exactly_one_op_per_image() -> None:
    g = torch.Generator().manual_seed(0)
    x = images(64, 12, seed=1)
    out, ops = three_augment(x, 12, crop="none", jitter=0.0, blur_sigma=(0.5, 2.0), generator=g, return_ops=True)
    gray, sol = grayscale(x), solarize(x)
    for i in range(64):
        is_gray = torch.allclose(out[i], gray[i], atol=1e-6)
        is_sol = torch.allclose(out[i], sol[i], atol=1e-6)
        is_blur = not (is_gray or is_sol) and not torch.allclose(out[i], x[i], atol=1e-3)
        assert [is_gray, is_sol, is_blur].count(True) == 1
        assert [is_gray, is_sol, is_blur].index(True) == int(ops[i])
    # the blurred ones are Gaussian blurs of the crop: same per-channel mean, smaller spread
    blurred = ops == 2
    assert torch.allclose(out[blurred].mean(dim=(2, 3)), x[blurred].mean(dim=(2, 3)), atol=0.03)
    assert torch.all(out[blurred].std(dim=(2, 3)) < x[blurred].std(dim=(2, 3)))


def test_three_augment_op_frequencies_chi_square() -> None:
    g = torch.Generator().manual_seed(4)
    _, ops = three_augment(torch.rand(3000, 3, 4, 4), 4, crop="none", jitter=0.3, generator=g, return_ops=True)
    counts = torch.bincount(ops, minlength=3).tolist()
    assert chisquare(counts).pvalue > 0.001


def test_color_jitter_factors_and_torchvision_ops() -> None:
    x = images(4)
    f = torch.tensor([0.7, 1.0, 1.2, 1.3])
    for ours, ref in (
        (adjust_brightness, TF.adjust_brightness),
        (adjust_contrast, TF.adjust_contrast),
        (adjust_saturation, TF.adjust_saturation),
    ):
        out = ours(x, f)
        for i in range(4):
            torch.testing.assert_close(out[i], ref(x[i], float(f[i])), atol=1.1e-4, rtol=0)  # luma weights as above
    assert torch.equal(color_jitter(x, 0.0, 0.0, 0.0), x)
    y = color_jitter(x, 0.3, 0.3, 0.3, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1 and not torch.equal(x, y)


def test_src_output_size_reflect_padding_and_windows() -> None:
    g = torch.Generator().manual_seed(0)
    x = images(16, 8)
    y = simple_random_crop(x, 8, padding=2, flip_prob=0.5, generator=g)
    assert y.shape == (16, 3, 8, 8)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect")
    for i in range(16):
        windows = [padded[i, :, r : r + 8, c : c + 8] for r in range(5) for c in range(5)]
        assert any(torch.equal(y[i], w) or torch.equal(y[i], w.flip(-1)) for w in windows)
    assert simple_random_crop(images(2, 32), 8, padding=1).shape == (2, 3, 8, 8)  # resize first


def test_rrc_full_box_is_the_resize_and_boxes_inside() -> None:
    x = images(4, 16)
    full = torch.tensor([[0.0, 0.0, 16.0, 16.0]] * 4)
    torch.testing.assert_close(crop_resize(x, full, 16), x, atol=1e-5, rtol=0)
    flipped = crop_resize(x, full, 16, flip=torch.ones(4, dtype=torch.bool))
    torch.testing.assert_close(flipped, x.flip(-1), atol=1e-5, rtol=0)
    half = torch.tensor([[4.0, 0.0, 8.0, 16.0]] * 4)  # rows 4..11, all columns, to 8x8 -> pixel mean preserved
    torch.testing.assert_close(crop_resize(x, half, 8, mode="bilinear").mean(), x[:, :, 4:12].mean(), atol=0.02, rtol=0)
    out = random_resized_crop(x, 12, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 12, 12) and out.min() >= 0 and out.max() <= 1


def test_eval_resize_pre_crop_size_and_output() -> None:
    x = images(2, 32)
    assert eval_resize(x, 28, 0.875).shape == (2, 3, 28, 28)
    assert torch.equal(eval_resize(x, 32, 1.0), x)  # official DeiT III crop ratio 1.0 at the native size: identity
    big = torch.nn.functional.interpolate(x, size=(32, 32))
    assert int(28 / 0.875) == 32
    torch.testing.assert_close(eval_resize(big, 28, 0.875), big[..., 2:30, 2:30])


def test_randaugment_and_random_erasing_shapes_and_rates() -> None:
    g = torch.Generator().manual_seed(0)
    x = images(64, 16)
    y = rand_augment_lite(x, generator=g)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    changed = (y - x).abs().flatten(1).amax(1) > 1e-6
    assert 0.5 < changed.float().mean() < 0.95  # two layers at prob 0.5 -> about 3/4 of images touched
    z = random_erasing(torch.zeros(2000, 1, 16, 16), prob=0.25, generator=g)
    erased = (z != 0).flatten(1).any(1).float().mean().item()
    assert erased == pytest.approx(0.25, abs=0.04)


def test_equalize_closed_form_and_pil() -> None:
    # Closed form: 4 pixels at levels 10, 10, 20, 30 -> h = {10: 2, 20: 1, 30: 1}, step = (4 - 1) // 255 = 0: identity.
    tiny = torch.tensor([10.0, 10.0, 20.0, 30.0]).view(1, 1, 2, 2) / 255
    torch.testing.assert_close(equalize(tiny), tiny)
    # 512 pixels, half at 50 and half at 100: step = (512 - 256) // 255 = 1, lut[v] = 0 + #pixels below v.
    half = torch.cat([torch.full((256,), 50.0), torch.full((256,), 100.0)]).view(1, 1, 16, 32) / 255
    expected = torch.cat([torch.zeros(256), torch.full((256,), 255.0)]).view(1, 1, 16, 32) / 255
    torch.testing.assert_close(equalize(half), expected)
    # Against PIL's ImageOps.equalize (timm's Equalize op), per channel, on skewed random images.
    np = pytest.importorskip("numpy")
    from PIL import Image, ImageOps

    g = torch.Generator().manual_seed(0)
    for power in (1, 3):
        x = (torch.rand(4, 3, 20, 20, generator=g) ** power * 255).round().to(torch.uint8)
        ours = (equalize(x.float() / 255) * 255).round().to(torch.uint8)
        for i in range(len(x)):
            ref = np.array(ImageOps.equalize(Image.fromarray(x[i].permute(1, 2, 0).numpy())))
            assert torch.equal(ours[i], torch.from_numpy(ref).permute(2, 0, 1))
