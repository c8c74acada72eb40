"""The generator's losses (our reading, spec §2.2), as pure functions of the generator, a frozen teacher and a batch.

For images x with targets y_hat and mask m (labels where known, else the teacher's confident pseudo-labels) and
random pairs (A, B) = (x, x[perm]), with ``mix = G(E_b(B), E_s(A))``:

- L_rec = mean |G(E_b(x), E_s(x)) - x|                                        (reconstruction, L1)
- L_sem = mean_A m_A CE(T(mix), y_hat_A)                                       (the mix keeps A's class, frozen T)
- L_cls = mean m_x CE(h_s(E_s(x)), y_hat_x)                                    (the style code carries the class)
- L_cyc = rel(E_s(mix), sg(E_s(A))) + rel(E_b(mix), sg(E_b(B)))                 (both codes survive the swap;
          rel(u, v) = mean ||u - v||^2 / mean ||v||^2, so that shrinking or inflating a code cannot game it)
- L_swap = mean_x m_x m_x' |G(E_b(x), E_s(x')) - x| for x' another image of x's (pseudo-)class in the batch
          (in-class swap: the semantic code may only hold what images of a class share; the rest must be in b)
- L_bg  = sum (1 - alpha_mix) |mix - B| / (sum (1 - alpha_mix) + 1e-6), L_area = relu(mean alpha_mix - a_max)
          (``layered`` decoder only: B's background kept outside the object, which may not cover everything)
- L_adv = softplus(-D(mix)) for G; softplus(-D(x)) + softplus(D(mix)) + gamma/2 ||grad_x D(x)||^2 for D (optional)

L_G = l_rec L_rec + l_sem L_sem + l_cls L_cls + l_cyc L_cyc + l_swap L_swap + l_bg (L_bg + L_area) + l_adv L_adv.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from frugalvision.methods.scimix.generator import Discriminator, Rendered, SciMixGenerator

__all__ = [
    "LossWeights",
    "discriminator_loss",
    "generator_loss",
    "relative_mse",
    "same_class_partners",
    "targets_and_mask",
]


@dataclass(frozen=True)
class LossWeights:
    """Weights of the generator's loss terms (all ours).

    Attributes:
        rec: lambda_rec.
        sem: lambda_sem (0.1; the spec's 1 collapsed the decoder on FashionComposite, see the README).
        cls: lambda_cls.
        cyc: lambda_cyc.
        swap: lambda_swap (in-class swap reconstruction).
        bg: lambda_bg (``layered`` only).
        adv: lambda_adv (0 disables the discriminator).
        r1: gamma of the R1 penalty on real images.
        a_max: largest mean object opacity before L_area applies.
    """

    rec: float = 1.0
    sem: float = 0.1
    cls: float = 0.5
    cyc: float = 0.1
    swap: float = 1.0
    bg: float = 1.0
    adv: float = 0.0
    r1: float = 1.0
    a_max: float = 0.6


@torch.no_grad()
def targets_and_mask(
    teacher: nn.Module, images: torch.Tensor, labels: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``y_hat``: the label where known (``>= 0``), else ``argmax T(x)``; mask 1 where known or ``max p >= tau``."""
    probs = F.softmax(teacher(images).float(), dim=1)
    confidence, pseudo = probs.max(1)
    known = labels >= 0
    targets = torch.where(known, labels, pseudo)
    mask = (known | (confidence >= threshold)).float()
    return targets, mask


def relative_mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean ||output - sg(target)||^2 / mean ||sg(target)||^2``: a code-matching error no rescaling can shrink."""
    target = target.detach()
    return (output - target).pow(2).mean() / target.pow(2).mean().clamp_min(1e-8)


def same_class_partners(targets: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each sample, another sample of the same (pseudo-)class in the batch (random), and whether one exists.

    Returns:
        ``(partner index, valid)``; ``valid`` is 0 where the sample is masked or has no masked-in partner.
    """
    n = len(targets)
    scores = torch.rand(n, n, device=targets.device)
    same = (targets[:, None] == targets[None, :]) & (mask[None, :] > 0) & (mask[:, None] > 0)
    same &= ~torch.eye(n, dtype=torch.bool, device=targets.device)
    partner = torch.where(same, scores, torch.full_like(scores, -1.0)).argmax(1)
    return partner, same.any(1).float()


def _masked_ce(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (F.cross_entropy(logits.float(), targets, reduction="none") * mask).mean()


def generator_loss(
    generator: SciMixGenerator,
    teacher: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor,
    perm: torch.Tensor,
    weights: LossWeights,
    discriminator: Discriminator | None = None,
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """L_G on one batch; the teacher (and the discriminator) receive no gradient from it.

    Returns:
        ``(L_G, logged terms, the mixes)`` (the mixes for the discriminator's step).
    """
    style, content = generator.encode_semantic(images), generator.encode_content(images)
    partner, valid = same_class_partners(targets, mask)
    n = len(images)
    both = generator.render(torch.cat([content, content[perm], content]), torch.cat([style, style, style[partner]]))
    recon, mixed_image, swapped = both.image.split(n)
    mixed = Rendered(mixed_image, both.alpha[n : 2 * n] if both.alpha is not None else None)
    terms = {
        "rec": (recon - images).abs().mean(),
        "sem": _masked_ce(teacher(mixed.image), targets, mask),
        "cls": _masked_ce(generator.classify_style(style), targets, mask),
        "cyc": relative_mse(generator.encode_semantic(mixed.image), style)
        + relative_mse(generator.encode_content(mixed.image), content[perm]),
        "swap": ((swapped - images).abs().mean(dim=(1, 2, 3)) * valid).mean(),
    }
    total = weights.rec * terms["rec"] + weights.sem * terms["sem"] + weights.cls * terms["cls"]
    total = total + weights.cyc * terms["cyc"] + weights.swap * terms["swap"]
    if mixed.alpha is not None:
        keep = 1.0 - mixed.alpha
        terms["bg"] = (keep * (mixed.image - images[perm]).abs()).sum() / (keep.sum() * images.shape[1] + 1e-6)
        terms["area"] = F.relu(mixed.alpha.mean() - weights.a_max)
        total = total + weights.bg * (terms["bg"] + terms["area"])
    if discriminator is not None and weights.adv > 0:
        frozen = {name: p.detach() for name, p in discriminator.named_parameters()}
        terms["adv"] = F.softplus(-functional_call(discriminator, frozen, (mixed.image,))).mean()
        total = total + weights.adv * terms["adv"]
    return total, {f"g_{k}": float(v.detach()) for k, v in terms.items()}, mixed.image


def discriminator_loss(
    discriminator: Discriminator, real: torch.Tensor, fake: torch.Tensor, r1: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Non-saturating D loss with the R1 penalty ``gamma/2 ||grad_x D(x)||^2`` on real images (fakes detached)."""
    real = real.detach().requires_grad_(True)
    real_logits = discriminator(real)
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    penalty = grad.pow(2).flatten(1).sum(1).mean()
    loss = F.softplus(-real_logits).mean() + F.softplus(discriminator(fake.detach())).mean() + r1 / 2 * penalty
    return loss, {"d_loss": float(loss.detach()), "d_r1": float(penalty.detach())}
