import math

import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from frugalvision.errors import ConfigError, DataError
from frugalvision.metrics import ClassificationMeter, ece, nll, top1, topk


def _data(n=200, c=5, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g) * scale
    targets = torch.randint(0, c, (n,), generator=g)
    return logits, targets


def _brute_ece(logits, targets, n_bins):
    probs = torch.softmax(logits.double(), dim=1).tolist()
    tg = targets.tolist()
    bins = [[] for _ in range(n_bins)]
    for p, t in zip(probs, tg):
        conf = max(p)
        pred = p.index(conf)
        b = min(int(conf * n_bins), n_bins - 1)  # [lo, hi) bins, 1.0 in the last one
        bins[b].append((conf, float(pred == t)))
    total = 0.0
    for items in bins:
        if items:
            acc = sum(a for _, a in items) / len(items)
            conf = sum(c for c, _ in items) / len(items)
            total += len(items) / len(probs) * abs(acc - conf)
    return total


def test_top1_topk_nll_match_manual_formulas():
    logits, targets = _data()
    manual_top1 = sum(int(row.argmax() == t) for row, t in zip(logits, targets)) / len(targets)
    assert top1(logits, targets) == pytest.approx(manual_top1)
    manual_top3 = sum(int(t in row.argsort(descending=True)[:3].tolist()) for row, t in zip(logits, targets))
    assert topk(logits, targets, 3) == pytest.approx(manual_top3 / len(targets))
    assert topk(logits, targets, 5) == 1.0
    manual_nll = 0.0
    for row, t in zip(logits.double().tolist(), targets.tolist()):
        manual_nll -= row[t] - math.log(sum(math.exp(v) for v in row))
    assert nll(logits, targets) == pytest.approx(manual_nll / len(targets), rel=1e-9)


@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_ece_matches_brute_force_binning(n_bins):
    logits, targets = _data(n=300, seed=n_bins)
    assert ece(logits, targets, n_bins) == pytest.approx(_brute_ece(logits, targets, n_bins), abs=1e-5)


def test_ece_applies_softmax_even_when_logits_lie_in_unit_interval():
    logits, targets = _data(n=100, scale=1.0)
    logits = logits.sigmoid()  # all in [0, 1]: must still be treated as logits
    assert ece(logits, targets) == pytest.approx(_brute_ece(logits, targets, 15), abs=1e-5)


def test_meter_matches_functional_over_batches():
    logits, targets = _data(n=250, c=4, seed=3)
    meter = ClassificationMeter(n_bins=15)
    for chunk_l, chunk_t in zip(logits.split(64), targets.split(64)):
        meter.update(chunk_l, chunk_t)
    out = meter.compute()
    assert set(out) == {"top1", "nll", "ece"}
    assert out["top1"] == pytest.approx(top1(logits, targets))
    assert out["nll"] == pytest.approx(nll(logits, targets), rel=1e-9)
    ref = MulticlassCalibrationError(num_classes=4, n_bins=15, norm="l1")(logits.softmax(1), targets)
    assert out["ece"] == pytest.approx(float(ref), abs=1e-6)
    assert all(isinstance(v, float) for v in out.values())
    meter.reset()
    meter.update(logits[:10], targets[:10])
    assert meter.compute()["top1"] == pytest.approx(top1(logits[:10], targets[:10]))


def test_meter_state_is_summed_like_ddp_ranks():
    # two meters standing for two ranks; merge_state applies the same "sum" reduction as the DDP sync
    logits, targets = _data(n=120, c=3, seed=5)
    a, b = ClassificationMeter(), ClassificationMeter()
    a.update(logits[:50], targets[:50])
    b.update(logits[50:], targets[50:])
    a.merge_state(b)
    assert a.compute()["ece"] == pytest.approx(ece(logits, targets), abs=1e-6)


def test_bad_inputs_raise_one_line_errors():
    logits, targets = _data(n=10, c=3)
    with pytest.raises(DataError, match="targets must lie in"):
        top1(logits, targets + 3)
    with pytest.raises(DataError, match="shape"):
        nll(logits[:, None], targets)
    with pytest.raises(DataError, match="N=10"):
        top1(logits, targets[:5])
    with pytest.raises(ConfigError, match="k=4"):
        topk(logits, targets, 4)
    with pytest.raises(ConfigError, match="n_bins"):
        ece(logits, targets, 0)
