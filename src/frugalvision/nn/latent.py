"""Perceiver-style latent attention shared by the Perceiver classifier and LaRa.

Inputs (image patches, multi-camera tokens with ray embeddings, ...) are cross-attended by a learned latent array;
latent self-attention blocks follow; a :class:`QueryDecoder` lets arbitrary queries (one class query, 40,000 BEV
cells) read the latents. Everything is pre-norm, with separate LayerNorms for the query and key/value streams, and
attention runs through ``scaled_dot_product_attention`` (``attn_impl="sdpa"``) or an explicit matmul/softmax in
float32 (``attn_impl="math"``: what FLOP counters see, and numerically safe under fp16/bf16 autocast).

Every operation is per sample: a sample's output never depends on its batch-mates. Query rows of a cross-attention
are independent, so the first cross-attention computed with Q latents and sliced to ``[:k]`` equals a run with k
latents (prefix consistency), which :class:`LatentEncoder` exposes through ``num_latents``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from timm.layers import DropPath, LayerScale
from torch import nn
from torch.nn import functional as F

AttnImpl = Literal["sdpa", "math"]
PosMode = Literal["add", "concat", "none"]


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None = None,
    impl: AttnImpl = "sdpa",
    dropout: float = 0.0,
) -> torch.Tensor:
    """Multi-head softmax attention ``softmax(q kᵀ / √d_h) v``.

    Args:
        q: queries (B, H, M, d_h).
        k: keys (B, H, N, d_h).
        v: values (B, H, N, d_v).
        key_mask: (B, N) bool, True for tokens that take part; masked keys get −inf logits.
        impl: "sdpa" (fused kernel) or "math" (explicit matmuls in at least float32; seen by FLOP counters).
        dropout: attention-probability dropout (training only; pass 0 in eval).

    Returns:
        (B, H, M, d_v) in the dtype of ``q``.

    Raises:
        ValueError: a row of ``key_mask`` masks every token.
    """
    mask = None
    if key_mask is not None:
        if key_mask.dtype != torch.bool or key_mask.shape != (k.shape[0], k.shape[2]):
            raise ValueError(
                f"key mask must be bool of shape {(k.shape[0], k.shape[2])}, got {key_mask.dtype} "
                f"{tuple(key_mask.shape)}"
            )
        if not bool(key_mask.any(dim=-1).all()):
            raise ValueError("a sample has every token masked; keep at least one valid token per sample")
        mask = key_mask[:, None, None, :]
    if impl == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    if impl != "math":
        raise ValueError(f"attn_impl={impl!r} is invalid; use 'sdpa' or 'math'")
    scale = 1.0 / math.sqrt(q.shape[-1])
    dtype = torch.promote_types(q.dtype, torch.float32)
    logits = torch.matmul(q.to(dtype), k.to(dtype).transpose(-2, -1)) * scale
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    probs = logits.softmax(dim=-1)
    if dropout > 0:
        probs = F.dropout(probs, dropout)
    return torch.matmul(probs, v.to(dtype)).to(q.dtype)


class Mlp(nn.Module):
    """Two-layer GELU MLP ``dim -> ratio·dim -> dim`` (no norm; callers pre-normalise)."""

    def __init__(self, dim: int, ratio: float, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = max(1, int(round(dim * ratio)))
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP to the last dimension."""
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class CrossAttention(nn.Module):
    """Pre-norm multi-head cross-attention from queries to keys/values.

    Args:
        q_dim: query width.
        kv_dim: key/value token width.
        heads: attention heads.
        head_dim: width per head (inner width = heads × head_dim).
        out_dim: output width (default ``q_dim``; must equal ``q_dim`` when residual).
        residual: add the queries to the output (False: return the attention output only, LaRa's decoder).
        dropout: attention and output dropout.
        attn_impl: "sdpa" or "math" (see :func:`attention`).
    """

    def __init__(
        self,
        q_dim: int,
        kv_dim: int,
        heads: int,
        head_dim: int,
        out_dim: int | None = None,
        residual: bool = True,
        dropout: float = 0.0,
        attn_impl: AttnImpl = "sdpa",
    ) -> None:
        super().__init__()
        out_dim = q_dim if out_dim is None else out_dim
        if residual and out_dim != q_dim:
            raise ValueError(f"residual cross-attention needs out_dim == q_dim, got {out_dim} != {q_dim}")
        self.heads, self.head_dim, self.residual, self.dropout = heads, head_dim, residual, dropout
        self.attn_impl: AttnImpl = attn_impl
        inner = heads * head_dim
        self.norm_q = nn.LayerNorm(q_dim)
        self.norm_kv = nn.LayerNorm(kv_dim)
        self.to_q = nn.Linear(q_dim, inner)
        self.to_kv = nn.Linear(kv_dim, 2 * inner)
        self.proj = nn.Linear(inner, out_dim)
        self.proj_drop = nn.Dropout(dropout)

    def project_kv(self, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalise and project key/value tokens once (reusable for any set of query rows).

        Args:
            kv: tokens (B, N, kv_dim).

        Returns:
            keys and values, each (B, heads, N, head_dim).
        """
        b, n, _ = kv.shape
        k, v = self.to_kv(self.norm_kv(kv)).view(b, n, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return k, v

    def attend(
        self, q: torch.Tensor, kv_proj: tuple[torch.Tensor, torch.Tensor], kv_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cross-attend queries to already projected keys/values (see :meth:`project_kv`).

        Args:
            q: queries (B, M, q_dim).
            kv_proj: (keys, values) from :meth:`project_kv`.
            kv_mask: (B, N) bool, True for valid tokens.

        Returns:
            (B, M, out_dim).
        """
        b, m, _ = q.shape
        query = self.to_q(self.norm_q(q)).view(b, m, self.heads, self.head_dim).transpose(1, 2)
        drop = self.dropout if self.training else 0.0
        out = attention(query, kv_proj[0], kv_proj[1], kv_mask, self.attn_impl, drop)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, m, self.heads * self.head_dim)))
        return q + out if self.residual else out

    def forward(self, q: torch.Tensor, kv: torch.Tensor, kv_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-attention of ``q`` (B, M, q_dim) to ``kv`` (B, N, kv_dim); ``kv_mask`` (B, N) True = valid."""
        return self.attend(q, self.project_kv(kv), kv_mask)


class SelfAttention(nn.Module):
    """Multi-head self-attention (no norm; :class:`LatentBlock` pre-normalises)."""

    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float = 0.0, attn_impl: AttnImpl = "sdpa"):
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, head_dim, dropout
        self.attn_impl: AttnImpl = attn_impl
        self.qkv = nn.Linear(dim, 3 * heads * head_dim)
        self.proj = nn.Linear(heads * head_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Self-attention over the sequence dimension of ``x`` (B, M, dim)."""
        b, m, _ = x.shape
        q, k, v = self.qkv(x).view(b, m, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = attention(q, k, v, None, self.attn_impl, self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, m, self.heads * self.head_dim))


class LatentBlock(nn.Module):
    """Pre-norm transformer layer over latents: self-attention + MLP, both residual.

    Args:
        dim: latent width.
        heads: attention heads.
        head_dim: width per head.
        mlp_ratio: MLP hidden width / dim.
        drop_path: stochastic-depth rate (per sample).
        layerscale_init: LayerScale init value (None disables LayerScale).
        attn_impl: "sdpa" or "math".
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        head_dim: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        layerscale_init: float | None = None,
        attn_impl: AttnImpl = "sdpa",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, head_dim, attn_impl=attn_impl)
        self.ls1 = LayerScale(dim, layerscale_init) if layerscale_init else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)
        self.ls2 = LayerScale(dim, layerscale_init) if layerscale_init else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer to latents (B, M, dim)."""
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x))))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


class CrossBlock(nn.Module):
    """Cross-attention from latents to tokens (residual) followed by a pre-norm residual MLP."""

    def __init__(
        self,
        latent_dim: int,
        kv_dim: int,
        heads: int,
        head_dim: int,
        mlp_ratio: float,
        attn_impl: AttnImpl = "sdpa",
    ) -> None:
        super().__init__()
        self.attn = CrossAttention(latent_dim, kv_dim, heads, head_dim, attn_impl=attn_impl)
        self.norm = nn.LayerNorm(latent_dim)
        self.mlp = Mlp(latent_dim, mlp_ratio) if mlp_ratio > 0 else None

    def attend(
        self, z: torch.Tensor, kv_proj: tuple[torch.Tensor, torch.Tensor], kv_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Update latent rows ``z`` (B, k, d) from projected tokens (query rows are independent)."""
        z = self.attn.attend(z, kv_proj, kv_mask)
        return z + self.mlp(self.norm(z)) if self.mlp is not None else z


class LatentEncoder(nn.Module):
    """Perceiver encoder: learned latents cross-attend to input tokens, then latent self-attention layers.

    Args:
        input_dim: token width D_in.
        num_latents: number Q of learned latents (the maximum; forward may use a prefix or a per-image subset).
        latent_dim: latent width d.
        cross_heads: cross-attention heads.
        cross_head_dim: cross-attention width per head.
        self_heads: latent self-attention heads.
        self_head_dim: latent self-attention width per head.
        self_layers: latent layers per block.
        num_blocks: repetitions of (cross-attention block + latent layers).
        share_blocks: tie the weights of blocks 2..n (block 1 keeps its own, as in the Perceiver).
        mlp_ratio: MLP hidden width / latent width (cross and latent blocks).
        pos_mode: how ``pos`` enters: "add" (pos width = D_in), "concat" (pos width = pos_dim) or "none".
        pos_dim: positional feature width for "concat".
        drop_path: stochastic-depth rate of the latent layers.
        layerscale_init: LayerScale init of the latent layers (None: off).
        attn_impl: "sdpa" or "math".
    """

    def __init__(
        self,
        input_dim: int,
        num_latents: int,
        latent_dim: int,
        cross_heads: int = 1,
        cross_head_dim: int | None = None,
        self_heads: int = 4,
        self_head_dim: int | None = None,
        self_layers: int = 4,
        num_blocks: int = 1,
        share_blocks: bool = False,
        mlp_ratio: float = 4.0,
        pos_mode: PosMode = "add",
        pos_dim: int = 0,
        drop_path: float = 0.0,
        layerscale_init: float | None = None,
        attn_impl: AttnImpl = "sdpa",
    ) -> None:
        super().__init__()
        if pos_mode not in ("add", "concat", "none"):
            raise ValueError(f"pos_mode={pos_mode!r} is invalid; use 'add', 'concat' or 'none'")
        if pos_mode == "concat" and pos_dim <= 0:
            raise ValueError("pos_mode='concat' needs pos_dim > 0 (the positional feature width)")
        if num_blocks < 1 or num_latents < 1 or self_layers < 0:
            raise ValueError("num_blocks and num_latents must be >= 1 and self_layers >= 0")
        cross_head_dim = cross_head_dim or latent_dim // cross_heads
        self_head_dim = self_head_dim or latent_dim // self_heads
        self.num_latents, self.latent_dim, self.num_blocks = num_latents, latent_dim, num_blocks
        self.pos_mode: PosMode = pos_mode
        self.kv_dim = input_dim + (pos_dim if pos_mode == "concat" else 0)
        self.latents = nn.Parameter(torch.empty(num_latents, latent_dim))
        nn.init.trunc_normal_(self.latents, std=0.02, a=-2.0, b=2.0)
        distinct = 1 if num_blocks == 1 else (2 if share_blocks else num_blocks)
        self.cross = nn.ModuleList(
            CrossBlock(latent_dim, self.kv_dim, cross_heads, cross_head_dim, mlp_ratio, attn_impl)
            for _ in range(distinct)
        )
        self.layers = nn.ModuleList(
            nn.ModuleList(
                LatentBlock(latent_dim, self_heads, self_head_dim, mlp_ratio, drop_path, layerscale_init, attn_impl)
                for _ in range(self_layers)
            )
            for _ in range(distinct)
        )

    def _module_index(self, block: int) -> int:
        return min(block, len(self.cross) - 1)

    def set_attn_impl(self, impl: AttnImpl) -> None:
        """Switch every attention of the encoder to "sdpa" or "math"."""
        for module in self.modules():
            if isinstance(module, (CrossAttention, SelfAttention)):
                module.attn_impl = impl

    def inputs(self, tokens: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """Combine tokens (B, N, D_in) with positions ((B, N, D_pos) or (N, D_pos)) as ``pos_mode`` says."""
        if self.pos_mode == "none" or pos is None:
            if self.pos_mode == "concat":
                raise ValueError("pos_mode='concat' needs pos; pass positional features or use pos_mode='none'")
            return tokens
        if pos.dim() == 2:
            pos = pos.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        return tokens + pos if self.pos_mode == "add" else torch.cat([tokens, pos.to(tokens.dtype)], dim=-1)

    def project_kv(self, x: torch.Tensor, block: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values of the tokens ``x`` (output of :meth:`inputs`) for block ``block``'s cross-attention."""
        return self.cross[self._module_index(block)].attn.project_kv(x)

    def latent_rows(
        self, batch: int, num_latents: int | None = None, latent_index: torch.Tensor | None = None, start: int = 0
    ) -> torch.Tensor:
        """Initial latents per image: rows ``Z0[start:num_latents]`` or ``Z0[latent_index]`` → (B, k, d)."""
        if latent_index is not None:
            return self.latents[latent_index]
        stop = self.num_latents if num_latents is None else num_latents
        if not 0 <= start < stop <= self.num_latents:
            raise ValueError(f"latent rows [{start}:{stop}] are invalid for {self.num_latents} latents")
        return self.latents[start:stop].unsqueeze(0).expand(batch, -1, -1)

    def first_cross(
        self, z: torch.Tensor, kv_proj: tuple[torch.Tensor, torch.Tensor], token_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """First cross-attention block on latent rows ``z`` (rows are independent: slicing commutes with it)."""
        return self.cross[0].attend(z, kv_proj, token_mask)

    def process(
        self,
        z: torch.Tensor,
        x: torch.Tensor | None = None,
        token_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Everything after the first cross-attention: latent layers of block 1, then blocks 2..n.

        Args:
            z: latents after the first cross-attention (B, k, d).
            x: tokens (output of :meth:`inputs`), needed only when ``num_blocks > 1``.
            token_mask: (B, N) bool, True for valid tokens.
        """
        for layer in self.layers[0]:
            z = layer(z)
        for block in range(1, self.num_blocks):
            if x is None:
                raise ValueError("num_blocks > 1 needs the input tokens x")
            index = self._module_index(block)
            z = self.cross[index].attend(z, self.cross[index].attn.project_kv(x), token_mask)
            for layer in self.layers[index]:
                z = layer(z)
        return z

    def forward(
        self,
        tokens: torch.Tensor,
        pos: torch.Tensor | None = None,
        token_mask: torch.Tensor | None = None,
        num_latents: int | None = None,
        latent_index: torch.Tensor | None = None,
        return_first: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Encode tokens into latents.

        Args:
            tokens: (B, N, D_in).
            pos: positional features (B, N, D_pos) or (N, D_pos), combined per ``pos_mode``.
            token_mask: (B, N) bool, True for valid tokens (masked tokens never influence the output).
            num_latents: use the prefix ``Z0[:k]`` (default: all Q).
            latent_index: (B, k) long, a per-image subset of ``Z0`` (overrides ``num_latents``).
            return_first: also return the latents right after the first cross-attention.

        Returns:
            latents (B, k, latent_dim), and the first-cross-attention latents when ``return_first``.
        """
        x = self.inputs(tokens, pos)
        z = self.latent_rows(x.shape[0], num_latents, latent_index)
        first = self.first_cross(z, self.project_kv(x), token_mask)
        out = self.process(first, x, token_mask)
        return (out, first) if return_first else out


class QueryDecoder(nn.Module):
    """Arbitrary queries read the latents: cross-attention (optionally non-residual) then a residual MLP.

    Args:
        query_dim: query width.
        latent_dim: latent width.
        heads: attention heads.
        head_dim: width per head (default ``latent_dim // heads``).
        out_dim: output width (default ``query_dim``).
        residual: add the queries to the attention output (LaRa's decoder: False).
        mlp_ratio: residual MLP hidden ratio on the output (0 disables the MLP).
        attn_impl: "sdpa" or "math".
    """

    def __init__(
        self,
        query_dim: int,
        latent_dim: int,
        heads: int = 1,
        head_dim: int | None = None,
        out_dim: int | None = None,
        residual: bool = True,
        mlp_ratio: float = 4.0,
        attn_impl: AttnImpl = "sdpa",
    ) -> None:
        super().__init__()
        out_dim = query_dim if out_dim is None else out_dim
        self.attn = CrossAttention(
            query_dim, latent_dim, heads, head_dim or latent_dim // heads, out_dim, residual, attn_impl=attn_impl
        )
        self.norm = nn.LayerNorm(out_dim)
        self.mlp = Mlp(out_dim, mlp_ratio) if mlp_ratio > 0 else None

    def forward(self, latents: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Decode latents (B, Q, d) at queries (B, M, D_q) or (M, D_q) → (B, M, out_dim)."""
        if queries.dim() == 2:
            queries = queries.unsqueeze(0).expand(latents.shape[0], -1, -1)
        out = self.attn(queries, latents)
        return out + self.mlp(self.norm(out)) if self.mlp is not None else out


class MeanPoolHead(nn.Module):
    """Mean over latents → LayerNorm → Linear: a classifier head agnostic to the number of latents."""

    def __init__(self, latent_dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(latent_dim)
        self.fc = nn.Linear(latent_dim, num_classes)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) from latents (B, k, d)."""
        return self.fc(self.norm(latents.mean(dim=1)))


def fourier_features(coords: torch.Tensor, num_bands: int, max_freq: float) -> torch.Tensor:
    """Fourier position features ``[x, sin(π f x), cos(π f x)]`` with f linearly spaced in [1, max_freq / 2].

    Args:
        coords: (..., A) coordinates in [−1, 1].
        num_bands: frequency bands per axis.
        max_freq: maximum frequency (the Nyquist frequency of the grid is its size / 2).

    Returns:
        (..., A·(2·num_bands + 1)): the coordinates, then the sines, then the cosines (axis-major).
    """
    freqs = torch.linspace(1.0, max_freq / 2.0, num_bands, dtype=coords.dtype, device=coords.device)
    scaled = math.pi * coords.unsqueeze(-1) * freqs
    flat = scaled.flatten(-2)
    return torch.cat([coords, flat.sin(), flat.cos()], dim=-1)


def grid_coords(*sizes: int) -> torch.Tensor:
    """Coordinates of a regular grid in [−1, 1]^A, row-major: (prod(sizes), A)."""
    axes = [torch.linspace(-1.0, 1.0, s) for s in sizes]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(sizes))
