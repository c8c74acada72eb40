"""ViCHA's objectives as pure functions.

ITC with momentum distillation and queues, hierarchical ITC with rank offsets, safe ITM hard-negative sampling, MLM
masking and distillation, MAE-style MIM, queue and EMA updates.

Every function is tensors in, tensors out; :mod:`.objectives` composes them on a :class:`~.model.ViCHAModel`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

__all__ = [
    "ema_update",
    "enqueue",
    "gathered_infonce",
    "itc_distill_loss",
    "mask_tokens",
    "mim_loss",
    "mlm_distill_loss",
    "patchify",
    "random_masking",
    "sample_negatives",
    "soft_cross_entropy",
    "unpatchify",
]


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """``-mean_i sum_k targets[i, k] log softmax(logits)[i, k]``."""
    return -(F.log_softmax(logits.float(), dim=1) * targets).sum(1).mean()


def itc_distill_loss(
    image_feat: Tensor,
    text_feat: Tensor,
    image_feat_m: Tensor,
    text_feat_m: Tensor,
    image_queue: Tensor,
    text_queue: Tensor,
    temp: Tensor | float,
    alpha: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """ALBEF's image-text contrastive loss with momentum distillation (spec 2.2.1).

    Candidates are the batch's momentum features followed by the queue; targets are
    ``alpha * softmax(momentum similarities) + (1 - alpha) * one-hot(i)``.

    Args:
        image_feat: ``[B, D]`` normalised online image features.
        text_feat: ``[B, D]`` normalised online text features.
        image_feat_m: ``[B, D]`` normalised momentum image features.
        text_feat_m: ``[B, D]`` normalised momentum text features.
        image_queue: ``[Q, D]`` queued momentum image features.
        text_queue: ``[Q, D]`` queued momentum text features.
        temp: temperature.
        alpha: distillation weight.

    Returns:
        ``(loss, sim_i2t [B, B + Q], sim_t2i [B, B + Q])`` (the similarities feed the ITM sampler).
    """
    text_all = torch.cat([text_feat_m, text_queue.to(text_feat_m.dtype)])
    image_all = torch.cat([image_feat_m, image_queue.to(image_feat_m.dtype)])
    sim_i2t = image_feat @ text_all.T / temp
    sim_t2i = text_feat @ image_all.T / temp
    with torch.no_grad():
        one_hot = torch.zeros_like(sim_i2t, dtype=torch.float32)
        one_hot.fill_diagonal_(1.0)
        targets_i2t = alpha * F.softmax((image_feat_m @ text_all.T / temp).float(), 1) + (1 - alpha) * one_hot
        targets_t2i = alpha * F.softmax((text_feat_m @ image_all.T / temp).float(), 1) + (1 - alpha) * one_hot
    loss = (soft_cross_entropy(sim_i2t, targets_i2t) + soft_cross_entropy(sim_t2i, targets_t2i)) / 2
    return loss, sim_i2t, sim_t2i


def gathered_infonce(
    image_feat: Tensor, text_feat: Tensor, image_keys: Tensor, text_keys: Tensor, temp: Tensor | float, offset: int
) -> Tensor:
    """One H-ITC level: this rank's queries against every rank's keys, positives at ``offset + i`` (spec 2.2.2).

    The official code puts the positives at columns ``0..B-1`` on every rank (right only on rank 0); here rank
    ``r`` passes ``offset = r * B`` and its loss equals the single-process loss on its rows.

    Args:
        image_feat: ``[B, D]`` this rank's normalised image features (queries of i2t).
        text_feat: ``[B, D]`` this rank's normalised text features (queries of t2i).
        image_keys: ``[W * B, D]`` all ranks' image features in rank order (keys of t2i).
        text_keys: ``[W * B, D]`` all ranks' text features in rank order (keys of i2t).
        temp: temperature.
        offset: row offset of this rank in the gathered keys.

    Returns:
        ``(CE_i2t + CE_t2i) / 2``.
    """
    targets = torch.arange(image_feat.shape[0], device=image_feat.device) + offset
    loss_i2t = F.cross_entropy((image_feat @ text_keys.T / temp).float(), targets)
    loss_t2i = F.cross_entropy((text_feat @ image_keys.T / temp).float(), targets)
    return (loss_i2t + loss_t2i) / 2


def sample_negatives(sim: Tensor, generator: torch.Generator | None = None, exclude: Tensor | None = None) -> Tensor:
    """One hard negative per row, drawn with probability ``softmax(sim[i, j]), j != i`` (ALBEF's ITM sampler).

    Never samples the positive and never crashes: the diagonal (and ``exclude``) is removed before the softmax (so an
    underflowing row cannot become all zeros), and a row whose weights are not finite falls back to uniform over the
    allowed columns. Needs ``B >= 2`` (with one pair there is no negative).

    Args:
        sim: ``[B, B]`` similarities, positives on the diagonal.
        generator: random source (default: the global one).
        exclude: ``[B, B]`` True where column ``j`` must not be a negative of row ``i`` (fine-tuning: another caption
            of the same image, as ALBEF masks same-id pairs). A row with every column excluded falls back to every
            non-diagonal column.

    Returns:
        ``[B]`` column indices.
    """
    size = sim.shape[0]
    if size < 2 or sim.shape[1] != size:
        raise ValueError(f"sample_negatives needs a square [B, B] similarity with B >= 2, got {tuple(sim.shape)}")
    eye = torch.eye(size, dtype=torch.bool, device=sim.device)
    banned = eye if exclude is None else eye | exclude.to(sim.device)
    banned = torch.where(banned.all(1, keepdim=True), eye, banned)
    weights = F.softmax(sim.detach().float().masked_fill(banned, float("-inf")), dim=1)
    bad = ~torch.isfinite(weights).all(1) | (weights.sum(1) <= 0)
    if bad.any():
        uniform = (~banned).float() / (~banned).sum(1, keepdim=True)
        weights = torch.where(bad[:, None], uniform, weights)
    return torch.multinomial(weights, 1, generator=generator).squeeze(1)


def mask_tokens(
    ids: Tensor,
    vocab_size: int,
    mask_id: int,
    protected: Iterable[int],
    probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT/ALBEF masking: choose each eligible token with ``probability``; 80 % -> [MASK], 10 % random, 10 % kept.

    Args:
        ids: ``[B, L]`` token ids.
        vocab_size: random replacements are drawn from ``[0, vocab_size)`` (as the official code).
        mask_id: id of [MASK].
        protected: ids never masked (official: PAD and CLS; SEP stays maskable there).
        probability: masking probability.
        generator: random source.

    Returns:
        ``(masked ids, labels)`` with ``labels = -100`` where not masked.
    """
    device = ids.device
    chosen = torch.rand(ids.shape, generator=generator, device=device) < probability
    for token in protected:
        chosen &= ids != token
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    replaced = (torch.rand(ids.shape, generator=generator, device=device) < 0.8) & chosen
    randomised = (torch.rand(ids.shape, generator=generator, device=device) < 0.5) & chosen & ~replaced
    words = torch.randint(vocab_size, ids.shape, generator=generator, device=device)
    masked = torch.where(replaced, torch.full_like(ids, mask_id), ids)
    masked = torch.where(randomised, words, masked)
    return masked, labels


def mlm_distill_loss(logits: Tensor, labels: Tensor, logits_m: Tensor | None, alpha: float) -> Tensor:
    """``(1 - alpha) CE(logits, labels) + alpha soft-CE(logits, softmax(logits_m))`` over the masked tokens.

    Args:
        logits: ``[M, V]`` online logits at the masked positions.
        labels: ``[M]`` original tokens.
        logits_m: ``[M, V]`` momentum logits at the same positions (None: no distillation).
        alpha: distillation weight.
    """
    loss = F.cross_entropy(logits.float(), labels)
    if logits_m is None or alpha == 0:
        return loss
    distill = soft_cross_entropy(logits, F.softmax(logits_m.float(), dim=1))
    return (1 - alpha) * loss + alpha * distill


def patchify(images: Tensor, patch: int) -> Tensor:
    """``[N, C, H, W]`` -> ``[N, L, p * p * C]`` in MAE's order (rows of patches, then pixel row, column, channel)."""
    n, c, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch}")
    x = images.reshape(n, c, h // patch, patch, w // patch, patch)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(n, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(patches: Tensor, patch: int, channels: int = 3) -> Tensor:
    """Inverse of :func:`patchify` for square images."""
    n, length, _ = patches.shape
    side = int(round(length**0.5))
    x = patches.reshape(n, side, side, patch, patch, channels)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(n, channels, side * patch, side * patch)


def random_masking(
    n: int, length: int, mask_ratio: float, device: torch.device | str = "cpu", generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """MAE's per-sample random masking by argsort of uniform noise.

    Returns:
        ``(ids_keep [N, int(L (1 - ratio))], mask [N, L] with 1 = removed, ids_restore [N, L])``; ``ids_restore``
        is the inverse permutation of the shuffle.
    """
    keep = int(length * (1 - mask_ratio))
    noise = torch.rand(n, length, generator=generator, device=device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(n, length, device=device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return ids_shuffle[:, :keep], mask, ids_restore


def mim_loss(pred: Tensor, target_patches: Tensor, mask: Tensor, norm_pix: bool = True) -> Tensor:
    """Per-patch MSE against (per-patch normalised) pixels, averaged over the masked patches only.

    Args:
        pred: ``[N, L, P]`` predicted patches.
        target_patches: ``[N, L, P]`` input pixels (:func:`patchify`).
        mask: ``[N, L]``, 1 on removed (masked) patches.
        norm_pix: normalise each target patch by its mean and variance (eps 1e-6), as MAE and ViCHA.
    """
    target = target_patches.float()
    if norm_pix:
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    per_patch = ((pred.float() - target) ** 2).mean(-1)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1)


@torch.no_grad()
def enqueue(queue: Tensor, pointer: int, features: Tensor) -> int:
    """Write ``features [n, D]`` into the ring buffer ``queue [Q, D]`` at ``pointer`` (wrapping); return the new one.

    Unlike the official code, ``Q`` need not be a multiple of the batch; a batch larger than the queue keeps its last
    ``Q`` rows.
    """
    size = queue.shape[0]
    features = features.detach().to(queue.dtype)[-size:]
    n = features.shape[0]
    rows = (pointer + torch.arange(n, device=queue.device)) % size
    queue[rows] = features
    return int((pointer + n) % size)


@torch.no_grad()
def ema_update(momentum: nn.Module, online: nn.Module, decay: float) -> None:
    """``p_m <- decay * p_m + (1 - decay) * p`` for every parameter of ``momentum`` (matched by name in ``online``)."""
    source = dict(online.named_parameters())
    for name, target in momentum.named_parameters():
        target.mul_(decay).add_(source[name].detach().to(target.dtype), alpha=1 - decay)
