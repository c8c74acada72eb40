"""The Perceiver classifier whose number of latent queries is a forward argument, and its analytic cost model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from frugalvision.methods.perceiver.config import PerceiverConfig
from frugalvision.methods.perceiver.functional import cascade_decisions, straight_through_gate, topk_gather
from frugalvision.nn.latent import LatentEncoder, MeanPoolHead, QueryDecoder, fourier_features, grid_coords


class Prepared(NamedTuple):
    """Query-independent work of one batch: tokens (with positions) and the first cross-attention's keys/values."""

    x: torch.Tensor
    kv: tuple[torch.Tensor, torch.Tensor]

    def take(self, index: torch.Tensor) -> Prepared:
        """The same work for a subset of the batch."""
        return Prepared(self.x[index], (self.kv[0][index], self.kv[1][index]))


class QueryHead(nn.Module):
    """One learned query reads the latents through a :class:`QueryDecoder`, then LayerNorm + Linear."""

    def __init__(self, latent_dim: int, num_classes: int, heads: int, mlp_ratio: float, attn_impl: str = "sdpa"):
        super().__init__()
        self.query = nn.Parameter(torch.empty(1, latent_dim))
        nn.init.trunc_normal_(self.query, std=0.02)
        self.decoder = QueryDecoder(
            latent_dim, latent_dim, heads, latent_dim // heads, latent_dim, True, mlp_ratio, attn_impl=attn_impl
        )  # type: ignore[arg-type]
        self.norm = nn.LayerNorm(latent_dim)
        self.fc = nn.Linear(latent_dim, num_classes)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) from latents (B, k, d)."""
        return self.fc(self.norm(self.decoder(latents, self.query)[:, 0]))


class PerceiverClassifier(nn.Module):
    """Patch tokenizer → :class:`LatentEncoder` (Q latents) → head; the query set is chosen per call.

    Args:
        config: architecture.
    """

    def __init__(self, config: PerceiverConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        side = config.img_size // config.patch_size
        self.tokenizer = nn.Conv2d(config.in_chans, config.token_dim, config.patch_size, config.patch_size)
        if config.pos == "learned":
            self.pos = nn.Parameter(torch.empty(side * side, config.token_dim))
            nn.init.trunc_normal_(self.pos, std=0.02)
            pos_mode, pos_dim = "add", 0
        else:
            features = fourier_features(grid_coords(side, side), config.fourier_bands, max_freq=float(side))
            self.register_buffer("pos", features, persistent=False)
            pos_mode, pos_dim = "concat", features.shape[-1]
        d = config.latent_dim
        self.encoder = LatentEncoder(
            config.token_dim,
            config.num_latents,
            d,
            cross_heads=config.cross_heads,
            cross_head_dim=d // config.cross_heads,
            self_heads=config.self_heads,
            self_head_dim=d // config.self_heads,
            self_layers=config.layers,
            num_blocks=config.num_blocks,
            mlp_ratio=config.mlp_ratio,
            pos_mode=pos_mode,  # type: ignore[arg-type]
            pos_dim=pos_dim,
            drop_path=config.drop_path,
            attn_impl=config.attn_impl,
        )
        if config.head == "mean":
            self.head: nn.Module = MeanPoolHead(d, config.num_classes)
        else:
            self.head = QueryHead(d, config.num_classes, config.cross_heads, config.mlp_ratio, config.attn_impl)
        self.scorer = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 1)) if config.scorer else None

    @property
    def num_latents(self) -> int:
        """Q, the largest query set."""
        return self.config.num_latents

    def set_attn_impl(self, impl: str) -> None:
        """Switch every attention to "sdpa" or "math"."""
        self.encoder.set_attn_impl(impl)  # type: ignore[arg-type]
        if isinstance(self.head, QueryHead):
            self.head.decoder.attn.attn_impl = impl  # type: ignore[assignment]

    # ------------------------------------------------------------------ building blocks
    def prepare(self, images: torch.Tensor) -> Prepared:
        """Tokens, positions and the first cross-attention's keys/values (independent of the query set)."""
        tokens = self.tokenizer(images).flatten(2).transpose(1, 2)
        x = self.encoder.inputs(tokens, self.pos)
        return Prepared(x, self.encoder.project_kv(x))

    def first_rows(self, prep: Prepared, start: int, stop: int) -> torch.Tensor:
        """First cross-attention block for latent rows ``Z0[start:stop]`` → (B, stop − start, d)."""
        rows = self.encoder.latent_rows(prep.x.shape[0], stop, start=start)
        return self.encoder.first_cross(rows, prep.kv)

    def finish(self, z: torch.Tensor, prep: Prepared) -> torch.Tensor:
        """Latent layers (and later blocks) on the chosen latents, then the head → logits."""
        return self.head(self.encoder.process(z, prep.x))

    def scores(self, first: torch.Tensor) -> torch.Tensor:
        """Scorer output ``s = w·LN(z) + b`` per latent (B, Q)."""
        if self.scorer is None:
            raise ValueError("this model has no scorer; build it with config.scorer=True")
        return self.scorer(first).squeeze(-1)

    def select(self, first: torch.Tensor, k: int, scores: torch.Tensor | None = None) -> torch.Tensor:
        """Keep the top-``k`` latents per image by score, with the straight-through gate (scorer selection).

        Args:
            first: all Q latents after the first cross-attention (B, Q, d).
            k: latents kept.
            scores: precomputed :meth:`scores` of ``first`` (computed here when None).
        """
        scores = self.scores(first) if scores is None else scores
        kept, index = topk_gather(first, scores, k)
        return straight_through_gate(kept, torch.gather(scores, 1, index))

    def _check_width(self, k: int) -> int:
        if not 1 <= k <= self.num_latents:
            raise ValueError(f"num_latents={k} is invalid; use 1..{self.num_latents}")
        return k

    # ------------------------------------------------------------------ inference modes
    def forward(
        self,
        images: torch.Tensor,
        num_latents: int | None = None,
        latent_index: torch.Tensor | None = None,
        widths: Sequence[int] | None = None,
    ) -> torch.Tensor | dict[int, torch.Tensor]:
        """Logits with Q' latents: the prefix ``Z0[:Q']`` (or the scorer's top-Q'), or a given per-image subset.

        Args:
            images: (B, C, H, W).
            num_latents: Q' (default Q).
            latent_index: (B, k) long, explicit per-image latent subset (overrides the selection).
            widths: several Q' at once (returns ``{Q': logits}``, see :meth:`widths_logits`).
        """
        if widths is not None:
            return self.widths_logits(images, widths)
        k = self._check_width(self.num_latents if num_latents is None else num_latents)
        prep = self.prepare(images)
        if latent_index is not None:
            rows = self.encoder.latent_rows(images.shape[0], latent_index=latent_index)
            z = self.encoder.first_cross(rows, prep.kv)
        elif self.scorer is not None:
            z = self.select(self.first_rows(prep, 0, self.num_latents), k)
        else:
            z = self.first_rows(prep, 0, k)
        return self.finish(z, prep)

    def widths_logits(self, images: torch.Tensor, widths: Sequence[int]) -> dict[int, torch.Tensor]:
        """Logits at several query-set sizes, sharing tokens, keys/values and the first cross-attention."""
        prep = self.prepare(images)
        top = self.num_latents if self.scorer is not None else max(widths)
        first = self.first_rows(prep, 0, self._check_width(top))
        scores = self.scores(first) if self.scorer is not None else None
        out = {}
        for k in widths:
            z = self.select(first, self._check_width(k), scores) if scores is not None else first[:, :k]
            out[k] = self.finish(z, prep)
        return out

    def cascade_stage_logits(self, images: torch.Tensor, stages: Sequence[int]) -> list[torch.Tensor]:
        """Logits of every cascade stage for every image, each stage reusing the previous stages' first rows."""
        prep = self.prepare(images)
        outs = []
        if self.scorer is not None:
            first = self.first_rows(prep, 0, self.num_latents)
            scores = self.scores(first)
            return [self.finish(self.select(first, k, scores), prep) for k in stages]
        first = None
        done = 0
        for k in stages:
            new = self.first_rows(prep, done, self._check_width(k))
            first = new if first is None else torch.cat([first, new], dim=1)
            done = k
            outs.append(self.finish(first, prep))
        return outs

    def cascade(self, images: torch.Tensor, stages: Sequence[int], tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Dynamic inference: stage 1 for all images, escalate only those whose max probability is below τ.

        Escalation reuses the tokens, keys/values and first cross-attention rows already computed and adds only
        the new query rows plus the latent layers at the next width.

        Args:
            images: (B, C, H, W).
            stages: increasing query-set sizes, e.g. (Q/4, Q).
            tau: confidence threshold (accept when max probability > τ; 0: stage 1 only; 1: always the last stage).

        Returns:
            (logits (B, C), stage index used per image (B,)).
        """
        if list(stages) != sorted(set(stages)):
            raise ValueError(f"cascade stages {tuple(stages)} must be strictly increasing")
        prep = self.prepare(images)
        batch = images.shape[0]
        active = torch.arange(batch, device=images.device)
        stage_of = torch.full((batch,), len(stages) - 1, dtype=torch.long, device=images.device)
        logits_out: torch.Tensor | None = None
        first = self.first_rows(prep, 0, self.num_latents) if self.scorer is not None else None
        scores = self.scores(first) if first is not None else None
        done = 0
        for j, k in enumerate(stages):
            if scores is not None:
                z = self.select(first, self._check_width(k), scores)  # type: ignore[arg-type]
            else:
                new = self.first_rows(prep, done, self._check_width(k))
                first = new if first is None else torch.cat([first, new], dim=1)
                z = first
            done = k
            logits = self.finish(z, prep)
            if logits_out is None:
                logits_out = logits.new_zeros(batch, logits.shape[-1])
            last = j == len(stages) - 1
            keep = (
                torch.ones(len(active), dtype=torch.bool, device=images.device)
                if last
                else (cascade_decisions([logits, logits], tau).to(images.device) == 0)
            )
            logits_out[active[keep]] = logits[keep]
            stage_of[active[keep]] = j
            if last or bool(keep.all()):
                break
            escalate = (~keep).nonzero().squeeze(1)
            active, prep, first = active[escalate], prep.take(escalate), first[escalate]  # type: ignore[index]
            scores = scores[escalate] if scores is not None else None
        return logits_out, stage_of  # type: ignore[return-value]


def _mlp_hidden(config: PerceiverConfig) -> int:
    return max(1, int(round(config.latent_dim * config.mlp_ratio)))


def _kv_dim(config: PerceiverConfig) -> int:
    extra = 2 * (2 * config.fourier_bands + 1) if config.pos == "fourier" else 0
    return config.token_dim + extra


def macs_breakdown(config: PerceiverConfig, k: int) -> dict[str, int]:
    """Analytic multiply-accumulates per image with k latents (spec §2.2; FLOPs = 2 × MACs).

    Returns:
        ``fixed`` (tokenizer + key/value projections: independent of k), ``cross`` (first cross-attention block
        rows), ``latent`` (all latent layers and later blocks), ``head``, ``scorer`` and ``total``.
    """
    n, d, h = config.num_tokens, config.latent_dim, _mlp_hidden(config)
    inner_c = config.cross_heads * (d // config.cross_heads)
    inner_s = config.self_heads * (d // config.self_heads)
    kv_proj = n * _kv_dim(config) * 2 * inner_c
    fixed = n * config.patch_size**2 * config.in_chans * config.token_dim + kv_proj
    cross = cross_rows_macs(config, k)
    layer = 3 * k * d * inner_s + k * inner_s * d + 2 * k * k * inner_s + 2 * k * d * h
    latent = config.layers * layer + (config.num_blocks - 1) * (kv_proj + cross + config.layers * layer)
    head = d * config.num_classes
    if config.head == "query":
        head += d * inner_c + 2 * k * d * inner_c + 2 * k * inner_c + inner_c * d + 2 * d * h
    scorer = config.num_latents * d if config.scorer else 0
    parts = {"fixed": fixed, "cross": cross, "latent": latent, "head": head, "scorer": scorer}
    parts["total"] = sum(parts.values())
    return parts


def cross_rows_macs(config: PerceiverConfig, rows: int) -> int:
    """MACs of the first cross-attention block (query/output projections, attention, MLP) for ``rows`` latents."""
    n, d, h = config.num_tokens, config.latent_dim, _mlp_hidden(config)
    inner_c = config.cross_heads * (d // config.cross_heads)
    return rows * d * inner_c + 2 * n * rows * inner_c + rows * inner_c * d + 2 * rows * d * h


def model_macs(config: PerceiverConfig, k: int) -> int:
    """Total MACs per image at k latents (scorer models compute the first cross-attention for all Q)."""
    parts = macs_breakdown(config, k)
    if config.scorer:
        return parts["total"] - parts["cross"] + cross_rows_macs(config, config.num_latents)
    return parts["total"]


def cascade_stage_macs(config: PerceiverConfig, stages: Sequence[int]) -> list[int]:
    """Incremental MACs per image of each cascade stage (reuse of tokens, keys/values and earlier query rows)."""
    out = []
    previous = 0
    for j, k in enumerate(stages):
        parts = macs_breakdown(config, k)
        work = parts["latent"] + parts["head"]
        if j == 0:
            work += parts["fixed"] + parts["scorer"]
            work += cross_rows_macs(config, config.num_latents if config.scorer else k)
        elif not config.scorer:
            work += cross_rows_macs(config, k - previous)
        out.append(work)
        previous = k
    return out
