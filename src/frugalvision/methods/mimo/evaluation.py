"""Evaluation of MIMO networks and deep ensembles: member logits, uncertainty metrics, validation temperature scaling.

Headline averaging is the mean of the members' probabilities for every row (one rule for all); the MixMo code's
logit averaging is reported too (``*_logitavg``). The temperature is fitted on the validation split's ensemble
log-probabilities and applied to test (``*_ts``); test never tunes anything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from frugalvision.metrics.calibration import ensemble_log_probs, ensemble_metrics, fit_temperature

__all__ = ["evaluate_members", "member_logits"]


@torch.no_grad()
def member_logits(
    models: Sequence[nn.Module],
    images: Tensor,
    normalise: Callable[[Tensor], Tensor] | None = None,
    batch_size: int = 500,
) -> Tensor:
    """``[N, M_total, K]`` logits of every member of every model (the same image on every input).

    Args:
        models: MIMO networks returning ``[N, M, K]`` (a deep ensemble is a list of single networks).
        images: ``[N, C, H, W]`` images, uint8 or float in [0, 1].
        normalise: applied to each float batch.
        batch_size: images per forward pass.
    """
    for model in models:
        model.eval()
    device = next(models[0].parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        batch = batch.float().div(255.0) if batch.dtype == torch.uint8 else batch.float()
        batch = normalise(batch) if normalise else batch
        out.append(torch.cat([model(batch).float() for model in models], 1).cpu())
    return torch.cat(out)


def evaluate_members(
    test_logits: Tensor,
    test_labels: Tensor,
    val_logits: Tensor | None = None,
    val_labels: Tensor | None = None,
) -> dict[str, float]:
    """Ensemble top-1 / NLL / ECE / Brier, member top-1, disagreement, logit-averaging and temperature-scaled rows.

    Args:
        test_logits: ``[N, M, K]`` member logits on test.
        test_labels: ``[N]``.
        val_logits: ``[N', M, K]`` on validation (fits the temperature), optional.
        val_labels: ``[N']``.

    Returns:
        ``top1, nll, ece, brier, member_top1, disagreement, top1_logitavg, nll_logitavg, ece_logitavg`` and, with
        validation data, ``temperature, nll_ts, ece_ts, brier_ts, val_top1, val_nll``.
    """
    metrics = ensemble_metrics(test_logits, test_labels)
    logit_rule = ensemble_metrics(test_logits, test_labels, rule="logits")
    metrics.update({f"{k}_logitavg": logit_rule[k] for k in ("top1", "nll", "ece")})
    if val_logits is not None and val_labels is not None:
        temperature = fit_temperature(ensemble_log_probs(val_logits), val_labels)
        scaled = ensemble_metrics(test_logits, test_labels, temperature=temperature)
        validation = ensemble_metrics(val_logits, val_labels)
        metrics.update({"temperature": temperature, "nll_ts": scaled["nll"], "ece_ts": scaled["ece"]})
        metrics.update({"brier_ts": scaled["brier"], "val_top1": validation["top1"], "val_nll": validation["nll"]})
    return metrics
