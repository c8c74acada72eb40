"""Mixing block, masks, ratios, loss weights, Cut-MixMo schedule, batch repetition (spec section 7, tests 1-5)."""

import math

import numpy as np
import pytest
import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from frugalvision.errors import ConfigError
from frugalvision.methods.mimo.batching import member_batch, member_permutations, random_crop_flip
from frugalvision.methods.mimo.losses import l2_penalty, mimo_loss
from frugalvision.methods.mimo.mixing import (
    _boxes,
    cut_probability,
    draw_plan,
    loss_weights,
    mix_features,
    sample_ratios,
)


def test_summed_stems_equal_one_conv_over_channel_concatenated_inputs_havasi():
    torch.manual_seed(0)
    stems = [nn.Conv2d(3, 8, 3, padding=1, bias=False) for _ in range(2)]
    x = torch.randn(4, 2, 3, 16, 16)
    summed = mix_features(torch.stack([stems[m](x[:, m]) for m in range(2)], 1))
    joint = F.conv2d(rearrange(x, "b m c h w -> b (m c) h w"), torch.cat([s.weight for s in stems], 1), padding=1)
    torch.testing.assert_close(summed, joint, atol=1e-6, rtol=1e-6)
    stacked = rearrange(x, "b m c h w -> (m b) c h w")  # torch-uncertainty's batch layout round-trips
    assert torch.equal(rearrange(stacked, "(m b) c h w -> b m c h w", m=2), x)


@pytest.mark.parametrize("mixing", ["sum", "linear", "cut"])
@pytest.mark.parametrize("members", [2, 3])
def test_masks_partition_the_grid_and_ratios_are_their_means(mixing, members):
    torch.manual_seed(1)
    for _ in range(5):
        plan = draw_plan(mixing, 32, members, (8, 8), p_cut=1.0)
        torch.testing.assert_close(plan.masks.sum(1), torch.ones(32, 8, 8))
        torch.testing.assert_close(plan.ratios, plan.masks.mean((2, 3)))
        assert bool((plan.masks >= 0).all()) and plan.cut.all() == (mixing == "cut")


def test_cut_masks_are_binary_boxes_per_sample_with_one_role_shuffle_per_batch():
    torch.manual_seed(2)
    roles = set()
    for _ in range(20):
        plan = draw_plan("cut", 64, 2, (16, 16), p_cut=1.0)
        assert set(plan.masks.unique().tolist()) <= {0.0, 1.0}
        assert len({tuple(m.flatten().tolist()) for m in plan.masks[:, 0]}) > 10  # boxes differ per sample
        rows, cols = plan.masks.amax(3), plan.masks.amax(2)  # [N, M, H], [N, M, W]
        rectangle = plan.masks.sum((2, 3)) == rows.sum(2) * cols.sum(2)  # ones fill their bounding box
        roles.add(int(rectangle.float().mean(0).argmax()))
    assert len(roles) == 2  # the box role goes to either member, batch by batch


def test_box_rasterisation_equals_mixmo_rule_brute_force():
    torch.manual_seed(3)
    ratio = torch.rand(50)
    torch.manual_seed(4)
    boxes = _boxes(ratio, 12, 10)
    torch.manual_seed(4)
    cy, cx = torch.randint(0, 12, (50,)), torch.randint(0, 10, (50,))
    for i in range(50):
        cut_h, cut_w = int(12 * math.sqrt(ratio[i])), int(10 * math.sqrt(ratio[i]))
        y1, y2 = np.clip(int(cy[i]) - cut_h // 2, 0, 12), np.clip(int(cy[i]) + cut_h // 2, 0, 12)
        x1, x2 = np.clip(int(cx[i]) - cut_w // 2, 0, 10), np.clip(int(cx[i]) + cut_w // 2, 0, 10)
        expected = torch.zeros(12, 10)
        expected[y1:y2, x1:x2] = 1
        assert torch.equal(boxes[i], expected)


def test_training_mixing_scales_by_m_and_inference_sums():
    torch.manual_seed(5)
    feats = torch.randn(3, 2, 4, 6, 6)
    masks = torch.zeros(3, 2, 6, 6)
    masks[:, 0] = 1.0
    torch.testing.assert_close(mix_features(feats, masks), 2 * feats[:, 0])
    torch.testing.assert_close(mix_features(feats), feats[:, 0] + feats[:, 1])
    with pytest.raises(ConfigError, match="stem output size"):
        mix_features(feats, torch.zeros(3, 2, 5, 5))


def test_linear_mixing_with_three_members_matches_the_formula_channel_by_channel():
    torch.manual_seed(6)
    plan = draw_plan("linear", 4, 3, (5, 5), alpha=1.0)
    feats = torch.randn(4, 3, 2, 5, 5)
    expected = torch.zeros(4, 2, 5, 5)
    for n in range(4):
        for c in range(2):
            expected[n, c] = 3 * sum(plan.ratios[n, m] * feats[n, m, c] for m in range(3))
    torch.testing.assert_close(mix_features(feats, plan.masks), expected)


def test_dirichlet_ratios_have_the_dirichlet_moments():
    torch.manual_seed(7)
    ratios = sample_ratios(200_000, 2, 2.0)
    assert float(ratios[:, 0].mean()) == pytest.approx(0.5, abs=0.005)
    assert float(ratios[:, 0].var()) == pytest.approx(2 * 2 / (16 * 5), rel=0.03)  # a(A-a) / (A^2 (A+1)), A = 4
    assert torch.equal(sample_ratios(3, 4, 0.0), torch.full((3, 4), 0.25))


def test_loss_weights_match_the_closed_form_and_sum_to_m():
    ratios = torch.tensor([[0.2, 0.8], [0.5, 0.5], [0.1, 0.3]])
    ratios[2] = torch.tensor([0.25, 0.75])
    weights = loss_weights(ratios, 3.0)
    for n in range(3):
        a, b = ratios[n].tolist()
        expected = [2 * a ** (1 / 3) / (a ** (1 / 3) + b ** (1 / 3)), 2 * b ** (1 / 3) / (a ** (1 / 3) + b ** (1 / 3))]
        assert weights[n].tolist() == pytest.approx(expected)
    torch.testing.assert_close(weights.sum(1), torch.full((3,), 2.0))
    torch.testing.assert_close(loss_weights(torch.full((4, 3), 1 / 3), 1.0), torch.ones(4, 3))


def test_mimo_loss_equals_a_brute_force_weighted_sum_and_l2_covers_every_parameter():
    torch.manual_seed(8)
    logits, targets, ratios = torch.randn(5, 2, 4), torch.randint(0, 4, (5, 2)), torch.rand(5, 2)
    weights = loss_weights(ratios, 3.0)
    expected = sum(
        weights[n, m] * F.cross_entropy(logits[n, m][None], targets[n, m][None]) / 5 for n in range(5) for m in range(2)
    )
    torch.testing.assert_close(mimo_loss(logits, targets, ratios, 3.0)[0], expected)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    assert float(l2_penalty(net)) == pytest.approx(sum(float((p**2).sum()) for p in net.parameters()))


def test_cut_probability_is_constant_then_decays_linearly_to_zero():
    assert cut_probability(0.0) == cut_probability(0.9) == 0.5
    assert cut_probability(11 / 12 + 1 / 24) == pytest.approx(0.25)
    assert cut_probability(1.0) == 0.0
    torch.manual_seed(9)
    assert not any(draw_plan("cut", 4, 2, (4, 4), p_cut=0.0).cut.any() for _ in range(20))


def test_batch_repetition_counts_and_independent_member_permutations():
    torch.manual_seed(10)
    images = torch.arange(16, dtype=torch.float32).view(16, 1, 1, 1).expand(16, 1, 2, 2)
    inputs, targets = member_batch(images, torch.arange(16), members=2, repetitions=4)
    assert inputs.shape == (64, 2, 1, 2, 2)
    for m in range(2):
        assert torch.bincount(targets[:, m], minlength=16).tolist() == [4] * 16
        assert torch.equal(inputs[:, m, 0, 0, 0].long(), targets[:, m])
    assert not torch.equal(targets[:, 0], targets[:, 1])


def test_input_repetition_rate_is_within_three_sigma():
    torch.manual_seed(11)
    count, p = 2000, 0.3
    perms = member_permutations(count, 2, p)
    assert sorted(perms[1].tolist()) == list(range(count))
    same = float((perms[0] == perms[1]).double().mean())
    assert abs(same - p) < 3 * math.sqrt(p * (1 - p) / count) + 1 / count
    independent = member_permutations(count, 2, 0.0)
    assert float((independent[0] == independent[1]).double().mean()) < 0.01


def test_random_crop_flip_keeps_the_size_and_content_of_unpadded_unflipped_images():
    torch.manual_seed(12)
    images = torch.rand(64, 3, 8, 8)
    out = random_crop_flip(images, 2)
    assert out.shape == images.shape
    unchanged = [(out[i] == images[i]).all() or (out[i] == images[i].flip(-1)).all() for i in range(64)]
    assert 0 < sum(bool(u) for u in unchanged) < 64
    assert torch.equal(random_crop_flip(images, 0, flip=False), images)
