import itertools

import pytest
import torch

from frugalvision.errors import ConfigError
from frugalvision.methods.tfood.losses import (
    TripletWeights,
    adaptive_margin,
    cosine_distance,
    incremental_margin,
    instance_triplet_costs,
    itm_pairs,
    sample_hard_negatives,
    semantic_triplet_costs,
    triplet_loss,
    valid_mean,
)


def _brute_instance(dist, margin, anchor):
    """Loop over all (anchor, positive, negative) triplets of matched pairs."""
    b = dist.shape[0]
    costs = []
    for a, n in itertools.product(range(b), range(b)):
        if a == n:
            continue
        if anchor == "image":  # image a, positive recipe a, negative recipe n
            c = float(dist[a, a]) - float(dist[a, n]) + margin
        else:  # recipe a, positive image a, negative image n
            c = float(dist[a, a]) - float(dist[n, a]) + margin
        costs.append(max(c, 0.0))
    return costs


def _valid(costs):
    active = [c for c in costs if c > 0]
    return sum(costs) / len(active) if active else 0.0


def _brute_semantic(dist, classes, margin, anchor):
    """AdaMine semantic triplets written as explicit loops."""
    items = [i for i in range(len(classes)) if classes[i] != 0]
    d = (lambda a, o: float(dist[a, o])) if anchor == "image" else (lambda a, o: float(dist[o, a]))
    rows = []
    for a in items:
        positives = [o for o in items if o != a and classes[o] == classes[a]]
        negatives = [o for o in items if classes[o] != classes[a]]
        rows.append((a, positives[0] if positives else None, negatives))
    rows = [r for r in rows if r[1] is not None]
    if not rows:
        return []
    k = min(len(r[2]) for r in rows)
    return [[max(d(a, p) - d(a, n) + margin, 0.0) for n in negs[:k]] for a, p, negs in rows]


@pytest.mark.parametrize("anchor", ["image", "recipe"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_instance_triplets_match_a_loop_over_all_triplets(anchor, seed):
    gen = torch.Generator().manual_seed(seed)
    img, rec = torch.randn(7, 5, generator=gen), torch.randn(7, 5, generator=gen)
    dist = cosine_distance(img, rec).double()
    costs = instance_triplet_costs(dist, 0.3, anchor)
    brute = _brute_instance(dist, 0.3, anchor)
    assert sorted(costs[~torch.eye(7, dtype=torch.bool)].tolist()) == pytest.approx(sorted(brute))
    assert float(valid_mean(costs)) == pytest.approx(_valid(brute))
    assert costs.diagonal().abs().sum() == 0


def test_cosine_distance_is_one_minus_cosine():
    img, rec = torch.randn(4, 3), torch.randn(4, 3)
    ref = 1 - torch.nn.functional.cosine_similarity(img.unsqueeze(1), rec.unsqueeze(0), dim=-1)
    assert torch.allclose(cosine_distance(img, rec), ref, atol=1e-6)


@pytest.mark.parametrize("anchor", ["image", "recipe"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_semantic_triplets_match_loops(anchor, seed):
    gen = torch.Generator().manual_seed(seed)
    classes = torch.tensor([0, 3, 3, 1, 0, 1, 2, 2, 2, 0, 4])  # class 4 has no positive: dropped
    dist = cosine_distance(torch.randn(11, 6, generator=gen), torch.randn(11, 6, generator=gen)).double()
    costs = semantic_triplet_costs(dist, classes, 0.2, anchor)
    brute = _brute_semantic(dist, classes.tolist(), 0.2, anchor)
    assert costs.shape == (len(brute), len(brute[0]))
    assert torch.allclose(costs, torch.tensor(brute, dtype=costs.dtype))


def test_semantic_triplets_empty_when_no_pairs():
    dist = torch.rand(4, 4)
    assert semantic_triplet_costs(dist, torch.tensor([0, 0, 1, 2]), 0.1).numel() == 0
    assert float(valid_mean(semantic_triplet_costs(dist, torch.zeros(4, dtype=torch.long), 0.1))) == 0.0


def test_valid_mean_all_zero_is_zero_and_keeps_the_graph():
    costs = torch.zeros(3, 3, requires_grad=True)
    out = valid_mean(costs)
    assert float(out) == 0.0
    out.backward()
    assert costs.grad is not None
    assert float(valid_mean(torch.tensor([0.0, 0.2, 0.4]))) == pytest.approx(0.3)


def test_triplet_loss_weights_and_division_by_the_number_of_terms():
    gen = torch.Generator().manual_seed(5)
    img, rec = torch.randn(8, 4, generator=gen), torch.randn(8, 4, generator=gen)
    classes = torch.tensor([0, 0, 1, 1, 2, 2, 0, 3])
    dist = cosine_distance(img, rec)
    irr = valid_mean(instance_triplet_costs(dist, 0.3, "image"))
    rii = valid_mean(instance_triplet_costs(dist, 0.3, "recipe"))
    sirr = valid_mean(semantic_triplet_costs(dist, classes, 0.3, "image"))
    srii = valid_mean(semantic_triplet_costs(dist, classes, 0.3, "recipe"))
    full, logs = triplet_loss(img, rec, classes, 0.3)
    assert float(full) == pytest.approx(float(irr + rii + 0.1 * sirr + 0.1 * srii) / 4, rel=1e-5)
    base, _ = triplet_loss(img, rec, classes, 0.3, TripletWeights(sirr=0.0, srii=0.0))
    assert float(base) == pytest.approx(float(irr + rii) / 2, rel=1e-5)
    assert logs["loss_sirr"] == pytest.approx(float(sirr), rel=1e-5)
    with pytest.raises(ConfigError):
        triplet_loss(img, rec, None, 0.3, TripletWeights(0, 0, 0, 0))


@pytest.mark.parametrize("epoch, expected", [(0, 0.18), (10, 0.23), (24, 0.3), (30, 0.3), (23, 0.295), (23.9, 0.2995)])
def test_incremental_margin_closed_form(epoch, expected):
    assert incremental_margin(epoch, 0.18, 0.005, 0.3) == pytest.approx(expected)


def test_incremental_margin_never_overshoots_like_the_add_while_below_loop():
    # the official update "add delta while below the max" overshoots when (max - start) is not a multiple of delta
    start, delta, maximum = 0.18, 0.007, 0.3
    loop = start
    for _ in range(40):
        if loop < maximum:
            loop += delta
    assert loop > maximum
    assert max(incremental_margin(e, start, delta, maximum) for e in range(40)) == maximum


def test_adaptive_margin_on_a_crafted_matrix():
    # 3x3 distances; with base 0.1 the active costs are exactly known
    dist = torch.tensor([[0.2, 0.25, 0.9], [0.9, 0.3, 0.9], [0.9, 0.35, 0.5]])
    first = instance_triplet_costs(dist, 0.1, "image")
    # row 0: D00 - D01 + .1 = 0.05 > 0, D00 - D02 + .1 < 0; row 1: none; row 2: 0.5 - 0.35 + .1 > 0, 0.5-0.9+.1 < 0
    assert (first > 0).sum() == 2
    costs, alpha, rho = adaptive_margin(dist, 0.1, "image", minimum=0.05, maximum=0.7)
    assert rho == pytest.approx(2 / 9)
    assert alpha == pytest.approx(0.7 * (1 - 2 / 9))
    assert torch.allclose(costs, instance_triplet_costs(dist, alpha, "image"))
    # every off-diagonal entry active, B = 20: rho = 19/20, 0.7 * 0.05 = 0.035 -> clipped at alpha_min
    _, alpha_low, rho_high = adaptive_margin(torch.ones(20, 20) - torch.eye(20), 5.0, "image")
    assert rho_high == pytest.approx(0.95) and alpha_low == pytest.approx(0.05)
    # nothing active -> alpha_max
    _, alpha_high, rho_zero = adaptive_margin(torch.eye(4) * 0 + 0.5, 0.0, "recipe")
    assert rho_zero == 0.0 and alpha_high == pytest.approx(0.7)


def test_hard_negative_sampler_never_returns_the_positive_and_is_safe():
    gen = torch.Generator().manual_seed(0)
    sim = torch.randn(6, 6)
    for _ in range(50):
        idx = sample_hard_negatives(sim, generator=gen)
        assert (idx != torch.arange(6)).all()
    # B = 2: the only negative
    assert sample_hard_negatives(torch.tensor([[1.0, 1.0], [1.0, 1.0]])).tolist() == [1, 0]
    # extreme similarities (underflow / overflow) stay valid
    extreme = torch.tensor([[1e30, -1e30, -1e30], [-1e30, 1e30, -1e30], [float("nan"), 0.0, 0.0]])
    for _ in range(20):
        idx = sample_hard_negatives(extreme, temperature=1e-6)
        assert (idx != torch.arange(3)).all()
    with pytest.raises(ConfigError):
        sample_hard_negatives(torch.ones(1, 1))


def test_hard_negative_sampler_with_small_temperature_returns_the_hardest():
    sim = torch.tensor([[0.9, 0.1, 0.5, 0.2], [0.3, 0.9, 0.1, 0.8], [0.7, 0.6, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]])
    expected = [2, 3, 0, 2]
    for _ in range(20):
        assert sample_hard_negatives(sim, temperature=1e-4).tolist() == expected


def test_itm_pairs_layout():
    gen = torch.Generator().manual_seed(1)
    img, rec = torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    pairs = itm_pairs(img, rec, generator=gen)
    b = torch.arange(5)
    assert pairs.labels.tolist() == [1] * 5 + [0] * 10
    assert torch.equal(pairs.image_index[:5], b) and torch.equal(pairs.recipe_index[:5], b)
    assert torch.equal(pairs.recipe_index[5:10], b) and (pairs.image_index[5:10] != b).all()
    assert torch.equal(pairs.image_index[10:], b) and (pairs.recipe_index[10:] != b).all()
