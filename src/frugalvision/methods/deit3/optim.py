"""Optimisers of the recipe (timm's LAMB and AdamW, no weight decay on biases, norms, tokens and LayerScale)."""

from __future__ import annotations

from typing import Literal

import torch
from timm.optim import create_optimizer_v2
from torch import nn

from frugalvision.errors import ConfigError

LrScaling = Literal["none", "linear_512"]


def scale_lr(lr: float, global_batch: int, scaling: LrScaling = "none") -> float:
    """Learning rate actually used: absolute (``"none"``, DeiT III ``--unscale-lr``) or ``lr * batch / 512`` (DeiT)."""
    if scaling == "none":
        return lr
    if scaling == "linear_512":
        return lr * global_batch / 512.0
    raise ConfigError(f"lr_scaling={scaling!r} is invalid; use 'none' or 'linear_512'")


def build_optimizer(
    model: nn.Module,
    name: Literal["lamb", "adamw"] = "lamb",
    lr: float = 4e-3,
    weight_decay: float = 0.05,
    eps: float = 1e-8,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """The timm optimiser as the official ``create_optimizer(args, model)`` builds it.

    Parameters with ndim <= 1 and the model's ``no_weight_decay()`` set (``pos_embed``, ``cls_token``) get no weight
    decay; LAMB then also skips their trust ratio. ``eps`` is the official ``--opt-eps`` default (1e-8); timm's LAMB
    clips the global gradient norm at 1.0 internally (as apex's FusedLAMB).
    """
    if name not in ("lamb", "adamw"):
        raise ConfigError(f"optimizer={name!r} is invalid; use 'lamb' or 'adamw'")
    return create_optimizer_v2(model, opt=name, lr=lr, weight_decay=weight_decay, eps=eps, betas=betas)
