"""The DeiT III pre-training step on any model and data: 3-Augment, Mixup/CutMix, BCE on binarised targets."""

from __future__ import annotations

import torch
from torch import nn

from frugalvision.methods.deit3.augment import three_augment
from frugalvision.methods.deit3.losses import mix_batch, mixed_bce_loss


def deit3_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    size: int | None = None,
    blur_sigma: tuple[float, float] = (0.1, 2.0),
    generator: torch.Generator | None = None,
) -> float:
    """One optimiser step of the DeiT III recipe on a batch (the caller normalises inside ``model`` if it needs to).

    Args:
        model: a classifier, e.g. :func:`~frugalvision.methods.deit3.build_vit` (LayerScale, uniform drop-path).
        optimizer: e.g. :func:`~frugalvision.methods.deit3.build_optimizer` (timm LAMB).
        images: ``[B, C, H, W]`` in ``[0, 1]``.
        labels: ``[B]`` class indices.
        num_classes: number of classes.
        size: training resolution (default: the images' size).
        blur_sigma: 3-Augment blur range in pixels (official U(0.1, 2.0); keep it at any image size: a blur of
            sigma pixels removes the same share of the sampled spectrum whatever the size).
        generator: random source of the augmentation and the mixing.

    Returns:
        The BCE loss of the step.
    """
    model.train()
    x = three_augment(images, size or images.shape[-1], blur_sigma=blur_sigma, generator=generator)
    mixed = mix_batch(x, labels, num_classes, generator=generator)
    loss = mixed_bce_loss(model(mixed.inputs), mixed.targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())
