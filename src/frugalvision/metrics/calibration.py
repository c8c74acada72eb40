"""Uncertainty metrics of classifiers and ensembles: ensemble averaging, Brier score, disagreement, temperature scaling.

Member predictions are ``[N, M, C]`` logits (M members). Averaging follows one rule for every model: the mean of the
members' probabilities (``rule="probs"``, the deep-ensemble convention) or of their logits (``rule="logits"``, the
MixMo code's). An ensemble's prediction is returned as *log-probabilities*, so every single-model metric taking
logits (:func:`~frugalvision.metrics.nll`, :func:`~frugalvision.metrics.ece`) applies to it unchanged.

Temperature scaling (Guo et al. 2017) divides those log-probabilities by one scalar T > 0 fitted to minimise the NLL
of a *validation* set, then is applied to the test predictions (pool-then-calibrate for ensembles).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from frugalvision.errors import ConfigError, DataError
from frugalvision.metrics._checks import check_logits_targets
from frugalvision.metrics.classification import ece, nll, top1

__all__ = [
    "apply_temperature",
    "brier_score",
    "disagreement",
    "ensemble_log_probs",
    "ensemble_metrics",
    "fit_temperature",
]

AveragingRule = Literal["probs", "logits"]


def _check_members(member_logits: Tensor) -> Tensor:
    if not isinstance(member_logits, Tensor) or member_logits.ndim != 3 or not member_logits.is_floating_point():
        shape = tuple(member_logits.shape) if isinstance(member_logits, Tensor) else type(member_logits).__name__
        raise DataError(f"member logits must be a float tensor [N, M, C], got {shape}; stack the members on dim 1")
    if not torch.isfinite(member_logits).all():
        raise DataError("member logits contain NaN or inf; check the model output before computing metrics")
    return member_logits.detach()


def ensemble_log_probs(member_logits: Tensor, rule: AveragingRule = "probs") -> Tensor:
    """Log-probabilities ``[N, C]`` of the ensemble of M members.

    Args:
        member_logits: ``[N, M, C]`` logits.
        rule: "probs": ``log mean_m softmax(z_m)``; "logits": ``log_softmax(mean_m z_m)``.

    Returns:
        Float64 log-probabilities (exactly normalised; usable wherever logits are expected).
    """
    logits = _check_members(member_logits).double()
    if rule == "probs":
        return torch.logsumexp(logits.log_softmax(-1), dim=1) - math.log(logits.shape[1])
    if rule == "logits":
        return logits.mean(1).log_softmax(-1)
    raise ConfigError(f"rule={rule!r} is invalid; use 'probs' or 'logits'")


def brier_score(logits: Tensor, targets: Tensor) -> float:
    """Multiclass Brier score ``mean_i sum_c (p_ic - 1[c = y_i])^2`` (in ``[0, 2]``; MixMo's code divides it by C).

    Args:
        logits: ``[N, C]`` logits or log-probabilities (softmax is applied).
        targets: ``[N]`` class indices.
    """
    logits, targets = check_logits_targets(logits, targets)
    probs = logits.double().softmax(-1)
    onehot = F.one_hot(targets, probs.shape[1]).double()
    return float(((probs - onehot) ** 2).sum(1).mean())


def disagreement(member_logits: Tensor) -> float:
    """Mean over member pairs of the fraction of samples whose top-1 predictions differ (0 for one member)."""
    predictions = _check_members(member_logits).argmax(-1)
    members = predictions.shape[1]
    if members < 2:
        return 0.0
    pairs = [(i, j) for i in range(members) for j in range(i + 1, members)]
    return sum(float((predictions[:, i] != predictions[:, j]).double().mean()) for i, j in pairs) / len(pairs)


def apply_temperature(log_probs: Tensor, temperature: float) -> Tensor:
    """Log-probabilities of ``softmax(log_probs / T)``."""
    if not temperature > 0:
        raise ConfigError(f"temperature={temperature} is invalid; it must be > 0")
    return (log_probs.double() / temperature).log_softmax(-1)


def fit_temperature(logits: Tensor, targets: Tensor, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The T > 0 minimising ``NLL(softmax(logits / T))`` on held-out data (bounded Brent search on log T).

    Fit it on a validation set and apply it to test predictions with :func:`apply_temperature`; never fit on test.

    Args:
        logits: ``[N, C]`` validation logits or ensemble log-probabilities.
        targets: ``[N]`` validation labels.
        bounds: search interval of T.

    Returns:
        The fitted temperature (1.0 when it does not lower the NLL).
    """
    from scipy.optimize import minimize_scalar

    logits, targets = check_logits_targets(logits, targets)
    low, high = bounds
    if not 0 < low < 1 < high:
        raise ConfigError(f"bounds={bounds} must satisfy 0 < low < 1 < high")
    values = logits.double()

    def objective(log_t: float) -> float:
        return float(F.cross_entropy(values / math.exp(log_t), targets))

    span = (math.log(low), math.log(high))
    result = minimize_scalar(objective, bounds=span, method="bounded", options={"xatol": 1e-6})
    best = math.exp(float(result.x))
    return best if objective(math.log(best)) < objective(0.0) else 1.0


def ensemble_metrics(
    member_logits: Tensor,
    targets: Tensor,
    rule: AveragingRule = "probs",
    temperature: float | None = None,
    n_bins: int = 15,
) -> dict[str, float]:
    """Top-1, NLL, ECE and Brier of the ensemble, mean member top-1 and disagreement.

    Args:
        member_logits: ``[N, M, C]`` logits (M = 1 for a single network).
        targets: ``[N]`` labels.
        rule: averaging rule (see :func:`ensemble_log_probs`).
        temperature: when given, the ensemble log-probabilities are temperature-scaled first.
        n_bins: ECE bins.

    Returns:
        ``{"top1", "nll", "ece", "brier", "member_top1", "disagreement"}``.
    """
    log_probs = ensemble_log_probs(member_logits, rule)
    if temperature is not None:
        log_probs = apply_temperature(log_probs, temperature)
    members = member_logits.shape[1]
    member_top1 = sum(top1(member_logits[:, m], targets) for m in range(members)) / members
    return {
        "top1": top1(log_probs, targets),
        "nll": nll(log_probs, targets),
        "ece": ece(log_probs.float(), targets, n_bins),
        "brier": brier_score(log_probs, targets),
        "member_top1": member_top1,
        "disagreement": disagreement(member_logits),
    }
