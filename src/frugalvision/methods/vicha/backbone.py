"""The offline stand-in for ViCHA's ImageNet-pretrained ViT: a small ViT pre-trained once on the caption world.

The paper starts its image encoder from DeiT-B (ImageNet). No pretrained ViT ships offline, so the offline presets
pre-train the ViT once, supervised, on the caption world's *training* images: from the [CLS] token a linear head
predicts, for each of the 3 x 3 grid cells, the shape, colour and size of the object there (or "empty"), as an
ImageNet classifier is trained from its [CLS]; a second linear head makes every patch token predict the attributes
of the cell it lies in (dense labels, as token labelling, so that a ViT trained from nothing learns in a few hundred
steps). The weights are cached and shared by every arm and seed, so every arm
starts from the same image encoder, as every arm of the paper starts from the same DeiT.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from frugalvision.errors import ConfigError

__all__ = ["VisionPretrainConfig", "VisionPretrainReport", "cell_attribute_loss", "pretrain_vision"]

#: classes per grid cell: 8 shapes + empty, 8 colours + empty, 2 sizes + empty
CELL_CLASSES = (9, 9, 3)


@dataclass(frozen=True)
class VisionPretrainConfig:
    """Supervised pre-training of the ViT stand-in (AdamW, warm-up then cosine).

    Attributes:
        steps: optimiser steps.
        batch_size: images per step.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up steps.
        cells: grid cells predicted from [CLS] (the caption world's 3 x 3).
    """

    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 20
    cells: int = 9

    def validate(self) -> None:
        """Raise ConfigError on an invalid value."""
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError(f"vision pre-training needs steps >= 0, batch_size >= 1 and lr > 0, got {self}")


@dataclass(frozen=True)
class VisionPretrainReport:
    """What the pre-training reached: final training loss, per-attribute accuracy on held-out images, seconds."""

    final_loss: float
    heldout_accuracy: dict[str, float]
    seconds: float


def patch_cells(grid: int, cells: int = 9) -> Tensor:
    """Row-major cell index of each patch of a ``grid x grid`` patch grid over a ``sqrt(cells)``-sided cell grid."""
    side = int(round(math.sqrt(cells)))
    rows = torch.arange(grid) * side // grid
    return (rows[:, None] * side + rows[None, :]).reshape(-1)


def cell_attribute_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over cells and attributes.

    Args:
        logits: ``[N, cells * sum(CELL_CLASSES)]`` from the [CLS] head.
        labels: ``[N, cells, 3]`` class of shape, colour and size per cell (0 = empty).
    """
    n, cells = labels.shape[:2]
    parts = logits.view(n, cells, sum(CELL_CLASSES)).split(CELL_CLASSES, dim=-1)
    losses = [F.cross_entropy(part.flatten(0, 1), labels[..., i].flatten()) for i, part in enumerate(parts)]
    return sum(losses) / len(losses)


@torch.no_grad()
def _accuracy(vit: VisionTransformer, head: nn.Linear, images: Tensor, labels: Tensor) -> dict[str, float]:
    vit.eval()
    logits = torch.cat([head(vit.forward_features(images[i : i + 256])[:, 0]) for i in range(0, len(images), 256)])
    vit.train()
    parts = logits.view(len(images), labels.shape[1], sum(CELL_CLASSES)).split(CELL_CLASSES, dim=-1)
    names = ("shape", "colour", "size")
    return {name: float((parts[i].argmax(-1) == labels[..., i]).float().mean()) for i, name in enumerate(names)}


def pretrain_vision(
    vit: VisionTransformer,
    images: Tensor,
    labels: Tensor,
    config: VisionPretrainConfig,
    heldout: tuple[Tensor, Tensor] | None = None,
    seed: int = 0,
) -> VisionPretrainReport:
    """Train ``vit`` in place to predict every cell's attributes from its [CLS] token (normed, as ViCHA reads it).

    Args:
        vit: timm ViT (``global_pool=""``, no classifier), e.g. ``ConceptViT(cfg).vit``.
        images: ``[N, 3, H, W]`` normalised training images.
        labels: ``[N, cells, 3]`` (:func:`frugalvision.data.caption_world.scene_cell_labels`).
        config: optimisation.
        heldout: optional held-out ``(images, labels)`` for the reported accuracy.
        seed: sampling seed.
    """
    config.validate()
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    head = nn.Linear(vit.embed_dim, config.cells * sum(CELL_CLASSES))
    patch_head = nn.Linear(vit.embed_dim, sum(CELL_CLASSES))
    cell_of_patch = patch_cells(int(round(math.sqrt(vit.patch_embed.num_patches))), config.cells)
    params = [*vit.parameters(), *head.parameters(), *patch_head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    vit.train()
    loss = torch.zeros(())
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, config)
        index = torch.randint(len(images), (config.batch_size,), generator=generator)
        tokens, target = vit.forward_features(images[index]), labels[index]
        patch_logits = patch_head(tokens[:, 1 + vit.num_prefix_tokens - 1 :]).flatten(1)
        loss = cell_attribute_loss(head(tokens[:, 0]), target) + cell_attribute_loss(
            patch_logits, target[:, cell_of_patch]
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    accuracy = _accuracy(vit, head, *heldout) if heldout is not None else {}
    return VisionPretrainReport(float(loss.detach()), accuracy, time.perf_counter() - start)


def _lr(step: int, c: VisionPretrainConfig) -> float:
    if step < c.warmup_steps:
        return c.lr * (step + 1) / c.warmup_steps
    progress = (step - c.warmup_steps) / max(1, c.steps - c.warmup_steps)
    return c.lr * 0.5 * (1 + math.cos(math.pi * progress))


def stack_labels(label_list: list[np.ndarray]) -> Tensor:
    """``[N, cells, 3]`` int64 tensor of per-scene cell labels."""
    return torch.from_numpy(np.stack(label_list)).long()
