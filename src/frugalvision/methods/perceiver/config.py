"""Model configuration of the DQS Perceiver (the experiment config lives next to it in experiment.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from frugalvision.errors import ConfigError


@dataclass
class PerceiverConfig:
    """Architecture of the Perceiver classifier (spec §2.2, §2.5; all values are our reading).

    Attributes:
        img_size: input resolution (square).
        in_chans: input channels.
        num_classes: classes.
        patch_size: tokenizer kernel = stride p.
        token_dim: token width D.
        num_latents: Q, the largest query set.
        latent_dim: latent width d.
        cross_heads: heads of the cross-attention.
        self_heads: heads of the latent self-attention.
        layers: latent layers L.
        num_blocks: repetitions of cross-attention + latent layers.
        mlp_ratio: MLP ratio r.
        pos: "learned" (additive) or "fourier" (2-D Fourier features concatenated).
        fourier_bands: Fourier bands per axis.
        head: "mean" (MeanPoolHead) or "query" (one learned query through a QueryDecoder).
        scorer: add the per-latent scorer (selection="scorer").
        drop_path: stochastic depth of the latent layers.
        attn_impl: "sdpa" or "math".
    """

    img_size: int = 28
    in_chans: int = 1
    num_classes: int = 10
    patch_size: int = 4
    token_dim: int = 64
    num_latents: int = 32
    latent_dim: int = 64
    cross_heads: int = 1
    self_heads: int = 4
    layers: int = 4
    num_blocks: int = 1
    mlp_ratio: float = 4.0
    pos: Literal["learned", "fourier"] = "learned"
    fourier_bands: int = 64
    head: Literal["mean", "query"] = "mean"
    scorer: bool = False
    drop_path: float = 0.0
    attn_impl: Literal["sdpa", "math"] = "sdpa"

    @property
    def num_tokens(self) -> int:
        """N = (H/p)·(W/p)."""
        return (self.img_size // self.patch_size) ** 2

    def validate(self, prefix: str = "model") -> None:
        """Raise ConfigError on an invalid value."""
        if self.img_size % self.patch_size:
            raise ConfigError(f"{prefix}.patch_size={self.patch_size} must divide img_size={self.img_size}")
        for name in ("latent_dim", "token_dim", "num_latents", "cross_heads", "self_heads", "num_blocks"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{prefix}.{name}={getattr(self, name)} is invalid; it must be positive")
        for heads in ("cross_heads", "self_heads"):
            if self.latent_dim % getattr(self, heads):
                raise ConfigError(f"{prefix}.latent_dim={self.latent_dim} is not divisible by {prefix}.{heads}")
        if self.pos not in ("learned", "fourier"):
            raise ConfigError(f"{prefix}.pos={self.pos!r} is invalid; use learned or fourier")
        if self.head not in ("mean", "query"):
            raise ConfigError(f"{prefix}.head={self.head!r} is invalid; use mean or query")
        if self.attn_impl not in ("sdpa", "math"):
            raise ConfigError(f"{prefix}.attn_impl={self.attn_impl!r} is invalid; use sdpa or math")
