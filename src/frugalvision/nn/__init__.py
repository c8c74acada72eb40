"""Shared layers and model builders: CIFAR ResNets, small timm ViTs, the Perceiver-style latent encoder."""

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

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "CrossAttention",
    "LatentBlock",
    "LatentEncoder",
    "MeanPoolHead",
    "QueryDecoder",
    "attention",
    "cifar_resnet",
    "fourier_features",
    "grid_coords",
    "small_vit",
]
