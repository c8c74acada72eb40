"""Pure functions of the DQS reading: sandwich widths, nested loss, gate, top-k, cascade accounting, AUC."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from frugalvision.methods.perceiver.functional import (
    cascade_decisions,
    cascade_outcome,
    distillation_kl,
    nested_loss,
    pareto_auc,
    sample_widths,
    step_generator,
    straight_through_gate,
    topk_gather,
    width_grid,
)


def test_sandwich_widths_always_hold_full_and_smallest_and_lie_on_the_grid():
    assert width_grid(32, 4) == [4, 8, 12, 16, 20, 24, 28, 32]
    seen = set()
    for step in range(200):
        widths = sample_widths(32, 4, 2, step_generator(0, step))
        assert widths[0] == 32 and widths[-1] == 4 and len(widths) == 4
        assert set(widths) <= set(width_grid(32, 4))
        seen.update(widths)
        assert widths == sample_widths(32, 4, 2, step_generator(0, step))  # same draw on every rank
    assert seen == set(width_grid(32, 4))
    assert sample_widths(8, 4, 3, step_generator(0, 0)) == [8, 4]
    with pytest.raises(ValueError):
        width_grid(32, 5)


def test_nested_loss_equals_brute_force():
    torch.manual_seed(0)
    labels = torch.randint(0, 5, (6,))
    logits = {8: torch.randn(6, 5), 4: torch.randn(6, 5), 2: torch.randn(6, 5)}
    beta, temp = 0.3, 2.0
    loss, _ = nested_loss(logits, labels, beta, temp)
    expected = F.cross_entropy(logits[8], labels)
    p = torch.softmax(logits[8] / temp, -1)
    for k in (4, 2):
        q = torch.softmax(logits[k] / temp, -1)
        kl = sum((p[i] * (p[i].log() - q[i].log())).sum() for i in range(6)) / 6
        expected = expected + (1 - beta) * F.cross_entropy(logits[k], labels) + beta * temp**2 * kl
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=0)


def test_kl_vanishes_for_equal_logits_and_never_reaches_the_teacher():
    teacher = torch.randn(4, 6, requires_grad=True)
    assert distillation_kl(teacher.detach().clone(), teacher, 1.5).abs().item() < 1e-6
    student = torch.randn(4, 6, requires_grad=True)
    distillation_kl(student, teacher, 1.0).backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0
    labels = torch.randint(0, 6, (4,))
    teacher.grad = None
    loss, _ = nested_loss({8: teacher, 4: student}, labels, beta=1.0, temperature=1.0)
    loss.backward()
    ce_grad = torch.autograd.grad(F.cross_entropy(teacher, labels), teacher)[0]
    torch.testing.assert_close(teacher.grad, ce_grad)


def test_straight_through_gate_keeps_values_and_passes_gradient():
    z = torch.randn(2, 3, 4)
    scores = torch.randn(2, 3, requires_grad=True)
    gated = straight_through_gate(z, scores)
    assert torch.equal(gated, z)
    gated.sum().backward()
    expected = z.sum(-1) * torch.sigmoid(scores) * (1 - torch.sigmoid(scores))
    torch.testing.assert_close(scores.grad, expected.detach())


def test_topk_gather_equals_per_image_loop():
    torch.manual_seed(1)
    z, scores = torch.randn(5, 9, 3), torch.randn(5, 9)
    kept, index = topk_gather(z, scores, 4)
    for i in range(5):
        best = sorted(sorted(range(9), key=lambda j: -scores[i, j].item())[:4])
        assert index[i].tolist() == best
        assert torch.equal(kept[i], z[i, best])


def test_cascade_limits_and_average_macs():
    torch.manual_seed(2)
    small, large = torch.randn(50, 4) * 2, torch.randn(50, 4)
    labels = torch.randint(0, 4, (50,))
    assert (cascade_decisions([small, large], 0.0) == 0).all()
    assert (cascade_decisions([small, large], 1.0) == 1).all()
    low = cascade_outcome([small, large], labels, 0.0, [10.0, 30.0])
    assert low["macs"] == 10.0 and low["top1"] == (small.argmax(-1) == labels).float().mean().item()
    high = cascade_outcome([small, large], labels, 1.0, [10.0, 30.0])
    assert high["macs"] == 40.0 and high["top1"] == (large.argmax(-1) == labels).float().mean().item()
    mid = cascade_outcome([small, large], labels, 0.6, [10.0, 30.0])
    escalated = (small.softmax(-1).amax(-1) <= 0.6).float()
    assert mid["macs"] == pytest.approx(10.0 + 30.0 * escalated.mean().item())
    chosen = torch.where(escalated.bool()[:, None], large, small)
    assert mid["top1"] == pytest.approx((chosen.argmax(-1) == labels).float().mean().item())


def test_pareto_auc_closed_form():
    assert pareto_auc([0.125, 1.0], [0.5, 0.5]) == pytest.approx(0.5)
    assert pareto_auc([0.125, 1.0], [0.0, 1.0]) == pytest.approx(0.5)
    # a dominated point never lowers the front
    assert pareto_auc([0.125, 0.5, 1.0], [0.0, 1.0, 0.2]) > pareto_auc([0.125, 0.5, 1.0], [0.0, 0.4, 0.2])
