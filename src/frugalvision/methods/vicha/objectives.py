"""ViCHA's pre-training losses on a :class:`~.model.ViCHAModel`: ``L = L_MLM + L_ITC + L_ITM + L_MIM``.

``L_ITC = L_top + hitc_weight * sum_l w_l L_l`` over the hierarchical levels when the model has them (spec 2.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from frugalvision.engine.distributed import all_gather_with_grad, rank_and_world_size
from frugalvision.errors import ConfigError
from frugalvision.methods.vicha.functional import (
    gathered_infonce,
    itc_distill_loss,
    mask_tokens,
    mim_loss,
    mlm_distill_loss,
    patchify,
    random_masking,
    sample_negatives,
)

if TYPE_CHECKING:
    from frugalvision.methods.vicha.model import Batch, ImageOutput, TextOutput, ViCHAModel

__all__ = ["FeatureQueue", "ObjectiveConfig", "PretrainOutput", "gather_keys", "hitc_loss", "pretrain_losses"]


@dataclass(frozen=True)
class ObjectiveConfig:
    """Loss settings (paper values in brackets).

    Attributes:
        hitc_weight: global weight of the hierarchical levels [0.1].
        hitc_level_weights: per-level weights w_l (empty: all 1) [1, 1, 1, 1, 1].
        hitc_detach_keys: stop gradients through the gathered keys of every H-ITC level, as the official
            ``concat_all_gather`` does (even in one process) [True]; False lets gradients flow through the gather.
        mlm_probability: masking probability [0.15].
        mlm_mask_sep: SEP may be masked (official: only PAD and CLS are protected) [True].
        mim_weight: weight of U-MIM (0 disables it even when the model has a decoder) [1].
        mask_ratio: MIM masking ratio [0.75].
        norm_pix: per-patch normalised MIM targets [True].
        pad_id: PAD id; cls_id, sep_id, mask_id: the tokenizer's special ids.
    """

    hitc_weight: float = 0.1
    hitc_level_weights: tuple[float, ...] = ()
    hitc_detach_keys: bool = True
    mlm_probability: float = 0.15
    mlm_mask_sep: bool = True
    mim_weight: float = 1.0
    mask_ratio: float = 0.75
    norm_pix: bool = True
    pad_id: int = 0
    cls_id: int = 2
    sep_id: int = 3
    mask_id: int = 4

    def validate(self) -> None:
        """Raise ConfigError on an invalid value."""
        if not 0 < self.mlm_probability < 1 or not 0 < self.mask_ratio < 1:
            raise ConfigError("mlm_probability and mask_ratio must be in (0, 1)")
        if self.hitc_weight < 0 or self.mim_weight < 0:
            raise ConfigError("hitc_weight and mim_weight must be >= 0")


class FeatureQueue(torch.nn.Module):
    """The ITC queues of momentum features (``[size, dim]`` each, L2-normalised random init) and their pointer."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("image", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("text", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    def push(self, image_feat: Tensor, text_feat: Tensor) -> None:
        """Enqueue (already gathered) momentum features, wrapping around."""
        from frugalvision.methods.vicha.functional import enqueue

        pointer = int(self.pointer)
        enqueue(self.image, pointer, image_feat)
        self.pointer.fill_(enqueue(self.text, pointer, text_feat))


class PretrainOutput(NamedTuple):
    """The total loss, scalar logs, and the momentum features the task enqueues after the step."""

    loss: Tensor
    logs: dict[str, float]
    image_feat_m: Tensor
    text_feat_m: Tensor


def gather_keys(features: Tensor, detach: bool) -> Tensor:
    """Every rank's features in rank order; detached (the official no-grad gather) or differentiable."""
    if detach:
        with torch.no_grad():
            return all_gather_with_grad(features.detach()).detach()
    return all_gather_with_grad(features)


def hitc_loss(
    model: ViCHAModel, image: ImageOutput, text: TextOutput, level_weights: tuple[float, ...], detach_keys: bool
) -> tuple[Tensor, list[float]]:
    """``sum_l w_l L_l`` over the model's H-ITC levels (``model.level_pairs``), positives at this rank's offset."""
    rank, _ = rank_and_world_size()
    weights = level_weights or (1.0,) * len(model.level_pairs)
    total = image.tokens.new_zeros((), dtype=torch.float32)
    per_level = []
    for index in range(len(model.level_pairs)):
        v = F.normalize(model.hitc_vision[index](image.levels[index]), dim=-1)
        t = F.normalize(model.hitc_text[index](text.levels[index]), dim=-1)
        keys_v, keys_t = gather_keys(v, detach_keys), gather_keys(t, detach_keys)
        level = gathered_infonce(v, t, keys_v, keys_t, model.temp, offset=rank * v.shape[0])
        per_level.append(float(level.detach()))
        total = total + weights[index] * level
    return total, per_level


def itm_loss(
    model: ViCHAModel,
    image: ImageOutput,
    text: TextOutput,
    sim_i2t: Tensor,
    sim_t2i: Tensor,
    exclude: Tensor | None = None,
) -> Tensor:
    """ALBEF's ITM: B positives, a hard negative image per text and a hard negative text per image.

    ``sim_i2t`` / ``sim_t2i`` hold at least the B in-batch columns (extra queue columns are ignored); ``exclude``
    (B x B, True = not a negative, e.g. another caption of the same image) is never sampled.
    """
    size = image.tokens.shape[0]
    positive = model.fuse(text.states, text.valid, image.tokens, image.valid)
    if size < 2:  # one pair has no negative: the head is kept in the graph with a zero loss
        return model.itm_logits(positive, text.valid).sum() * 0.0
    negative_image = sample_negatives(sim_t2i[:, :size], exclude=exclude)
    negative_text = sample_negatives(sim_i2t[:, :size], exclude=exclude)
    texts = torch.cat([text.states, text.states[negative_text]])
    text_valid = torch.cat([text.valid, text.valid[negative_text]])
    images = torch.cat([image.tokens[negative_image], image.tokens])
    image_valid = torch.cat([image.valid[negative_image], image.valid])
    negative = model.fuse(texts, text_valid, images, image_valid)
    logits = model.itm_logits(torch.cat([positive, negative]), torch.cat([text.valid, text_valid]))
    labels = torch.cat([torch.ones(size), torch.zeros(2 * size)]).long().to(logits.device)
    return F.cross_entropy(logits.float(), labels)


def _mlm_loss(
    model: ViCHAModel,
    momentum: ViCHAModel,
    text_ids: Tensor,
    image: ImageOutput,
    image_m: ImageOutput,
    alpha: float,
    cfg: ObjectiveConfig,
) -> Tensor:
    """Masked language modelling through the fusion layers, distilled from the momentum model (ALBEF)."""
    protected = (cfg.pad_id, cfg.cls_id) if cfg.mlm_mask_sep else (cfg.pad_id, cfg.cls_id, cfg.sep_id)
    vocab = model.text.cfg.vocab_size
    masked, labels = mask_tokens(text_ids, vocab, cfg.mask_id, protected, cfg.mlm_probability)
    chosen = labels != -100
    text = model.encode_text(masked)
    fused = model.fuse(text.states, text.valid, image.tokens, image.valid)
    if not bool(chosen.any()):  # nothing masked: keep the head in the graph with a zero loss
        return model.text.mlm(fused[:, :1]).sum() * 0.0
    logits = model.text.mlm(fused[chosen])
    logits_m = None
    if alpha > 0:
        with torch.no_grad():
            text_m = momentum.encode_text(masked)
            fused_m = momentum.fuse(text_m.states, text_m.valid, image_m.tokens, image_m.valid)
            logits_m = momentum.text.mlm(fused_m[chosen])
    return mlm_distill_loss(logits, labels[chosen], logits_m, alpha)


def _mim_loss(model: ViCHAModel, images: Tensor, cfg: ObjectiveConfig) -> Tensor:
    """U-MIM on a second, concept-free pass over the same images."""
    patch = model.visual.patch_size
    ids_keep, mask, ids_restore = random_masking(
        images.shape[0], model.visual.num_patches, cfg.mask_ratio, device=images.device
    )
    pred = model.mim_predict(images, ids_keep, ids_restore)
    return mim_loss(pred, patchify(images, patch), mask, cfg.norm_pix)


def pretrain_losses(
    model: ViCHAModel, momentum: ViCHAModel, batch: Batch, queue: FeatureQueue, alpha: float, cfg: ObjectiveConfig
) -> PretrainOutput:
    """All pre-training losses of one (per-rank) batch.

    Args:
        model: the online model (its parts decide which objectives run: H-ITC levels, concepts, MIM decoder).
        momentum: its momentum copy (:func:`~.model.momentum_copy`), updated by the caller after each step.
        batch: images, caption ids and concept ids.
        queue: the momentum-feature queues (read here, written by the caller with the gathered features).
        alpha: distillation weight (ramped 0 -> 0.4 over the first epoch by the task).
        cfg: loss settings.
    """
    with torch.no_grad():
        model.temp.clamp_(0.001, 0.5)
    hierarchical = bool(model.level_pairs)
    image = model.encode_image(batch.images, batch.concept_ids, levels=hierarchical)
    text = model.encode_text(batch.text_ids, levels=hierarchical)
    image_feat, text_feat = model.image_feature(image), model.text_feature(text)
    with torch.no_grad():
        image_m = momentum.encode_image(batch.images, batch.concept_ids)
        text_m = momentum.encode_text(batch.text_ids)
        image_feat_m, text_feat_m = momentum.image_feature(image_m), momentum.text_feature(text_m)
    loss_itc, sim_i2t, sim_t2i = itc_distill_loss(
        image_feat, text_feat, image_feat_m, text_feat_m, queue.image, queue.text, model.temp, alpha
    )
    logs = {"loss_itc": float(loss_itc.detach())}
    loss = loss_itc
    if hierarchical:
        loss_hitc, levels = hitc_loss(model, image, text, cfg.hitc_level_weights, cfg.hitc_detach_keys)
        loss = loss + cfg.hitc_weight * loss_hitc
        logs.update({"loss_hitc": float(loss_hitc.detach())} | {f"loss_hitc_{i}": v for i, v in enumerate(levels)})
    loss_itm = itm_loss(model, image, text, sim_i2t, sim_t2i)
    loss_mlm = _mlm_loss(model, momentum, batch.text_ids, image, image_m, alpha, cfg)
    loss = loss + loss_itm + loss_mlm
    logs.update({"loss_itm": float(loss_itm.detach()), "loss_mlm": float(loss_mlm.detach())})
    if model.mim_decoder is not None and cfg.mim_weight > 0:
        loss_mim = _mim_loss(model, batch.images, cfg)
        loss = loss + cfg.mim_weight * loss_mim
        logs["loss_mim"] = float(loss_mim.detach())
    logs["temp"] = float(model.temp.detach())
    return PretrainOutput(loss, logs, image_feat_m, text_feat_m)
