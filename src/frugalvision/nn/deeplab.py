"""DeepLab-V2 segmenters on torchvision ResNets: dilated stages 3 and 4, ASPP classifiers on both, several branches.

The backbone is a torchvision ResNet (``resnet50`` / ``resnet101``, or a tiny ResNet built from torchvision's
``Bottleneck`` blocks for CPUs) whose stages 3 and 4 keep stride 8 and use dilations 2 and 4 in **every** block, as
in DeepLab-V2 (torchvision's ``replace_stride_with_dilation`` leaves the first block of a dilated stage at the
previous dilation; we set it like the others). Each **branch** is a pair of ASPP classifiers (four parallel 3x3
convolutions with dilations 6/12/18/24, summed, weights N(0, 0.01)): ``aux`` on the stage-3 features and ``main`` on
the stage-4 features. ADVENT uses one branch; MuHDi two (target-agnostic and target-specialist).

BatchNorm follows the DeepLab-V2 training code of ADVENT/MuHDi: affine parameters frozen
(:func:`freeze_batchnorm_affine`), statistics from the current batch in train mode (running statistics updated),
running statistics in eval mode.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck, resnet50, resnet101

from frugalvision.errors import ConfigError

__all__ = [
    "ASPPClassifier",
    "DeepLabV2",
    "InputNormalization",
    "ResNetStages",
    "SegmentationOutput",
    "deeplab_v2",
    "freeze_batchnorm_affine",
    "resnet_stages",
    "tiny_resnet_stages",
]

FeatureTap = Literal["post_relu", "pre_relu"]
#: the BGR pixel means (0-255 scale) of the Caffe DeepLab weights, subtracted by ADVENT and MuHDi
CAFFE_BGR_MEAN = (104.00698793, 116.66876762, 122.67891434)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class InputNormalization(nn.Module):
    """RGB images in [0, 1] -> network input, for torchvision weights (``"imagenet"``) or Caffe ones (``"caffe"``).

    ``"caffe"``: BGR order, 0-255 scale, mean subtracted, no scaling (the DeepLab weights of ADVENT/MuHDi).
    """

    def __init__(self, mode: Literal["imagenet", "caffe"] = "imagenet") -> None:
        super().__init__()
        if mode not in ("imagenet", "caffe"):
            raise ConfigError(f"normalization={mode!r} is invalid; use 'imagenet' or 'caffe'")
        self.mode = mode
        if mode == "caffe":
            mean, std = torch.tensor(CAFFE_BGR_MEAN[::-1]) / 255.0, torch.full((3,), 1.0 / 255.0)
        else:
            mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        """Normalise (and, for ``caffe``, reorder channels to BGR)."""
        out = (images - self.mean) / self.std
        return out.flip(1) if self.mode == "caffe" else out


class ASPPClassifier(nn.Module):
    """DeepLab-V2 classifier: parallel 3x3 convolutions with the given dilations (padding = dilation), summed.

    Args:
        in_channels: feature channels.
        num_classes: output classes.
        dilations: one convolution per dilation.
        init_std: standard deviation of the N(0, std) weight initialisation (biases keep PyTorch's default).
    """

    def __init__(
        self, in_channels: int, num_classes: int, dilations: Sequence[int] = (6, 12, 18, 24), init_std: float = 0.01
    ) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(in_channels, num_classes, 3, padding=d, dilation=d) for d in dilations)
        for conv in self.convs:
            nn.init.normal_(conv.weight, 0.0, init_std)

    def forward(self, features: Tensor) -> Tensor:
        """Sum of the dilated convolutions."""
        out = self.convs[0](features)
        for conv in self.convs[1:]:
            out = out + conv(features)
        return out


def freeze_batchnorm_affine(module: nn.Module) -> nn.Module:
    """Set ``requires_grad=False`` on every BatchNorm's weight and bias (statistics still follow train/eval mode)."""
    for child in module.modules():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            for parameter in child.parameters():
                parameter.requires_grad_(False)
    return module


def _block_pre_relu(block: nn.Module, x: Tensor) -> Tensor:
    """A torchvision residual block's output before its final ReLU (the same computation as ``block(x)``)."""
    identity = x if block.downsample is None else block.downsample(x)
    out = block.relu(block.bn1(block.conv1(x)))
    if isinstance(block, Bottleneck):
        out = block.relu(block.bn2(block.conv2(out)))
        return block.bn3(block.conv3(out)) + identity
    return block.bn2(block.conv2(out)) + identity


class ResNetStages(nn.Module):
    """A ResNet as stem + four stages, returning the output of every stage.

    Args:
        stem: conv / BN / ReLU / max-pool.
        stages: the four stages (``nn.Sequential`` of torchvision blocks).
        channels: output channels of each stage.
    """

    def __init__(self, stem: nn.Module, stages: Sequence[nn.Sequential], channels: Sequence[int]) -> None:
        super().__init__()
        if len(stages) != 4 or len(channels) != 4:
            raise ConfigError(f"a DeepLab backbone needs 4 stages (got {len(stages)}); pass layer1..layer4")
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.channels = tuple(int(c) for c in channels)

    def forward(self, images: Tensor, tap: FeatureTap = "post_relu") -> list[Tensor]:
        """Stage outputs F_1..F_4; ``tap="pre_relu"`` returns each stage's last block before its final ReLU.

        The next stage always receives the post-ReLU output, so the tap changes only what is returned.
        """
        x = self.stem(images)
        features = []
        for stage in self.stages:
            for block in list(stage)[:-1]:
                x = block(x)
            pre = _block_pre_relu(stage[-1], x)
            x = F.relu(pre)
            features.append(pre if tap == "pre_relu" else x)
        return features


def _dilate_stage(stage: nn.Sequential, dilation: int) -> None:
    """Give every 3x3 convolution of a stage the same dilation (and padding), DeepLab-V2 style."""
    for block in stage:
        conv = block.conv2
        conv.dilation, conv.padding = (dilation, dilation), (dilation, dilation)


def resnet_stages(depth: int = 101, weights: str | Path | None = None) -> ResNetStages:
    """A torchvision ResNet-50/101 as DeepLab-V2 stages (output stride 8, dilations 2 and 4).

    Args:
        depth: 50 or 101.
        weights: optional torchvision-layout ImageNet checkpoint (safetensors or a tensors-only ``.pt``); the
            ``fc.*`` entries are ignored. Nothing is downloaded.

    Raises:
        ConfigError: unsupported depth or a checkpoint whose keys do not match.
    """
    builders = {50: resnet50, 101: resnet101}
    if depth not in builders:
        raise ConfigError(f"depth={depth} is not supported; use 50 or 101 (or tiny_resnet_stages for CPUs)")
    net = builders[depth](weights=None, replace_stride_with_dilation=[False, True, True])
    if weights is not None:
        from frugalvision.engine import load_weights

        state = {k: v for k, v in load_weights(weights).items() if not k.startswith("fc.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise ConfigError(
                f"{weights} does not hold a torchvision ResNet-{depth} (missing {missing[:3]}, unexpected "
                f"{unexpected[:3]}); pass the state dict of torchvision.models.resnet{depth}"
            )
    _dilate_stage(net.layer3, 2)
    _dilate_stage(net.layer4, 4)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    return ResNetStages(stem, [net.layer1, net.layer2, net.layer3, net.layer4], (256, 512, 1024, 2048))


def tiny_resnet_stages(
    widths: Sequence[int] = (16, 32, 64, 128), blocks: Sequence[int] = (1, 1, 1, 1), maxpool: bool = True
) -> ResNetStages:
    """A small ResNet of torchvision ``Bottleneck`` blocks for CPUs (stage widths = block output channels).

    Same shape as the DeepLab-V2 ResNet: a 7x7/2 stem, an optional 3x3/2 max-pool, stride 2 in stage 2, stages 3
    and 4 at the same resolution with dilations 2 and 4. Without the max-pool the output stride is 4 instead of 8.
    """
    if len(widths) != 4 or len(blocks) != 4 or any(w % 4 or w < 4 for w in widths) or min(blocks) < 1:
        raise ConfigError(f"widths={tuple(widths)} / blocks={tuple(blocks)}: give 4 widths divisible by 4 and 4 counts")
    stem_width = widths[0]
    stem = nn.Sequential(
        nn.Conv2d(3, stem_width, 7, 2, 3, bias=False),
        nn.BatchNorm2d(stem_width),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1) if maxpool else nn.Identity(),
    )
    stages, in_channels = [], stem_width
    for index, (width, count) in enumerate(zip(widths, blocks)):
        stride, dilation = (2, 1) if index == 1 else (1, (1, 1, 2, 4)[index])
        downsample = None
        if stride != 1 or in_channels != width:
            downsample = nn.Sequential(nn.Conv2d(in_channels, width, 1, stride, bias=False), nn.BatchNorm2d(width))
        layer = [Bottleneck(in_channels, width // 4, stride, downsample, dilation=dilation)]
        layer += [Bottleneck(width, width // 4, dilation=dilation) for _ in range(count - 1)]
        stages.append(nn.Sequential(*layer))
        in_channels = width
    for module in nn.ModuleList(stages).modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return ResNetStages(stem, stages, widths)


@dataclass
class SegmentationOutput:
    """What :meth:`DeepLabV2.forward_all` returns.

    Attributes:
        logits: branch name -> (aux logits on stage 3 or None, main logits on stage 4), at feature resolution.
        features: stage outputs F_1..F_4 (as tapped).
    """

    logits: dict[str, tuple[Tensor | None, Tensor]]
    features: list[Tensor]


class DeepLabV2(nn.Module):
    """Backbone + one or more branches of (aux, main) ASPP classifiers.

    Args:
        backbone: a :class:`ResNetStages`.
        num_classes: output classes.
        branches: branch names; the first is the one :meth:`forward` uses (inference).
        aux: build the stage-3 classifiers.
        dilations: ASPP dilations.
        normalization: input normalisation of [0, 1] RGB images ("imagenet" or "caffe").
        tap: which stage features :meth:`forward_all` returns ("post_relu", as the official MuHDi code, or
            "pre_relu").
    """

    def __init__(
        self,
        backbone: ResNetStages,
        num_classes: int,
        branches: Sequence[str] = ("main",),
        aux: bool = True,
        dilations: Sequence[int] = (6, 12, 18, 24),
        normalization: Literal["imagenet", "caffe"] = "imagenet",
        tap: FeatureTap = "post_relu",
    ) -> None:
        super().__init__()
        if not branches or len(set(branches)) != len(branches):
            raise ConfigError(f"branches={tuple(branches)} is invalid; give one or more distinct names")
        if tap not in ("post_relu", "pre_relu"):
            raise ConfigError(f"tap={tap!r} is invalid; use 'post_relu' or 'pre_relu'")
        self.normalize = InputNormalization(normalization)
        self.backbone = backbone
        self.num_classes, self.aux, self.tap = num_classes, aux, tap
        self.dilations = tuple(dilations)
        c3, c4 = backbone.channels[2], backbone.channels[3]
        self.classifiers = nn.ModuleDict()
        for name in branches:
            heads = {"main": ASPPClassifier(c4, num_classes, dilations)}
            if aux:
                heads["aux"] = ASPPClassifier(c3, num_classes, dilations)
            self.classifiers[name] = nn.ModuleDict(heads)
        freeze_batchnorm_affine(self)

    @property
    def branches(self) -> tuple[str, ...]:
        """Branch names, the inference branch first."""
        return tuple(self.classifiers.keys())

    def forward_all(self, images: Tensor, branches: Sequence[str] | None = None) -> SegmentationOutput:
        """Logits of every (or the named) branch and the stage features, for RGB images in [0, 1]."""
        features = self.backbone(self.normalize(images), self.tap)
        stage3 = F.relu(features[2]) if self.tap == "pre_relu" else features[2]
        stage4 = F.relu(features[3]) if self.tap == "pre_relu" else features[3]
        logits = {}
        for name in branches or self.branches:
            heads = self.classifiers[name]
            logits[name] = (heads["aux"](stage3) if "aux" in heads else None, heads["main"](stage4))
        return SegmentationOutput(logits, features)

    def forward(self, images: Tensor) -> Tensor:
        """Main logits of the first branch, upsampled to the image size (inference)."""
        main = self.forward_all(images, self.branches[:1]).logits[self.branches[0]][1]
        return F.interpolate(main, size=images.shape[-2:], mode="bilinear", align_corners=True)

    def classifier_parameters(self) -> Iterator[nn.Parameter]:
        """Trainable parameters of the ASPP classifiers (ADVENT/MuHDi train them at 10x the learning rate)."""
        return (p for p in self.classifiers.parameters() if p.requires_grad)

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Trainable backbone parameters (BatchNorm affine parameters are frozen)."""
        return (p for p in self.backbone.parameters() if p.requires_grad)


def deeplab_v2(
    backbone: str = "resnet101",
    num_classes: int = 19,
    branches: Sequence[str] = ("main",),
    weights: str | Path | None = None,
    **kwargs: object,
) -> DeepLabV2:
    """Build a DeepLab-V2 on ``backbone`` = ``resnet50``, ``resnet101`` or ``tiny``.

    The keywords ``widths``, ``blocks`` and ``maxpool`` go to :func:`tiny_resnet_stages`, the rest to
    :class:`DeepLabV2`.
    """
    tiny_keys = {"widths", "blocks", "maxpool"}
    tiny_args = {k: kwargs.pop(k) for k in list(kwargs) if k in tiny_keys}
    if backbone == "tiny":
        stages = tiny_resnet_stages(**tiny_args)  # type: ignore[arg-type]
    elif backbone in ("resnet50", "resnet101"):
        stages = resnet_stages(int(backbone[6:]), weights)
    else:
        raise ConfigError(f"backbone={backbone!r} is invalid; use resnet101, resnet50 or tiny")
    return DeepLabV2(stages, num_classes, branches, **kwargs)  # type: ignore[arg-type]
