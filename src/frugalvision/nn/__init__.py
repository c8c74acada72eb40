"""Shared layers and model builders: CIFAR ResNets, PreAct/Wide ResNets, small timm ViTs, the latent encoder.

The offline MiniLM-L6 text encoder and its WordPiece tokenizer live in ``frugalvision.nn.minilm`` (imported on use:
it needs the ``vl`` extra); the ALBEF-style text/fusion BERT with cross-attention and MLM head in
``frugalvision.nn.xbert``.
"""

from frugalvision.nn.latent import (
    CrossAttention,
    LatentBlock,
    LatentEncoder,
    MeanPoolHead,
    QueryDecoder,
    attention,
    fourier_features,
    grid_coords,
)
from frugalvision.nn.resnet import BasicBlock, CifarResNet, cifar_resnet
from frugalvision.nn.vit import small_vit
from frugalvision.nn.wide_resnet import PreActBlock, PreActResNet, preact_resnet, wide_resnet

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "CrossAttention",
    "LatentBlock",
    "LatentEncoder",
    "MeanPoolHead",
    "PreActBlock",
    "PreActResNet",
    "QueryDecoder",
    "attention",
    "cifar_resnet",
    "fourier_features",
    "grid_coords",
    "preact_resnet",
    "small_vit",
    "wide_resnet",
]
