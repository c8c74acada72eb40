"""LaRa loss and IoU protocol against brute-force references."""

from __future__ import annotations

import math

import pytest
import torch

from frugalvision.methods.lara.functional import BevIoU, bev_bce, radial_mask, visibility_valid_mask
from frugalvision.methods.lara.geometry import BevGrid
from frugalvision.methods.lara.world import VISIBILITY_IGNORE
from frugalvision.metrics import binary_iou


def test_bce_equals_brute_force_weighted_sum() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 4, 5, generator=g, dtype=torch.float64)
    target = (torch.rand(2, 1, 4, 5, generator=g) > 0.7).double()
    total = 0.0
    for z, y in zip(logits.flatten().tolist(), target.flatten().tolist(), strict=True):
        p = 1 / (1 + math.exp(-z))
        total += -(2.13 * y * math.log(p) + (1 - y) * math.log(1 - p))
    assert float(bev_bce(logits, target)) == pytest.approx(total / logits.numel(), rel=1e-10)


def brute_force_iou(preds, targets, visibilities, min_vis):
    tp = fp = fn = 0
    for pred, target, vis in zip(preds, targets, visibilities, strict=True):
        for p, t, v in zip(pred.flatten().tolist(), target.flatten().tolist(), vis.flatten().tolist(), strict=True):
            if v != VISIBILITY_IGNORE and v < min_vis:
                continue
            positive = 1 / (1 + math.exp(-p)) > 0.5
            tp += positive and t == 1
            fp += positive and t == 0
            fn += (not positive) and t == 1
    return tp / (tp + fp + fn)


def test_dataset_iou_with_visibility_filter_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(1)
    grid = BevGrid(-4, 4, -4, 4, 1.0)
    meter = BevIoU(grid)
    batches = []
    for _ in range(3):
        target = (torch.rand(2, 1, 8, 8, generator=g) > 0.6).float()
        logits = torch.randn(2, 1, 8, 8, generator=g) + 1.5 * (2 * target - 1)
        tokens = torch.randint(1, 5, (2, 8, 8), generator=g)
        vis = torch.where(target[:, 0] > 0, tokens, torch.full_like(tokens, VISIBILITY_IGNORE))
        meter.update(logits, target, vis)
        batches.append((logits, target, vis))
    got = meter.compute()
    preds = [b[0] for b in batches]
    targets = [b[1] for b in batches]
    vises = [b[2] for b in batches]
    assert got["iou_all"] == pytest.approx(brute_force_iou(preds, targets, vises, 1))
    assert got["iou_vis2"] == pytest.approx(brute_force_iou(preds, targets, vises, 2))
    assert got["iou_all"] != pytest.approx(got["iou_vis2"])
    cat = [torch.cat(x) for x in (preds, targets, vises)]
    mask = visibility_valid_mask(cat[2], 2)
    assert got["iou_vis2"] == pytest.approx(binary_iou(cat[0][:, 0], cat[1][:, 0], valid_mask=mask))


def test_dataset_iou_differs_from_mean_of_per_image_iou() -> None:
    grid = BevGrid(-2, 2, -2, 2, 1.0)
    meter = BevIoU(grid)
    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, :2, :] = 1  # 8 positive cells, all found
    target[1, 0, 0, 0] = 1  # 1 positive cell, missed
    logits = torch.where(target > 0, 5.0, -5.0)
    logits[1, 0, 0, 0] = -5.0
    vis = torch.full((2, 4, 4), VISIBILITY_IGNORE)
    meter.update(logits, target, vis)
    assert meter.compute()["iou_all"] == pytest.approx(8 / 9)  # mean of per-image IoUs would be 0.5
    assert torch.equal(torch.tensor([0.01, -0.01]).sigmoid() > 0.5, torch.tensor([0.01, -0.01]) > 0)


def test_radial_bins() -> None:
    grid = BevGrid(-16, 16, -16, 16, 1.0)
    near, far = radial_mask(grid, 0, 8), radial_mask(grid, 8, 16)
    assert not bool((near & far).any())
    assert int(near.sum()) == int((grid.centers().norm(dim=-1) < 8).sum())
    meter = BevIoU(grid, radial_bins=((0, 8), (8, 16)))
    target = torch.zeros(1, 1, 32, 32)
    target[0, 0, 16, 16] = 1  # a near cell, predicted; a far cell, missed
    target[0, 0, 16, 30] = 1
    logits = torch.where(target > 0, 4.0, -4.0)
    logits[0, 0, 16, 30] = -4.0
    meter.update(logits, target, torch.full((1, 32, 32), VISIBILITY_IGNORE))
    res = meter.compute()
    assert res["iou_r0-8"] == 1.0 and res["iou_r8-16"] == 0.0 and res["iou_all"] == 0.5


def test_ranking_metrics_equal_scikit_learn_and_a_threshold_sweep() -> None:
    from sklearn.metrics import average_precision_score

    from frugalvision.methods.lara.functional import positive_weight, ranking_metrics

    generator = torch.Generator().manual_seed(0)
    target = (torch.rand(4, 1, 8, 8, generator=generator) < 0.2).float()
    scores = (target * 0.3 + torch.rand(target.shape, generator=generator)).round(decimals=1)  # many ties
    result = ranking_metrics(scores, target)
    assert abs(result["ap"] - average_precision_score(target.flatten().numpy(), scores.flatten().numpy())) < 1e-12
    best = 0.0
    for t in scores.unique():  # brute force: every threshold, cells with score >= t are positive
        pred = scores >= t
        tp, fp = float((pred & (target > 0)).sum()), float((pred & (target == 0)).sum())
        fn = float(((~pred) & (target > 0)).sum())
        best = max(best, tp / (tp + fp + fn))
    assert abs(result["iou_best"] - best) < 1e-12
    assert positive_weight(target) == (target.numel() - target.sum()) / target.sum()
    assert all(v != v for v in ranking_metrics(scores, torch.zeros_like(target)).values())  # NaN without positives
