"""Batch repetition, independent member permutations and per-copy augmentation (MixMo's batch sampler, on tensors).

MixMo's sampler appends every index ``b`` times and yields when the batch holds ``batch_size`` entries, so a batch of
64 with b = 4 holds 16 unique images; each of the M inputs then reads the batch through its own random permutation
(``randperm_static``: with input-repetition probability p, the first ``int(N p)`` positions stay in place, so those
samples get the same image on every input). Here the engine yields the unique images (a disjoint shard per rank) and
:func:`member_batch` repeats them locally, which is the distributed form the spec asks for. Augmentation runs after
the repetition, so each copy of an image gets its own crop and flip, as MixMo's per-index dataset calls do.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from frugalvision.errors import ConfigError

__all__ = ["member_batch", "member_permutations", "random_crop_flip"]


def member_permutations(count: int, members: int, input_repetition: float = 0.0) -> Tensor:
    """``[members, count]`` index permutations, one per input, as MixMo's ``randperm_static``.

    Member 0 reads ``perm_0``; member m reads ``perm_0[perm_m]``. With ``input_repetition = p`` the first
    ``int(count * p)`` positions of every ``perm_m`` are fixed, so those samples carry the same image on every input.
    """
    if not 0.0 <= input_repetition <= 1.0:
        raise ConfigError(f"input_repetition={input_repetition} must lie in [0, 1]")
    fixed = int(count * input_repetition)

    def static_perm() -> Tensor:
        return torch.cat([torch.arange(fixed), fixed + torch.randperm(count - fixed)])

    first = static_perm()
    return torch.stack([first] + [first[static_perm()] for _ in range(1, members)])


def random_crop_flip(images: Tensor, padding: int, flip: bool = True) -> Tensor:
    """Per-image random crop of the original size from a zero-padded image, and a random horizontal flip."""
    if padding < 0:
        raise ConfigError(f"padding={padding} must be >= 0")
    count, channels, height, width = images.shape
    out = images
    if padding:
        padded = F.pad(images, (padding, padding, padding, padding))
        dy = torch.randint(0, 2 * padding + 1, (count,), device=images.device)
        dx = torch.randint(0, 2 * padding + 1, (count,), device=images.device)
        rows = (dy[:, None] + torch.arange(height, device=images.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(width, device=images.device))[:, None, None, :]
        batch = torch.arange(count, device=images.device)[:, None, None, None]
        chans = torch.arange(channels, device=images.device)[None, :, None, None]
        out = padded[batch, chans, rows, cols]
    if flip:
        flips = torch.rand(count, device=images.device) < 0.5
        out = torch.where(flips[:, None, None, None], out.flip(-1), out)
    return out


def member_batch(
    images: Tensor,
    labels: Tensor,
    members: int,
    repetitions: int,
    input_repetition: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Repeat a batch of unique images ``b`` times and give each input its own permutation.

    Args:
        images: ``[U, C, H, W]`` unique images.
        labels: ``[U]`` labels.
        members: M.
        repetitions: b (each image appears b times per input).
        input_repetition: probability that a sample shows the same image on every input.

    Returns:
        ``([N, M, C, H, W] inputs, [N, M] labels)`` with ``N = U * b``.
    """
    if repetitions < 1 or members < 1:
        raise ConfigError(f"repetitions={repetitions}, members={members}: both must be >= 1")
    repeated_images = images.repeat_interleave(repetitions, 0)
    repeated_labels = labels.repeat_interleave(repetitions, 0)
    perms = member_permutations(repeated_images.shape[0], members, input_repetition).to(images.device)
    return repeated_images[perms.T], repeated_labels[perms.T]
