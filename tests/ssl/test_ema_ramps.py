"""EMA teacher vs the closed form and torch.optim.swa_utils; ramps vs their formulas."""

import math

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from frugalvision.ssl import EmaTeacher, cosine_rampdown, fixmatch_lr_factor, mean_teacher_decay, sigmoid_rampup


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2)).eval()


def _materialise(net: nn.Module) -> nn.Module:
    net(torch.zeros(1, 3, 5, 5))
    return net


def test_decay_follows_the_warmup_clamp():
    assert mean_teacher_decay(1, 0.97) == 0.5
    assert mean_teacher_decay(9, 0.97) == pytest.approx(0.9)
    assert mean_teacher_decay(10_000, 0.97) == 0.97


def test_teacher_update_equals_the_closed_form_average_with_the_clamp():
    student = _materialise(_net(0))
    teacher = EmaTeacher(student, alpha=0.6)
    start = [p.detach().clone() for p in teacher.module.parameters()]
    expected = [p.clone() for p in start]
    for step in range(1, 6):
        with torch.no_grad():
            for p in student.parameters():
                p.add_(torch.randn_like(p))
        teacher.update(student, step)
        decay = min(1 - 1 / (step + 1), 0.6)
        expected = [decay * e + (1 - decay) * p.detach() for e, p in zip(expected, student.parameters())]
    for got, want in zip(teacher.module.parameters(), expected):
        torch.testing.assert_close(got, want)
    # Mean Teacher averages parameters only: the teacher's BatchNorm statistics stay its own
    bn_teacher, bn_student = teacher.module[1], student[1]
    bn_student.running_mean.fill_(3.0)
    teacher.update(student, 6)
    assert torch.equal(bn_teacher.running_mean, torch.zeros(4))


def test_teacher_update_equals_swa_utils_ema_once_the_clamp_is_inactive():
    student = _materialise(_net(1))
    ours = EmaTeacher(student, alpha=0.9, warmup=False)
    peer = AveragedModel(student, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=False)
    peer.update_parameters(student)  # swa_utils copies the weights at its first update: both start at the student
    for step in range(1, 8):
        with torch.no_grad():
            for p in student.parameters():
                p.mul_(0.7).add_(torch.randn_like(p))
        ours.update(student, step)
        peer.update_parameters(student)
    for got, want in zip(ours.module.parameters(), peer.module.parameters()):
        torch.testing.assert_close(got, want)


def test_the_first_update_is_the_true_average_of_both():
    student = _materialise(_net(2))
    teacher = EmaTeacher(student, alpha=0.99)
    before = [p.detach().clone() for p in teacher.module.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    teacher.update(student, 1)
    for got, old, new in zip(teacher.module.parameters(), before, student.parameters()):
        torch.testing.assert_close(got, (old + new.detach()) / 2)


@pytest.mark.parametrize("t, length", [(0, 10), (5, 10), (10, 10), (15, 10), (3, 0)])
def test_sigmoid_rampup_matches_the_formula(t, length):
    expected = 1.0 if length == 0 else math.exp(-5 * (1 - min(t, length) / length) ** 2)
    assert sigmoid_rampup(t, length) == pytest.approx(expected)


def test_ramp_endpoints_and_rampdown():
    assert sigmoid_rampup(0, 8) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(4, 8) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(8, 8) == 1.0
    assert cosine_rampdown(0, 4) == 1.0 and cosine_rampdown(4, 4) == pytest.approx(0.0)


def test_fixmatch_lr_factor_is_cos_7_pi_over_16():
    for t in (0, 10, 50, 100):
        assert fixmatch_lr_factor(t, 100) == pytest.approx(math.cos(7 * math.pi * t / (16 * 100)))
    assert fixmatch_lr_factor(200, 100) == pytest.approx(math.cos(7 * math.pi / 16))
