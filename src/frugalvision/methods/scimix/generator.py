"""The SciMix generator (our reading): a semantic encoder, a content encoder and a decoder with three variants.

``mix(a, b) = G(E_b(b), E_s(a))``: the global semantic code of ``a`` rendered into the spatial content (background)
code of ``b``. SciMix's abstract says the generator "embeds a semantic style code into image backgrounds" with a
StyleGAN generator; its architecture was not available to us, so everything here is our reading (spec §2.2):

- ``E_s``: CNN -> global average pool -> MLP -> ``s`` in R^{d_s}, with a class head ``h_s`` on ``s``.
- ``E_b``: CNN of total stride 4 -> ``b`` in R^{C_b x H/4 x W/4} (in place of StyleGAN's learned constant input).
- decoder ``modulated`` (StyleGAN2-like): two blocks of (upsample x2, two modulated 3x3 convolutions with weight
  demodulation, bias, LeakyReLU 0.2), a modulated 1x1 to-RGB without demodulation, tanh.
- decoder ``adain``: the same blocks with plain convolutions followed by AdaIN(h, s).
- decoder ``layered``: a modulated foreground branch on (b, s) giving colour f and opacity alpha = sigmoid, and a
  background branch on b alone giving r; ``x = alpha f + (1 - alpha) r`` (an explicit object region).

Images are float ``[N, C, H, W]`` in ``[0, 1]`` in and out; no layer mixes samples (no BatchNorm), so every output
depends on its own inputs only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AdaIN",
    "Discriminator",
    "GeneratorConfig",
    "ModulatedConv2d",
    "Rendered",
    "SciMixGenerator",
    "adain",
    "build_generator",
]

Decoder = Literal["modulated", "adain", "layered"]
_SLOPE = 0.2


def _act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, _SLOPE)


class ModulatedConv2d(nn.Module):
    """StyleGAN2's modulated convolution, as a grouped convolution over the batch.

    ``w'_{o,i,k} = w_{o,i,k} a_i`` with the style scales ``a = A(s)`` (one per input channel); with demodulation
    ``w''_{o,i,k} = w'_{o,i,k} / sqrt(sum_{i,k} w'^2_{o,i,k} + 1e-8)``. Then a bias per output channel.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd kernel size (same padding).
        style_dim: dimension of ``s``.
        demodulate: divide each output channel's weights by their norm (no demodulation for to-RGB layers).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int, demodulate: bool = True
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.affine = nn.Linear(style_dim, in_channels)
        nn.init.zeros_(self.affine.weight)
        nn.init.ones_(self.affine.bias)  # style scales start at 1 (StyleGAN2's bias_init=1)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.demodulate = demodulate
        self.padding = kernel_size // 2

    def modulated_weight(self, style: torch.Tensor) -> torch.Tensor:
        """Per-sample weights ``[N, out, in, k, k]`` for style codes ``[N, style_dim]``."""
        scales = self.affine(style)  # [N, in]
        weight = self.scale * self.weight[None] * scales[:, None, :, None, None]
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        return weight

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Convolve each sample with its own modulated weights (one grouped convolution)."""
        n, c, h, w = x.shape
        weight = self.modulated_weight(style)
        out = F.conv2d(
            x.reshape(1, n * c, h, w), weight.reshape(-1, c, *weight.shape[3:]), padding=self.padding, groups=n
        )
        return out.reshape(n, -1, h, w) + self.bias.view(1, -1, 1, 1)


def adain(h: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``gamma * (h - mean(h)) / std(h) + beta``, statistics per sample and channel over the spatial positions."""
    mean = h.mean(dim=(2, 3), keepdim=True)
    std = (h.var(dim=(2, 3), keepdim=True, unbiased=False) + eps).sqrt()
    return gamma[:, :, None, None] * (h - mean) / std + beta[:, :, None, None]


class AdaIN(nn.Module):
    """Adaptive instance normalisation with ``(gamma, beta) = A(s)`` (gamma initialised around 1)."""

    def __init__(self, channels: int, style_dim: int) -> None:
        super().__init__()
        self.affine = nn.Linear(style_dim, 2 * channels)
        nn.init.zeros_(self.affine.weight)
        with torch.no_grad():
            self.affine.bias[:channels] = 1.0
            self.affine.bias[channels:] = 0.0

    def forward(self, h: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """AdaIN(h, s)."""
        gamma, beta = self.affine(style).chunk(2, dim=1)
        return adain(h, gamma, beta)


def _encoder(in_channels: int, width: int, out_channels: int) -> nn.Sequential:
    """3x3 conv, then two stride-2 3x3 convs (total stride 4), LeakyReLU between."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, 1, 1),
        nn.LeakyReLU(_SLOPE),
        nn.Conv2d(width, 2 * width, 3, 2, 1),
        nn.LeakyReLU(_SLOPE),
        nn.Conv2d(2 * width, out_channels, 3, 2, 1),
    )


class SemanticEncoder(nn.Module):
    """``E_s``: CNN -> global average pool -> MLP -> ``s``; ``head`` classifies ``s`` (the class-bearing code)."""

    def __init__(self, in_channels: int, width: int, style_dim: int, num_classes: int) -> None:
        super().__init__()
        self.features = _encoder(in_channels, width, 4 * width)
        self.mlp = nn.Sequential(nn.Linear(4 * width, style_dim), nn.LeakyReLU(_SLOPE), nn.Linear(style_dim, style_dim))
        self.head = nn.Linear(style_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The semantic code ``s`` ``[N, style_dim]``."""
        return self.mlp(_act(self.features(x)).mean(dim=(2, 3)))


class ModulatedBlock(nn.Module):
    """Upsample x2, two modulated 3x3 convolutions with demodulation, bias and LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int) -> None:
        super().__init__()
        self.conv1 = ModulatedConv2d(in_channels, out_channels, 3, style_dim)
        self.conv2 = ModulatedConv2d(out_channels, out_channels, 3, style_dim)

    def forward(self, h: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """One block."""
        h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        return _act(self.conv2(_act(self.conv1(h, style)), style))


class AdaINBlock(nn.Module):
    """Upsample x2, then twice (3x3 convolution, AdaIN, LeakyReLU)."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int) -> None:
        super().__init__()
        self.conv1, self.norm1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1), AdaIN(out_channels, style_dim)
        self.conv2, self.norm2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1), AdaIN(out_channels, style_dim)

    def forward(self, h: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """One block."""
        h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        h = _act(self.norm1(self.conv1(h), style))
        return _act(self.norm2(self.conv2(h), style))


class PlainBlock(nn.Module):
    """Upsample x2, then twice (3x3 convolution, LeakyReLU): the style-free background branch of ``layered``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """One block."""
        h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        return _act(self.conv2(_act(self.conv1(h))))


@dataclass(frozen=True)
class Rendered:
    """A decoder's output.

    Attributes:
        image: ``[N, C, H, W]`` in ``[0, 1]``.
        alpha: ``[N, 1, H, W]`` object opacity (``layered`` decoder only, else None).
    """

    image: torch.Tensor
    alpha: torch.Tensor | None = None


@dataclass(frozen=True)
class GeneratorConfig:
    """Sizes and variant of a SciMix generator.

    Attributes:
        num_classes: classes of the semantic head.
        channels: image channels.
        style_dim: d_s.
        content_channels: C_b (the content code is C_b x H/4 x W/4).
        width: base width of the encoders and the decoder.
        decoder: "modulated", "adain" or "layered".
    """

    num_classes: int = 10
    channels: int = 3
    style_dim: int = 64
    content_channels: int = 32
    width: int = 16
    decoder: Decoder = "modulated"


class SciMixGenerator(nn.Module):
    """``G(E_b(b), E_s(a))``: renders the semantic code of ``a`` into the content code of ``b`` (see module doc)."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        if config.decoder not in ("modulated", "adain", "layered"):
            raise ValueError(f"decoder={config.decoder!r} is invalid; use modulated, adain or layered")
        self.config = config
        c, w, d = config.channels, config.width, config.style_dim
        self.semantic = SemanticEncoder(c, w, d, config.num_classes)
        self.content = _encoder(c, w, config.content_channels)
        block = AdaINBlock if config.decoder == "adain" else ModulatedBlock
        self.blocks = nn.ModuleList([block(config.content_channels, 2 * w, d), block(2 * w, w, d)])
        out = c + 1 if config.decoder == "layered" else c
        self.to_rgb = (
            nn.Conv2d(w, out, 1) if config.decoder == "adain" else ModulatedConv2d(w, out, 1, d, demodulate=False)
        )
        if config.decoder == "layered":
            self.background = nn.ModuleList([PlainBlock(config.content_channels, 2 * w), PlainBlock(2 * w, w)])
            self.background_rgb = nn.Conv2d(w, c, 1)

    def encode_semantic(self, x: torch.Tensor) -> torch.Tensor:
        """``s = E_s(x)``."""
        return self.semantic(2.0 * x - 1.0)

    def encode_content(self, x: torch.Tensor) -> torch.Tensor:
        """``b = E_b(x)``."""
        return self.content(2.0 * x - 1.0)

    def classify_style(self, style: torch.Tensor) -> torch.Tensor:
        """``h_s(s)``: class logits of a semantic code."""
        return self.semantic.head(style)

    def render(self, content: torch.Tensor, style: torch.Tensor) -> Rendered:
        """Decode ``(b, s)`` to an image in ``[0, 1]`` (and the object opacity for ``layered``)."""
        h = content
        for block in self.blocks:
            h = block(h, style)
        out = self.to_rgb(h) if self.config.decoder == "adain" else self.to_rgb(h, style)
        if self.config.decoder != "layered":
            return Rendered((torch.tanh(out) + 1.0) / 2.0)
        foreground, alpha = (torch.tanh(out[:, :-1]) + 1.0) / 2.0, torch.sigmoid(out[:, -1:])
        r = content
        for block in self.background:
            r = block(r)
        background = (torch.tanh(self.background_rgb(r)) + 1.0) / 2.0
        return Rendered(alpha * foreground + (1.0 - alpha) * background, alpha)

    def mix(self, semantic: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``G(E_b(context), E_s(semantic))``: the semantic parent's content in the context parent's background."""
        return self.render(self.encode_content(context), self.encode_semantic(semantic)).image

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``G(E_b(x), E_s(x))``."""
        return self.mix(x, x)

    def mixer(self) -> _GeneratorMixer:
        """A semantic mixer for :class:`frugalvision.ssl.SemanticMix` (eval mode, no gradient)."""
        return _GeneratorMixer(self)

    def forward(self, semantic: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`mix`."""
        return self.mix(semantic, context)


class _GeneratorMixer:
    """``(semantic batch, context batch) -> images`` through a frozen generator (reads only ``"image"``)."""

    def __init__(self, generator: SciMixGenerator) -> None:
        self.generator = generator

    @torch.no_grad()
    def __call__(self, semantic: dict[str, torch.Tensor], context: dict[str, torch.Tensor]) -> torch.Tensor:
        images = semantic["image"]
        self.generator.to(images.device)
        was_training = self.generator.training
        self.generator.eval()
        out = self.generator.mix(images, context["image"])
        self.generator.train(was_training)
        return out


class Discriminator(nn.Module):
    """A small non-saturating GAN critic (optional adversarial term): three stride-2 convolutions and a linear."""

    def __init__(self, channels: int = 3, width: int = 16, image_size: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, 2, 1),
            nn.LeakyReLU(_SLOPE),
            nn.Conv2d(width, 2 * width, 3, 2, 1),
            nn.LeakyReLU(_SLOPE),
            nn.Conv2d(2 * width, 4 * width, 3, 2, 1),
            nn.LeakyReLU(_SLOPE),
            nn.Flatten(),
        )
        self.out = nn.Linear(4 * width * math.ceil(image_size / 8) ** 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Realness logits ``[N]`` of images in ``[0, 1]``."""
        return self.out(self.features(2.0 * x - 1.0)).squeeze(1)


def build_generator(config: GeneratorConfig) -> SciMixGenerator:
    """A SciMix generator of one variant."""
    return SciMixGenerator(config)
