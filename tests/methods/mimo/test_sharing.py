"""Feature-sharing measures on constructed cases (spec section 7, test 10 and the issue's sharing tests)."""

import itertools

import pytest
import torch
from torch import nn

from frugalvision.methods.mimo.model import wrap_backbone
from frugalvision.methods.mimo.sharing import (
    active_filters,
    channel_ablation,
    encoder_overlap,
    head_overlap,
    linear_cka,
    norm_overlap,
    solo_cka,
)
from frugalvision.nn.wide_resnet import preact_resnet


def conv_with_norms(norms):
    conv = nn.Conv2d(1, len(norms), 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(norms, dtype=torch.float32).view(-1, 1, 1, 1))
    return conv


def test_encoder_overlap_is_one_for_identical_and_zero_for_disjoint_encoders():
    assert encoder_overlap([conv_with_norms([1, 2, 3, 0]), conv_with_norms([2, 4, 6, 0])]) == pytest.approx(1.0)
    assert encoder_overlap([conv_with_norms([1, 1, 0, 0]), conv_with_norms([0, 0, 1, 1])]) == 0.0
    # closed form: scaled norms (1, .5, 0) and (0, .5, 1): sum min = .5, sum max = 2.5
    assert encoder_overlap([conv_with_norms([2, 1, 0]), conv_with_norms([0, 1, 2])]) == pytest.approx(0.2)


def test_head_overlap_uses_per_input_channel_norms():
    a, b = nn.Linear(3, 2, bias=False), nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        a.weight.copy_(torch.tensor([[3.0, 0.0, 0.0], [4.0, 0.0, 1.0]]))
        b.weight.copy_(torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
    assert head_overlap([a, a]) == pytest.approx(1.0)
    assert head_overlap([a, b]) == pytest.approx(0.0)
    assert norm_overlap([torch.tensor([5.0, 1.0]), torch.tensor([1.0, 1.0])]) == pytest.approx((0.2 + 1) / 2)


def test_active_filters_follow_the_notebook_definition_brute_force():
    torch.manual_seed(0)
    model = wrap_backbone(preact_resnet(4, 1, 5, 1), 2)
    layers = []
    for name, parameter in model.named_parameters():
        if "conv" in name and "weight" in name and not name.startswith("encoders"):
            norms = parameter.detach().abs().sum((1, 2, 3))
            layers.append(norms / norms.max())
    expected = {t: sum(float((n > t).float().mean()) for n in layers) / len(layers) for t in (0.2, 0.5)}
    assert active_filters(model, (0.2, 0.5)) == pytest.approx(expected)
    assert len(layers) == 6  # shortcut convolutions are excluded by the name filter, as in the notebook


def test_linear_cka_equals_the_hsic_form_and_is_invariant_to_rotation_and_scale():
    torch.manual_seed(1)
    x, y = torch.randn(200, 6).double(), torch.randn(200, 4).double()
    centre = torch.eye(200, dtype=torch.float64) - 1 / 200

    def hsic(k, l_):
        return torch.trace(k @ centre @ l_ @ centre)

    kx, ky = x @ x.T, y @ y.T
    assert linear_cka(x, y) == pytest.approx(float(hsic(kx, ky) / (hsic(kx, kx) * hsic(ky, ky)).sqrt()), rel=1e-9)
    rotation = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))[0]
    assert linear_cka(x, x @ rotation) == pytest.approx(1.0)
    assert linear_cka(x, 3.0 * x) == pytest.approx(1.0)


def _split_model(overlap: bool):
    """A M = 2 model whose heads read the same channels (overlap) or disjoint halves of the final map."""
    torch.manual_seed(2)
    model = wrap_backbone(preact_resnet(4, 1, 3, 1), 2).eval()
    with torch.no_grad():
        first = model.heads[0].weight
        model.heads[1].weight.copy_(first)
        model.heads[1].bias.copy_(model.heads[0].bias)
        if not overlap:
            half = first.shape[1] // 2
            model.heads[0].weight[:, half:] = 0
            model.heads[1].weight[:, :half] = 0
    return model


def test_channel_ablation_separates_shared_from_disjoint_heads():
    torch.manual_seed(3)
    images = torch.randn(120, 1, 16, 16)
    with torch.no_grad():
        labels = _split_model(True)(images)[:, 0].argmax(-1)  # targets the first member fits
    shared = channel_ablation(_split_model(True), images, labels)
    assert shared["spearman"] == pytest.approx(1.0) and shared["transfer"] == pytest.approx(1.0)
    disjoint = channel_ablation(_split_model(False), images, labels)
    assert disjoint["spearman"] < 0.2 and abs(disjoint["transfer"]) < 1e-9


def test_solo_cka_is_one_when_the_encoders_are_identical():
    torch.manual_seed(4)
    model = wrap_backbone(preact_resnet(4, 1, 3, 1), 3).eval()
    images = torch.randn(64, 1, 16, 16)
    assert solo_cka(model, images) < 0.999
    with torch.no_grad():
        for encoder in model.encoders[1:]:
            encoder.weight.copy_(model.encoders[0].weight)
    assert solo_cka(model, images) == pytest.approx(1.0)
    assert len(list(itertools.combinations(range(3), 2))) == 3
