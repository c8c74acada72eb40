"""DeiT III Vision Transformer: timm's ViT with LayerScale, a position-free class token and uniform stochastic depth.

Also: position-embedding interpolation for the low-res -> high-res fine-tune, and the key converter between the
official ``models_v2.py`` checkpoints (``gamma_1``/``gamma_2``) and timm's (``ls1.gamma``/``ls2.gamma``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from frugalvision.errors import ConfigError

#: name -> (patch size, width, depth, heads), from the official ``models_v2.py`` (Ti from the DeiT family).
VIT_PRESETS: dict[str, tuple[int, int, int, int]] = {
    "tiny": (16, 192, 12, 3),
    "small": (16, 384, 12, 6),
    "medium": (16, 512, 12, 8),
    "base": (16, 768, 12, 12),
    "large": (16, 1024, 24, 16),
    "huge": (14, 1280, 32, 16),
}

DropPathSchedule = Literal["uniform", "linear"]


def drop_path_rates(rate: float, depth: int, schedule: DropPathSchedule = "uniform") -> list[float]:
    """Per-block stochastic-depth probabilities.

    Args:
        rate: the recipe's drop-path rate.
        depth: number of blocks.
        schedule: "uniform" (DeiT III: every block uses ``rate``) or "linear" (timm/DeiT: 0 -> ``rate``).

    Returns:
        One probability per block.
    """
    if schedule == "uniform":
        return [float(rate)] * depth
    if schedule == "linear":
        return [float(v) for v in torch.linspace(0.0, rate, depth)]
    raise ConfigError(f"drop_path_schedule={schedule!r} is invalid; use 'uniform' or 'linear'")


def set_drop_path(model: VisionTransformer, rate: float, schedule: DropPathSchedule = "uniform") -> VisionTransformer:
    """Set the stochastic depth of every block of a timm ViT in place (works on any timm ``Block`` stack).

    Args:
        model: a timm VisionTransformer.
        rate: drop-path rate.
        schedule: "uniform" or "linear".

    Returns:
        The same model.
    """
    rates = drop_path_rates(rate, len(model.blocks), schedule)
    for block, p in zip(model.blocks, rates):
        block.drop_path1 = DropPath(p) if p > 0 else nn.Identity()
        block.drop_path2 = DropPath(p) if p > 0 else nn.Identity()
    return model


def build_vit(
    preset: str | None = "small",
    *,
    img_size: int = 224,
    num_classes: int = 1000,
    in_chans: int = 3,
    patch_size: int | None = None,
    embed_dim: int | None = None,
    depth: int | None = None,
    num_heads: int | None = None,
    mlp_ratio: float = 4.0,
    layer_scale_init: float | None = 1e-4,
    drop_path: float = 0.0,
    drop_path_schedule: DropPathSchedule = "uniform",
    drop_rate: float = 0.0,
    class_pos_embed: bool = False,
) -> VisionTransformer:
    """Build a DeiT III ViT (timm ``VisionTransformer``).

    Args:
        preset: one of :data:`VIT_PRESETS` (``None``: give every size explicitly).
        img_size: input resolution.
        num_classes: classes of the head.
        in_chans: input channels.
        patch_size: overrides the preset's patch size.
        embed_dim: overrides the preset's width.
        depth: overrides the preset's depth.
        num_heads: overrides the preset's heads.
        mlp_ratio: MLP hidden width / width.
        layer_scale_init: LayerScale init (official 1e-4, timm's DeiT III entries 1e-6); None disables LayerScale.
        drop_path: stochastic-depth rate.
        drop_path_schedule: "uniform" (DeiT III) or "linear" (timm default).
        drop_rate: dropout after the MLP/attention projections and on the head input.
        class_pos_embed: give the class token a position embedding too (DeiT/ViT); DeiT III: False.

    Returns:
        The model (qkv bias, GELU, LayerNorm eps 1e-6, head = LN -> CLS -> Linear).
    """
    if preset is not None:
        if preset not in VIT_PRESETS:
            raise ConfigError(f"vit preset {preset!r} is unknown; use one of {', '.join(VIT_PRESETS)}")
        p, d, n, h = VIT_PRESETS[preset]
        patch_size, embed_dim = patch_size or p, embed_dim or d
        depth, num_heads = depth or n, num_heads or h
    if None in (patch_size, embed_dim, depth, num_heads):
        raise ConfigError("build_vit needs a preset or all of patch_size, embed_dim, depth, num_heads")
    if img_size % patch_size:
        raise ConfigError(f"img_size={img_size} is not a multiple of patch_size={patch_size}; change one of them")
    model = VisionTransformer(
        img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes, embed_dim=embed_dim,
        depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, init_values=layer_scale_init,
        no_embed_class=not class_pos_embed, drop_rate=drop_rate, proj_drop_rate=drop_rate, drop_path_rate=0.0,
    )
    return set_drop_path(model, drop_path, drop_path_schedule)


def interpolate_pos_embed(
    pos_embed: torch.Tensor, new_grid: tuple[int, int], num_prefix_tokens: int = 0
) -> torch.Tensor:
    """Resize a ViT position embedding to a new patch grid, bicubically (as the official fine-tuning code).

    Args:
        pos_embed: ``[1, prefix + H*W, D]`` (DeiT III: prefix 0, the class token has no position).
        new_grid: target grid ``(H', W')``.
        num_prefix_tokens: leading entries that are copied unchanged (class/register tokens).

    Returns:
        ``[1, prefix + H'*W', D]``; the input itself (not a copy) when the grid is unchanged.
    """
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    side = int(round(grid.shape[1] ** 0.5))
    if side * side != grid.shape[1]:
        raise ConfigError(f"pos_embed has {grid.shape[1]} patch entries, not a square grid; pass num_prefix_tokens")
    if (side, side) == tuple(new_grid):
        return pos_embed
    dim = grid.shape[-1]
    grid = grid.float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


def resize_vit(model: VisionTransformer, img_size: int) -> VisionTransformer:
    """Return a copy of ``model`` that takes ``img_size`` inputs, its position embedding interpolated.

    This is the low-res pre-training -> high-res fine-tuning step: every other weight is copied unchanged.
    """
    new = copy.deepcopy(model)
    grid_before = tuple(new.patch_embed.grid_size)
    new.patch_embed.set_input_size(img_size=img_size)
    grid = tuple(new.patch_embed.grid_size)
    if grid != grid_before:
        prefix = 0 if new.no_embed_class else new.num_prefix_tokens
        with torch.no_grad():
            new.pos_embed = nn.Parameter(interpolate_pos_embed(new.pos_embed.data, grid, prefix))
    return new


_OFFICIAL_TO_TIMM = [(re.compile(r"^(blocks\.\d+)\.gamma_1$"), r"\1.ls1.gamma"),
                     (re.compile(r"^(blocks\.\d+)\.gamma_2$"), r"\1.ls2.gamma")]
_TIMM_TO_OFFICIAL = [(re.compile(r"^(blocks\.\d+)\.ls1\.gamma$"), r"\1.gamma_1"),
                     (re.compile(r"^(blocks\.\d+)\.ls2\.gamma$"), r"\1.gamma_2")]


def _rename(state: Mapping[str, torch.Tensor], rules: list[tuple[re.Pattern[str], str]]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


def official_to_timm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an official ``models_v2.py`` DeiT III state dict to timm's keys (``model`` wrapper unpacked)."""
    if "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    return _rename(state, _OFFICIAL_TO_TIMM)


def timm_to_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a timm DeiT III state dict to the official ``models_v2.py`` keys (inverse of :func:`official_to_timm`)."""
    return _rename(state, _TIMM_TO_OFFICIAL)
