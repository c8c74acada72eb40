"""An ALBEF-style BERT: text-only layers, then fusion layers that cross-attend to image tokens, and an MLM head.

The lower ``text_layers`` layers encode the caption alone (unimodal text features for contrastive alignment); the
upper ``fusion_layers`` add cross-attention to the image encoder's tokens (image-text matching, masked language
modelling). Parameter names follow :mod:`frugalvision.nn.minilm`, so :meth:`TextFusionEncoder.from_minilm`
initialises the embeddings, the text layers and the self-attention/feed-forward parts of the fusion layers from the
offline MiniLM-L6 (as ALBEF initialises from BERT-base); the cross-attention starts at random.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from frugalvision.errors import DataError
from frugalvision.nn.minilm import PAD, BertLayer

__all__ = [
    "BertFusionLayer",
    "MlmHead",
    "TextFusionConfig",
    "TextFusionEncoder",
    "TwoImageFusion",
    "attend",
    "attention_probs",
]


@dataclass(frozen=True)
class TextFusionConfig:
    """Sizes of the text/fusion encoder.

    Attributes:
        vocab_size: tokens of the vocabulary.
        hidden: width.
        heads: attention heads.
        intermediate: feed-forward width.
        text_layers: text-only layers (BERT-base in ALBEF: 6).
        fusion_layers: layers with cross-attention (ALBEF: 6).
        encoder_width: width of the image tokens the fusion layers attend to.
        max_positions: learned positions.
        type_vocab: token types.
        eps: LayerNorm epsilon.
        dropout: hidden and attention dropout.
    """

    vocab_size: int
    hidden: int = 64
    heads: int = 4
    intermediate: int = 256
    text_layers: int = 3
    fusion_layers: int = 3
    encoder_width: int = 64
    max_positions: int = 64
    type_vocab: int = 2
    eps: float = 1e-12
    dropout: float = 0.1


def attend(query: Tensor, key: Tensor, value: Tensor, key_valid: Tensor, heads: int, dropout: float) -> Tensor:
    """Multi-head scaled dot-product attention of ``query [N, Lq, C]`` over ``key/value [N, Lk, C]``.

    ``key_valid [N, Lk]`` marks the keys that may be attended (padding excluded).
    """
    n, lq, width = query.shape

    def split(t: Tensor) -> Tensor:
        return t.view(n, t.shape[1], heads, width // heads).transpose(1, 2)

    out = F.scaled_dot_product_attention(
        split(query), split(key), split(value), attn_mask=key_valid[:, None, None, :], dropout_p=dropout
    )
    return out.transpose(1, 2).reshape(n, lq, width)


def attention_probs(query: Tensor, key: Tensor, key_valid: Tensor, heads: int) -> Tensor:
    """Explicit attention probabilities ``[N, heads, Lq, Lk]`` of ``query [N, Lq, C]`` over ``key [N, Lk, C]``."""
    n, lq, width = query.shape
    q = query.view(n, lq, heads, width // heads).transpose(1, 2)
    k = key.view(n, key.shape[1], heads, width // heads).transpose(1, 2)
    logits = q @ k.transpose(-1, -2) / (width // heads) ** 0.5
    return logits.masked_fill(~key_valid[:, None, None, :], float("-inf")).softmax(-1)


def _mix(probs: Tensor, value: Tensor, heads: int) -> Tensor:
    n, _, lq, _ = probs.shape
    v = value.view(n, value.shape[1], heads, value.shape[-1] // heads).transpose(1, 2)
    return (probs @ v).transpose(1, 2).reshape(n, lq, value.shape[-1])


class BertFusionLayer(nn.Module):
    """Post-norm BERT layer with cross-attention: self-attention, cross-attention to image tokens, feed-forward.

    Grad-CAM (weakly supervised grounding, ALBEF): with ``record_cross_attention = True`` the cross-attention is
    computed explicitly and its probabilities ``[N, heads, L, M]`` are kept in ``cross_attention`` with their gradient
    retained; ``cross_attention_offset`` (a tensor of that shape) is added to them before they are used (a hook for
    finite-difference checks).

    Args:
        hidden: width.
        heads: attention heads.
        intermediate: feed-forward width.
        eps: LayerNorm epsilon.
        dropout: dropout.
        encoder_width: width of the attended image tokens.
    """

    def __init__(
        self, hidden: int, heads: int, intermediate: int, eps: float, dropout: float, encoder_width: int
    ) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.cross_query = nn.Linear(hidden, hidden)
        self.cross_key = nn.Linear(encoder_width, hidden)
        self.cross_value = nn.Linear(encoder_width, hidden)
        self.cross_out = nn.Linear(hidden, hidden)
        self.cross_norm = nn.LayerNorm(hidden, eps=eps)
        self.ffn_in = nn.Linear(hidden, intermediate)
        self.ffn_out = nn.Linear(intermediate, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)
        self.drop = nn.Dropout(dropout)
        self.record_cross_attention = False
        self.cross_attention: Tensor | None = None
        self.cross_attention_offset: Tensor | None = None

    def forward(self, x: Tensor, valid: Tensor, memory: Tensor, memory_valid: Tensor) -> Tensor:
        """``x [N, L, C]`` text tokens (``valid [N, L]``), ``memory [N, M, E]`` image tokens (``memory_valid``)."""
        p = self.dropout if self.training else 0.0
        context = attend(self.query(x), self.key(x), self.value(x), valid, self.heads, p)
        x = self.attn_norm(x + self.drop(self.attn_out(context)))
        keys, values = self.cross_key(memory), self.cross_value(memory)
        if self.record_cross_attention or self.cross_attention_offset is not None:
            probs = attention_probs(self.cross_query(x), keys, memory_valid, self.heads)
            if self.cross_attention_offset is not None:
                probs = probs + self.cross_attention_offset
            if self.record_cross_attention and probs.requires_grad:
                probs.retain_grad()
            self.cross_attention = probs if self.record_cross_attention else None
            context = _mix(probs, values, self.heads)
        else:
            context = attend(self.cross_query(x), keys, values, memory_valid, self.heads, p)
        x = self.cross_norm(x + self.drop(self.cross_out(context)))
        return self.ffn_norm(x + self.drop(self.ffn_out(F.gelu(self.ffn_in(x)))))


class MlmHead(nn.Module):
    """BERT's prediction head: dense, GELU, LayerNorm, then a decoder tied to the word embeddings (plus a bias)."""

    def __init__(self, hidden: int, eps: float, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.word_embeddings = word_embeddings
        self.bias = nn.Parameter(torch.zeros(word_embeddings.num_embeddings))

    def forward(self, x: Tensor) -> Tensor:
        """``[..., hidden]`` -> ``[..., vocab]`` logits."""
        return F.linear(self.norm(F.gelu(self.dense(x))), self.word_embeddings.weight, self.bias)


class TextFusionEncoder(nn.Module):
    """BERT embeddings, ``text_layers`` text-only layers, ``fusion_layers`` cross-attention layers, an MLM head.

    Args:
        cfg: sizes.
        grad_checkpointing: recompute each layer in the backward pass (saves activation memory on GPUs).
    """

    def __init__(self, cfg: TextFusionConfig, grad_checkpointing: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.grad_checkpointing = grad_checkpointing
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden, padding_idx=PAD)
        self.position_embeddings = nn.Embedding(cfg.max_positions, cfg.hidden)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab, cfg.hidden)
        self.embed_norm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(
            BertLayer(cfg.hidden, cfg.heads, cfg.intermediate, cfg.eps, cfg.dropout) for _ in range(cfg.text_layers)
        )
        self.fusion_layers = nn.ModuleList(
            BertFusionLayer(cfg.hidden, cfg.heads, cfg.intermediate, cfg.eps, cfg.dropout, cfg.encoder_width)
            for _ in range(cfg.fusion_layers)
        )
        self.mlm = MlmHead(cfg.hidden, cfg.eps, self.word_embeddings)
        self.apply(_init_bert)

    @property
    def width(self) -> int:
        """Token width."""
        return self.cfg.hidden

    def _run(self, layer: nn.Module, *args: Tensor) -> Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(layer, *args, use_reentrant=False)
        return layer(*args)

    def embed(self, ids: Tensor) -> Tensor:
        """Word + position + type-0 embeddings, LayerNorm, dropout."""
        length = ids.shape[1]
        if length > self.cfg.max_positions:
            raise DataError(f"a text has {length} tokens > max_positions={self.cfg.max_positions}; truncate it")
        positions = torch.arange(length, device=ids.device)
        x = self.word_embeddings(ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        return self.drop(self.embed_norm(x))

    def encode_text(self, ids: Tensor, valid: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
        """Text-only pass: ``(last text-layer output [N, L, C], [output of each text layer]``)."""
        valid = ids != PAD if valid is None else valid
        x = self.embed(ids)
        hidden = []
        for layer in self.layers:
            x = self._run(layer, x, valid)
            hidden.append(x)
        return x, hidden

    def fuse(self, x: Tensor, valid: Tensor, memory: Tensor, memory_valid: Tensor) -> Tensor:
        """Fusion pass over text states ``x`` (from :meth:`encode_text`) attending to image tokens ``memory``."""
        for layer in self.fusion_layers:
            x = self._run(layer, x, valid, memory, memory_valid)
        return x

    @classmethod
    def from_minilm(
        cls,
        encoder_width: int,
        text_layers: int = 3,
        model_dir: str | Path | None = None,
        dropout: float = 0.1,
        grad_checkpointing: bool = False,
        num_layers: int | None = None,
        vocab_ids: Sequence[int] | None = None,
    ) -> TextFusionEncoder:
        """Initialise from the offline MiniLM-L6: layers ``< text_layers`` text-only, the rest fusion layers.

        The cross-attention blocks and the MLM head's transform start at random (MiniLM ships no MLM head); the
        decoder is tied to MiniLM's word embeddings, as in BERT. ``num_layers`` keeps only the first layers of the
        checkpoint (None: all of them), e.g. 4 of MiniLM's 6 for 3 text layers and 1 fusion layer. ``vocab_ids`` keeps
        only those rows of the word embeddings (a tokenizer renumbered to match, PAD first), None keeps them all.
        """
        from frugalvision.nn.minilm import load_minilm

        minilm = load_minilm(model_dir, num_layers=num_layers, dropout=dropout)
        base = minilm.cfg
        if not 1 <= text_layers < base.layers:
            raise DataError(f"text_layers={text_layers} is invalid; MiniLM has {base.layers} layers, keep >= 1 fusion")
        cfg = TextFusionConfig(
            vocab_size=base.vocab_size if vocab_ids is None else len(vocab_ids),
            hidden=base.hidden,
            heads=base.heads,
            intermediate=base.intermediate,
            text_layers=text_layers,
            fusion_layers=base.layers - text_layers,
            encoder_width=encoder_width,
            max_positions=base.max_positions,
            type_vocab=base.type_vocab,
            eps=base.eps,
            dropout=dropout,
        )
        model = cls(cfg, grad_checkpointing)
        state = {}
        for key, value in minilm.state_dict().items():
            if key.startswith("layers."):
                index, rest = key.split(".", 2)[1:]
                i = int(index)
                key = f"layers.{i}.{rest}" if i < text_layers else f"fusion_layers.{i - text_layers}.{rest}"
            if key == "word_embeddings.weight" and vocab_ids is not None:
                value = value[torch.as_tensor(list(vocab_ids), dtype=torch.long)]
            state[key] = value
        missing, unexpected = model.load_state_dict(state, strict=False)
        fresh = ("cross_", "mlm.dense", "mlm.norm", "mlm.bias", "mlm.word_embeddings")  # the last is tied
        if unexpected or any(not any(f in k for f in fresh) for k in missing):
            raise DataError(f"MiniLM weights do not map onto the fusion encoder: {unexpected[:3]} {missing[:3]}")
        return model


class TwoImageFusion(nn.Module):
    """ALBEF's NLVR2 fusion: every fusion layer doubled, the first copy attending to image 0, the second to image 1.

    Both copies start from the same pre-trained layer, and the cross-attention key and value projections are shared
    within each pair (ALBEF's ``share_cross_attention``); queries, outputs and feed-forward parts are separate.

    Args:
        layers: the pre-trained fusion layers (deep-copied; the originals are left untouched).
    """

    def __init__(self, layers: Sequence[BertFusionLayer]) -> None:
        super().__init__()
        import copy

        self.first = nn.ModuleList(copy.deepcopy(layer) for layer in layers)
        self.second = nn.ModuleList(copy.deepcopy(layer) for layer in layers)
        for a, b in zip(self.first, self.second, strict=True):
            b.cross_key, b.cross_value = a.cross_key, a.cross_value

    def forward(
        self, x: Tensor, valid: Tensor, images: tuple[Tensor, Tensor], images_valid: tuple[Tensor, Tensor]
    ) -> Tensor:
        """Text states ``x`` through each layer pair: cross-attention to image 0, then to image 1."""
        for a, b in zip(self.first, self.second, strict=True):
            x = b(a(x, valid, images[0], images_valid[0]), valid, images[1], images_valid[1])
        return x


def _init_bert(module: nn.Module) -> None:
    """BERT's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
