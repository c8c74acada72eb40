"""Batched image augmentations of the DeiT III and DeiT recipes, on float tensors ``[B, C, H, W]`` in ``[0, 1]``.

Every random choice is made per image (as the per-image PIL pipelines of the official code) but computed for the
whole batch at once, so that the data pipeline runs in a collate function (in DataLoader workers) at low cost.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

CropMode = Literal["rrc", "src", "none"]
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as PIL "L" and torchvision rgb_to_grayscale


def _rand(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator).to(device)


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return low + (high - low) * _rand(n, generator, device)


def _luma(x: torch.Tensor) -> torch.Tensor:
    """``[B, 1, H, W]`` luma of RGB images (the image itself when single-channel)."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor(GRAY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


# ----------------------------------------------------------------------------------------------------- the 3 ops
def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Grayscale with as many channels as the input (luma 0.299 R + 0.587 G + 0.114 B)."""
    return _luma(x).expand_as(x).contiguous()


def solarize(x: torch.Tensor, threshold: float = 128 / 255) -> torch.Tensor:
    """Invert every pixel ``>= threshold`` (PIL ``ImageOps.solarize(img, 128)`` on 0-255 images)."""
    # Half a grey level of slack so that k/255 == threshold is inverted despite float rounding.
    return torch.where(x >= threshold - 0.5 / 255, 1.0 - x, x)


def gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Normalised 1-D Gaussian kernels ``[B, 2 * radius + 1]``, one per standard deviation in ``sigma``."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=sigma.device)
    k = torch.exp(-0.5 * (t.view(1, -1) / sigma.view(-1, 1).float()) ** 2)
    return k / k.sum(1, keepdim=True)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one standard deviation per image, reflect padding, kernel radius ceil(3 sigma).

    Args:
        x: ``[B, C, H, W]``.
        sigma: ``[B]`` standard deviations in pixels.
    """
    b, c, h, w = x.shape
    radius = max(1, min(int(math.ceil(3.0 * float(sigma.max()))), h - 1, w - 1))
    k = gaussian_kernels(sigma.to(x.device), radius).to(x.dtype)  # [B, K]
    k = k.repeat_interleave(c, dim=0)  # [B*C, K]
    y = x.reshape(1, b * c, h, w)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k.view(b * c, 1, -1, 1), groups=b * c)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k.view(b * c, 1, 1, -1), groups=b * c)
    return y.view(b, c, h, w)


# ---------------------------------------------------------------------------------------------- colour jitter
def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.view(-1, 1, 1, 1).to(x.dtype)
    return (f * x + (1.0 - f) * other).clamp_(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Per-image brightness (torchvision: blend with black)."""
    return _blend(x, torch.zeros_like(x), factor)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Per-image contrast (torchvision: blend with the mean grey level of the image)."""
    return _blend(x, _luma(x).mean(dim=(1, 2, 3), keepdim=True), factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Per-image saturation (torchvision: blend with the grayscale image); identity on one channel."""
    return x if x.shape[1] == 1 else _blend(x, _luma(x), factor)


def color_jitter(
    x: torch.Tensor,
    brightness: float = 0.3,
    contrast: float = 0.3,
    saturation: float = 0.3,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Colour jitter as torchvision ``ColorJitter(b, c, s, hue=0)``.

    Factors ``U(1 - v, 1 + v)``, the three ops applied in a random order drawn per image.
    """
    b = x.shape[0]
    ops = [(adjust_brightness, brightness), (adjust_contrast, contrast), (adjust_saturation, saturation)]
    factors = [_uniform(b, 1 - v, 1 + v, generator, x.device) for _, v in ops]
    order = torch.argsort(torch.rand(b, 3, generator=generator), dim=1)  # a random permutation per image
    out = x.clone()
    for perm in torch.unique(order, dim=0):
        mask = (order == perm).all(1)
        m = mask.to(x.device)
        sub = x[m]
        for k in perm.tolist():
            fn, v = ops[k]
            if v > 0:
                sub = fn(sub, factors[k][m])
        out[m] = sub
    return out


# ------------------------------------------------------------------------------------------------------ crops
def _sample_rrc_boxes(
    b: int, h: int, w: int, scale: tuple[float, float], ratio: tuple[float, float], generator: torch.Generator | None
) -> torch.Tensor:
    """Boxes of torchvision ``RandomResizedCrop.get_params`` for ``b`` images: ``[B, 4]`` (top, left, h, w)."""
    attempts = 10
    area = h * w
    target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(b, attempts, generator=generator))
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(b, attempts, generator=generator))
    cw = torch.round(torch.sqrt(target * aspect))
    ch = torch.round(torch.sqrt(target / aspect))
    ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((b,), -1))
    u = torch.rand(b, 2, generator=generator)
    # Fallback (no valid attempt): whole image clamped to the ratio range, centred.
    in_ratio = w / h
    if in_ratio < min(ratio):
        fw, fh = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        fh, fw = h, int(round(h * max(ratio)))
    else:
        fw, fh = w, h
    idx = first.clamp(min=0)
    bw = torch.where(first >= 0, cw[torch.arange(b), idx], torch.full((b,), float(fw)))
    bh = torch.where(first >= 0, ch[torch.arange(b), idx], torch.full((b,), float(fh)))
    top = torch.where(first >= 0, torch.floor(u[:, 0] * (h - bh + 1)), torch.floor((h - bh) / 2))
    left = torch.where(first >= 0, torch.floor(u[:, 1] * (w - bw + 1)), torch.floor((w - bw) / 2))
    return torch.stack([top, left, bh, bw], dim=1)


def crop_resize(
    x: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor | None = None, mode: str = "bicubic"
) -> torch.Tensor:
    """Resample each image's box ``(top, left, height, width)`` to ``size x size`` (optionally mirrored).

    Sampling uses pixel-centre alignment (``align_corners=False``), as a resize of the cropped region.
    """
    b, _, h, w = x.shape
    boxes = boxes.to(x.device, torch.float32)
    top, left, bh, bw = boxes.unbind(1)
    sx = bw / w
    if flip is not None:
        sx = torch.where(flip.to(x.device), -sx, sx)
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = (2 * left + bw) / w - 1
    theta[:, 1, 1] = bh / h
    theta[:, 1, 2] = (2 * top + bh) / h - 1
    grid = F.affine_grid(theta, [b, x.shape[1], size, size], align_corners=False).to(x.dtype)
    return F.grid_sample(x, grid, mode=mode, padding_mode="border", align_corners=False).clamp_(0.0, 1.0)


def random_resized_crop(
    x: torch.Tensor,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_prob: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """RandomResizedCrop (bicubic) + horizontal flip, one box per image."""
    b, _, h, w = x.shape
    boxes = _sample_rrc_boxes(b, h, w, scale, ratio, generator)
    flip = torch.rand(b, generator=generator) < flip_prob
    return crop_resize(x, boxes, size, flip)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic, antialiased resize to ``size x size`` (a no-op at the same size)."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True).clamp_(0.0, 1.0)


def simple_random_crop(
    x: torch.Tensor,
    size: int,
    padding: int = 4,
    flip_prob: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Simple Random Crop (SRC): resize to ``size``, reflect-pad by ``padding``, random ``size`` crop, flip."""
    x = resize(x, size)
    b = x.shape[0]
    if padding > 0:
        x = F.pad(x, (padding,) * 4, mode="reflect")
    offsets = torch.randint(0, 2 * padding + 1, (b, 2), generator=generator).to(x.device)
    ar = torch.arange(size, device=x.device)
    rows = (offsets[:, 0:1] + ar).view(b, 1, size, 1)
    cols = (offsets[:, 1:2] + ar).view(b, 1, 1, size)
    flip = (torch.rand(b, generator=generator) < flip_prob).to(x.device)
    cols = torch.where(flip.view(b, 1, 1, 1), cols.flip(-1), cols)
    bi = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    ci = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return x[bi, ci, rows, cols]


def eval_resize(x: torch.Tensor, size: int, crop_ratio: float = 1.0) -> torch.Tensor:
    """Evaluation transform: resize to ``int(size / crop_ratio)`` then centre-crop ``size``."""
    big = int(size / crop_ratio)
    x = resize(x, big)
    off = (big - size) // 2
    return x[..., off : off + size, off : off + size]


def primary_crop(
    x: torch.Tensor,
    size: int,
    crop: CropMode,
    src_padding: int = 4,
    generator: torch.Generator | None = None,
    rrc_scale: tuple[float, float] = (0.08, 1.0),
) -> torch.Tensor:
    """Step 1 of 3-Augment: RRC + flip, SRC (resize, reflect-padded crop) + flip, or "none" (resize only)."""
    if crop == "rrc":
        return random_resized_crop(x, size, scale=rrc_scale, generator=generator)
    if crop == "src":
        return simple_random_crop(x, size, src_padding, generator=generator)
    return resize(x, size)


# ---------------------------------------------------------------------------------------------------- 3-Augment
THREE_AUGMENT_OPS = ("grayscale", "solarize", "blur")


def apply_three_augment_ops(x: torch.Tensor, ops: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Apply op ``ops[i]`` (0 grayscale, 1 solarize, 2 Gaussian blur of std ``sigma[i]``) to image ``i``."""
    ops, sigma = ops.to(x.device), sigma.to(x.device)
    out = torch.empty_like(x)
    for k, fn in enumerate((grayscale, solarize)):
        m = ops == k
        if m.any():
            out[m] = fn(x[m])
    m = ops == 2
    if m.any():
        out[m] = gaussian_blur(x[m], sigma[m])
    return out


def three_augment(
    x: torch.Tensor,
    size: int,
    crop: CropMode = "rrc",
    src_padding: int = 4,
    blur_sigma: tuple[float, float] = (0.1, 2.0),
    jitter: float = 0.3,
    generator: torch.Generator | None = None,
    return_ops: bool = False,
    rrc_scale: tuple[float, float] = (0.08, 1.0),
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """3-Augment: primary crop (+ flip), exactly one of grayscale / solarize / blur per image, then colour jitter.

    Args:
        x: ``[B, C, H, W]`` in ``[0, 1]``.
        size: output resolution.
        crop: "rrc" (ImageNet-1k recipe), "src" (ImageNet-21k recipe) or "none".
        src_padding: reflect padding of SRC.
        blur_sigma: range of the blur's standard deviation (official: U(0.1, 2.0) at 224 px).
        jitter: brightness = contrast = saturation jitter (0 disables it).
        generator: random source.
        return_ops: also return the op index chosen for each image.
        rrc_scale: area range of RandomResizedCrop.
    """
    x = primary_crop(x, size, crop, src_padding, generator, rrc_scale)
    b = x.shape[0]
    ops = torch.randint(0, 3, (b,), generator=generator)
    sigma = _uniform(b, blur_sigma[0], blur_sigma[1], generator, x.device)
    x = apply_three_augment_ops(x, ops, sigma)
    if jitter > 0:
        x = color_jitter(x, jitter, jitter, jitter, generator)
    return (x, ops) if return_ops else x


# ---------------------------------------------------------------------------------- DeiT baseline: RandAugment
RAND_OPS = (
    "autocontrast",
    "equalize",
    "invert",
    "rotate",
    "posterize",
    "solarize",
    "solarize_add",
    "color",
    "contrast",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per image and channel, as PIL ``ImageOps.equalize`` on the 0-255 quantised image.

    With ``h`` the 256-bin histogram, ``last`` the count of the highest occupied level and
    ``step = (sum(h) - last) // 255``: level ``v`` maps to ``min(255, (step // 2 + sum(h[:v])) // step)``, and a
    channel with ``step == 0`` (at most one level besides the top one) is left unchanged.

    Args:
        x: ``[B, C, H, W]`` in ``[0, 1]``.

    Returns:
        The equalised batch in ``[0, 1]`` (on the 1/255 grid).
    """
    b, c, h, w = x.shape
    q = (x * 255).round_().clamp_(0, 255).long().view(b * c, h * w)
    hist = torch.zeros(b * c, 256, dtype=torch.long, device=x.device).scatter_add_(1, q, torch.ones_like(q))
    top = 255 - torch.argmax((hist.flip(1) > 0).long(), dim=1)  # highest occupied level
    step = (h * w - hist.gather(1, top.view(-1, 1)).view(-1)) // 255
    before = torch.cumsum(hist, 1) - hist  # pixels strictly below each level
    safe = step.clamp(min=1).view(-1, 1)
    lut = ((step.view(-1, 1) // 2 + before) // safe).clamp_(max=255)
    lut = torch.where(step.view(-1, 1) > 0, lut, torch.arange(256, device=x.device).view(1, -1))
    return lut.gather(1, q).view(b, c, h, w).to(x.dtype) / 255.0


def _affine(x: torch.Tensor, theta: torch.Tensor, fill: float) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False).to(x.dtype)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    inside = F.grid_sample(torch.ones_like(x[:, :1]), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + fill * (1.0 - inside)


def _rand_op(name: str, x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor, fill: float) -> torch.Tensor:
    """One RandAugment op (timm "increasing" levels, ``level`` = magnitude / 10 in [0, 1]) on a sub-batch."""
    v = level.view(-1, 1, 1, 1).to(x.dtype)
    s = sign.view(-1, 1, 1, 1).to(x.dtype)
    b = x.shape[0]
    if name == "autocontrast":
        lo, hi = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
        return torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-6), x)
    if name == "equalize":
        return equalize(x)
    if name == "invert":
        return 1.0 - x
    if name == "posterize":
        bits = (4 - (4 * v).floor()).clamp(0, 8)
        q = 2.0 ** (8 - bits)
        return torch.floor(x * 255 / q) * q / 255
    if name == "solarize":
        return torch.where(x >= (256 - torch.floor(256 * v)) / 255, 1.0 - x, x)
    if name == "solarize_add":
        return torch.where(x < 128 / 255, (x + torch.floor(110 * v) / 255).clamp(0, 1), x)
    factor = (1.0 + 0.9 * v * s).view(-1)
    if name == "color":
        return adjust_saturation(x, factor)
    if name == "contrast":
        return adjust_contrast(x, factor)
    if name == "brightness":
        return adjust_brightness(x, factor)
    if name == "sharpness":
        k = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], dtype=x.dtype, device=x.device) / 13
        c = x.shape[1]
        smooth = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.expand(c, 1, 3, 3), groups=c)
        return _blend(x, smooth, factor)
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    lv, sg = level.to(x.device), sign.to(x.device)
    if name == "rotate":
        a = torch.deg2rad(30.0 * lv * sg)
        theta[:, 0, 0], theta[:, 0, 1] = torch.cos(a), -torch.sin(a)
        theta[:, 1, 0], theta[:, 1, 1] = torch.sin(a), torch.cos(a)
    elif name == "shear_x":
        theta[:, 0, 1] = 0.3 * lv * sg
    elif name == "shear_y":
        theta[:, 1, 0] = 0.3 * lv * sg
    elif name == "translate_x":
        theta[:, 0, 2] = 2 * 0.45 * lv * sg
    elif name == "translate_y":
        theta[:, 1, 2] = 2 * 0.45 * lv * sg
    else:
        raise ValueError(f"unknown RandAugment op {name!r}")
    return _affine(x, theta, fill).clamp_(0.0, 1.0)


def rand_augment_lite(
    x: torch.Tensor,
    num_ops: int = 2,
    magnitude: float = 9.0,
    magnitude_std: float = 0.5,
    prob: float = 0.5,
    fill: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Batched RandAugment in the spirit of timm's ``rand-m9-mstd0.5-inc1`` (timm's 15 "increasing" ops).

    Per image and layer: one op drawn uniformly from :data:`RAND_OPS`, applied with probability ``prob`` at
    magnitude ``N(magnitude, magnitude_std)`` clipped to [0, 10], with a random sign for signed ops.
    """
    b = x.shape[0]
    for _ in range(num_ops):
        op = torch.randint(0, len(RAND_OPS), (b,), generator=generator)
        apply = torch.rand(b, generator=generator) < prob
        level = (magnitude + magnitude_std * torch.randn(b, generator=generator)).clamp(0, 10) / 10.0
        sign = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0)
        out = x.clone()
        for k, name in enumerate(RAND_OPS):
            mask = (op == k) & apply
            if mask.any():
                m = mask.to(x.device)
                out[m] = _rand_op(name, x[m], level[mask], sign[mask], fill)
        x = out
    return x


def random_erasing(
    x: torch.Tensor,
    prob: float = 0.25,
    area: tuple[float, float] = (0.02, 1 / 3),
    ratio: tuple[float, float] = (0.3, 3.3),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random erasing as timm (mode "pixel", one box): with probability ``prob``, fill a box with N(0, 1) noise.

    Applied to normalised images, as in timm.
    """
    b, c, h, w = x.shape
    attempts = 10
    target = h * w * (area[0] + (area[1] - area[0]) * torch.rand(b, attempts, generator=generator))
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(b, attempts, generator=generator))
    eh = torch.round(torch.sqrt(target * aspect))
    ew = torch.round(torch.sqrt(target / aspect))
    ok = (eh < h) & (ew < w) & (eh > 0) & (ew > 0)
    first = ok.float().argmax(1)
    do = (torch.rand(b, generator=generator) < prob) & ok.any(1)
    ar = torch.arange(b)
    eh, ew = eh[ar, first], ew[ar, first]
    u = torch.rand(b, 2, generator=generator)
    top = torch.floor(u[:, 0] * (h - eh + 1))
    left = torch.floor(u[:, 1] * (w - ew + 1))
    ys = torch.arange(h).view(1, h, 1)
    xs = torch.arange(w).view(1, 1, w)
    mask = (ys >= top.view(-1, 1, 1)) & (ys < (top + eh).view(-1, 1, 1))
    mask = mask & (xs >= left.view(-1, 1, 1)) & (xs < (left + ew).view(-1, 1, 1)) & do.view(-1, 1, 1)
    noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
    return torch.where(mask.unsqueeze(1).to(x.device), noise, x)
