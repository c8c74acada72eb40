"""A contrastively pretrained image encoder: the CLIP stand-in of the offline experiment.

T-Food's image tokens come from CLIP. No CLIP weights exist offline, and a random-init encoder makes the image-text
matching (ITM) regulariser unlearnable (it mostly injects noise). So the small ViT is pretrained once on the
training images against the bag of their ingredient words with a symmetric InfoNCE loss (CLIP's objective, with a
mean-of-word-embeddings text side instead of a text transformer), cached, and shared by every arm, which then
train it frozen first and at 0.1 x the learning rate afterwards, as the paper does with CLIP.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn
from torch.utils.data import Dataset

from frugalvision.engine import Task, gather_global_batch
from frugalvision.methods.tfood.data import collate_pairs
from frugalvision.methods.tfood.model import ImageEncoder, ImageEncoderConfig
from frugalvision.methods.tfood.text import END, PAD, START

__all__ = ["ContrastivePretrainer", "PretrainTask", "info_nce", "ingredient_bags"]


def info_nce(image: Tensor, text: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE (CLIP's loss): cross-entropy of the cosine-similarity matrix over both directions.

    Args:
        image: (B, D) image embeddings (normalised here).
        text: (B, D) text embeddings of the same items, in the same order.
        temperature: softmax temperature τ.
    """
    logits = F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T / temperature
    target = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def ingredient_bags(ingredients: Tensor) -> tuple[Tensor, Tensor]:
    """The word ids of each recipe's ingredient lines, flattened, and a mask of the real words.

    Args:
        ingredients: (B, lines, tokens) ids with START/END per line and PAD padding.

    Returns:
        ((B, lines·tokens) ids, (B, lines·tokens) bool mask without PAD/START/END).
    """
    ids = ingredients.flatten(1)
    return ids, (ids != PAD) & (ids != START) & (ids != END)


class ContrastivePretrainer(nn.Module):
    """T-Food's image encoder with a projection, and a bag-of-ingredient-words text side.

    Args:
        image: the image encoder's configuration (the same as every arm's).
        vocab_size: word vocabulary size.
        dim: joint embedding width.
    """

    def __init__(self, image: ImageEncoderConfig, vocab_size: int, dim: int = 64) -> None:
        super().__init__()
        self.image_encoder = ImageEncoder(image)
        self.image_proj = nn.Linear(self.image_encoder.out_dim, dim)
        self.words = nn.Embedding(vocab_size, dim, padding_idx=PAD)
        self.text_proj = nn.Linear(dim, dim)

    def embed_images(self, images: Tensor) -> Tensor:
        """(B, dim) image embeddings from the encoder's first token."""
        return self.image_proj(self.image_encoder(images)[:, 0])

    def embed_ingredients(self, ingredients: Tensor) -> Tensor:
        """(B, dim): mean of the ingredient word embeddings, projected."""
        ids, mask = ingredient_bags(ingredients)
        vectors = self.words(ids) * mask.unsqueeze(-1)
        return self.text_proj(vectors.sum(1) / mask.sum(1, keepdim=True).clamp_min(1))


class PretrainTask(Task):
    """Engine adapter of the pretraining: InfoNCE over the global batch of (image, ingredient words) pairs.

    Args:
        model_fn: builds the :class:`ContrastivePretrainer`.
        train_set: the training pairs (images and tokenised recipes).
        temperature: InfoNCE temperature.
    """

    def __init__(self, model_fn: Callable[[], ContrastivePretrainer], train_set: Dataset, temperature: float) -> None:
        self.model_fn, self.train_set, self.temperature = model_fn, train_set, temperature

    def build_model(self) -> nn.Module:
        """Fresh pretrainer."""
        return self.model_fn()

    def train_dataset(self) -> Dataset:
        """The training pairs."""
        return self.train_set

    def collate(self) -> Callable[[list], tuple[Tensor, ...]]:
        """Pad the tokenised recipes as T-Food's task does."""
        return collate_pairs

    def training_step(self, model: nn.Module, batch: tuple[Tensor, ...], step: int) -> tuple[Tensor, dict]:
        """Symmetric InfoNCE between images and their ingredient words (all ranks' pairs as negatives)."""
        images, _, ingredients, _, labels, _ = batch
        core = getattr(model, "module", model)
        image, text = core.embed_images(images), core.embed_ingredients(ingredients)
        image, text, _ = gather_global_batch(image, text, labels)
        loss = info_nce(image, text, self.temperature)
        return loss, {"infonce": float(loss.detach())}
