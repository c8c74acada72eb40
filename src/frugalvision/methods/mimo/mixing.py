"""The MIMO / MixMo mixing block and its masks, as pure functions (MixMo code: ``mixing_blocks.py``, dataset wrapper).

For M members with stem outputs ``l_m`` (``[N, C, H, W]``), training mixes ``z = M * sum_m kappa_m * l_m`` with
channel-invariant masks ``kappa_m`` in ``[0, 1]^{H x W}`` that sum to one per pixel; inference feeds the same image
to every input and sums, ``z = sum_m l_m``. Masks come from one of three mixings:

* ``sum`` (MIMO): ``kappa_m = 1 / M``;
* ``linear`` (Linear-MixMo): ``kappa_m = lambda_m`` constant per sample, ``lambda ~ Dirichlet(alpha)``;
* ``cut`` (Cut-MixMo): with probability ``p_cut`` (drawn once per batch) a CutMix box of area about ``lambda_0`` for
  one member and its complement for the others (M > 2: ``CutMix(A, MixUp(B, C, ...))``), else linear; boxes and
  ratios per sample, member roles shuffled once per batch, and ``lambda_m`` recomputed as the mean of the
  rasterised mask.

Random draws use torch's global generator (the engine reseeds it at every step, so training resumes exactly).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from frugalvision.errors import ConfigError

__all__ = [
    "MIXINGS",
    "MixingPlan",
    "cut_probability",
    "draw_plan",
    "loss_weights",
    "mix_features",
    "sample_ratios",
]

Mixing = Literal["sum", "linear", "cut"]
MIXINGS = ("sum", "linear", "cut")
#: MixMo's ``RATIO_EPOCH_DECREASE``: p_cut decays linearly to 0 over the last 1/12 of training
DECAY_START = 11 / 12


@dataclass(frozen=True)
class MixingPlan:
    """The masks of one training batch.

    Attributes:
        masks: ``[N, M, H, W]`` mixing masks; they sum to one over members at every pixel.
        ratios: ``[N, M]`` ratios ``lambda_m = mean(kappa_m)`` (used by the loss weights).
        cut: ``[N]`` True where the sample was cut-mixed (spatial unmixing uses the masks only there).
    """

    masks: Tensor
    ratios: Tensor
    cut: Tensor

    @property
    def members(self) -> int:
        """M."""
        return int(self.masks.shape[1])


def sample_ratios(count: int, members: int, alpha: float, device: torch.device | str = "cpu") -> Tensor:
    """``[count, members]`` ratios from a symmetric Dirichlet(alpha) (``alpha <= 0``: all ``1 / M``, as MixMo)."""
    if alpha <= 0:
        return torch.full((count, members), 1.0 / members, device=device)
    gammas = torch._standard_gamma(torch.full((count, members), float(alpha), device=device))
    return gammas / gammas.sum(1, keepdim=True)


def cut_probability(progress: float, p_cut: float = 0.5, decay_start: float = DECAY_START) -> float:
    """Cut-MixMo's probability at a fraction ``progress`` of training: ``p_cut``, then linear to 0 at the end."""
    if progress < decay_start:
        return p_cut
    return p_cut * max(0.0, (1.0 - progress) / (1.0 - decay_start))


def _boxes(ratio: Tensor, height: int, width: int) -> Tensor:
    """``[N, H, W]`` binary CutMix boxes of area about ``ratio`` (MixMo's ``_rand_bbox_of_area_lam``).

    Side ``int(side * sqrt(lambda))``, centre uniform over the grid, corners ``centre -/+ side // 2`` clipped to it.
    """
    count, device = ratio.shape[0], ratio.device
    scale = ratio.double().sqrt()
    cut_h, cut_w = (height * scale).floor().long(), (width * scale).floor().long()
    cy = torch.randint(0, height, (count,), device=device)
    cx = torch.randint(0, width, (count,), device=device)
    y1, y2 = (cy - cut_h // 2).clamp(0, height), (cy + cut_h // 2).clamp(0, height)
    x1, x2 = (cx - cut_w // 2).clamp(0, width), (cx + cut_w // 2).clamp(0, width)
    rows = torch.arange(height, device=device)[None, :, None]
    cols = torch.arange(width, device=device)[None, None, :]
    inside_rows = (rows >= y1[:, None, None]) & (rows < y2[:, None, None])
    inside_cols = (cols >= x1[:, None, None]) & (cols < x2[:, None, None])
    return (inside_rows & inside_cols).float()


def _cut_masks(ratios: Tensor, height: int, width: int) -> Tensor:
    """``[N, M, H, W]``: a box of area ``ratios[:, 0]`` for member 0, the rest shared by ``ratios[:, 1:]``."""
    box = _boxes(ratios[:, 0], height, width)
    rest = ratios[:, 1:] / ratios[:, 1:].sum(1, keepdim=True).clamp_min(1e-12)
    others = (1.0 - box)[:, None] * rest[:, :, None, None]
    return torch.cat([box[:, None], others], dim=1)


def draw_plan(
    mixing: Mixing,
    count: int,
    members: int,
    size: tuple[int, int],
    alpha: float = 2.0,
    p_cut: float = 0.5,
    device: torch.device | str = "cpu",
) -> MixingPlan:
    """Draw the masks of one batch.

    Args:
        mixing: "sum", "linear" or "cut".
        count: samples N in the batch.
        members: M.
        size: ``(H, W)`` of the stem output the masks apply to.
        alpha: Dirichlet concentration.
        p_cut: probability that the batch is cut-mixed (Cut-MixMo; use :func:`cut_probability` for the schedule).
        device: where the masks live.

    Returns:
        The plan (masks, recomputed ratios, cut flags).
    """
    if mixing not in MIXINGS:
        raise ConfigError(f"mixing={mixing!r} is invalid; use one of {MIXINGS}")
    height, width = size
    ratios = sample_ratios(count, members, 0.0 if mixing == "sum" else alpha, device)
    is_cut = mixing == "cut" and members > 1 and bool(torch.rand(()) < p_cut)
    if not is_cut:
        masks = ratios[:, :, None, None].expand(count, members, height, width).contiguous()
        return MixingPlan(masks, ratios, torch.zeros(count, dtype=torch.bool, device=device))
    masks = _cut_masks(ratios, height, width)
    roles = torch.randperm(members, device=device)  # the same role shuffle for every sample of the batch
    masks = masks[:, roles]
    return MixingPlan(masks, masks.mean((2, 3)), torch.ones(count, dtype=torch.bool, device=device))


def mix_features(features: Tensor, masks: Tensor | None = None) -> Tensor:
    """The mixing block: ``M * sum_m kappa_m * l_m`` in training, ``sum_m l_m`` at inference (``masks=None``).

    Args:
        features: ``[N, M, C, H, W]`` stem outputs of the M inputs.
        masks: ``[N, M, H, W]`` masks (broadcast over channels), or None.
    """
    if masks is None:
        return features.sum(1)
    if masks.shape != (features.shape[0], features.shape[1], *features.shape[3:]):
        raise ConfigError(
            f"masks of shape {tuple(masks.shape)} do not match stem outputs {tuple(features.shape)}; draw them at "
            "the stem output size (model.stem_size)"
        )
    return features.shape[1] * (masks[:, :, None] * features).sum(1)


def loss_weights(ratios: Tensor, root: float) -> Tensor:
    """MixMo's per-member loss weights ``w_m = M * lambda_m^(1/r) / sum_k lambda_k^(1/r)`` (``[N, M]``; sum to M)."""
    if root <= 0:
        raise ConfigError(f"weight root r={root} is invalid; it must be > 0 (MixMo: 3, MIMO: 1)")
    powered = ratios.clamp_min(0).pow(1.0 / root)
    return ratios.shape[1] * powered / powered.sum(1, keepdim=True).clamp_min(1e-12)
