"""T-Food (arXiv:2204.09730): transformer decoders with multimodal regularisation for cross-modal food retrieval.

Central functions, for your own images and recipes:

* :class:`TFoodModel` ``(ImageEncoderConfig(...), RecipeEncoderConfig(...), embed_dim, mmr_width)``: the dual
  encoder (``embed_images``, ``embed_recipes``; used at test time) with the training-only MMR/ITM decoders;
* :func:`tokenize_recipes` ``(WordTokenizer.fit(texts), titles, ingredients, instructions)``: a padded batch;
* :func:`tfood_loss` ``(model, images, recipes, classes, margin)``: triplet (instance + semantic) + ITM loss;
  the pieces are :func:`triplet_loss`, :func:`itm_loss` and :func:`incremental_margin`;
* :func:`evaluate_retrieval` ``(model, images, recipes, bag_size, bags)``: bagged R@K and medR both ways.

The names are imported on first use, so ``import frugalvision.methods.tfood`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from frugalvision.methods.tfood.api import evaluate_retrieval, tfood_loss, tokenize_recipes
    from frugalvision.methods.tfood.losses import incremental_margin, itm_loss, triplet_loss
    from frugalvision.methods.tfood.model import ImageEncoderConfig, RecipeEncoderConfig, TFoodModel
    from frugalvision.methods.tfood.text import RecipeTokens, WordTokenizer

_EXPORTS = {
    "evaluate_retrieval": "api",
    "tfood_loss": "api",
    "tokenize_recipes": "api",
    "incremental_margin": "losses",
    "itm_loss": "losses",
    "triplet_loss": "losses",
    "ImageEncoderConfig": "model",
    "RecipeEncoderConfig": "model",
    "TFoodModel": "model",
    "RecipeTokens": "text",
    "WordTokenizer": "text",
}

__all__ = [
    "ImageEncoderConfig",
    "RecipeEncoderConfig",
    "RecipeTokens",
    "TFoodModel",
    "WordTokenizer",
    "evaluate_retrieval",
    "incremental_margin",
    "itm_loss",
    "tfood_loss",
    "tokenize_recipes",
    "triplet_loss",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
