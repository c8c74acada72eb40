"""Feature-sharing measures of a MIMO network (spec section 2.4; which of them MixMo's notebook has: section 8, M6).

* :func:`encoder_overlap`: per-channel L1 filter norms of the M input encoders, each divided by its maximum,
  ``O = sum_c min_m n_m(c) / sum_c max_m n_m(c)`` (1: the members use the same stem channels, 0: disjoint ones).
  MixMo's notebook plots the raw norms with a min-bar; the normalised overlap score is OURS.
* :func:`head_overlap`: the same score on the heads' per-channel weight norms ``||W_m[:, c]||_2``.
* :func:`active_filters`: MixMo's notebook cell 24: per core conv layer (weights named ``conv``, encoders and
  shortcuts excluded) the fraction of filters whose L1 norm over the layer's largest exceeds t (strict), averaged
  over layers.
* :func:`channel_ablation`: ``a_m(c)`` = NLL increase of member m when channel c of the last shared map is zeroed;
  sharing = Spearman(a_i, a_j); transfer = member j's drop when member i's top 10 % channels are zeroed / member
  i's own drop (both averaged over member pairs).
* :func:`solo_cka`: linear CKA between the members' pooled shared features when only input m is fed
  (``z = M * c_m(x)``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from frugalvision.methods.mimo.model import MimoNetwork

__all__ = [
    "active_filters",
    "channel_ablation",
    "encoder_overlap",
    "filter_norms",
    "head_overlap",
    "linear_cka",
    "norm_overlap",
    "solo_cka",
    "solo_features",
]


def norm_overlap(norms: Sequence[Tensor]) -> float:
    """``sum_c min_m n_m(c) / sum_c max_m n_m(c)`` of per-channel norms, each first divided by its maximum."""
    scaled = torch.stack([n.double() / n.double().max().clamp_min(1e-12) for n in norms])
    return float(scaled.min(0).values.sum() / scaled.max(0).values.sum().clamp_min(1e-12))


def filter_norms(conv: nn.Conv2d) -> Tensor:
    """Per-output-filter L1 norms of a convolution."""
    return conv.weight.detach().abs().sum((1, 2, 3))


def _first_conv(module: nn.Module) -> nn.Conv2d:
    return next(m for m in module.modules() if isinstance(m, nn.Conv2d))


def encoder_overlap(encoders: Sequence[nn.Module]) -> float:
    """Filter-norm overlap of the members' stem convolutions (identical: 1, disjoint channel supports: 0)."""
    return norm_overlap([filter_norms(_first_conv(e)) for e in encoders])


def head_overlap(heads: Sequence[nn.Linear]) -> float:
    """Overlap of the heads' per-input-channel weight norms ``||W_m[:, c]||_2``."""
    return norm_overlap([h.weight.detach().norm(dim=0) for h in heads])


def active_filters(model: MimoNetwork, thresholds: Sequence[float] = (0.2, 0.3, 0.4, 0.5)) -> dict[float, float]:
    """MixMo's active-filter fraction of the shared core at each threshold (strict ``>``, mean over layers)."""
    layers = []
    for part in (model.early, model.last):
        for name, module in part.named_modules():
            if isinstance(module, nn.Conv2d) and "conv" in name.rsplit(".", 1)[-1]:
                norms = filter_norms(module)
                layers.append(norms / norms.max().clamp_min(1e-12))
    if not layers:
        return {t: float("nan") for t in thresholds}
    return {t: sum(float((n > t).double().mean()) for n in layers) / len(layers) for t in thresholds}


def _member_nll(model: MimoNetwork, shared: Tensor, stems: Tensor, labels: Tensor) -> Tensor:
    """``[M]`` mean NLL of each member from a shared map (inference: no masks)."""
    logits = model.classify(model.member_features(shared, stems)[0])
    members = logits.shape[1]
    return torch.stack([F.cross_entropy(logits[:, m].double(), labels) for m in range(members)])


@torch.no_grad()
def channel_ablation(
    model: MimoNetwork, images: Tensor, labels: Tensor, top_fraction: float = 0.1, chunk: int = 500
) -> dict[str, float]:
    """Cross-member channel ablation on the last shared map (same image on every input, as at inference).

    Args:
        model: the MIMO network (M >= 2).
        images: ``[N, C, H, W]`` normalised images (validation).
        labels: ``[N]`` labels.
        top_fraction: share of member i's most important channels zeroed for the transfer score.
        chunk: images per forward pass.

    Returns:
        ``{"spearman", "transfer"}`` averaged over member pairs (transfer over the pairs whose first member's
        top channels raise its own NLL).
    """
    from scipy.stats import spearmanr

    model.eval()
    batches = [(images[i : i + chunk], labels[i : i + chunk]) for i in range(0, len(images), chunk)]
    cached = [(model.encode(x), y) for x, y in batches]
    cached = [(model.shared(stems), stems, y) for stems, y in cached]

    def nll_with(zeroed: Tensor | None) -> Tensor:
        total = torch.zeros(model.num_members, dtype=torch.float64)
        for shared, stems, y in cached:
            masked = shared if zeroed is None else shared * (~zeroed).to(shared.dtype)[None, :, None, None]
            total += _member_nll(model, masked, stems, y) * len(y)
        return total / len(images)

    channels = cached[0][0].shape[1]
    base = nll_with(None)
    eye = torch.eye(channels, dtype=torch.bool)
    drops = torch.stack([nll_with(eye[c]) - base for c in range(channels)], 1)  # [M, C]
    pairs = list(itertools.combinations(range(model.num_members), 2))
    rho = [float(spearmanr(drops[i].numpy(), drops[j].numpy())[0]) for i, j in pairs]
    top = max(1, round(top_fraction * channels))
    transfers = []
    for i, j in itertools.permutations(range(model.num_members), 2):
        zeroed = torch.zeros(channels, dtype=torch.bool)
        zeroed[drops[i].topk(top).indices] = True
        drop = nll_with(zeroed) - base
        transfers.append(float(drop[j] / drop[i]) if float(drop[i]) > 1e-9 else float("nan"))
    valid = [t for t in transfers if math.isfinite(t)]  # a member whose top channels do not hurt it is skipped
    return {"spearman": sum(rho) / len(rho), "transfer": sum(valid) / len(valid) if valid else math.nan}


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` of column-centred ``[N, D]`` features."""
    x = x.double() - x.double().mean(0)
    y = y.double() - y.double().mean(0)
    cross = (y.T @ x).norm() ** 2
    return float(cross / ((x.T @ x).norm() * (y.T @ y).norm()).clamp_min(1e-300))


@torch.no_grad()
def solo_features(model: MimoNetwork, images: Tensor, member: int, chunk: int = 500) -> Tensor:
    """``[N, D]`` pooled shared features ``GAP(g(M * c_m(x)))`` when only input ``member`` is fed."""
    model.eval()
    out = []
    for i in range(0, len(images), chunk):
        stems = model.encode(images[i : i + chunk])
        masks = torch.zeros(stems.shape[0], stems.shape[1], *stems.shape[3:], device=stems.device)
        masks[:, member] = 1.0
        out.append(model.shared(stems, masks).mean((2, 3)))
    return torch.cat(out)


def solo_cka(model: MimoNetwork, images: Tensor) -> float:
    """Mean linear CKA over member pairs of their solo-pass features (1: the members compute the same features)."""
    features = [solo_features(model, images, m) for m in range(model.num_members)]
    pairs = list(itertools.combinations(range(model.num_members), 2))
    return sum(linear_cka(features[i], features[j]) for i, j in pairs) / len(pairs)
