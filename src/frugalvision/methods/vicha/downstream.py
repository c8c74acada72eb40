"""ViCHA's downstream objectives and metrics as pure functions (the ALBEF fine-tuning recipes ViCHA inherits).

Retrieval: ITC whose positives are every pair of the same image, ITM with hard negatives of other images, then ITM
re-ranking of the ITC top-k at test time and recall with several captions per image. VQA: an answer classifier
trained on the answer weights, answer vocabulary, VQA accuracy. Grounding (weakly supervised): Grad-CAM on the
fusion cross-attention, proposal scoring, box IoU.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from frugalvision.errors import ConfigError, DataError

__all__ = [
    "answer_targets",
    "box_iou",
    "build_answer_vocabulary",
    "distill_classification_loss",
    "gradcam_map",
    "grounding_accuracy",
    "itm_rerank",
    "multi_caption_recall",
    "retrieval_itc_loss",
    "same_id",
    "score_proposals",
    "vqa_accuracy",
    "weighted_answer_loss",
]


# ------------------------------------------------------------------------------------------------ retrieval
def same_id(ids: Tensor) -> Tensor:
    """``[B, B]`` True where two rows come from the same image."""
    return ids[:, None] == ids[None, :]


def retrieval_itc_loss(
    image_feat: Tensor,
    text_feat: Tensor,
    image_ids: Tensor,
    temp: Tensor | float,
    image_feat_m: Tensor | None = None,
    text_feat_m: Tensor | None = None,
    alpha: float = 0.0,
) -> Tensor:
    """ALBEF's retrieval fine-tuning ITC: every pair of the same image is a positive (targets spread evenly).

    With momentum features the targets become ``alpha * softmax(momentum similarities) + (1 - alpha) * targets``
    (distillation). In-batch candidates (ALBEF also keeps an id-aware queue; see the README).

    Args:
        image_feat: ``[B, D]`` normalised image features.
        text_feat: ``[B, D]`` normalised text features.
        image_ids: ``[B]`` image id of each pair.
        temp: temperature.
        image_feat_m: ``[B, D]`` momentum image features (None: no distillation).
        text_feat_m: ``[B, D]`` momentum text features.
        alpha: distillation weight.
    """
    positives = same_id(image_ids).float()
    targets = positives / positives.sum(1, keepdim=True)
    sim_i2t = image_feat @ text_feat.T / temp
    sim_t2i = text_feat @ image_feat.T / temp
    targets_i2t = targets_t2i = targets
    if image_feat_m is not None and text_feat_m is not None and alpha > 0:
        with torch.no_grad():
            targets_i2t = alpha * F.softmax((image_feat_m @ text_feat_m.T / temp).float(), 1) + (1 - alpha) * targets
            targets_t2i = alpha * F.softmax((text_feat_m @ image_feat_m.T / temp).float(), 1) + (1 - alpha) * targets
    loss_i2t = -(F.log_softmax(sim_i2t.float(), 1) * targets_i2t).sum(1).mean()
    loss_t2i = -(F.log_softmax(sim_t2i.float(), 1) * targets_t2i).sum(1).mean()
    return (loss_i2t + loss_t2i) / 2


def itm_rerank(sim: Tensor, k: int, score: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """ALBEF's test-time re-ranking: each query's top-``k`` candidates by ITC get their ITM score, the rest -100.

    Args:
        sim: ``[Q, C]`` ITC similarities (queries x candidates).
        k: candidates re-scored per query (``k_test``: 256 COCO, 128 Flickr).
        score: ``(query indices [n], candidate indices [n]) -> ITM scores [n]``.

    Returns:
        ``[Q, C]`` scores.
    """
    k = min(k, sim.shape[1])
    top = sim.topk(k, dim=1).indices
    queries = torch.arange(sim.shape[0]).repeat_interleave(k)
    out = torch.full(sim.shape, -100.0)
    out[queries, top.reshape(-1)] = score(queries, top.reshape(-1)).float().cpu()
    return out


def multi_caption_recall(
    score_i2t: Tensor, score_t2i: Tensor, img2txt: Sequence[Sequence[int]], txt2img: Sequence[int]
) -> dict[str, float]:
    """ALBEF's ``itm_eval``: TR/IR R@1/5/10 (fractions) when an image has several captions.

    An image's rank is the best rank of any of its captions (ties in the query's favour, as
    :mod:`frugalvision.metrics.retrieval`); a caption's rank is that of its one image.
    """

    def rank(row: Tensor, targets: Sequence[int]) -> int:
        best = row[list(targets)].max()
        return int((row > best).sum()) + 1

    tr = np.array([rank(score_i2t[i], img2txt[i]) for i in range(score_i2t.shape[0])])
    ir = np.array([rank(score_t2i[j], [txt2img[j]]) for j in range(score_t2i.shape[0])])
    out = {f"tr_r{k}": float((tr <= k).mean()) for k in (1, 5, 10)}
    out.update({f"ir_r{k}": float((ir <= k).mean()) for k in (1, 5, 10)})
    out["r1_mean"] = (out["tr_r1"] + out["ir_r1"]) / 2
    out["r_mean"] = sum(out[f"{d}_r{k}"] for d in ("tr", "ir") for k in (1, 5, 10)) / 6
    return out


# ------------------------------------------------------------------------------------------------ classification
def distill_classification_loss(logits: Tensor, targets: Tensor, logits_m: Tensor | None, alpha: float) -> Tensor:
    """ALBEF's fine-tuning loss of NLVR2 and SNLI-VE: ``(1 - alpha) CE + alpha soft-CE(softmax(momentum logits))``."""
    loss = F.cross_entropy(logits.float(), targets)
    if logits_m is None or alpha == 0:
        return loss
    soft = -(F.log_softmax(logits.float(), 1) * F.softmax(logits_m.float(), 1)).sum(1).mean()
    return (1 - alpha) * loss + alpha * soft


def build_answer_vocabulary(
    answer_lists: Iterable[Sequence[str]], min_count: int = 1, max_size: int | None = None
) -> list[str]:
    """The answers of a VQA classifier: answers given at least ``min_count`` times, most frequent first.

    Ties are broken alphabetically; ``max_size`` keeps the most frequent (VQA v2 classifiers keep 3,129).
    """
    if min_count < 1:
        raise ConfigError(f"min_count={min_count} is invalid; use >= 1")
    counts = Counter(answer for answers in answer_lists for answer in answers)
    ranked = sorted((a for a, c in counts.items() if c >= min_count), key=lambda a: (-counts[a], a))
    return ranked[:max_size] if max_size is not None else ranked


def answer_targets(answer_lists: Sequence[Sequence[str]], vocabulary: Sequence[str]) -> Tensor:
    """ALBEF's answer weights as a target distribution ``[B, A]``: each answer's share of the annotators.

    Answers outside the vocabulary are dropped (a row whose answers all are gets zero weight, i.e. no loss).
    """
    index = {answer: i for i, answer in enumerate(vocabulary)}
    targets = torch.zeros(len(answer_lists), len(vocabulary))
    for row, answers in enumerate(answer_lists):
        for answer in answers:
            if answer in index:
                targets[row, index[answer]] += 1.0 / len(answers)
    return targets


def weighted_answer_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """``-sum_a w_a log p(a)`` averaged over questions: ALBEF's answer-weighted loss for a classifier."""
    return -(F.log_softmax(logits.float(), 1) * targets).sum(1).mean()


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """The VQA accuracy of one prediction: ``min(1, #annotators who gave it / 3)``.

    (The official script also averages over the ten leave-one-out subsets of annotators and normalises punctuation
    and numbers; with ten identical answers, as the caption-world ones, both give 0 or 1.)
    """
    return min(1.0, sum(answer == prediction for answer in answers) / 3.0)


# ------------------------------------------------------------------------------------------------ grounding
def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``(x, y, w, h)`` boxes over the pixels they cover (inclusive ends, the RefCOCO convention).

    The official ``computeIoU`` tests ``inter_x1 < inter_x2``, so boxes that share exactly one pixel row or column
    get 0 instead of their one-pixel overlap; here ``<=``.
    """
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[0] + a[2] - 1, b[0] + b[2] - 1), min(a[1] + a[3] - 1, b[1] + b[3] - 1)
    inter = (x2 - x1 + 1) * (y2 - y1 + 1) if x1 <= x2 and y1 <= y2 else 0.0
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter) / union if union > 0 else 0.0


def gradcam_map(probs: Tensor, grads: Tensor, text_valid: Tensor) -> Tensor:
    """ALBEF's Grad-CAM of a cross-attention: ``mean_heads, valid text tokens (probs * relu(grads))``.

    Args:
        probs: ``[N, H, L, M]`` attention probabilities of the text tokens over the image tokens.
        grads: ``[N, H, L, M]`` gradients of the ITM match score with respect to ``probs``.
        text_valid: ``[N, L]`` valid text tokens.

    Returns:
        ``[N, M]`` map over the image tokens. (The official mean runs over the padded length, which rescales each
        example but does not change its ranking of boxes.)
    """
    cam = (probs * grads.clamp(min=0)).mean(1)
    weights = text_valid.to(cam.dtype)[..., None]
    return (cam * weights).sum(1) / weights.sum(1).clamp_min(1)


def score_proposals(
    cam: Tensor, image_size: tuple[int, int], boxes: Sequence[Sequence[float]], alpha: float = 0.5
) -> int:
    """Index of the proposal with the highest Grad-CAM mass: ``sum(cam in box) / area ** alpha`` (ALBEF).

    The ``g x g`` patch map is resized (bicubic) to the image, as the official evaluation does. Unlike the official
    loop, whose ``pred_box`` keeps the previous reference's box when no score exceeds 0, the arg-max is always
    taken over this image's proposals.

    Args:
        cam: ``[g, g]`` map over the patches.
        image_size: ``(height, width)``.
        boxes: ``(x, y, w, h)`` proposals.
        alpha: area exponent [0.5].
    """
    if len(boxes) == 0:
        raise DataError("no box proposals for this image; grounding needs at least one detection per image")
    mask = F.interpolate(cam[None, None].float(), size=image_size, mode="bicubic", align_corners=False)[0, 0]
    scores = []
    for x, y, w, h in (box[:4] for box in boxes):
        region = mask[int(y) : int(y + h), int(x) : int(x + w)]
        scores.append(float(region.sum()) / max(w * h, 1e-6) ** alpha)
    return int(np.argmax(scores))


def grounding_accuracy(predicted: Sequence[Sequence[float]], truth: Sequence[Sequence[float]]) -> float:
    """Fraction of references whose predicted box has IoU >= 0.5 with the ground truth."""
    if len(predicted) != len(truth) or not truth:
        raise DataError(f"{len(predicted)} predicted boxes for {len(truth)} references; pass one per reference")
    return float(np.mean([box_iou(p, t) >= 0.5 for p, t in zip(predicted, truth, strict=True)]))
