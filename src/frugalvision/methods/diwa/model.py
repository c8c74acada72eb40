"""Networks with a featurizer / dropout / linear-head split (DomainBed's ERM layout).

- :class:`DiwaNet`: any featurizer + ``Dropout(p)`` + ``Linear``; :meth:`DiwaNet.set_dropout` sets the run's rate.
- :func:`gn_cnn`: the offline analogue, a small GroupNorm CNN (no BatchNorm buffers, so parameter averaging is exact).
- :func:`resnet50_frozen_bn`: the paper's featurizer, torchvision ResNet-50 with BatchNorm kept in eval mode.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from frugalvision.engine import load_weights
from frugalvision.errors import CheckpointError

__all__ = ["DiwaNet", "FrozenBatchNorm", "gn_cnn", "resnet50_frozen_bn"]


class DiwaNet(nn.Module):
    """Featurizer, feature dropout and a linear classifier.

    Args:
        featurizer: module mapping images to ``[B, feature_dim]`` features.
        feature_dim: width of the features.
        num_classes: number of classes.
        dropout: dropout rate on the features (``resnet_dropout`` in the paper).
    """

    def __init__(self, featurizer: nn.Module, feature_dim: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.featurizer = featurizer
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(feature_dim, num_classes)

    def set_dropout(self, rate: float) -> None:
        """Set the feature-dropout rate (a hyperparameter of each run; no parameters change)."""
        self.dropout.p = float(rate)

    def head_parameter_names(self) -> set[str]:
        """State-dict names of the classifier parameters."""
        return {f"classifier.{n}" for n, _ in self.classifier.named_parameters()}

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]``."""
        return self.classifier(self.dropout(self.featurizer(inputs)))


def gn_cnn(in_chans: int = 1, num_classes: int = 10, width: int = 32, dropout: float = 0.0) -> DiwaNet:
    """Small GroupNorm CNN for 14x14 / 16x16 images (about 20k parameters at width 32).

    Layout: conv3x3(w/2) - conv3x3(w, stride 2) - conv3x3(w, stride 2) - conv3x3(w), each GroupNorm(4) + ReLU,
    then global average pooling to a ``w``-d feature.
    """
    half = width // 2

    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(4, cout), nn.ReLU()]

    featurizer = nn.Sequential(
        *block(in_chans, half, 1),
        *block(half, width, 2),
        *block(width, width, 2),
        *block(width, width, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return DiwaNet(featurizer, width, num_classes, dropout)


class FrozenBatchNorm(nn.Module):
    """Wraps a featurizer so that every BatchNorm layer stays in eval mode.

    Running statistics stay frozen, affine parameters still train, as in the DiWA fork's ``ResNet.train()`` override.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def train(self, mode: bool = True) -> FrozenBatchNorm:
        """Set train/eval mode, keeping BatchNorm layers in eval mode."""
        super().train(mode)
        for layer in self.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                layer.eval()
        return self

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Features of the wrapped module."""
        return self.module(inputs)


def resnet50_frozen_bn(num_classes: int, weights_path: str | Path | None = None, dropout: float = 0.0) -> DiwaNet:
    """Torchvision ResNet-50 featurizer (2048-d, BatchNorm frozen) + dropout + linear head.

    Args:
        num_classes: number of classes.
        weights_path: ImageNet weights in torchvision's key format (safetensors, or a plain tensor dict); never
            downloaded. None leaves the featurizer randomly initialised (tests only).
        dropout: feature dropout.

    Raises:
        CheckpointError: the weights file does not match torchvision's ResNet-50.
    """
    from torchvision.models import resnet50

    backbone = resnet50(weights=None)
    if weights_path is not None:
        state = load_weights(weights_path)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = backbone.load_state_dict(state, strict=False)
        if [k for k in missing if not k.startswith("fc.")] or unexpected:
            raise CheckpointError(
                f"{weights_path} is not a torchvision ResNet-50 state dict (missing {missing[:3]}, unexpected "
                f"{unexpected[:3]}); export torchvision.models.resnet50 weights"
            )
    backbone.fc = nn.Identity()
    featurizer = FrozenBatchNorm(backbone)
    featurizer.train()
    return DiwaNet(featurizer, 2048, num_classes, dropout)
