"""ViCHA's model: a concept-token ViT, the ALBEF text/fusion BERT, heads, the MAE decoder, the momentum copy.

Parts: the ViT that takes visual-concept tokens, the concept encoder, the contrastive (top and hierarchical)
projections, the ITM head and the MAE-style decoder.

The pieces are methods (``encode_image``, ``encode_text``, ``encode_concepts``, ``fuse``, ``itm_logits``,
``image_feature``, ``text_feature``, ``mim_predict``) so that pre-training (:mod:`.objectives`) and downstream
heads reuse them; ``forward`` is the pre-training step (so that Fabric's precision applies to all of it).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from frugalvision.errors import ConfigError, DataError
from frugalvision.nn.minilm import PAD, MiniLMConfig, MiniLMEncoder
from frugalvision.nn.xbert import TextFusionConfig, TextFusionEncoder

if TYPE_CHECKING:
    from frugalvision.methods.vicha.objectives import ObjectiveConfig, PretrainOutput

__all__ = [
    "MOMENTUM_PARTS",
    "Batch",
    "ConceptViT",
    "ImageOutput",
    "MaeDecoder",
    "ModelConfig",
    "TextOutput",
    "ViCHAModel",
    "hitc_pairs",
    "momentum_copy",
    "sincos_2d",
]

#: the online parts that have a momentum (EMA) copy (spec 2.1); H-ITC heads, ITM head and MIM decoder have none
MOMENTUM_PARTS = ("visual", "vision_proj", "text", "text_proj", "concept_encoder", "concept_proj")


@dataclass(frozen=True)
class ModelConfig:
    """Sizes and switches of the ViCHA model (paper values in brackets).

    Attributes:
        vocab_size: text vocabulary (from the tokenizer).
        image_size: input side [256].
        patch_size: ViT patch [16].
        vision_width: ViT width [768].
        vision_depth: ViT blocks [12].
        vision_heads: ViT heads [12].
        text: "scratch" (a BERT of the sizes below, random init) or "minilm" (the offline MiniLM-L6: width 384,
            6 layers split at ``text_layers``; its WordPiece vocabulary).
        text_dir: another BERT folder (config.json, model.safetensors) for ``text="minilm"`` [bert-base-uncased].
        text_vocab: with ``text="minilm"``, the word-piece ids kept in the embedding table (a
            :class:`~.text.SubsetTokenizer`'s ``kept``); empty keeps the full vocabulary [empty].
        text_width: BERT width [768].
        text_heads: BERT heads [12].
        text_intermediate: BERT feed-forward width [3072].
        text_layers: text-only layers [6].
        fusion_layers: cross-attention layers [6]; with ``text="minilm"`` the checkpoint's first
            ``text_layers + fusion_layers`` layers are kept (MiniLM-L6 has 6, BERT-base 12).
        max_text_positions: learned text positions.
        dropout: BERT dropout [0.1].
        embed_dim: contrastive embedding width [256].
        temp: initial learnable temperature [0.07].
        hitc_levels: H-ITC levels below the top pair [5]; 0 disables H-ITC.
        concept_layers: layers of the visual-concept encoder [2]; 0 disables visual concepts.
        mim: build the MAE decoder (U-MIM) [True].
        mim_width: decoder width [768].
        mim_depth: decoder blocks [2].
        mim_heads: decoder heads [16].
        grad_checkpointing: recompute the ViT blocks and BERT layers in the backward pass (GPU memory).
        text_pool: how a text (and a fused) sequence becomes one vector for ITC, H-ITC, ITM and the downstream
            heads: "cls" (BERT's [CLS], as ALBEF and ViCHA) or "mean" (mean of the valid tokens: the reading of a
            checkpoint trained with mean pooling, such as the offline MiniLM, whose [CLS] is one and the same vector
            for every sentence in its first four layers) ["cls"].
    """

    vocab_size: int
    image_size: int = 32
    patch_size: int = 8
    vision_width: int = 64
    vision_depth: int = 6
    vision_heads: int = 4
    text: str = "scratch"
    text_dir: str | None = None
    text_vocab: tuple[int, ...] = ()
    text_width: int = 64
    text_heads: int = 4
    text_intermediate: int = 256
    text_layers: int = 3
    fusion_layers: int = 3
    max_text_positions: int = 64
    dropout: float = 0.1
    embed_dim: int = 32
    temp: float = 0.07
    hitc_levels: int = 0
    concept_layers: int = 0
    mim: bool = False
    mim_width: int = 64
    mim_depth: int = 1
    mim_heads: int = 4
    grad_checkpointing: bool = False
    text_pool: str = "cls"

    def validate(self) -> None:
        """Raise ConfigError on an invalid value."""
        if self.text_pool not in ("cls", "mean"):
            raise ConfigError(f"text_pool={self.text_pool!r} is invalid; use 'cls' or 'mean'")
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size={self.image_size} must be a multiple of patch_size={self.patch_size}")
        if self.text not in ("scratch", "minilm"):
            raise ConfigError(f"model.text={self.text!r} is invalid; use 'scratch' or 'minilm'")
        top = max(self.vision_depth, 1) - 1
        if not 0 <= self.hitc_levels <= min(top, self.text_layers - 1):
            raise ConfigError(
                f"hitc_levels={self.hitc_levels} is invalid; use 0..{min(top, self.text_layers - 1)} "
                "(levels below the top pair, at most text_layers - 1 and vision_depth - 1)"
            )
        for name in ("vision_width", "text_width", "mim_width"):
            heads = getattr(self, name.replace("width", "heads"))
            if getattr(self, name) % heads:
                raise ConfigError(f"{name}={getattr(self, name)} must be divisible by its heads ({heads})")


def hitc_pairs(vision_depth: int, text_layers: int, levels: int) -> list[tuple[int, int]]:
    """1-based (image block, text layer) pairs of H-ITC: the blocks below the top, bottom-up with text layers 1..L.

    ViT-B (12 blocks) with BERT's 6 text layers and 5 levels gives (7, 1), (8, 2), ..., (11, 5); the top pair
    (12, 6) is the main ITC.
    """
    first = vision_depth - levels
    return [(first + level - 1, level) for level in range(1, levels + 1)]


def sincos_2d(dim: int, grid: int, cls_token: bool = True) -> Tensor:
    """MAE's fixed 2-D sine-cosine position embedding ``[1 (+1), grid * grid, dim]`` (a zero row for [CLS])."""
    if dim % 4:
        raise ConfigError(f"sin-cos positions need a width divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4.0))
    ys, xs = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")

    def embed(pos: np.ndarray) -> np.ndarray:
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    table = np.concatenate([embed(xs), embed(ys)], axis=1)
    if cls_token:
        table = np.concatenate([np.zeros((1, dim)), table], axis=0)
    return torch.from_numpy(table).float().unsqueeze(0)


class Batch(NamedTuple):
    """A pre-training batch: normalised images, caption ids, concept-string ids (None without concepts)."""

    images: Tensor
    text_ids: Tensor
    concept_ids: Tensor | None


class ImageOutput(NamedTuple):
    """Image encoder output: tokens ``[N, 1 + P + K, C]`` (CLS, patches, concepts), their validity, level CLS."""

    tokens: Tensor
    valid: Tensor
    levels: list[Tensor]


class TextOutput(NamedTuple):
    """Text encoder output: last text-layer states ``[N, L, C]``, validity, pooled vector of each H-ITC text layer."""

    states: Tensor
    valid: Tensor
    levels: list[Tensor]


class ConceptViT(nn.Module):
    """timm's ViT whose token sequence can be extended with visual-concept tokens (no positions, key-padding mask).

    Returns every requested block's [CLS] after the final LayerNorm (the official ViT returns normed hidden states)
    for H-ITC, and offers the MAE encoder pass (``forward_masked``) on the same embedding code.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.patch_size = cfg.patch_size
        self.grad_checkpointing = cfg.grad_checkpointing
        self.vit = VisionTransformer(
            img_size=cfg.image_size,
            patch_size=cfg.patch_size,
            embed_dim=cfg.vision_width,
            depth=cfg.vision_depth,
            num_heads=cfg.vision_heads,
            qkv_bias=True,
            num_classes=0,
            global_pool="",
        )

    @property
    def width(self) -> int:
        """Token width."""
        return self.vit.embed_dim

    @property
    def num_patches(self) -> int:
        """Patches per image."""
        return self.vit.patch_embed.num_patches

    def _block(self, block: nn.Module, x: Tensor, mask: Tensor | None) -> Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, mask, use_reentrant=False)
        return block(x, attn_mask=mask)

    def forward(
        self,
        images: Tensor,
        concepts: Tensor | None = None,
        concept_valid: Tensor | None = None,
        level_blocks: tuple[int, ...] = (),
    ) -> ImageOutput:
        """Encode ``images`` with optional concept tokens ``[N, K, C]`` appended after CLS + patches (+ positions).

        Args:
            images: ``[N, 3, H, W]``.
            concepts: projected concept tokens, or None.
            concept_valid: ``[N, K]`` True on real (non-padding) concept tokens.
            level_blocks: 1-based blocks whose normed [CLS] is returned (H-ITC).
        """
        vit = self.vit
        x = vit._pos_embed(vit.patch_embed(images))
        valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if concepts is not None:
            concept_valid = concept_valid if concept_valid is not None else torch.ones_like(concepts[..., 0]).bool()
            x = torch.cat([x, concepts.to(x.dtype)], dim=1)
            valid = torch.cat([valid, concept_valid], dim=1)
        mask = None if bool(valid.all()) else valid[:, None, None, :]
        x = vit.norm_pre(x)
        levels = []
        for index, block in enumerate(vit.blocks, start=1):
            x = self._block(block, x, mask)
            if index in level_blocks:
                levels.append(vit.norm(x[:, 0]))
        return ImageOutput(vit.norm(x), valid, levels)

    def forward_masked(self, images: Tensor, ids_keep: Tensor) -> Tensor:
        """MAE encoder pass: patches + positions, keep ``ids_keep``, prepend CLS + its position, blocks, norm.

        The official U-MIM pass prepends the raw CLS (without its position); we use the main pass's CLS + position.
        """
        vit = self.vit
        patches = vit.patch_embed(images) + vit.pos_embed[:, 1:]
        kept = torch.gather(patches, 1, ids_keep[..., None].expand(-1, -1, patches.shape[-1]))
        cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(kept.shape[0], -1, -1)
        x = vit.norm_pre(torch.cat([cls, kept], dim=1))
        for block in vit.blocks:
            x = self._block(block, x, None)
        return vit.norm(x)


class MaeDecoder(nn.Module):
    """MAE's light decoder: embed, mask tokens, unshuffle, fixed sin-cos positions, blocks, norm, pixel head.

    One learned mask token (N(0, 0.02)); the positions include the CLS slot; the head predicts ``patch * patch * 3``
    pixels per patch.
    """

    def __init__(self, encoder_width: int, width: int, depth: int, heads: int, grid: int, patch: int) -> None:
        super().__init__()
        self.embed = nn.Linear(encoder_width, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.normal_(self.mask_token, std=0.02)
        self.register_buffer("pos_embed", sincos_2d(width, grid), persistent=False)
        self.blocks = nn.ModuleList(Block(width, heads, 4.0, qkv_bias=True) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.pred = nn.Linear(width, patch * patch * 3)

    def forward(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """``latent [N, 1 + keep, C]`` (CLS first) -> predicted patches ``[N, L, p * p * 3]`` in image order."""
        x = self.embed(latent)
        n, length = ids_restore.shape
        fill = self.mask_token.to(x.dtype).expand(n, length + 1 - x.shape[1], -1)
        shuffled = torch.cat([x[:, 1:], fill], dim=1)
        ordered = torch.gather(shuffled, 1, ids_restore[..., None].expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], ordered], dim=1) + self.pos_embed.to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.pred(self.norm(x))[:, 1:]


class ViCHAModel(nn.Module):
    """The online ViCHA (ALBEF-style) model; arms without H-ITC, visual concepts or MIM simply omit those parts.

    Args:
        cfg: sizes and switches.
        text_encoder: a prepared text/fusion encoder (e.g. :meth:`TextFusionEncoder.from_minilm`); None builds one
            from ``cfg`` (``cfg.text == "minilm"`` loads the offline MiniLM).
    """

    def __init__(self, cfg: ModelConfig, text_encoder: TextFusionEncoder | None = None) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.visual = ConceptViT(cfg)
        self.text = text_encoder if text_encoder is not None else _text_encoder(cfg)
        width_v, width_t = self.visual.width, self.text.width
        self.vision_proj = nn.Linear(width_v, cfg.embed_dim)
        self.text_proj = nn.Linear(width_t, cfg.embed_dim)
        self.temp = nn.Parameter(torch.tensor(cfg.temp))
        self.itm_head = nn.Linear(width_t, 2)
        self.level_pairs = hitc_pairs(cfg.vision_depth, self.text.cfg.text_layers, cfg.hitc_levels)
        self.hitc_vision = nn.ModuleList(nn.Linear(width_v, cfg.embed_dim) for _ in self.level_pairs)
        self.hitc_text = nn.ModuleList(nn.Linear(width_t, cfg.embed_dim) for _ in self.level_pairs)
        self.concept_encoder: MiniLMEncoder | None = None
        self.concept_proj: nn.Linear | None = None
        if cfg.concept_layers > 0:
            self.concept_encoder = _concept_encoder(cfg, self.text)
            self.concept_proj = nn.Linear(self.concept_encoder.out_dim, width_v)
        self.mim_decoder: MaeDecoder | None = None
        if cfg.mim:
            grid = cfg.image_size // cfg.patch_size
            self.mim_decoder = MaeDecoder(width_v, cfg.mim_width, cfg.mim_depth, cfg.mim_heads, grid, cfg.patch_size)

    # ------------------------------------------------------------------ encoders
    @property
    def uses_concepts(self) -> bool:
        """True when the model has a visual-concept encoder."""
        return self.concept_encoder is not None

    def encode_concepts(self, concept_ids: Tensor) -> tuple[Tensor, Tensor]:
        """Concept string ids ``[N, K]`` -> (projected tokens ``[N, K, vision_width]``, validity ``[N, K]``)."""
        if self.concept_encoder is None or self.concept_proj is None:
            raise ConfigError("this model has no concept encoder; build it with concept_layers > 0")
        valid = concept_ids != PAD
        return self.concept_proj(self.concept_encoder(concept_ids, valid)), valid

    def encode_image(self, images: Tensor, concept_ids: Tensor | None = None, levels: bool = False) -> ImageOutput:
        """Image tokens (with concept tokens when the model uses them and ``concept_ids`` is given)."""
        concepts = valid = None
        if self.uses_concepts:
            if concept_ids is None:
                raise DataError("this model uses visual concepts; pass concept_ids (tokenised concept strings)")
            concepts, valid = self.encode_concepts(concept_ids)
        blocks = tuple(b for b, _ in self.level_pairs) if levels else ()
        return self.visual(images, concepts, valid, blocks)

    def encode_text(self, text_ids: Tensor, levels: bool = False) -> TextOutput:
        """Text-only pass of the caption ids ``[N, L]``."""
        valid = text_ids != PAD
        states, hidden = self.text.encode_text(text_ids, valid)
        level_cls = [self.pool_text(hidden[layer - 1], valid) for _, layer in self.level_pairs] if levels else []
        return TextOutput(states, valid, level_cls)

    def pool_text(self, states: Tensor, valid: Tensor) -> Tensor:
        """One vector per sequence of text (or fused) states ``[N, L, C]``: [CLS] or the mean of valid tokens."""
        if self.cfg.text_pool == "cls":
            return states[:, 0]
        weights = valid.to(states.dtype)[..., None]
        return (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    def image_feature(self, image: ImageOutput) -> Tensor:
        """Normalised contrastive image feature from the [CLS] token."""
        return F.normalize(self.vision_proj(image.tokens[:, 0]), dim=-1)

    def text_feature(self, text: TextOutput) -> Tensor:
        """Normalised contrastive text feature from the pooled text states (:meth:`pool_text`)."""
        return F.normalize(self.text_proj(self.pool_text(text.states, text.valid)), dim=-1)

    def fuse(self, text_states: Tensor, text_valid: Tensor, image_tokens: Tensor, image_valid: Tensor) -> Tensor:
        """Fusion layers over the text states, cross-attending to the (valid) image tokens."""
        return self.text.fuse(text_states, text_valid, image_tokens, image_valid)

    def itm_logits(self, fused: Tensor, text_valid: Tensor) -> Tensor:
        """ITM logits ``[N, 2]`` (index 1 = match) from the pooled fused states (:meth:`pool_text`)."""
        return self.itm_head(self.pool_text(fused, text_valid))

    def mim_predict(self, images: Tensor, ids_keep: Tensor, ids_restore: Tensor) -> Tensor:
        """U-MIM: encode the kept patches (no concept tokens) and decode every patch."""
        if self.mim_decoder is None:
            raise ConfigError("this model has no MIM decoder; build it with mim=True")
        return self.mim_decoder(self.visual.forward_masked(images, ids_keep), ids_restore)

    # ------------------------------------------------------------------ pre-training step
    def forward(
        self,
        batch: Batch,
        momentum: ViCHAModel | None = None,
        queue: Any = None,
        alpha: float = 0.0,
        objectives: ObjectiveConfig | None = None,
    ) -> PretrainOutput | tuple[Tensor, Tensor]:
        """One pre-training step's losses, or (without ``momentum``) the pairs' contrastive (image, text) features.

        The losses are :func:`.objectives.pretrain_losses` (the task updates the queue afterwards); evaluation also
        goes through ``forward`` so that DDP/FSDP wrappers see a forward call.
        """
        if momentum is None or objectives is None:
            image = self.encode_image(batch.images, batch.concept_ids)
            return self.image_feature(image), self.text_feature(self.encode_text(batch.text_ids))
        from frugalvision.methods.vicha.objectives import pretrain_losses

        return pretrain_losses(self, momentum, batch, queue, alpha, objectives)


def _text_encoder(cfg: ModelConfig) -> TextFusionEncoder:
    if cfg.text == "minilm":
        return TextFusionEncoder.from_minilm(
            cfg.vision_width,
            cfg.text_layers,
            cfg.text_dir,
            cfg.dropout,
            cfg.grad_checkpointing,
            num_layers=cfg.text_layers + cfg.fusion_layers,
            vocab_ids=cfg.text_vocab or None,
        )
    text_cfg = TextFusionConfig(
        vocab_size=cfg.vocab_size,
        hidden=cfg.text_width,
        heads=cfg.text_heads,
        intermediate=cfg.text_intermediate,
        text_layers=cfg.text_layers,
        fusion_layers=cfg.fusion_layers,
        encoder_width=cfg.vision_width,
        max_positions=cfg.max_text_positions,
        dropout=cfg.dropout,
    )
    return TextFusionEncoder(text_cfg, cfg.grad_checkpointing)


def _concept_encoder(cfg: ModelConfig, text: TextFusionEncoder) -> MiniLMEncoder:
    """The concept encoder: BERT embeddings + ``concept_layers`` layers, started from the text encoder's first ones.

    The official code loads the first layers of the same pre-trained BERT.
    """
    t = text.cfg
    layers = min(cfg.concept_layers, t.text_layers)
    encoder = MiniLMEncoder(
        MiniLMConfig(t.vocab_size, t.hidden, cfg.concept_layers, t.heads, t.intermediate, t.max_positions, 2, t.eps),
        dropout=t.dropout,
    )
    source = text.state_dict()
    state = {k: v for k, v in source.items() if not k.startswith(("layers.", "fusion_layers.", "mlm."))}
    state.update({k: v for k, v in source.items() if k.startswith("layers.") and int(k.split(".")[1]) < layers})
    encoder.load_state_dict(state, strict=False)
    return encoder


def momentum_copy(model: ViCHAModel) -> ViCHAModel:
    """A frozen copy of the parts that have momentum models (:data:`MOMENTUM_PARTS`); the others are removed."""
    momentum = copy.deepcopy(model)
    momentum.itm_head = None
    momentum.hitc_vision = nn.ModuleList()
    momentum.hitc_text = nn.ModuleList()
    momentum.mim_decoder = None
    del momentum.temp
    momentum.requires_grad_(False)
    momentum.train(model.training)
    return momentum


def count_parameters(module: nn.Module) -> int:
    """Parameters of a module (each tied tensor once)."""
    return sum(p.numel() for p in module.parameters())


def interpolate_positions(pos_embed: Tensor, grid: int) -> Tensor:
    """Resize a ``[1, 1 + g * g, C]`` ViT position table to ``grid`` (bicubic), keeping the [CLS] row."""
    from timm.layers import resample_abs_pos_embed

    old = int(math.sqrt(pos_embed.shape[1] - 1))
    if old == grid:
        return pos_embed
    return resample_abs_pos_embed(pos_embed, (grid, grid), (old, old), num_prefix_tokens=1)


def load_vision_weights(model: ViCHAModel, path: str) -> None:
    """Start the ViT from timm-format weights, e.g. DeiT-B (safetensors, never a pickle).

    The position table is resized to the model's grid; the classifier head is ignored.
    """
    from frugalvision.engine import load_weights

    state = {k: v for k, v in load_weights(path).items() if not k.startswith("head.")}
    grid = model.cfg.image_size // model.cfg.patch_size
    if "pos_embed" in state:
        state["pos_embed"] = interpolate_positions(state["pos_embed"], grid)
    missing, unexpected = model.visual.vit.load_state_dict(state, strict=False)
    if unexpected or missing:
        raise DataError(f"{path} does not match the ViT: missing {missing[:3]}, unexpected {unexpected[:3]}")
