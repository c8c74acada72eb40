"""SciMix: swapping semantic contents for mixing images (arXiv:2205.10158), on Mean Teacher and FixMatch.

Public API:

- :class:`SciMixGenerator` (built by :func:`build_generator` from a :class:`GeneratorConfig`): ``generator.mix(a, b)``
  renders the semantic content of ``a`` into the background of ``b`` (the method's central function; our reading of
  the generator, see the README); ``generator.mixer()`` plugs it into ``frugalvision.ssl.SemanticMix``.
- :func:`train_generator` trains one on a user's labeled + unlabeled images with a frozen teacher classifier;
  :func:`generator_loss` / :class:`LossWeights` are its losses as a pure function.
- The frameworks it improves live in :mod:`frugalvision.ssl` (``FixMatch``, ``MeanTeacher``, ``Supervised``,
  ``SemiSupervisedTask``), usable on any model and data.

``train_generator`` is imported on first use (it brings in the training engine).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from frugalvision.methods.scimix.generator import (
    AdaIN,
    Discriminator,
    GeneratorConfig,
    ModulatedConv2d,
    SciMixGenerator,
    adain,
    build_generator,
)
from frugalvision.methods.scimix.losses import LossWeights, discriminator_loss, generator_loss, targets_and_mask

__all__ = [
    "AdaIN",
    "Discriminator",
    "GeneratorConfig",
    "LossWeights",
    "ModulatedConv2d",
    "SciMixGenerator",
    "adain",
    "build_generator",
    "discriminator_loss",
    "generator_loss",
    "targets_and_mask",
    "train_generator",
]


def __getattr__(name: str) -> Any:
    if name != "train_generator":
        raise AttributeError(f"module 'frugalvision.methods.scimix' has no attribute {name!r}")
    value = importlib.import_module("frugalvision.methods.scimix.api").train_generator
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from frugalvision.methods.scimix.api import train_generator
