"""Ensemble averaging, Brier, disagreement, temperature scaling vs brute force, closed forms and torchmetrics."""

import math

import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from frugalvision.errors import ConfigError, DataError
from frugalvision.metrics import ece, nll
from frugalvision.metrics.calibration import (
    apply_temperature,
    brier_score,
    disagreement,
    ensemble_log_probs,
    ensemble_metrics,
    fit_temperature,
)


@pytest.fixture
def members():
    torch.manual_seed(0)
    return torch.randn(300, 3, 5) * 2, torch.randint(0, 5, (300,))


def test_probability_averaging_nll_is_minus_log_of_the_mean_probability(members):
    logits, targets = members
    mean_prob = logits.double().softmax(-1).mean(1)
    expected = -sum(math.log(mean_prob[i, targets[i]]) for i in range(len(targets))) / len(targets)
    assert nll(ensemble_log_probs(logits), targets) == pytest.approx(expected, rel=1e-12)
    member_mean = sum(nll(logits[:, m], targets) for m in range(3)) / 3
    assert nll(ensemble_log_probs(logits), targets) < member_mean  # Jensen: not the mean of member NLLs


def test_logit_averaging_is_the_softmax_of_the_mean_logit(members):
    logits, _ = members
    torch.testing.assert_close(ensemble_log_probs(logits, "logits").exp(), logits.double().mean(1).softmax(-1))
    with pytest.raises(ConfigError, match="rule"):
        ensemble_log_probs(logits, "median")


def test_ensemble_ece_equals_torchmetrics_on_the_averaged_probabilities(members):
    logits, targets = members
    metric = MulticlassCalibrationError(num_classes=5, n_bins=15, norm="l1")
    expected = float(metric(logits.double().softmax(-1).mean(1).float(), targets))
    assert ece(ensemble_log_probs(logits).float(), targets) == pytest.approx(expected, abs=1e-6)


def test_brier_equals_a_brute_force_loop(members):
    logits, targets = members
    probs = logits[:, 0].double().softmax(-1)
    total = sum((probs[i, c] - float(c == targets[i])) ** 2 for i in range(len(targets)) for c in range(5))
    assert brier_score(logits[:, 0], targets) == pytest.approx(float(total) / len(targets), rel=1e-12)
    perfect = torch.full((4, 3), -1e4).scatter(1, torch.tensor([[0], [1], [2], [0]]), 1e4)
    assert brier_score(perfect, torch.tensor([0, 1, 2, 0])) == 0.0


def test_disagreement_equals_the_pairwise_brute_force(members):
    logits, _ = members
    pred = logits.argmax(-1)
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = sum((pred[:, i] != pred[:, j]).float().mean().item() for i, j in pairs) / 3
    assert disagreement(logits) == pytest.approx(expected)
    assert disagreement(logits[:, :1]) == 0.0
    assert disagreement(logits[:, [0, 0]]) == 0.0


def test_temperature_scaling_recovers_an_overconfidence_factor_and_lowers_validation_nll():
    torch.manual_seed(1)
    calibrated = torch.randn(4000, 10) * 1.5
    targets = torch.distributions.Categorical(logits=calibrated).sample()
    overconfident = calibrated * 4.0
    temperature = fit_temperature(overconfident, targets)
    assert temperature == pytest.approx(4.0, rel=0.1)
    assert nll(apply_temperature(overconfident, temperature), targets) < nll(overconfident, targets) - 0.1
    grid = torch.linspace(0.5, 10, 400)
    best = grid[torch.tensor([nll(overconfident / t, targets) for t in grid]).argmin()]
    assert temperature == pytest.approx(float(best), abs=0.05)


def test_temperature_never_makes_the_fit_set_worse_and_rejects_bad_values(members):
    logits, targets = members
    temperature = fit_temperature(logits[:, 0], targets)
    assert nll(apply_temperature(logits[:, 0], temperature), targets) <= nll(logits[:, 0], targets) + 1e-12
    with pytest.raises(ConfigError):
        apply_temperature(logits[:, 0], 0.0)
    with pytest.raises(ConfigError):
        fit_temperature(logits[:, 0], targets, bounds=(2.0, 3.0))


def test_ensemble_metrics_of_one_member_equal_the_single_model_metrics(members):
    logits, targets = members
    single = ensemble_metrics(logits[:, :1], targets)
    assert single["nll"] == pytest.approx(nll(logits[:, 0], targets), rel=1e-9)
    assert single["member_top1"] == single["top1"] and single["disagreement"] == 0.0
    with pytest.raises(DataError, match=r"\[N, M, C\]"):
        ensemble_metrics(logits[:, 0], targets)
