"""Caption text: the official cleaning, a word-level BERT-style tokenizer, the special ids of a tokenizer.

The special ids work for the word tokenizer and for MiniLM's WordPiece tokenizer (``frugalvision.nn.minilm``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["SpecialIds", "TextTokenizer", "WordTokenizer", "pre_caption", "special_ids"]


def pre_caption(caption: str, max_words: int = 30) -> str:
    """The official cleaning: lower-case, drop ``,.'!?"()*#:;~``, ``-`` and ``/`` to spaces, first ``max_words``."""
    caption = re.sub(r"([,.'!?\"()*#:;~])", "", caption.lower()).replace("-", " ").replace("/", " ")
    caption = re.sub(r"\s{2,}", " ", caption.replace("<person>", "person")).strip()
    return " ".join(caption.split(" ")[:max_words])


class TextTokenizer(Protocol):
    """What ViCHA needs from a tokenizer: ``encode(text, max_tokens) -> [CLS, ..., SEP]`` ids and a size."""

    def encode(self, text: str, max_tokens: int | None = None) -> list[int]:
        """``[CLS, ..., SEP]`` ids of a text."""
        ...

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class SpecialIds:
    """Ids of [PAD], [CLS], [SEP] and [MASK]."""

    pad: int
    cls: int
    sep: int
    mask: int


class WordTokenizer:
    """Word-level tokenizer with BERT's special tokens ([PAD] 0, [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4).

    Args:
        words: the vocabulary after the special tokens.
    """

    SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

    def __init__(self, words: Iterable[str]) -> None:
        self.itos = list(self.SPECIALS) + [w for w in words if w not in self.SPECIALS]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.pad, self.unk, self.cls, self.sep, self.mask = range(5)

    @classmethod
    def fit(cls, texts: Iterable[str], min_count: int = 1) -> WordTokenizer:
        """Vocabulary of the (cleaned) words seen at least ``min_count`` times, most frequent first."""
        counts = Counter(word for text in texts for word in pre_caption(text, 10_000).split())
        return cls(w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str, max_tokens: int | None = None) -> list[int]:
        """``[CLS, words..., SEP]``; words truncated to ``max_tokens - 2``."""
        ids = [self.stoi.get(w, self.unk) for w in pre_caption(text, 10_000).split()]
        if max_tokens is not None:
            ids = ids[: max(0, max_tokens - 2)]
        return [self.cls, *ids, self.sep]

    def decode(self, ids: Iterable[int]) -> str:
        """Words of the ids, special tokens dropped."""
        return " ".join(self.itos[i] for i in ids if i >= len(self.SPECIALS))


def special_ids(tokenizer: TextTokenizer) -> SpecialIds:
    """The special ids of a :class:`WordTokenizer` or of MiniLM's ``WordPieceTokenizer``."""
    if isinstance(tokenizer, WordTokenizer):
        return SpecialIds(tokenizer.pad, tokenizer.cls, tokenizer.sep, tokenizer.mask)
    inner = tokenizer.tokenizer  # the WordPiece tokenizer of frugalvision.nn.minilm
    return SpecialIds(inner.token_to_id("[PAD]"), tokenizer.cls, tokenizer.sep, inner.token_to_id("[MASK]"))
