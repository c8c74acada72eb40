"""Shared layers and model builders (CNNs, ViTs; latent encoders and text transformers as methods land)."""

from frugalvision.nn.resnet import BasicBlock, CifarResNet, cifar_resnet
from frugalvision.nn.vit import small_vit

__all__ = ["BasicBlock", "CifarResNet", "cifar_resnet", "small_vit"]
