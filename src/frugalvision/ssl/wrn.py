"""FixMatch's Wide ResNet (WRN-28-2 by default), as in google-research/fixmatch ``libml/models.py`` (``ResNet``).

Pre-activation residual units (BatchNorm with momentum 0.001 in PyTorch's convention, i.e. TF's 0.999, and eps
1e-3; LeakyReLU 0.1), a 16-filter stem, ``scales`` stages of ``repeat`` units with ``filters << scale`` channels
(stride 2 from the second stage), the first unit of the first stage activating before its residual, a final BN +
LeakyReLU, global mean pooling and a linear classifier. Convolutions are initialised N(0, 1/(0.5 k^2 f)) and keep
their biases (TF's default). Inputs are float images in [0, 1], normalised inside by the dataset's mean and std.
(``frugalvision.nn.wide_resnet`` is the plain WRN-d-k of Zagoruyko & Komodakis: ReLU, no biases, no input
normalisation.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FixMatchWideResNet", "fixmatch_wrn"]

_SLOPE = 0.1
_BN_MOMENTUM = 0.001
_BN_EPS = 1e-3  # tf.layers.batch_normalization's default


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2)
    nn.init.normal_(conv.weight, std=1.0 / math.sqrt(0.5 * kernel * kernel * out_channels))
    nn.init.zeros_(conv.bias)
    return conv


class PreActUnit(nn.Module):
    """``x0 + conv(act(bn(conv(act(bn(x0))))))``; a 1x1 convolution on the shortcut when the width changes."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1, activate_before_residual: bool = False):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.conv1 = _conv(in_channels, channels, 3, stride)
        self.bn2 = nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.conv2 = _conv(channels, channels, 3)
        self.activate_before_residual = activate_before_residual
        self.shortcut = _conv(in_channels, channels, 1, stride) if in_channels != channels else None

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """One unit."""
        x = F.leaky_relu(self.bn1(x0), _SLOPE)
        if self.activate_before_residual:
            x0 = x
        x = self.conv2(F.leaky_relu(self.bn2(self.conv1(x)), _SLOPE))
        return (self.shortcut(x0) if self.shortcut is not None else x0) + x


class FixMatchWideResNet(nn.Module):
    """FixMatch's ResNet classifier (WRN-28-2 with filters=32, repeat=4, scales=3).

    Args:
        num_classes: output classes.
        filters: channels of the first stage (32: WRN-28-2; FixMatch's CIFAR-100 runs use 128).
        repeat: residual units per stage.
        scales: stages (log2(image side) - 2 in FixMatch: 3 for 32 px).
        in_chans: input channels.
        mean: per-channel mean for the input normalisation.
        std: per-channel standard deviation.
    """

    def __init__(
        self,
        num_classes: int = 10,
        filters: int = 32,
        repeat: int = 4,
        scales: int = 3,
        in_chans: int = 3,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.25, 0.25, 0.25),
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))
        self.stem = _conv(in_chans, 16, 3)
        units: list[nn.Module] = []
        channels = 16
        for scale in range(scales):
            width = filters << scale
            units.append(PreActUnit(channels, width, 2 if scale else 1, activate_before_residual=scale == 0))
            units += [PreActUnit(width, width) for _ in range(repeat - 1)]
            channels = width
        self.units = nn.Sequential(*units)
        self.bn = nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.fc = nn.Linear(channels, num_classes)
        nn.init.xavier_normal_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)
        self.num_features = channels

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features before the classifier."""
        y = self.units(self.stem((x - self.mean) / self.std))
        return F.leaky_relu(self.bn(y), _SLOPE).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.fc(self.forward_features(x))


def fixmatch_wrn(num_classes: int = 10, filters: int = 32, **kwargs: Any) -> FixMatchWideResNet:
    """WRN-28-2 (``filters=32``) or a wider variant (``filters=128``: WRN-28-8)."""
    return FixMatchWideResNet(num_classes, filters, **kwargs)
