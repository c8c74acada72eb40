"""The MIMO network: M input encoders, the mixing block, one shared core, an (optional) unmixing step and M heads.

``logits_m = h_m(v_m)`` with ``v_m`` the member's pooled features. Without unmixing (MixMo) every head reads the
same ``v = GAP(F)`` of the shared final map ``F``. The unmixing candidates (``unmix``, spec section 2.2, OUR reading:
the paper's definition was not available) give each head member-specific features:

* ``spatial``: on cut-mixed samples ``v_m`` is the mean of ``F`` weighted by the member's mask area-downsampled to
  ``F``'s grid; linear-mixed samples and inference use plain GAP (exactly MixMo there);
* ``learned``: per-member ``U_m`` = 1x1 conv (identity init) + BN + ReLU, applied to ``F`` (``unmix_at="final"``) or
  before the last stage, which then runs once per member (``unmix_at="last_stage"``);
* ``soft``: predicted masks ``a_m = softmax_m(psi_m(downsample(l_m)))`` from each member's own stem output weight
  the pooling; on cut-mixed samples a BCE to the true downsampled masks teaches them (``mask_loss``).

:func:`wrap_backbone` turns a CIFAR ResNet / PreActResNet / WideResNet of ``frugalvision.nn``, or a torchvision or
timm ResNet, into a MIMO network in one call.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from frugalvision.errors import ConfigError
from frugalvision.methods.mimo.mixing import MixingPlan, mix_features
from frugalvision.nn.resnet import CifarResNet
from frugalvision.nn.wide_resnet import PreActResNet

__all__ = [
    "UNMIXINGS",
    "BackboneParts",
    "MimoNetwork",
    "masked_mean",
    "split_backbone",
    "wrap_backbone",
]

Unmix = Literal["none", "spatial", "learned", "soft"]
UnmixAt = Literal["final", "last_stage"]
UNMIXINGS = ("none", "spatial", "learned", "soft")
MASK_EPS = 1e-6


@dataclass
class BackboneParts:
    """A backbone cut where MIMO needs it.

    Attributes:
        stem: the input encoder (image -> stem output ``l``), duplicated per member.
        early: stem output -> map before the last stage.
        last: that map -> the final activated map ``F``.
        head: the linear classifier on ``GAP(F)``, duplicated per member.
    """

    stem: nn.Module
    early: nn.Module
    last: nn.Module
    head: nn.Linear


def split_backbone(backbone: nn.Module) -> BackboneParts:
    """Cut a supported backbone into stem, early core, last stage and head (the modules are shared, not copied).

    Supported: :class:`~frugalvision.nn.PreActResNet` (WideResNets), :class:`~frugalvision.nn.CifarResNet`, and the
    torchvision / timm ``ResNet`` layout (``conv1, bn1, relu|act1, maxpool, layer1..4, fc``).

    Raises:
        ConfigError: another architecture (build the parts yourself and call :class:`MimoNetwork`).
    """
    if isinstance(backbone, PreActResNet):
        stages = list(backbone.stages)
        return BackboneParts(
            backbone.stem,
            nn.Sequential(*stages[:-1]),
            nn.Sequential(stages[-1], backbone.norm, backbone.act),
            backbone.fc,
        )
    if isinstance(backbone, CifarResNet):
        blocks, per_stage = list(backbone.layers), len(backbone.layers) // 3
        early = nn.Sequential(*list(backbone.stem)[1:], *blocks[:-per_stage])
        return BackboneParts(backbone.stem[0], early, nn.Sequential(*blocks[-per_stage:]), backbone.fc)
    names = ("conv1", "bn1", "maxpool", "layer1", "layer2", "layer3", "layer4", "fc")
    act = getattr(backbone, "relu", None) or getattr(backbone, "act1", None)
    if all(hasattr(backbone, n) for n in names) and act is not None and isinstance(backbone.fc, nn.Linear):
        b = backbone
        early = nn.Sequential(b.bn1, act, b.maxpool, b.layer1, b.layer2, b.layer3)
        return BackboneParts(b.conv1, early, b.layer4, b.fc)
    raise ConfigError(
        f"cannot split a {type(backbone).__name__} into stem / core / head; use a frugalvision.nn PreActResNet or "
        "CifarResNet, a torchvision or timm ResNet, or build MimoNetwork(stem, early, last, head) yourself"
    )


def _reinitialise(module: nn.Module) -> nn.Module:
    """Fresh weights: kaiming-normal fan-out convolutions (as the CIFAR/torchvision ResNets), PyTorch defaults else."""
    for sub in module.modules():
        if isinstance(sub, nn.Conv2d):
            nn.init.kaiming_normal_(sub.weight, mode="fan_out", nonlinearity="relu")
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, (nn.Linear, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            sub.reset_parameters()
    return module


def masked_mean(features: Tensor, weights: Tensor) -> Tensor:
    """Weighted pooling ``v_m = sum_ij w_m(i,j) F(:,i,j) / (sum_ij w_m(i,j) + 1e-6)``.

    Args:
        features: ``[N, C, h, w]`` map F.
        weights: ``[N, M, h, w]`` per-member weights.

    Returns:
        ``[N, M, C]`` pooled member features.
    """
    total = torch.einsum("nmhw,nchw->nmc", weights, features)
    return total / (weights.sum((2, 3))[..., None] + MASK_EPS)


class MimoNetwork(nn.Module):
    """M input encoders, the mixing block, a shared core, an unmixing step and M heads.

    ``forward(x)`` with ``x`` ``[N, C, H, W]`` feeds the same image to every input (inference); with ``x``
    ``[N, M, C, H, W]`` and a :class:`MixingPlan` it mixes M different inputs (training). It returns ``[N, M, K]``
    logits (one row per member); the ensemble prediction averages the members.

    Args:
        parts: the backbone's stem, early core, last stage and head (see :func:`split_backbone`).
        num_members: M.
        unmix: "none", "spatial", "learned" or "soft".
        unmix_at: where the learned unmixing sits: "final" (on F) or "last_stage" (before the last stage).
        unmix_norm_act: BN + ReLU after the learned 1x1 convolution (off: exactly MixMo at initialisation).
        shared_head: one head for every member (an ablation: with ``spatial`` the ensemble collapses at inference).
        reinit: draw fresh weights for every encoder and head copy (off: each copy starts from the backbone's).
    """

    def __init__(
        self,
        parts: BackboneParts,
        num_members: int = 2,
        unmix: Unmix = "none",
        unmix_at: UnmixAt = "final",
        unmix_norm_act: bool = True,
        shared_head: bool = False,
        reinit: bool = True,
    ) -> None:
        super().__init__()
        if num_members < 1:
            raise ConfigError(f"num_members={num_members} is invalid; use M >= 1")
        if unmix not in UNMIXINGS or unmix_at not in ("final", "last_stage"):
            raise ConfigError(f"unmix={unmix!r}, unmix_at={unmix_at!r}: use {UNMIXINGS} and 'final' or 'last_stage'")
        self.num_members, self.unmix, self.unmix_at = num_members, unmix, unmix_at
        prepare = _reinitialise if reinit else (lambda module: module)
        self.encoders = nn.ModuleList(prepare(copy.deepcopy(parts.stem)) for _ in range(num_members))
        self.early, self.last = parts.early, parts.last
        heads = 1 if shared_head else num_members
        self.heads = nn.ModuleList(prepare(copy.deepcopy(parts.head)) for _ in range(heads))
        self.num_features = parts.head.in_features
        self._stem_sizes: dict[tuple[int, ...], tuple[int, int]] = {}
        self.unmixers = nn.ModuleList()
        if unmix == "learned":
            channels = self._channels_before_last() if unmix_at == "last_stage" else self.num_features
            self.unmixers = nn.ModuleList(_identity_unmixer(channels, unmix_norm_act) for _ in range(num_members))
        self.mask_predictors = nn.ModuleList()
        if unmix == "soft":
            stem_channels = self._stem_channels()
            self.mask_predictors = nn.ModuleList(nn.Conv2d(stem_channels, 1, 1) for _ in range(num_members))

    # ------------------------------------------------------------------ shapes
    @torch.no_grad()
    def _probe_shape(self, image_shape: Sequence[int] | None = None, through_early: bool = False) -> torch.Size:
        """Output shape of the first encoder (and the early core) on a zero image, in eval mode (no BN update)."""
        first = next(m for m in self.encoders[0].modules() if isinstance(m, nn.Conv2d))
        shape = tuple(image_shape) if image_shape is not None else (first.in_channels, 32, 32)
        was = self.training
        self.eval()
        out = self.encoders[0](torch.zeros(1, *shape, device=first.weight.device))
        out = self.early(out) if through_early else out
        self.train(was)
        return out.shape

    def _stem_channels(self) -> int:
        return int(self._probe_shape()[1])

    def _channels_before_last(self) -> int:
        return int(self._probe_shape(through_early=True)[1])

    def stem_size(self, image_shape: Sequence[int]) -> tuple[int, int]:
        """``(H', W')`` of the stem output for images of shape ``(C, H, W)``: the grid the masks are drawn on."""
        key = tuple(int(s) for s in image_shape)
        if key not in self._stem_sizes:
            shape = self._probe_shape(key)
            self._stem_sizes[key] = (int(shape[2]), int(shape[3]))
        return self._stem_sizes[key]

    # ------------------------------------------------------------------ pieces
    def encode(self, x: Tensor) -> Tensor:
        """``[N, M, C', H', W']`` stem outputs: the same image to every encoder (4-D ``x``) or one input each (5-D)."""
        if x.ndim == 4:
            return torch.stack([encoder(x) for encoder in self.encoders], 1)
        if x.ndim != 5 or x.shape[1] != self.num_members:
            raise ConfigError(f"inputs of shape {tuple(x.shape)}: pass [N, C, H, W] or [N, M={self.num_members}, ...]")
        return torch.stack([encoder(x[:, m]) for m, encoder in enumerate(self.encoders)], 1)

    def shared(self, stems: Tensor, masks: Tensor | None = None) -> Tensor:
        """The last map every member shares: ``F`` (or, for learned unmixing before the last stage, its input)."""
        early = self.early(mix_features(stems, masks))
        return early if self.per_member_last else self.last(early)

    @property
    def per_member_last(self) -> bool:
        """True when the last stage runs once per member (learned unmixing at ``last_stage``)."""
        return self.unmix == "learned" and self.unmix_at == "last_stage"

    def soft_masks(self, stems: Tensor, size: tuple[int, int]) -> Tensor:
        """``[N, M, h, w]`` predicted member masks (soft unmixing): softmax over members of ``psi_m(l_m)``."""
        scores = [psi(F.adaptive_avg_pool2d(stems[:, m], size)) for m, psi in enumerate(self.mask_predictors)]
        return torch.cat(scores, 1).softmax(1)

    def member_features(
        self, shared: Tensor, stems: Tensor, plan: MixingPlan | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """``([N, M, D] pooled member features, soft-mask loss or None)`` from the shared map."""
        if self.unmix == "learned":
            maps = [unmixer(shared) for unmixer in self.unmixers]
            if self.per_member_last:
                maps = [self.last(m) for m in maps]
            return torch.stack([m.mean((2, 3)) for m in maps], 1), None
        size = (int(shared.shape[2]), int(shared.shape[3]))
        pooled = shared.mean((2, 3))[:, None].expand(-1, self.num_members, -1)
        if self.unmix == "soft":
            predicted = self.soft_masks(stems, size)
            loss = None
            if plan is not None and bool(plan.cut.any()):
                target = F.adaptive_avg_pool2d(plan.masks[plan.cut], size)
                loss = F.binary_cross_entropy(predicted[plan.cut].clamp(1e-6, 1 - 1e-6), target)
            return masked_mean(shared, predicted), loss
        if self.unmix == "spatial" and plan is not None and bool(plan.cut.any()):
            weights = F.adaptive_avg_pool2d(plan.masks, size)
            pooled = torch.where(plan.cut[:, None, None], masked_mean(shared, weights), pooled)
        return pooled, None

    def classify(self, features: Tensor) -> Tensor:
        """``[N, M, K]`` logits from ``[N, M, D]`` member features."""
        heads = [self.heads[0 if len(self.heads) == 1 else m] for m in range(self.num_members)]
        return torch.stack([head(features[:, m]) for m, head in enumerate(heads)], 1)

    def forward(
        self, x: Tensor, plan: MixingPlan | None = None, with_aux: bool = False
    ) -> Tensor | tuple[Tensor, dict]:
        """``[N, M, K]`` member logits (and ``{"mask_loss": ...}`` with ``with_aux``)."""
        stems = self.encode(x)
        shared = self.shared(stems, None if plan is None else plan.masks)
        features, mask_loss = self.member_features(shared, stems, plan)
        logits = self.classify(features)
        if with_aux:
            return logits, {"mask_loss": mask_loss}
        return logits

    def ensemble_logits(self, x: Tensor) -> Tensor:
        """MixMo's ensemble output at inference: the mean of the members' logits for the same image on every input."""
        return self(x).mean(1)


def _identity_unmixer(channels: int, norm_act: bool) -> nn.Module:
    conv = nn.Conv2d(channels, channels, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels)[:, :, None, None])
    return nn.Sequential(conv, nn.BatchNorm2d(channels), nn.ReLU()) if norm_act else conv


def wrap_backbone(
    backbone: nn.Module,
    num_members: int = 2,
    unmix: Unmix = "none",
    unmix_at: UnmixAt = "final",
    **options: bool,
) -> MimoNetwork:
    """Turn a classification backbone into a MIMO network with M input encoders and M heads, in one call.

    The backbone is copied (yours is left untouched); its first convolution becomes the M encoders, its linear
    classifier the M heads (each drawn afresh unless ``reinit=False``), and the rest is the shared core.

    Args:
        backbone: a supported backbone (see :func:`split_backbone`).
        num_members: M.
        unmix: unmixing step ("none" = MixMo/MIMO).
        unmix_at: placement of the learned unmixing.
        **options: ``unmix_norm_act``, ``shared_head``, ``reinit`` (see :class:`MimoNetwork`).
    """
    return MimoNetwork(split_backbone(copy.deepcopy(backbone)), num_members, unmix, unmix_at, **options)
