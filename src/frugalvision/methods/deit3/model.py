"""DeiT III Vision Transformer: timm's ViT with LayerScale, a position-free class token and uniform stochastic depth.

Also: position-embedding interpolation for the low-res -> high-res fine-tune, and the key converter between the
official ``models_v2.py`` checkpoints (``gamma_1``/``gamma_2``) and timm's (``ls1.gamma``/``ls2.gamma``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models.vision_transformer import Block, LayerScale, VisionTransformer
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


class FoldedLayerScale(nn.Module):
    """LayerScale whose ``gamma`` is applied inside the branch's last Linear (see :func:`fold_layer_scale`).

    Its forward is the identity; it keeps the parameter under the same state-dict key (``blocks.i.ls1.gamma``).
    """

    def __init__(self, gamma: nn.Parameter) -> None:
        super().__init__()
        self.gamma = gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Identity (the scale was applied by the preceding Linear)."""
        return x


class _ScaledLinear(nn.Linear):
    """``gamma * linear(x)`` computed as ``linear(x, gamma[:, None] * W, gamma * b)``."""

    _scale: FoldedLayerScale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gamma = self._scale.gamma
        bias = None if self.bias is None else self.bias * gamma
        return F.linear(x, self.weight * gamma.unsqueeze(1), bias)


def fold_layer_scale(model: VisionTransformer) -> VisionTransformer:
    """Apply each block's LayerScale inside the Linear that ends its branch, in place (a speed-up only).

    ``gamma * dropout(W x + b) == dropout((gamma W) x + gamma b)``, so the block computes the same function with the
    same parameters and state-dict keys, and autograd gives the same gradients; the scale costs a ``D x D`` product
    per step instead of two ``B x N x D`` passes (forward and backward). Blocks without LayerScale are left alone.

    Args:
        model: a timm VisionTransformer (its blocks' ``attn.proj`` and ``mlp.fc2`` must be ``nn.Linear``).

    Returns:
        The same model.
    """
    for block in model.blocks:
        for ls_name, linear in (("ls1", block.attn.proj), ("ls2", block.mlp.fc2)):
            ls = getattr(block, ls_name)
            if not isinstance(ls, LayerScale) or type(linear) is not nn.Linear or ls.inplace:
                continue
            folded = FoldedLayerScale(ls.gamma)
            setattr(block, ls_name, folded)
            linear.__class__ = _ScaledLinear
            object.__setattr__(linear, "_scale", folded)  # a reference, not a submodule: the keys stay the same
    return model


def _skip_residual(
    x: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor], drop_path: nn.Module
) -> torch.Tensor:
    """``x + drop_path(branch(x))``, computing the branch only for the samples that stochastic depth keeps."""
    p = float(getattr(drop_path, "drop_prob", 0.0)) if isinstance(drop_path, DropPath) else 0.0
    if p <= 0.0:
        return x + drop_path(branch(x))
    keep = torch.empty(x.shape[0], device=x.device).bernoulli_(1.0 - p).nonzero().squeeze(1)
    scale = 1.0 / (1.0 - p) if drop_path.scale_by_keep else 1.0
    return x.index_add(0, keep, branch(x.index_select(0, keep)).to(x.dtype), alpha=scale)


class SkipDropPathBlock(Block):
    """timm ``Block`` whose stochastic depth skips the dropped samples' branches instead of zeroing them.

    Same distribution as timm's ``DropPath`` (per-sample Bernoulli keep with probability ``1 - p``, kept branches
    scaled by ``1 / (1 - p)``), read from ``drop_path1``/``drop_path2`` so :func:`set_drop_path` still applies, but
    a dropped sample costs nothing and no ``B x N x D`` mask product is formed. Eval mode and attention masks use
    timm's forward.
    """

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        """Pre-norm attention and MLP branches with LayerScale and (skipping) stochastic depth."""
        if not self.training or attn_mask is not None:
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        x = _skip_residual(x, lambda h: self.ls1(self.attn(self.norm1(h), is_causal=is_causal)), self.drop_path1)
        return _skip_residual(x, lambda h: self.ls2(self.mlp(self.norm2(h))), self.drop_path2)


def skip_dropped_samples(model: VisionTransformer) -> VisionTransformer:
    """Make every plain timm ``Block`` of ``model`` a :class:`SkipDropPathBlock`, in place (a speed-up only)."""
    for block in model.blocks:
        if type(block) is Block:
            block.__class__ = SkipDropPathBlock
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
    fast_blocks: bool = True,
) -> VisionTransformer:
    """Build a DeiT III ViT (timm ``VisionTransformer``).

    Args:
        preset: one of :data:`VIT_PRESETS` (``None``: give every size explicitly).
        img_size: input resolution; when it is not a multiple of the patch size, the patch grid is
            ``img_size // patch`` and the last ``img_size % patch`` rows and columns are never seen (as the official
            and timm patch embedding: ViT-H/14 pre-trains on ImageNet-21k at 128 px, a 9 x 9 grid).
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
        fast_blocks: same function, faster: LayerScale applied inside the branch's last Linear
            (:func:`fold_layer_scale`) and stochastic depth that skips dropped samples (:func:`skip_dropped_samples`).

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
    if img_size < patch_size:
        raise ConfigError(f"img_size={img_size} is smaller than patch_size={patch_size}; raise img_size")
    model = VisionTransformer(
        img_size=img_size,
        patch_size=patch_size,
        in_chans=in_chans,
        num_classes=num_classes,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        qkv_bias=True,
        init_values=layer_scale_init,
        no_embed_class=not class_pos_embed,
        drop_rate=drop_rate,
        proj_drop_rate=drop_rate,
        drop_path_rate=0.0,
    )
    set_drop_path(model, drop_path, drop_path_schedule)
    return skip_dropped_samples(fold_layer_scale(model)) if fast_blocks else model


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


_OFFICIAL_TO_TIMM = [
    (re.compile(r"^(blocks\.\d+)\.gamma_1$"), r"\1.ls1.gamma"),
    (re.compile(r"^(blocks\.\d+)\.gamma_2$"), r"\1.ls2.gamma"),
]
_TIMM_TO_OFFICIAL = [
    (re.compile(r"^(blocks\.\d+)\.ls1\.gamma$"), r"\1.gamma_1"),
    (re.compile(r"^(blocks\.\d+)\.ls2\.gamma$"), r"\1.gamma_2"),
]


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


def load_pretrained(
    model: VisionTransformer, state: Mapping[str, torch.Tensor], reset_head: bool = True
) -> VisionTransformer:
    """Load pre-trained weights (timm or official key names) into ``model``, in place, for fine-tuning.

    The classifier (``head.*``) is kept from ``model`` (freshly initialised) when ``reset_head`` is True or when its
    shape differs (ImageNet-21k -> 1k); a position table for another patch grid is interpolated bicubically. Every
    other tensor must be present with the same shape.

    Args:
        model: the ViT to fine-tune (its own head and size).
        state: pre-trained state dict (``official_to_timm`` is applied, so official checkpoints load too).
        reset_head: keep the model's new head instead of the checkpoint's.

    Returns:
        The same model.

    Raises:
        ConfigError: a tensor is missing, unexpected, or of another shape.
    """
    state = dict(official_to_timm(state))
    own = model.state_dict()
    for key in ("head.weight", "head.bias"):
        if key in state and (reset_head or key not in own or state[key].shape != own[key].shape):
            del state[key]
    if "pos_embed" in state and state["pos_embed"].shape != own["pos_embed"].shape:
        prefix = 0 if model.no_embed_class else model.num_prefix_tokens
        state["pos_embed"] = interpolate_pos_embed(state["pos_embed"], tuple(model.patch_embed.grid_size), prefix)
    wrong = [k for k, v in state.items() if k in own and v.shape != own[k].shape]
    missing = [k for k in own if k not in state and not k.startswith("head.")]
    unexpected = [k for k in state if k not in own]
    if wrong or missing or unexpected:
        raise ConfigError(
            f"pre-trained weights do not fit the model (shape mismatch {wrong[:3]}, missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); fix: use the same ViT size and LayerScale setting as the checkpoint"
        )
    model.load_state_dict(state, strict=False)
    return model
