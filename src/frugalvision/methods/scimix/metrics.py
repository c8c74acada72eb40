"""How good the mixes are, judged by fixed reference models that never trained a row (spec §6).

For pairs (A, B) of held-out images of different classes and a mix of them:

- label fidelity: P(oracle(mix) = y_A) (for MixUp / CutMix: the parent with the larger weight);
- parent leakage: P(oracle(mix) = y_B);
- background inheritance: P(background classifier(mix) = background id of B) (composite data);
- background L1: mean |mix - background_B| over the pixels where neither parent's object is (both alphas 0;
  composite data; 0 for the exact composite).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from frugalvision.ssl import composite_mix, cutmix, mixup, rand_box
from frugalvision.ssl.mixing import Batch, SemanticMixer

__all__ = ["Pairs", "between_class_mixes", "draw_pairs", "mix_quality", "predict"]

_ZERO = 0.5 / 255  # an alpha that rounds to 0 in 8 bits


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted classes of ``model`` in eval mode (its mode is restored)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [model(images[i : i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


@dataclass(frozen=True)
class Pairs:
    """Semantic parents A and context parents B (dict batches), of different classes.

    Attributes:
        semantic: A's fields.
        context: B's fields.
    """

    semantic: dict[str, torch.Tensor]
    context: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(self.semantic["label"])


def draw_pairs(fields: Batch, count: int, seed: int) -> Pairs:
    """Up to ``count`` random pairs of images with different labels (float images in [0, 1])."""
    gen = torch.Generator().manual_seed(seed)
    n = len(fields["label"])
    first, second = torch.randperm(n, generator=gen), torch.randperm(n, generator=gen)
    keep = fields["label"][first] != fields["label"][second]
    first, second = first[keep][:count], second[keep][:count]

    def rows(index: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in fields.items():
            row = value[index]
            out[key] = row.float() / 255.0 if row.dtype == torch.uint8 else row
        return out

    return Pairs(rows(first), rows(second))


@torch.no_grad()
def mix_quality(
    mixes: torch.Tensor,
    pairs: Pairs,
    oracle: nn.Module,
    background_classifier: nn.Module | None = None,
    semantic_labels: torch.Tensor | None = None,
    context_labels: torch.Tensor | None = None,
) -> dict[str, float]:
    """Fidelity, leakage (and inheritance, background L1 when the pairs carry background ground truth).

    Args:
        mixes: one mix per pair.
        pairs: the parents.
        oracle: the held-out classifier.
        background_classifier: classifier of background ids (composite data).
        semantic_labels: the label the mix should carry (default: A's).
        context_labels: the other parent's label (default: B's).
    """
    y_a = pairs.semantic["label"] if semantic_labels is None else semantic_labels
    y_b = pairs.context["label"] if context_labels is None else context_labels
    predicted = predict(oracle, mixes)
    metrics = {
        "fidelity": float((predicted == y_a).float().mean()),
        "leakage": float((predicted == y_b).float().mean()),
    }
    if background_classifier is not None and "background_id" in pairs.context:
        found = predict(background_classifier, mixes)
        metrics["inheritance"] = float((found == pairs.context["background_id"]).float().mean())
    if "alpha" in pairs.semantic and "background" in pairs.context:
        outside = ((pairs.semantic["alpha"] <= _ZERO) & (pairs.context["alpha"] <= _ZERO)).float()
        error = (mixes.cpu() - pairs.context["background"]).abs().mean(1, keepdim=True)
        metrics["bg_l1"] = float((outside * error).sum() / outside.sum().clamp_min(1.0))
    return metrics


def semantic_mixes(mixer: SemanticMixer, pairs: Pairs, batch_size: int = 256) -> torch.Tensor:
    """``mixer(A, B)`` over all pairs, in batches (clamped to [0, 1])."""
    out = []
    for start in range(0, len(pairs), batch_size):
        part = slice(start, start + batch_size)
        semantic = {k: v[part] for k, v in pairs.semantic.items()}
        context = {k: v[part] for k, v in pairs.context.items()}
        with torch.no_grad():
            out.append(mixer(semantic, context).detach().cpu().clamp(0.0, 1.0))
    return torch.cat(out)


def between_class_mixes(pairs: Pairs, kind: str, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MixUp or CutMix of each pair with its own lam ~ Beta(1, 1); returns (mixes, larger-parent label, other label)."""
    gen = torch.Generator().manual_seed(seed)
    a, b = pairs.semantic["image"], pairs.context["image"]
    lams = torch.rand(len(a), generator=gen)  # Beta(1, 1) is uniform
    mixes, kept = torch.empty_like(a), torch.empty(len(a))
    for i in range(len(a)):
        both = torch.stack([a[i], b[i]])
        swap = torch.tensor([1, 0])
        if kind == "mixup":
            mixes[i], kept[i] = mixup(both, float(lams[i]), swap)[0], lams[i]
        else:
            box = rand_box(a.shape[-2], a.shape[-1], float(lams[i]), gen)
            image, lam = cutmix(both, box, swap)
            mixes[i], kept[i] = image[0], lam
    a_wins = kept >= 0.5
    y_a, y_b = pairs.semantic["label"], pairs.context["label"]
    return mixes, torch.where(a_wins, y_a, y_b), torch.where(a_wins, y_b, y_a)


def composite_mixes(pairs: Pairs) -> torch.Tensor:
    """The exact in-class composites of the pairs."""
    return composite_mix(pairs.semantic, pairs.context).clamp(0.0, 1.0)
