"""Word-level recipe tokenizer (trained on the data) and the tensor layout of tokenised recipes."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from frugalvision.errors import DataError
from frugalvision.nn.minilm import WordPieceTokenizer, minilm_dir

__all__ = [
    "END",
    "PAD",
    "SPECIALS",
    "START",
    "UNK",
    "RecipeTokens",
    "WordPieceTokenizer",
    "WordTokenizer",
    "minilm_dir",
    "pad_recipes",
]

PAD, UNK, START, END = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<start>", "<end>")
_SPLIT = re.compile(r"[-_/]")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


class WordTokenizer:
    """Lowercase, ``- _ /`` to spaces, word tokenisation; ids 0..3 are reserved (PAD, UNK, START, END).

    Args:
        vocab: words in id order, starting with the four reserved tokens.
    """

    def __init__(self, vocab: Sequence[str]) -> None:
        if tuple(vocab[: len(SPECIALS)]) != SPECIALS:
            raise DataError(f"a vocabulary must start with the reserved tokens {SPECIALS}; rebuild it with fit()")
        self.vocab = list(vocab)
        self.index = {word: i for i, word in enumerate(self.vocab)}

    @staticmethod
    def words(text: str) -> list[str]:
        """Split one text into words."""
        return _WORD.findall(_SPLIT.sub(" ", text.lower()))

    @classmethod
    def fit(cls, texts: Iterable[str], min_count: int = 1) -> WordTokenizer:
        """Build the vocabulary from texts (sorted by decreasing count, then alphabetically: deterministic)."""
        counts = Counter(word for text in texts for word in cls.words(text))
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls([*SPECIALS, *words])

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, max_tokens: int | None = None) -> list[int]:
        """``[START, words..., END]``; the words are truncated so the sentence has at most ``max_tokens`` ids."""
        ids = [self.index.get(word, UNK) for word in self.words(text)]
        if max_tokens is not None:
            ids = ids[: max(0, max_tokens - 2)]
        return [START, *ids, END]

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON."""
        Path(path).write_text(json.dumps({"vocab": self.vocab}))

    @classmethod
    def load(cls, path: str | Path) -> WordTokenizer:
        """Read a vocabulary written by :meth:`save`."""
        return cls(json.loads(Path(path).read_text())["vocab"])


@dataclass
class RecipeTokens:
    """A padded batch of tokenised recipes (PAD = 0 everywhere).

    Attributes:
        title: ``[B, Lt]`` title ids.
        ingredients: ``[B, Ni, Li]`` ids per ingredient line (all-PAD lines are padding).
        instructions: ``[B, Ns, Ls]`` ids per instruction line.
    """

    title: Tensor
    ingredients: Tensor
    instructions: Tensor

    def __len__(self) -> int:
        return self.title.shape[0]

    def index(self, idx: Tensor) -> RecipeTokens:
        """Select recipes by index."""
        return RecipeTokens(self.title[idx], self.ingredients[idx], self.instructions[idx])

    def to(self, device: torch.device | str) -> RecipeTokens:
        """Move to a device."""
        return RecipeTokens(self.title.to(device), self.ingredients.to(device), self.instructions.to(device))


def _pad_2d(seqs: Sequence[Sequence[int]], min_len: int = 1) -> Tensor:
    width = max([min_len, *(len(s) for s in seqs)])
    out = torch.full((len(seqs), width), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def _pad_3d(docs: Sequence[Sequence[Sequence[int]]]) -> Tensor:
    lines = max([1, *(len(d) for d in docs)])
    width = max([1, *(len(s) for d in docs for s in d)])
    out = torch.full((len(docs), lines, width), PAD, dtype=torch.long)
    for i, doc in enumerate(docs):
        for j, s in enumerate(doc):
            out[i, j, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def pad_recipes(
    titles: Sequence[Sequence[int]],
    ingredients: Sequence[Sequence[Sequence[int]]],
    instructions: Sequence[Sequence[Sequence[int]]],
) -> RecipeTokens:
    """Pad tokenised recipes to the longest title / line count / line length of the batch."""
    return RecipeTokens(_pad_2d(titles), _pad_3d(ingredients), _pad_3d(instructions))
