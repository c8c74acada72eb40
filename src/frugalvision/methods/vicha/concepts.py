"""Visual concepts (spec 2.3): mine caption nouns, score images with a CLIP-like dual encoder, keep the top-k.

The top-k concepts of each image are written into the JSON as ``kwords``.

Scorers: :func:`open_clip_scorer` (open-clip-torch with the user's CLIP weights, as the paper) or, offline,
:class:`DualEncoderScorer` trained on the pre-training pairs with :func:`train_dual_encoder`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from frugalvision.errors import ConfigError, DataError
from frugalvision.methods.vicha.text import WordTokenizer, pre_caption

__all__ = [
    "STOP_WORDS",
    "ConceptScorer",
    "DualEncoderScorer",
    "assign_concepts",
    "extract_nouns",
    "mine_vocabulary",
    "open_clip_scorer",
    "top_k_concepts",
    "train_dual_encoder",
]

#: words that end a noun phrase (articles, prepositions, conjunctions, pronouns, auxiliaries, numbers)
STOP_WORDS = frozenset(
    """a an the this that these those some any each every one two three four five several many few of in on at to
    from with without by for over under above below near next behind beside between into onto out up down off and
    or but while as is are was were be been being has have had do does did it its they them their he she his her
    him we you i me my our your there here what which who whom whose left right of top bottom front back side
    other another very""".split()
)


def extract_nouns(caption: str, with_modifiers: bool = False) -> list[str]:
    """Our simple noun extractor (no scene-graph parser offline): the last word of each phrase between stop words.

    The cleaned caption is split at stop words into phrases; ``with_modifiers`` returns every word of the phrases.

    Example: ``"a small red circle left of a blue square"`` -> ``["circle", "square"]``.
    """
    words = pre_caption(caption, 10_000).split()
    phrases, current = [], []
    for word in words:
        if word in STOP_WORDS or word.isdigit():
            if current:
                phrases.append(current)
            current = []
        else:
            current.append(word)
    if current:
        phrases.append(current)
    return [w for p in phrases for w in p] if with_modifiers else [p[-1] for p in phrases]


def mine_vocabulary(captions: Iterable[str], threshold: int = 0, with_modifiers: bool = False) -> list[str]:
    """The concept vocabulary, most frequent first: nouns whose count (from 0 at the first occurrence) > threshold.

    The official rule: threshold 0 keeps nouns seen at least twice; CC3M used 2.
    """
    counts = Counter(noun for caption in captions for noun in extract_nouns(caption, with_modifiers))
    kept = [(noun, count) for noun, count in counts.items() if count - 1 > threshold]
    return [noun for noun, _ in sorted(kept, key=lambda kv: (-kv[1], kv[0]))]


def top_k_concepts(image_emb: Tensor, concept_emb: Tensor, k: int) -> Tensor:
    """Indices ``[N, k]`` of each image's ``k`` most cosine-similar concepts, best first (ties: lower index)."""
    if not 1 <= k <= concept_emb.shape[0]:
        raise ConfigError(f"k={k} is invalid; use 1..{concept_emb.shape[0]} (the vocabulary size)")
    sim = F.normalize(image_emb.float(), dim=1) @ F.normalize(concept_emb.float(), dim=1).T
    return torch.sort(sim, dim=1, descending=True, stable=True).indices[:, :k]


class ConceptScorer(Protocol):
    """A CLIP-like dual encoder: embeddings of images (``[N, 3, H, W]``, its own normalisation) and of texts."""

    def embed_images(self, images: Tensor) -> Tensor:
        """Normalised image embeddings ``[N, D]``."""
        ...

    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        """Normalised text embeddings ``[N, D]``."""
        ...


@torch.no_grad()
def assign_concepts(
    scorer: ConceptScorer, images: Tensor, vocabulary: Sequence[str], k: int, batch_size: int = 256
) -> list[list[str]]:
    """The top-``k`` vocabulary concepts of each image (nouns embedded alone, no prompt template, as the official)."""
    concept_emb = scorer.embed_texts(list(vocabulary))
    image_emb = torch.cat([scorer.embed_images(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    return [[vocabulary[int(j)] for j in row] for row in top_k_concepts(image_emb, concept_emb, k)]


class DualEncoderScorer(nn.Module):
    """The offline stand-in for CLIP: a small CNN and a bag-of-words text encoder, trained contrastively.

    The text side is the mean of word embeddings, then a linear layer; :func:`train_dual_encoder` trains it on
    image-caption pairs.

    Args:
        tokenizer: word tokenizer of the captions.
        width: embedding width.
        channels: CNN channels.
        input_size: images are resized (bilinear) to this side first, as CLIP resizes to its own resolution
            (None: used as given).
    """

    def __init__(
        self, tokenizer: WordTokenizer, width: int = 64, channels: int = 32, input_size: int | None = None
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.input_size = input_size
        c = channels
        self.image_net = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1),
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1),
            nn.BatchNorm2d(2 * c),
            nn.ReLU(),
            nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1),
            nn.BatchNorm2d(2 * c),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(2 * c * 16, width),
        )
        self.words = nn.EmbeddingBag(len(tokenizer), width, mode="mean")
        self.text_head = nn.Linear(width, width)
        self.log_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    def embed_images(self, images: Tensor) -> Tensor:
        """Normalised image embeddings."""
        if self.input_size is not None and images.shape[-1] != self.input_size:
            images = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear", antialias=True)
        return F.normalize(self.image_net(images), dim=1)

    def _bags(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        ids = [self.tokenizer.encode(t)[1:-1] or [self.tokenizer.unk] for t in texts]
        offsets = torch.tensor([0, *np.cumsum([len(i) for i in ids])[:-1].tolist()], dtype=torch.long)
        return torch.tensor([t for i in ids for t in i], dtype=torch.long), offsets

    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        """Normalised text embeddings (a single noun is a one-word bag)."""
        flat, offsets = self._bags(texts)
        device = self.text_head.weight.device
        return F.normalize(self.text_head(self.words(flat.to(device), offsets.to(device))), dim=1)


@dataclass(frozen=True)
class DualEncoderReport:
    """How the offline scorer was trained: steps, final loss."""

    steps: int
    final_loss: float


def train_dual_encoder(
    images: Tensor,
    captions: Sequence[Sequence[str]],
    tokenizer: WordTokenizer,
    steps: int = 300,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    width: int = 64,
    input_size: int | None = None,
) -> tuple[DualEncoderScorer, DualEncoderReport]:
    """Train :class:`DualEncoderScorer` with symmetric InfoNCE on (image, random caption of it) batches.

    Args:
        images: ``[N, 3, H, W]`` normalised training images.
        captions: the captions of each image.
        tokenizer: word tokenizer.
        steps: optimiser steps.
        batch_size: pairs per step.
        lr: AdamW learning rate.
        seed: seed of the initialisation and the batches.
        width: embedding width.
        input_size: the scorer's own input side (None: the images' side).
    """
    if len(images) != len(captions) or len(images) < 2:
        raise DataError(
            f"train_dual_encoder needs >= 2 images with their captions, got {len(images)} / {len(captions)}"
        )
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        scorer = DualEncoderScorer(tokenizer, width, input_size=input_size)
    optimizer = torch.optim.AdamW(scorer.parameters(), lr=lr, weight_decay=1e-4)
    scorer.train()
    loss = torch.zeros(())
    for _ in range(steps):
        index = torch.randperm(len(images), generator=generator)[: min(batch_size, len(images))]
        texts = [captions[int(i)][int(torch.randint(len(captions[int(i)]), (), generator=generator))] for i in index]
        logits = (
            scorer.embed_images(images[index]) @ scorer.embed_texts(texts).T * scorer.log_scale.exp().clamp(max=100)
        )
        targets = torch.arange(len(index))
        loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    scorer.eval()
    return scorer, DualEncoderReport(steps, float(loss.detach()))


class _OpenClipScorer:
    """An open-clip model as a :class:`ConceptScorer` (images must already be preprocessed for it)."""

    def __init__(self, model: nn.Module, tokenize: Callable[[Sequence[str]], Tensor], device: str) -> None:
        self.model, self.tokenize, self.device = model.eval().to(device), tokenize, device

    @torch.no_grad()
    def embed_images(self, images: Tensor) -> Tensor:
        return F.normalize(self.model.encode_image(images.to(self.device)).float(), dim=1)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        return F.normalize(self.model.encode_text(self.tokenize(list(texts)).to(self.device)).float(), dim=1)


def open_clip_scorer(
    weights: str | Path, model_name: str = "ViT-B-16", device: str = "cpu"
) -> tuple[ConceptScorer, Callable]:
    """CLIP (the paper's ViT-B/16) from a local weights file through open-clip-torch: ``(scorer, preprocess)``.

    Raises:
        DataError: open-clip-torch is not installed, or the weights file is missing.
    """
    try:
        import open_clip
    except ImportError as error:
        raise DataError("CLIP scoring needs open-clip-torch (pip install open-clip-torch)") from error
    if not Path(weights).is_file():
        raise DataError(f"CLIP weights {weights} not found; pass a local open-clip checkpoint file")
    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=str(weights))
    return _OpenClipScorer(model, open_clip.get_tokenizer(model_name), device), preprocess
