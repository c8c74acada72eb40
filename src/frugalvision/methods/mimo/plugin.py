"""The mixing plug-in: one call turns a batch of unique images into a MIMO / MixMo training loss for any MimoNetwork."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from frugalvision.errors import ConfigError
from frugalvision.methods.mimo.batching import member_batch, random_crop_flip
from frugalvision.methods.mimo.losses import l2_penalty, mimo_loss
from frugalvision.methods.mimo.mixing import MIXINGS, cut_probability, draw_plan

__all__ = ["MixMo"]


@dataclass
class MixMo:
    """MIMO / Linear-MixMo / Cut-MixMo training as a plug-in (batch repetition, masks, weighted loss).

    Attributes:
        mixing: "sum" (MIMO), "linear" (Linear-MixMo) or "cut" (Cut-MixMo).
        alpha: Dirichlet concentration of the ratios (ignored by "sum").
        weight_root: loss-weight root r (MixMo: 3 for linear/cut; "sum" always uses 1, as MixMo's MIMO config).
        p_cut: probability of cut mixing per batch (decays to 0 over the last 1/12 of training).
        batch_repetition: b; each unique image appears b times per input.
        input_repetition: probability that a sample shows the same image on every input.
        mask_loss_weight: weight of the soft unmixing's mask loss.
        l2: MixMo's L2 penalty (sum of squares of every parameter) added to the loss.
        pad: random-crop padding applied to every copy (0: none).
        flip: random horizontal flips of every copy.
    """

    mixing: str = "cut"
    alpha: float = 2.0
    weight_root: float = 3.0
    p_cut: float = 0.5
    batch_repetition: int = 2
    input_repetition: float = 0.0
    mask_loss_weight: float = 0.1
    l2: float = 0.0
    pad: int = 0
    flip: bool = False

    def __post_init__(self) -> None:
        if self.mixing not in MIXINGS:
            raise ConfigError(f"mixing={self.mixing!r} is invalid; use one of {MIXINGS}")

    def inputs(
        self, images: Tensor, labels: Tensor, members: int, normalise: Callable[[Tensor], Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """``([N, M, C, H, W], [N, M])``: repeated, member-permuted, augmented (and normalised) inputs."""
        repetitions = self.batch_repetition if members > 1 else 1
        inputs, targets = member_batch(images, labels, members, repetitions, self.input_repetition)
        if self.pad or self.flip:
            flat = random_crop_flip(inputs.flatten(0, 1), self.pad, self.flip)
            inputs = flat.view_as(inputs)
        return (normalise(inputs) if normalise else inputs), targets

    def training_loss(
        self,
        model: nn.Module,
        images: Tensor,
        labels: Tensor,
        progress: float,
        normalise: Callable[[Tensor], Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """The loss of one step on a batch of unique images.

        Args:
            model: a :class:`~frugalvision.methods.mimo.MimoNetwork` (or its DDP wrapper).
            images: ``[U, C, H, W]`` unique images in [0, 1] (before augmentation).
            labels: ``[U]`` labels.
            progress: step / total steps (drives Cut-MixMo's end-of-training decay).
            normalise: optional function applied to the augmented images.

        Returns:
            ``(loss, logs)``; ``logs`` holds the member cross-entropies, the mask loss and the cut probability.
        """
        core = getattr(model, "module", model)
        members = core.num_members
        inputs, targets = self.inputs(images, labels, members, normalise)
        if members == 1:
            logits = model(inputs[:, 0])
            ratios, aux = torch.ones_like(targets, dtype=logits.dtype), {"mask_loss": None}
            p_cut = 0.0
        else:
            p_cut = cut_probability(progress, self.p_cut) if self.mixing == "cut" else 0.0
            size = core.stem_size(inputs.shape[2:])
            plan = draw_plan(self.mixing, inputs.shape[0], members, size, self.alpha, p_cut, inputs.device)  # type: ignore[arg-type]
            logits, aux = model(inputs, plan, with_aux=True)
            ratios = plan.ratios
        root = 1.0 if self.mixing == "sum" else self.weight_root
        loss, per_member = mimo_loss(logits, targets, ratios, root)
        logs = {f"ce_{m}": float(v) for m, v in enumerate(per_member)}
        logs["p_cut"] = p_cut
        if aux["mask_loss"] is not None:
            loss = loss + self.mask_loss_weight * aux["mask_loss"]
            logs["mask_loss"] = float(aux["mask_loss"].detach())
        if self.l2:
            loss = loss + self.l2 * l2_penalty(core)
        logs["train_top1"] = float((logits.argmax(-1) == targets).float().mean())
        return loss, logs
