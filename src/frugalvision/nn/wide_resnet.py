"""Pre-activation ResNets for small images: WideResNet-d-k (Zagoruyko & Komodakis 2016) and narrow PreActResNets.

Layout: a 3x3 stem convolution, three stages of pre-activation basic blocks (BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus
a shortcut, a 1x1 convolution of the pre-activated input when the shape changes) with strides 1, 2, 2, a final
BN-ReLU, global average pooling and a linear classifier. WRN-28-10 is ``wide_resnet(28, 10)``: stem 16 channels,
stages 160/320/640, four blocks per stage. ``preact_resnet(width, blocks=1)`` is the 8-layer net of small
experiments (stem and stages w, 2w, 4w).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["PreActBlock", "PreActResNet", "preact_resnet", "wide_resnet"]


class PreActBlock(nn.Module):
    """Pre-activation basic block (WRN's ``B(3,3)``), stride on the first convolution.

    Args:
        in_channels: input channels.
        channels: output channels.
        stride: stride of the first convolution (and of the shortcut).
        dropout: dropout between the two convolutions (WRN's optional dropout).
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Conv2d(in_channels, channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block forward."""
        activated = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(activated)
        out = self.conv1(activated)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + skip


class PreActResNet(nn.Module):
    """Stem conv, three stages of :class:`PreActBlock`, final BN-ReLU, global average pooling, linear head.

    Args:
        stage_widths: channels of the three stages.
        blocks_per_stage: blocks in each stage.
        stem_width: channels of the stem convolution.
        in_chans: input channels.
        num_classes: output classes.
        dropout: WRN dropout inside the blocks.
        stem_stride: stride of the stem (1 for 32x32 CIFAR images).
    """

    def __init__(
        self,
        stage_widths: Sequence[int],
        blocks_per_stage: int,
        stem_width: int,
        in_chans: int = 3,
        num_classes: int = 10,
        dropout: float = 0.0,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        if len(stage_widths) != 3 or blocks_per_stage < 1 or min(stage_widths) < 1 or stem_width < 1:
            raise ValueError(
                f"stage_widths={tuple(stage_widths)}, blocks_per_stage={blocks_per_stage}: give three positive "
                "stage widths and at least one block per stage"
            )
        self.stem = nn.Conv2d(in_chans, stem_width, 3, stem_stride, 1, bias=False)
        stages, channels = [], stem_width
        for index, width in enumerate(stage_widths):
            blocks = []
            for block in range(blocks_per_stage):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(PreActBlock(channels, width, stride, dropout))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(channels)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        self.num_features = channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        """The final activated feature map ``[N, C, h, w]`` (before pooling)."""
        return self.act(self.norm(self.stages(self.stem(x))))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``[N, C]`` before the classifier."""
        return self.pool(self.forward_map(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.fc(self.forward_features(x))


def wide_resnet(
    depth: int = 28, widen_factor: int = 10, num_classes: int = 100, in_chans: int = 3, dropout: float = 0.0
) -> PreActResNet:
    """WideResNet-``depth``-``widen_factor`` (depth = 6n + 4: n blocks per stage; stem 16, stages 16k/32k/64k)."""
    if (depth - 4) % 6 != 0 or depth < 10 or widen_factor < 1:
        raise ValueError(f"depth={depth}, widen_factor={widen_factor}: a WideResNet needs depth = 6n + 4 and k >= 1")
    k = widen_factor
    return PreActResNet((16 * k, 32 * k, 64 * k), (depth - 4) // 6, 16, in_chans, num_classes, dropout)


def preact_resnet(width: int = 16, blocks: int = 1, num_classes: int = 10, in_chans: int = 3) -> PreActResNet:
    """PreActResNet with stem ``width`` and stages w, 2w, 4w; ``blocks=1`` gives 8 weight layers."""
    return PreActResNet((width, 2 * width, 4 * width), blocks, width, in_chans, num_classes)
