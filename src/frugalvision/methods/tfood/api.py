"""T-Food on your own images and recipes: tokenise, compute the training loss, evaluate retrieval."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from frugalvision.methods.tfood.losses import TripletWeights, itm_loss, triplet_loss
from frugalvision.methods.tfood.model import TFoodModel
from frugalvision.methods.tfood.task import retrieval_protocol
from frugalvision.methods.tfood.text import RecipeTokens, WordPieceTokenizer, WordTokenizer, pad_recipes

__all__ = ["evaluate_retrieval", "tfood_loss", "tokenize_recipes"]


def tokenize_recipes(
    tokenizer: WordTokenizer | WordPieceTokenizer,
    titles: Sequence[str],
    ingredients: Sequence[Sequence[str]],
    instructions: Sequence[Sequence[str]],
) -> RecipeTokens:
    """A padded batch of recipes: one title, ingredient lines and instruction lines per recipe."""
    return pad_recipes(
        [tokenizer.encode(t) for t in titles],
        [[tokenizer.encode(line) for line in lines] for lines in ingredients],
        [[tokenizer.encode(line) for line in lines] for lines in instructions],
    )


def tfood_loss(
    model: TFoodModel,
    images: Tensor,
    recipes: RecipeTokens,
    classes: Tensor | None = None,
    margin: float = 0.3,
    semantic_weight: float = 0.1,
    itm_weight: float = 1.0,
) -> tuple[Tensor, dict[str, float]]:
    """T-Food's loss on one batch of (image i, recipe i) pairs: ``L_tri + itm_weight * L_ITM``.

    Args:
        model: the model (its MMR is used when ``itm_weight > 0`` and the model has one).
        images: ``[B, 3, H, W]`` images.
        recipes: their recipes (:func:`tokenize_recipes`).
        classes: ``[B]`` class ids (0 = background) for the semantic triplets, or None.
        margin: triplet margin (for the incremental schedule see ``losses.incremental_margin``).
        semantic_weight: weight of the semantic triplets.
        itm_weight: weight of the image-text matching loss.

    Returns:
        (loss, logs of each term).
    """
    use_itm = itm_weight > 0 and model.mmr is not None
    out = model(images, recipes.title, recipes.ingredients, recipes.instructions, itm=use_itm)
    weights = TripletWeights(sirr=semantic_weight, srii=semantic_weight)
    loss, logs = triplet_loss(out["image_emb"], out["recipe_emb"], classes, margin, weights)
    if use_itm:
        l_itm = itm_loss(out["itm_logits"], out["itm_labels"])
        logs["loss_itm"] = float(l_itm.detach())
        loss = loss + itm_weight * l_itm
    return loss, logs


@torch.no_grad()
def evaluate_retrieval(
    model: TFoodModel, images: Tensor, recipes: RecipeTokens, bag_size: int = 1000, bags: int = 10, seed: int = 0
) -> dict[str, float]:
    """Bagged R@1/5/10 and medR, image->recipe and recipe->image, with the dual encoder only (test-time use).

    Returns:
        ``{"bag/<direction>/<metric>": value, "bag/R@1": mean R@1 of both directions}``.
    """
    was = model.training
    model.eval()
    image_emb = model.image_embedding(images)  # CLS path: no tokens needed at test time
    recipe_emb = model.embed_recipes(recipes)[0]
    model.train(was)
    return retrieval_protocol(image_emb, recipe_emb, [("bag", bag_size, bags)], seed)
