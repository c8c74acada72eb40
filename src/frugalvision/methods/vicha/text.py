"""Caption text: the official cleaning, a word-level BERT-style tokenizer, the special ids of a tokenizer.

The special ids work for the word tokenizer and for MiniLM's WordPiece tokenizer (``frugalvision.nn.minilm``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["SpecialIds", "SubsetTokenizer", "TextTokenizer", "WordTokenizer", "pre_caption", "special_ids"]


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


class SubsetTokenizer:
    """A WordPiece tokenizer restricted to a subset of its vocabulary (ids renumbered ``0..len(kept) - 1``).

    The text encoder's embedding table is sliced to the same rows (``ModelConfig.text_vocab``), so the model keeps its
    pretrained embeddings for the pieces a corpus uses while the embedding, MLM-decoder and optimiser costs shrink
    from 30,522 rows to a few dozen. Pieces outside the subset become [UNK].

    Args:
        base: the full tokenizer (``frugalvision.nn.minilm.WordPieceTokenizer``).
        kept: base ids to keep, [PAD] (id 0) first so that PAD stays 0.
    """

    SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

    def __init__(self, base: Any, kept: Iterable[int]) -> None:
        self.base = base
        self.kept = tuple(int(i) for i in kept)
        if not self.kept or self.kept[0] != 0:
            raise ValueError("the kept ids must start with [PAD] (id 0)")
        self.table = {base_id: new for new, base_id in enumerate(self.kept)}
        self.unk = self.table[base.tokenizer.token_to_id("[UNK]")]
        self.cls, self.sep = self.table[base.cls], self.table[base.sep]

    @classmethod
    def fit(cls, base: Any, texts: Iterable[str]) -> SubsetTokenizer:
        """Keep BERT's special tokens and every piece of the (cleaned) texts, in base-id order."""
        specials = {base.tokenizer.token_to_id(token) for token in cls.SPECIALS}
        pieces = {i for text in texts for i in base.encode(pre_caption(text, 10_000))}
        return cls(base, sorted(specials | pieces))

    def __len__(self) -> int:
        return len(self.kept)

    def token_id(self, token: str) -> int:
        """Compact id of a token of the base vocabulary (e.g. "[MASK]")."""
        return self.table[self.base.tokenizer.token_to_id(token)]

    def encode(self, text: str, max_tokens: int | None = None) -> list[int]:
        """``[CLS, pieces..., SEP]`` in compact ids; pieces outside the subset become [UNK]."""
        return [self.table.get(i, self.unk) for i in self.base.encode(text, max_tokens)]


def special_ids(tokenizer: TextTokenizer) -> SpecialIds:
    """The special ids of a :class:`WordTokenizer`, a :class:`SubsetTokenizer` or MiniLM's ``WordPieceTokenizer``."""
    if isinstance(tokenizer, WordTokenizer):
        return SpecialIds(tokenizer.pad, tokenizer.cls, tokenizer.sep, tokenizer.mask)
    if isinstance(tokenizer, SubsetTokenizer):
        return SpecialIds(tokenizer.token_id("[PAD]"), tokenizer.cls, tokenizer.sep, tokenizer.token_id("[MASK]"))
    inner = tokenizer.tokenizer  # the WordPiece tokenizer of frugalvision.nn.minilm
    return SpecialIds(inner.token_to_id("[PAD]"), tokenizer.cls, tokenizer.sep, inner.token_to_id("[MASK]"))
