"""DQS Perceiver (arXiv 2205.10873): fewer latent queries at inference (our reading of the abstract).

Central functions, for your own model and data:

* :func:`build_perceiver` ``(num_latents, **architecture)``: a Perceiver classifier with a query budget Q, a plain
  ``nn.Module`` that runs at any Q' <= Q (``model(x, num_latents=k)``) or as a per-image cascade
  (``model.cascade(x, stages, tau)``); :class:`PerceiverClassifier` / :class:`PerceiverConfig` build it directly;
* :func:`nested_training_loss` ``(model, images, labels, step)``: the nested ("sandwich") training loss that makes
  small query sets work (CE at Q plus CE/distillation at Q_min and random prefix widths);
* :func:`choose_threshold` ``(model, images, labels, mac_budget)``: the cascade threshold for a MAC budget, chosen
  on held-out data.

The names are imported on first use, so ``import frugalvision.methods.perceiver`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from frugalvision.methods.perceiver.api import build_perceiver, choose_threshold, nested_training_loss
    from frugalvision.methods.perceiver.config import PerceiverConfig
    from frugalvision.methods.perceiver.model import PerceiverClassifier

_EXPORTS = {
    "build_perceiver": "api",
    "choose_threshold": "api",
    "nested_training_loss": "api",
    "PerceiverConfig": "config",
    "PerceiverClassifier": "model",
}

__all__ = [
    "PerceiverClassifier",
    "PerceiverConfig",
    "build_perceiver",
    "choose_threshold",
    "nested_training_loss",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
