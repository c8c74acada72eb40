"""Domain-shift builders over real images: rotations, colour/contrast tints, real texture/photo backgrounds.

Each builder takes an :class:`ImageArrays`, splits it into disjoint random shares (one per domain, DomainBed style;
``disjoint=False`` gives every domain all images) and returns ``{domain name: ImageArrays}`` where each ImageArrays is
named after its domain. Everything is a pure function of the inputs and ``seed``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from frugalvision.data import provenance
from frugalvision.data.arrays import ImageArrays, concat_arrays
from frugalvision.data.splits import derive_seed
from frugalvision.errors import DataError

__all__ = [
    "TEXTURE_FAMILIES",
    "color_domains",
    "composite",
    "concat_arrays",
    "domain_shares",
    "load_texture",
    "load_textures",
    "rotated_domains",
    "sample_backgrounds",
    "texture_background_domains",
]

TEXTURE_FAMILIES: dict[str, tuple[str, ...]] = {
    "brick": ("brick",),
    "grass": ("grass",),
    "gravel": ("gravel",),
    "photo": ("astronaut", "camera", "chelsea", "coffee", "rocket"),
}
"""Background families: names of real images in ``skimage.data`` that ship inside the scikit-image wheel."""

_CHUNK = 8192


def _generator(seed: int) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return gen


def domain_shares(n: int, k: int, seed: int, *, disjoint: bool = True) -> list[torch.Tensor]:
    """Return the indices of the images each of ``k`` domains gets.

    Args:
        n: Number of images.
        k: Number of domains.
        seed: Seed of the shuffle.
        disjoint: Split a random permutation round-robin into ``k`` disjoint shares (DomainBed); otherwise every
            domain gets ``range(n)``.

    Returns:
        ``k`` sorted int64 index tensors.

    """
    if k < 1:
        raise DataError(f"need at least one domain, got {k}; fix: pass a non-empty list of domains")
    if not disjoint:
        return [torch.arange(n) for _ in range(k)]
    perm = torch.randperm(n, generator=_generator(derive_seed(seed, "shares", k)))
    return [perm[i::k].sort().values for i in range(k)]


def _gray01(images: torch.Tensor) -> torch.Tensor:
    """Float intensity in [0, 1], shape [N, 1, H, W], from 1- or 3-channel uint8 images."""
    x = images.float().div_(255.0)
    if x.shape[1] == 1:
        return x
    if x.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (x * weights).sum(1, keepdim=True)
    raise DataError(f"images have {x.shape[1]} channels; fix: use 1-channel (gray) or 3-channel (RGB) images")


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def _check_nonempty(arrays: ImageArrays, what: str) -> None:
    if len(arrays) == 0:
        raise DataError(f"{what}: image set {arrays.name!r} is empty; fix: pass a non-empty ImageArrays")


# -------------------------------------------------------------------------------------------------------------- rotate


def rotated_domains(
    arrays: ImageArrays,
    angles: Sequence[float] = (0, 15, 30, 45, 60, 75),
    seed: int = 0,
    *,
    disjoint: bool = True,
) -> dict[str, ImageArrays]:
    """Rotated domains, as in DomainBed's RotatedMNIST: each angle gets a disjoint share of the images.

    Rotation is ``torchvision.transforms.functional.rotate`` (bilinear, counter-clockwise, black fill).

    Args:
        arrays: Source images.
        angles: One domain per angle, in degrees.
        seed: Seed of the share assignment.
        disjoint: Disjoint shares (default) or every image in every domain.

    Returns:
        ``{"rot<angle>": ImageArrays}`` in the order of ``angles``.

    """
    _check_nonempty(arrays, "rotated_domains")
    names = [f"rot{float(a):g}" for a in angles]
    if len(set(names)) != len(names):
        raise DataError(f"rotation angles {list(angles)} repeat; fix: pass distinct angles")
    out: dict[str, ImageArrays] = {}
    for name, angle, idx in zip(names, angles, domain_shares(len(arrays), len(names), seed, disjoint=disjoint)):
        chunks = [
            TF.rotate(
                arrays.images[idx[i : i + _CHUNK]], float(angle), interpolation=InterpolationMode.BILINEAR, fill=0
            )
            for i in range(0, len(idx), _CHUNK)
        ]
        images = torch.cat(chunks) if chunks else arrays.images[:0].clone()
        out[name] = ImageArrays(images, arrays.labels[idx], list(arrays.classes), name)
    return out


# --------------------------------------------------------------------------------------------------------------- color


def _hsv_to_rgb(h: torch.Tensor, s: float, v: float) -> torch.Tensor:
    """Vectorised HSV -> RGB for hue tensor ``h`` in [0, 1); returns [N, 3]."""
    k = (torch.tensor([5.0, 3.0, 1.0]) + h[:, None] * 6.0) % 6.0
    return v - v * s * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)


def color_domains(
    arrays: ImageArrays,
    hues: Sequence[float] = (0.0, 0.25, 0.5, 0.75),
    contrasts: Sequence[float] = (1.0, 0.8, 0.6, 0.4),
    seed: int = 0,
    *,
    hue_width: float = 0.1,
    saturation: float = 0.8,
    disjoint: bool = True,
) -> dict[str, ImageArrays]:
    """Colour/contrast domains: each domain tints its images with hues from a band and lowers their contrast.

    For an image with gray intensity ``g`` in [0, 1], domain ``(hue, c)`` draws a hue uniformly in
    ``hue ± hue_width / 2`` per image and outputs ``rgb(hue, saturation) * (0.5 + c * (g - 0.5))``.

    Args:
        arrays: Source images (1- or 3-channel; RGB is converted to gray first).
        hues: Centre hue of each domain, in [0, 1) (0 red, 1/3 green, 2/3 blue).
        contrasts: Contrast factor of each domain, in (0, 1].
        seed: Seed of the shares and the per-image hues.
        hue_width: Width of each hue band.
        saturation: Tint saturation in [0, 1].
        disjoint: Disjoint shares (default) or every image in every domain.

    Returns:
        ``{"hue<deg>-c<contrast>": ImageArrays}`` with 3-channel images.

    """
    _check_nonempty(arrays, "color_domains")
    if len(hues) != len(contrasts):
        raise DataError(f"{len(hues)} hues but {len(contrasts)} contrasts; fix: pass one contrast per hue")
    if any(not 0.0 < c <= 1.0 for c in contrasts):
        raise DataError(f"contrasts {list(contrasts)} must lie in (0, 1]; fix: e.g. (1.0, 0.8, 0.6, 0.4)")
    names = [f"hue{round(float(h) * 360) % 360}-c{float(c):g}" for h, c in zip(hues, contrasts)]
    if len(set(names)) != len(names):
        raise DataError(f"colour domains {names} repeat; fix: pass distinct (hue, contrast) pairs")
    out: dict[str, ImageArrays] = {}
    shares = domain_shares(len(arrays), len(names), seed, disjoint=disjoint)
    for name, hue, contrast, idx in zip(names, hues, contrasts, shares):
        gen = _generator(derive_seed(seed, "color", name))
        h = (float(hue) + (torch.rand(len(idx), generator=gen) - 0.5) * hue_width) % 1.0
        tint = _hsv_to_rgb(h, saturation, 1.0)[:, :, None, None]
        gray = 0.5 + float(contrast) * (_gray01(arrays.images[idx]) - 0.5)
        out[name] = ImageArrays(_to_uint8(gray * tint), arrays.labels[idx], list(arrays.classes), name)
    return out


# ------------------------------------------------------------------------------------------------------------- texture


@lru_cache(maxsize=32)
def _texture_cached(name: str) -> torch.Tensor:
    import numpy as np
    import skimage.data

    fn = getattr(skimage.data, name, None)
    if fn is None or not callable(fn):
        raise DataError(f"skimage.data has no image {name!r}; fix: use one of brick, grass, gravel, astronaut, coffee")
    try:
        arr = np.asarray(fn())
    except Exception as err:  # noqa: BLE001 - pooch-backed images fail without network or without pooch
        msg = " ".join(str(err).split())[:120]
        raise DataError(
            f"skimage.data.{name} cannot be loaded offline ({type(err).__name__}: {msg}); fix: use a texture that "
            "ships in the scikit-image wheel, e.g. brick, grass, gravel, astronaut"
        ) from err
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise DataError(f"skimage.data.{name} has shape {arr.shape}, not an image; fix: pick another texture")
    return torch.from_numpy(np.ascontiguousarray(arr[:, :, :3].transpose(2, 0, 1)))


def load_texture(name: str) -> torch.Tensor:
    """Load a real image from ``skimage.data`` as a uint8 RGB tensor ``[3, H, W]`` (cached).

    Raises:
        DataError: If the image does not exist or needs a download.

    """
    image = _texture_cached(name)
    provenance.record_source(f"skimage.data.{name}", "scikit-image package")
    return image


def _resolve_families(families: Sequence[str] | Mapping[str, Sequence[str]] | None) -> dict[str, tuple[str, ...]]:
    if families is None:
        return dict(TEXTURE_FAMILIES)
    if isinstance(families, Mapping):
        return {str(k): tuple(v) for k, v in families.items()}
    if isinstance(families, str):
        families = [families]
    unknown = [f for f in families if f not in TEXTURE_FAMILIES]
    if unknown:
        raise DataError(
            f"unknown texture family {unknown[0]!r}; fix: use some of {', '.join(TEXTURE_FAMILIES)} or pass a mapping"
        )
    return {f: TEXTURE_FAMILIES[f] for f in families}


def load_textures(
    families: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
) -> dict[str, list[torch.Tensor]]:
    """Load the textures of each family as uint8 RGB ``[3, H, W]`` tensors.

    Args:
        families: Family names from :data:`TEXTURE_FAMILIES`, a mapping ``family -> skimage.data names``, or
            ``None`` for all default families.

    Returns:
        ``{family: [texture, ...]}``.

    """
    resolved = _resolve_families(families)
    for fam, names in resolved.items():
        if not names:
            raise DataError(f"texture family {fam!r} lists no images; fix: give it at least one skimage.data name")
    return {fam: [load_texture(n) for n in names] for fam, names in resolved.items()}


def sample_backgrounds(
    textures: Sequence[torch.Tensor],
    n: int,
    size: tuple[int, int],
    seed: int,
    *,
    crop_scale: tuple[float, float] = (0.15, 0.5),
    num_scales: int = 16,
) -> torch.Tensor:
    """Random crops of real textures, resized to ``size``.

    Each background picks a texture uniformly, a crop height ``s * min(texture H, W)`` with ``s`` drawn uniformly
    from ``num_scales`` log-spaced values spanning ``crop_scale`` (the width keeps the aspect of ``size``), and a
    uniform position. The texture is resized once per scale (bilinear, anti-aliased) so that the crop is exactly
    ``size`` pixels, and each crop is then a verbatim window of the resized texture; at scale 1:1 the window is a
    verbatim window of the texture itself.

    Args:
        textures: uint8 ``[3, H, W]`` textures.
        n: Number of backgrounds.
        size: Output ``(height, width)``.
        seed: Seed of every random choice.
        crop_scale: Range of crop size relative to the texture's short side.
        num_scales: Number of distinct crop scales.

    Returns:
        uint8 tensor ``[n, 3, height, width]``.

    """
    if not textures:
        raise DataError("sample_backgrounds got no textures; fix: pass at least one [3, H, W] uint8 texture")
    lo, hi = crop_scale
    if not 0.0 < lo <= hi <= 1.0:
        raise DataError(f"crop_scale {crop_scale} must satisfy 0 < low <= high <= 1; fix: e.g. (0.15, 0.5)")
    if num_scales < 1:
        raise DataError(f"num_scales={num_scales} must be >= 1; fix: e.g. 16")
    height, width = size
    k = num_scales if hi > lo else 1
    scales = [lo * (hi / lo) ** (i / max(k - 1, 1)) for i in range(k)]
    gen = _generator(seed)
    which = torch.randint(len(textures), (n,), generator=gen)
    level = torch.randint(k, (n,), generator=gen)
    u = torch.rand(n, 2, generator=gen, dtype=torch.float64)
    out = torch.empty(n, 3, height, width, dtype=torch.uint8)
    rows, cols = torch.arange(height), torch.arange(width)
    for t, tex in enumerate(textures):
        th, tw = int(tex.shape[1]), int(tex.shape[2])
        tex_f = tex[None].float()
        for lev in torch.unique(level[which == t]).tolist():
            sel = torch.nonzero((which == t) & (level == lev)).flatten()
            factor = height / (scales[lev] * min(th, tw))
            rh, rw = max(height, round(th * factor)), max(width, round(tw * factor))
            if (rh, rw) == (th, tw):
                resized = tex
            else:
                img = F.interpolate(tex_f, size=(rh, rw), mode="bilinear", antialias=True)
                resized = img[0].round_().clamp_(0, 255).to(torch.uint8)
            y0 = torch.floor(u[sel, 0] * (rh - height + 1)).long().clamp(max=rh - height)
            x0 = torch.floor(u[sel, 1] * (rw - width + 1)).long().clamp(max=rw - width)
            ys = (y0[:, None] + rows)[:, :, None]  # [m, h, 1]
            xs = (x0[:, None] + cols)[:, None, :]  # [m, 1, w]
            out[sel] = resized[:, ys, xs].permute(1, 0, 2, 3)
    return out


def composite(
    foreground: torch.Tensor, background: torch.Tensor, color: tuple[int, int, int] = (255, 255, 255)
) -> torch.Tensor:
    """Alpha-composite foregrounds onto backgrounds, using the foreground's intensity as alpha.

    ``out = alpha * color + (1 - alpha) * background`` with ``alpha = gray(foreground) / 255``; where alpha is 0 the
    output equals the background exactly.

    Args:
        foreground: uint8 ``[N, 1 or 3, H, W]``.
        background: uint8 ``[N, 3, H, W]``.
        color: RGB colour painted where alpha is 1.

    Returns:
        uint8 ``[N, 3, H, W]``.

    """
    if foreground.shape[0] != background.shape[0] or foreground.shape[2:] != background.shape[2:]:
        raise DataError(
            f"foreground {tuple(foreground.shape)} and background {tuple(background.shape)} do not match; "
            "fix: sample one background per image at the image size"
        )
    alpha = _gray01(foreground)
    paint = torch.tensor([float(c) for c in color]).view(1, 3, 1, 1)
    out = alpha * paint + (1.0 - alpha) * background.float()
    return out.round_().clamp_(0, 255).to(torch.uint8)


def texture_background_domains(
    arrays: ImageArrays,
    families: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    seed: int = 0,
    *,
    crop_scale: tuple[float, float] = (0.15, 0.5),
    color: tuple[int, int, int] = (255, 255, 255),
    disjoint: bool = True,
) -> dict[str, ImageArrays]:
    """Background domains: paste the (gray) images onto random crops of real textures or photos.

    Domain ``fam`` takes its share of the images and composites each (intensity as alpha, painted in ``color``)
    onto ``sample_backgrounds(textures[fam], n, (H, W), seed=derive_seed(seed, "texture", fam), ...)``.

    Args:
        arrays: Source images (1- or 3-channel; intensity is the alpha).
        families: Family names from :data:`TEXTURE_FAMILIES`, a mapping ``family -> skimage.data names``, or ``None``
            for all of brick, grass, gravel, photo.
        seed: Seed of the shares and the crops.
        crop_scale: Crop size range relative to each texture's short side.
        color: Foreground colour.
        disjoint: Disjoint shares (default) or every image in every domain.

    Returns:
        ``{family: ImageArrays}`` with 3-channel images.

    """
    _check_nonempty(arrays, "texture_background_domains")
    textures = load_textures(families)
    _, _, height, width = arrays.images.shape
    out: dict[str, ImageArrays] = {}
    for (fam, texs), idx in zip(textures.items(), domain_shares(len(arrays), len(textures), seed, disjoint=disjoint)):
        bg = sample_backgrounds(
            texs, len(idx), (height, width), derive_seed(seed, "texture", fam), crop_scale=crop_scale
        )
        out[fam] = ImageArrays(composite(arrays.images[idx], bg, color), arrays.labels[idx], list(arrays.classes), fam)
    return out
