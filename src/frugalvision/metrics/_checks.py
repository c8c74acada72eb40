"""Input checks and small tensor helpers shared by the metric modules (private)."""

from __future__ import annotations

import torch
from torch import Tensor

from frugalvision.errors import ConfigError, DataError


def as_tensor(x: object, name: str) -> Tensor:
    """Return ``x`` as a detached tensor, or raise DataError naming the argument."""
    if isinstance(x, Tensor):
        return x.detach()
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(
            f"{name} must be a torch.Tensor (got {type(x).__name__}); convert it with torch.as_tensor"
        ) from exc


def check_logits_targets(logits: object, targets: object) -> tuple[Tensor, Tensor]:
    """Validate a ``[N, C]`` float logits / ``[N]`` integer targets pair and return both as tensors."""
    logits_t = as_tensor(logits, "logits")
    targets_t = as_tensor(targets, "targets")
    if logits_t.ndim != 2 or not logits_t.is_floating_point():
        raise DataError(
            f"logits must be a float tensor of shape [N, C] (got dtype {logits_t.dtype},"
            f" shape {tuple(logits_t.shape)}); flatten extra dimensions into N first"
        )
    if targets_t.ndim != 1 or targets_t.is_floating_point() or targets_t.dtype == torch.bool:
        raise DataError(
            f"targets must be an integer class-index tensor of shape [N] (got dtype {targets_t.dtype}, shape"
            f" {tuple(targets_t.shape)}); pass class indices, not one-hot or soft labels"
        )
    n, c = logits_t.shape
    if targets_t.shape[0] != n:
        raise DataError(f"logits has N={n} rows but targets has {targets_t.shape[0]}; pass one target per row")
    if n == 0:
        raise DataError("logits and targets are empty; evaluate at least one sample")
    if c < 1:
        raise DataError("logits has C=0 classes; pass a tensor of shape [N, C] with C >= 1")
    if not torch.isfinite(logits_t).all():
        raise DataError("logits contain NaN or inf; check the model output before computing metrics")
    lo, hi = int(targets_t.min()), int(targets_t.max())
    if lo < 0 or hi >= c:
        raise DataError(f"targets must lie in [0, {c - 1}] for C={c} classes (found values in [{lo}, {hi}])")
    return logits_t, targets_t.to(device=logits_t.device, dtype=torch.long)


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` if it is a positive int, else raise ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer (got {value!r})")
    return value


def bincount(x: Tensor, minlength: int) -> Tensor:
    """``torch.bincount`` that also works under ``torch.use_deterministic_algorithms(True)`` on accelerators."""
    x = x.reshape(-1).long()
    if x.device.type != "cpu" and torch.are_deterministic_algorithms_enabled():
        out = torch.zeros(minlength, dtype=torch.long, device=x.device)
        if x.numel():
            values, counts = torch.unique(x, return_counts=True)
            out[values] = counts
        return out
    return torch.bincount(x, minlength=minlength)
