"""Train a SciMix generator on your own images (a thin wrapper over :class:`GeneratorTask` and the engine)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from frugalvision.methods.scimix.generator import GeneratorConfig, SciMixGenerator
from frugalvision.methods.scimix.losses import LossWeights
from frugalvision.methods.scimix.task import GeneratorTask
from frugalvision.ssl import TensorDictDataset

__all__ = ["train_generator"]


def train_generator(
    images: torch.Tensor,
    labels: torch.Tensor,
    teacher: nn.Module,
    config: GeneratorConfig,
    steps: int = 600,
    batch_size: int = 64,
    lr: float = 1e-3,
    weights: LossWeights | None = None,
    threshold: float = 0.8,
    accelerator: Literal["auto", "cpu", "cuda"] = "auto",
) -> SciMixGenerator:
    """Train a generator on labeled and unlabeled images with a frozen teacher classifier (the staged schedule).

    Args:
        images: float ``[N, C, H, W]`` in ``[0, 1]`` (H and W divisible by 4).
        labels: class per image, -1 where unknown (the teacher's confident pseudo-label is used there).
        teacher: a trained classifier ``images -> logits`` (frozen: it judges that a mix keeps its class).
        config: generator architecture (``num_classes`` must match the teacher).
        steps: optimisation steps.
        batch_size: images per step (half labeled when there are labels).
        lr: Adam learning rate (betas 0.5, 0.99).
        weights: loss weights (default :class:`LossWeights`).
        threshold: teacher confidence for pseudo-labels.
        accelerator: where to train.

    Returns:
        The trained generator in eval mode: ``generator.mix(a, b)`` renders ``a``'s class into ``b``'s background.
    """
    from frugalvision.engine import Engine, FabricConfig, LoopConfig

    labels = labels.long()
    known = labels >= 0
    unlabeled = TensorDictDataset({"image": images[~known], "label": labels[~known]})
    labeled = TensorDictDataset({"image": images[known], "label": labels[known]}) if known.any() else None
    task = GeneratorTask(
        config, unlabeled, weights or LossWeights(), threshold, "staged", teacher, labeled=labeled,
        labeled_batch=batch_size // 2,
    )  # fmt: skip
    loop = LoopConfig(
        max_steps=steps, batch_size=min(batch_size - batch_size // 2, len(unlabeled)), lr=lr, weight_decay=0.0,
        schedule="constant",
        ckpt_every_s=0, log_every=max(1, steps // 10),
    )  # fmt: skip
    engine = Engine(FabricConfig(accelerator=accelerator, precision="32-true"), progress=False)
    return engine.fit(task, loop).model.generator.eval()
