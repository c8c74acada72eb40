"""Loss terms against brute-force loops and closed forms."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from frugalvision.ssl import (
    fixmatch_unlabeled_loss,
    kernel_decay_groups,
    kernel_l2,
    mean_teacher_class_loss,
    soft_cross_entropy,
    softmax_mse,
)


def test_fixmatch_unlabeled_loss_equals_a_brute_force_loop():
    torch.manual_seed(0)
    weak, strong = torch.randn(12, 5) * 3, torch.randn(12, 5)
    loss, pseudo = fixmatch_unlabeled_loss(strong, weak, threshold=0.7)
    total, mask = 0.0, []
    for i in range(12):
        probs = torch.softmax(weak[i], 0)
        keep = float(probs.max() >= 0.7)
        mask.append(keep)
        total += keep * -torch.log_softmax(strong[i], 0)[int(probs.argmax())]
    assert pseudo.mask.tolist() == mask and 0 < sum(mask) < 12
    assert loss.item() == pytest.approx(total.item() / 12, rel=1e-6)


def test_no_gradient_flows_through_the_pseudo_labels():
    weak = torch.randn(6, 4, requires_grad=True)
    strong = torch.randn(6, 4, requires_grad=True)
    loss, _ = fixmatch_unlabeled_loss(strong, weak, threshold=0.0)
    loss.backward()
    assert weak.grad is None and strong.grad is not None and strong.grad.abs().sum() > 0


def test_a_threshold_above_one_masks_everything():
    loss, pseudo = fixmatch_unlabeled_loss(torch.randn(5, 3), torch.randn(5, 3) * 10, threshold=1.01)
    assert loss.item() == 0.0 and pseudo.mask.sum() == 0


def test_softmax_mse_equals_the_formula_and_ignores_the_target_gradient():
    student = torch.randn(7, 6, requires_grad=True)
    teacher = torch.randn(7, 6, requires_grad=True)
    value = softmax_mse(student, teacher)
    expected = ((student.softmax(1) - teacher.softmax(1)) ** 2).sum() / 6 / 7
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    value.backward()
    assert teacher.grad is None


def test_mean_teacher_class_loss_sums_over_labeled_and_divides_by_the_minibatch():
    logits, labels = torch.randn(8, 3), torch.tensor([0, 2, -1, -1, 1, -1, -1, -1])
    kept = labels >= 0
    expected = F.cross_entropy(logits[kept], labels[kept], reduction="sum") / 8
    assert mean_teacher_class_loss(logits, labels, 8).item() == pytest.approx(expected.item())


def test_soft_cross_entropy_with_one_hot_targets_is_cross_entropy():
    logits, labels = torch.randn(5, 4), torch.tensor([0, 3, 1, 1, 2])
    assert soft_cross_entropy(logits, F.one_hot(labels, 4).float()).item() == pytest.approx(
        F.cross_entropy(logits, labels).item(), rel=1e-6
    )


def test_kernel_decay_only_on_conv_and_linear_kernels_and_equals_the_l2_gradient():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 3 * 3, 2))
    groups = kernel_decay_groups(model, 5e-4)
    decayed = {id(p) for p in groups[0]["params"]}
    assert decayed == {id(model[0].weight), id(model[3].weight)}
    assert groups[1]["weight_decay"] == 0.0 and id(model[1].weight) in {id(p) for p in groups[1]["params"]}
    # wd * l2_loss(k) = wd * sum(k^2) / 2 has gradient wd * k: SGD's coupled weight decay on those kernels
    (5e-4 * kernel_l2(model)).backward()
    torch.testing.assert_close(model[0].weight.grad, 5e-4 * model[0].weight.detach())
    assert model[0].bias.grad is None or model[0].bias.grad.abs().sum() == 0
