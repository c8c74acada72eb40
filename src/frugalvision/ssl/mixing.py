"""Mixing plug-ins of the semi-supervised frameworks: none, MixUp, CutMix, and semantic (in-class) mixing.

Pure functions first (tensors in, tensors out), then the plug-in objects a framework receives:

- :class:`MixUp` / :class:`CutMix`: between-class mixing of a batch with a random permutation of itself, one
  ``lam ~ Beta(alpha, alpha)`` per batch (ICT, CutMix); CutMix's ``lam`` is corrected to the rasterised box area.
- :class:`SemanticMix`: a mixer ``(semantic parent batch, context parent batch) -> images`` whose output keeps the
  semantic parent's class (a SciMix generator, or :func:`composite_mix`, the exact composite of synthetic data).

Batches are dicts of tensors (``"image"`` float ``[N, C, H, W]`` in ``[0, 1]``, ``"label"``, and any extra fields a
mixer needs, e.g. ``"alpha"``, ``"foreground"`` and ``"background"`` for :func:`composite_mix`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from frugalvision.errors import DataError

__all__ = [
    "Batch",
    "CutMix",
    "MixPlugin",
    "MixUp",
    "SemanticMix",
    "SemanticMixer",
    "composite_mix",
    "cutmix",
    "mix_plugin",
    "mixup",
    "rand_box",
    "sample_lambda",
]

Batch = Mapping[str, torch.Tensor]
SemanticMixer = Callable[[Batch, Batch], torch.Tensor]
"""``(semantic parents, context parents) -> mixed images`` keeping the semantic parents' classes."""


def sample_lambda(alpha: float) -> float:
    """One mixing coefficient ``lam ~ Beta(alpha, alpha)`` from the global RNG (1.0 when ``alpha <= 0``: no mixing)."""
    if alpha <= 0:
        return 1.0
    concentration = torch.tensor(float(alpha))
    return float(torch.distributions.Beta(concentration, concentration).sample())


def mixup(images: torch.Tensor, lam: float, perm: torch.Tensor) -> torch.Tensor:
    """``lam * x + (1 - lam) * x[perm]``."""
    return lam * images + (1.0 - lam) * images[perm]


def rand_box(
    height: int, width: int, lam: float, generator: torch.Generator | None = None
) -> tuple[int, int, int, int]:
    """CutMix's box ``(y0, y1, x0, x1)``: sides ``int(side * sqrt(1 - lam))`` around a uniform centre, clipped."""
    ratio = (1.0 - lam) ** 0.5
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy = int(torch.randint(height, (1,), generator=generator))
    cx = int(torch.randint(width, (1,), generator=generator))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return y0, y1, x0, x1


def cutmix(images: torch.Tensor, box: tuple[int, int, int, int], perm: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Paste ``x[perm]`` into ``box`` of ``x``; returns the images and ``lam`` = 1 - box area / image area."""
    y0, y1, x0, x1 = box
    out = images.clone()
    out[:, :, y0:y1, x0:x1] = images[perm][:, :, y0:y1, x0:x1]
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (images.shape[-1] * images.shape[-2])
    return out, lam


def composite_mix(semantic: Batch, context: Batch) -> torch.Tensor:
    """The exact in-class mix of synthetic data: ``alpha_A * foreground_A + (1 - alpha_A) * background_B``.

    Args:
        semantic: batch with ``"alpha"`` ``[N, 1, H, W]`` and ``"foreground"`` ``[N, C, H, W]`` (the object layer).
        context: batch with ``"background"`` ``[N, C, H, W]`` (the clean background of each image).

    Raises:
        DataError: a field is missing (the data has no compositing ground truth).
    """
    for batch, key in ((semantic, "alpha"), (semantic, "foreground"), (context, "background")):
        if key not in batch:
            raise DataError(
                f"composite_mix needs the field {key!r} (compositing ground truth); use a dataset that records it, "
                "e.g. frugalvision.data.object_composites, or a learned mixer"
            )
    alpha = semantic["alpha"]
    return alpha * semantic["foreground"] + (1.0 - alpha) * context["background"]


# ------------------------------------------------------------------------------------------------ plug-ins
@dataclass(frozen=True)
class MixUp:
    """Between-class MixUp as an extra loss term (ICT-style targets in Mean Teacher).

    Attributes:
        alpha: Beta concentration of ``lam``.
        weight: weight of the extra term.
    """

    alpha: float = 1.0
    weight: float = 1.0

    def __call__(self, images: torch.Tensor, perm: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Mixed images and their ``lam``."""
        lam = sample_lambda(self.alpha)
        return mixup(images, lam, perm), lam


@dataclass(frozen=True)
class CutMix:
    """Between-class CutMix as an extra loss term; ``lam`` is the kept area of the rasterised box.

    Attributes:
        alpha: Beta concentration of ``lam``.
        weight: weight of the extra term.
    """

    alpha: float = 1.0
    weight: float = 1.0

    def __call__(self, images: torch.Tensor, perm: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Mixed images and their corrected ``lam``."""
        box = rand_box(images.shape[-2], images.shape[-1], sample_lambda(self.alpha))
        return cutmix(images, box, perm)


@dataclass(frozen=True)
class SemanticMix:
    """In-class mixing as an extra loss term: the mix carries the class of its semantic parent.

    Attributes:
        mixer: ``(semantic batch, context batch) -> images`` (a SciMix generator's ``mixer()``, or
            :func:`composite_mix`).
        weight: weight of the extra term (lambda_mix).
    """

    mixer: SemanticMixer
    weight: float = 1.0

    def __call__(self, semantic: Batch, context: Batch) -> torch.Tensor:
        """The mixed images, without gradient to the mixer."""
        with torch.no_grad():
            return self.mixer(semantic, context).detach().clamp(0.0, 1.0)


MixPlugin = MixUp | CutMix | SemanticMix | None


def mix_plugin(name: str, mixer: SemanticMixer | None = None, weight: float = 1.0, alpha: float = 1.0) -> Any:
    """The plug-in named ``none``, ``mixup``, ``cutmix``, ``semantic`` (needs ``mixer``) or ``composite``.

    Raises:
        ValueError: unknown name, or ``semantic`` without a mixer.
    """
    if name == "none":
        return None
    if name == "mixup":
        return MixUp(alpha, weight)
    if name == "cutmix":
        return CutMix(alpha, weight)
    if name == "composite":
        return SemanticMix(composite_mix, weight)
    if name == "semantic":
        if mixer is None:
            raise ValueError("mix plug-in 'semantic' needs a mixer, e.g. a trained SciMix generator's mixer()")
        return SemanticMix(mixer, weight)
    raise ValueError(f"unknown mix plug-in {name!r}; use none, mixup, cutmix, semantic or composite")
