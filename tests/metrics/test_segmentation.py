import math

import pytest
import torch
from torchmetrics.classification import BinaryJaccardIndex, MulticlassJaccardIndex

from frugalvision.errors import ConfigError, DataError
from frugalvision.metrics import (
    BinaryIoUMeter,
    SegmentationMeter,
    binary_iou,
    confusion_matrix,
    miou,
)


def _seg_data(c=4, seed=0, shape=(2, 9, 11)):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, c, shape, generator=g)
    pred = torch.where(torch.rand(shape, generator=g) < 0.6, target, torch.randint(0, c, shape, generator=g))
    target[torch.rand(shape, generator=g) < 0.1] = 255
    return pred, target


def test_confusion_matrix_and_miou_match_brute_force():
    c = 4
    pred, target = _seg_data(c)
    cm = [[0] * c for _ in range(c)]
    for p, t in zip(pred.reshape(-1).tolist(), target.reshape(-1).tolist()):
        if t != 255:
            cm[t][p] += 1
    assert confusion_matrix(pred, target, c).tolist() == cm
    ious = []
    for k in range(c):
        tp = cm[k][k]
        union = sum(cm[k]) + sum(row[k] for row in cm) - tp
        ious.append(tp / union)
    out = miou(pred, target, c)
    assert out["per_class"] == pytest.approx(ious)
    assert out["miou"] == pytest.approx(sum(ious) / c)
    ref = MulticlassJaccardIndex(num_classes=c, average=None, ignore_index=255)(pred, target)
    assert out["per_class"] == pytest.approx(ref.tolist(), abs=1e-6)


def test_absent_class_is_nan_and_excluded():
    pred = torch.tensor([[0, 1, 1, 255]])  # the prediction under an ignored pixel does not matter
    target = torch.tensor([[0, 1, 0, 255]])
    with pytest.raises(DataError, match="pred has class ids"):
        miou(torch.tensor([[0, 1, 3, 0]]), target, 3)
    with pytest.raises(DataError, match="target has class ids"):
        miou(pred, torch.tensor([[0, 1, 0, 7]]), 3)
    out = miou(pred, target, 3)
    assert math.isnan(out["per_class"][2])
    assert out["per_class"][:2] == pytest.approx([0.5, 0.5])
    assert out["miou"] == pytest.approx(0.5)
    ref = MulticlassJaccardIndex(num_classes=3, average=None, ignore_index=255)(pred, target)
    assert ref[:2].tolist() == pytest.approx(out["per_class"][:2])


def test_scores_are_argmaxed():
    pred, target = _seg_data(3, seed=1)
    scores = torch.nn.functional.one_hot(pred, 3).permute(0, 3, 1, 2).float()
    assert miou(scores, target, 3) == miou(pred, target, 3)


def test_segmentation_meter_streams():
    c = 5
    meter = SegmentationMeter(num_classes=c)
    preds, targets = zip(*[_seg_data(c, seed=s) for s in range(3)])
    for p, t in zip(preds, targets):
        meter.update(p, t)
    assert meter.compute() == miou(torch.cat(preds), torch.cat(targets), c)
    ref = MulticlassJaccardIndex(num_classes=c, average="macro", ignore_index=255)(torch.cat(preds), torch.cat(targets))
    assert meter.compute()["miou"] == pytest.approx(float(ref), abs=1e-6)


def _bin_data(seed=0, shape=(3, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(shape, generator=g)
    target = torch.rand(shape, generator=g) < 0.4
    valid = torch.rand(shape, generator=g) < 0.7
    return probs, target, valid


def test_binary_iou_brute_force_and_torchmetrics():
    probs, target, valid = _bin_data()
    inter = union = 0
    for p, t, v in zip(probs.reshape(-1).tolist(), target.reshape(-1).tolist(), valid.reshape(-1).tolist()):
        if v:
            inter += (p > 0.5) and t
            union += (p > 0.5) or t
    assert binary_iou(probs, target, valid_mask=valid, from_logits=False) == pytest.approx(inter / union)
    logits = torch.logit(probs)
    assert binary_iou(logits, target, valid_mask=valid) == pytest.approx(inter / union)
    assert binary_iou(probs > 0.5, target.long(), valid_mask=valid) == pytest.approx(inter / union)
    ref = BinaryJaccardIndex(threshold=0.5)(probs[valid], target[valid].long())
    assert binary_iou(probs, target, valid_mask=valid, from_logits=False) == pytest.approx(float(ref))
    ref_all = BinaryJaccardIndex(threshold=0.3)(probs, target.long())
    assert binary_iou(probs, target, threshold=0.3, from_logits=False) == pytest.approx(float(ref_all))


def test_binary_iou_meter_is_dataset_level():
    meter = BinaryIoUMeter(from_logits=False)
    pred1, tgt1 = torch.ones(4, dtype=torch.bool), torch.ones(4, dtype=torch.bool)  # IoU 1 (4/4)
    pred2, tgt2 = torch.tensor([True, False]), torch.tensor([False, True])  # IoU 0 (0/2)
    meter.update(pred1, tgt1)
    meter.update(pred2, tgt2)
    assert meter.compute() == pytest.approx(4 / 6)  # not the mean of per-sample IoUs (0.5)
    probs, target, valid = _bin_data(seed=2)
    meter = BinaryIoUMeter(from_logits=False)
    for b in range(3):
        meter.update(probs[b], target[b], valid_mask=valid[b])
    assert meter.compute() == pytest.approx(binary_iou(probs, target, valid_mask=valid, from_logits=False))


def test_binary_iou_edge_cases_and_errors():
    assert math.isnan(binary_iou(torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool)))
    mask = torch.tensor([True, False])  # broadcast over a leading batch dim
    pred = torch.tensor([[True, True], [False, True]])
    assert binary_iou(pred, torch.tensor([[1, 0], [1, 0]]), valid_mask=mask) == pytest.approx(0.5)
    with pytest.raises(DataError, match="binary"):
        binary_iou(pred, torch.tensor([[2, 0], [1, 0]]))
    with pytest.raises(DataError, match="does not match"):
        binary_iou(pred, torch.zeros(4))
    with pytest.raises(ConfigError, match="threshold"):
        binary_iou(pred, pred, threshold=2.0)
    with pytest.raises(ConfigError, match="ignore_index"):
        miou(torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), 3, ignore_index=1)
