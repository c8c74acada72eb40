"""MuHDi's pure functions against brute-force references and closed forms."""

import math

import pytest
import torch

from frugalvision.methods.muhdi.api import accuracy_summary
from frugalvision.methods.muhdi.functional import (
    entropy_loss,
    forgetting,
    kl_distillation,
    mse_distillation,
    pod_embedding,
    pod_loss,
    segmentation_loss,
    self_information,
)


def _kl_loops(teacher, student, reduction):
    """Triple loop over samples, pixels and classes of KL(softmax(t) || softmax(s))."""
    n, c, h, w = teacher.shape
    total = 0.0
    for i in range(n):
        for y in range(h):
            for x in range(w):
                t = torch.softmax(teacher[i, :, y, x].double(), 0)
                s = torch.softmax(student[i, :, y, x].double(), 0)
                total += sum(float(t[k] * (math.log(t[k]) - math.log(s[k]))) for k in range(c))
    pixels = n * h * w
    return total / (pixels * c) if reduction == "elementwise_mean" else total / pixels


@pytest.mark.parametrize("reduction", ["elementwise_mean", "pixel_mean"])
def test_kl_matches_a_triple_loop(reduction):
    g = torch.Generator().manual_seed(0)
    teacher, student = torch.randn(2, 5, 3, 4, generator=g), torch.randn(2, 5, 3, 4, generator=g)
    expected = _kl_loops(teacher, student, reduction)
    assert kl_distillation(teacher, student, reduction).item() == pytest.approx(expected, rel=1e-5)


def test_kl_elementwise_mean_is_the_official_kl_div_convention():
    g = torch.Generator().manual_seed(1)
    teacher, student = torch.randn(2, 7, 4, 4, generator=g), torch.randn(2, 7, 4, 4, generator=g)
    flat = lambda x: x.permute(0, 2, 3, 1).reshape(-1, 7)  # noqa: E731 - the official reshape
    official = torch.nn.functional.kl_div(
        torch.log_softmax(flat(student), 1), torch.softmax(flat(teacher), 1), reduction="mean"
    )
    assert kl_distillation(teacher, student).item() == pytest.approx(official.item(), rel=1e-5)


def test_kl_direction_and_zero():
    teacher = torch.tensor([[3.0, 0.0, 0.0]]).view(1, 3, 1, 1)
    student = torch.tensor([[0.0, 1.0, 0.0]]).view(1, 3, 1, 1)
    assert kl_distillation(teacher, student).item() != pytest.approx(kl_distillation(student, teacher).item())
    assert kl_distillation(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)


def test_mse_distillation_is_the_mean_squared_softmax_gap():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(1, 4, 2, 2, generator=g), torch.randn(1, 4, 2, 2, generator=g)
    expected = ((torch.softmax(a, 1) - torch.softmax(b, 1)) ** 2).mean()
    assert mse_distillation(a, b).item() == pytest.approx(expected.item(), rel=1e-6)


def _pod_loops(x, scales):
    """Region-by-region POD embedding as the official loop builds it (row-major regions, width then height)."""
    n, c, h, w = x.shape
    parts = []
    for k in scales:
        kh, kw = h // k, w // k
        for i in range(k):
            for j in range(k):
                region = x[..., i * kh : (i + 1) * kh, j * kw : (j + 1) * kw]
                if region.numel() == 0:
                    continue
                parts.append(region.mean(dim=3).reshape(n, -1))
                parts.append(region.mean(dim=2).reshape(n, -1))
    return torch.cat(parts, 1)


def _pod_loss_loops(old, new, scales):
    total = 0.0
    for a, b in zip(old, new):
        ea, eb = _pod_loops(a.double() ** 2, scales), _pod_loops(b.double() ** 2, scales)
        per_sample = [math.sqrt(float(((ea[i] - eb[i]) ** 2).sum())) for i in range(a.shape[0])]
        total += sum(per_sample) / len(per_sample)
    return total / len(old)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (2, 3, 7, 9), (1, 4, 5, 11), (3, 2, 3, 5)])
def test_pod_loss_matches_brute_force_loops_on_odd_sizes(shape):
    g = torch.Generator().manual_seed(sum(shape))
    old = [torch.randn(*shape, generator=g), torch.randn(shape[0], 5, 4, 6, generator=g)]
    new = [torch.randn_like(t) for t in old]
    expected = _pod_loss_loops(old, new, (1, 2, 4))
    assert pod_loss(old, new, (1, 2, 4)).item() == pytest.approx(expected, rel=1e-5)


def test_pod_embedding_has_the_size_of_the_official_concatenation():
    x = torch.randn(2, 3, 7, 9)
    assert pod_embedding(x).shape == _pod_loops(x, (1, 2, 4)).shape
    # H = 3 < 4: the scale-4 regions are empty and skipped, as in the official loop
    assert pod_embedding(torch.randn(1, 2, 3, 8)).shape == _pod_loops(torch.randn(1, 2, 3, 8), (1, 2, 4)).shape


def test_pod_is_zero_for_identical_features_and_invariant_to_batch_order():
    g = torch.Generator().manual_seed(3)
    old = [torch.randn(4, 3, 6, 6, generator=g)]
    new = [torch.randn(4, 3, 6, 6, generator=g)]
    assert pod_loss(old, old).item() == 0.0
    perm = torch.tensor([2, 0, 3, 1])
    assert pod_loss([old[0][perm]], [new[0][perm]]).item() == pytest.approx(pod_loss(old, new).item(), rel=1e-6)


def test_self_information_closed_forms():
    c = 7
    uniform = torch.full((1, c, 2, 2), 1.0 / c)
    info = self_information(uniform)
    assert torch.allclose(info, torch.full_like(info, 1.0 / c), atol=1e-6)
    assert torch.allclose(info.sum(1), torch.ones(1, 2, 2), atol=1e-6)
    one_hot = torch.zeros(1, c, 2, 2)
    one_hot[:, 3] = 1.0
    assert self_information(one_hot).abs().max().item() == 0.0
    random = torch.softmax(torch.randn(2, c, 3, 3) * 3, 1)
    expected = -random * torch.log2(random + 1e-30) / math.log2(c)
    assert torch.allclose(self_information(random), expected)
    assert 0.0 <= self_information(random).min() and self_information(random).max() <= 1.0


def test_entropy_loss_is_the_mean_normalised_pixel_entropy():
    logits = torch.randn(2, 5, 3, 3)
    p = torch.softmax(logits, 1)
    expected = -(p * torch.log(p)).sum(1).mean() / math.log(5)
    assert entropy_loss(logits).item() == pytest.approx(expected.item(), rel=1e-5)


def test_segmentation_loss_upsamples_and_ignores_255():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    labels = torch.full((1, 4, 4), 255, dtype=torch.long)
    assert segmentation_loss(logits, labels).item() == 0.0  # no labelled pixel: 0, as the official code
    labels[0, 0, 0] = 1
    up = torch.nn.functional.interpolate(logits, size=(4, 4), mode="bilinear", align_corners=True)
    expected = torch.nn.functional.cross_entropy(up[:, :, 0, 0], torch.tensor([1]))
    assert segmentation_loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)


def test_forgetting_on_a_crafted_matrix():
    # steps x targets: target 0 peaks after step 1, target 1 improves, target 2 learned last
    a = torch.tensor([[0.50, 0.20, 0.10], [0.60, 0.55, 0.20], [0.45, 0.58, 0.40]])
    assert torch.allclose(forgetting(a), torch.tensor([0.60 - 0.45, 0.55 - 0.58]))
    summary = accuracy_summary(a.tolist())
    assert summary["forgetting"] == pytest.approx(((0.60 - 0.45) + (0.55 - 0.58)) / 2)
    assert summary["mean_miou"] == pytest.approx((0.45 + 0.58 + 0.40) / 3)
    assert summary["plasticity"] == pytest.approx((0.50 + 0.55 + 0.40) / 3)
    assert math.isnan(accuracy_summary([[0.5, 0.1]])["forgetting"])
