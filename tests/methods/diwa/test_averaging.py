"""Weight averaging, greedy selection, ensembles and moving averages against independent references."""

from __future__ import annotations

import itertools
import random
import warnings

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from frugalvision.errors import ConfigError
from frugalvision.methods.diwa.averaging import (
    FunctionalEnsemble,
    MovingAverage,
    average_models,
    average_state_dicts,
    buffer_keys,
    ensemble_probs,
    greedy_select,
    init_fingerprint,
    recompute_batchnorm,
)
from frugalvision.methods.diwa.model import DiwaNet, gn_cnn


def _bn_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    net.train()
    with torch.no_grad():
        net(torch.randn(8, 3, 6, 6) * (seed + 1))  # different running statistics per member
    return net


def test_uniform_average_equals_swa_averaged_model_params_and_buffers():
    members = [_bn_net(s) for s in range(5)]
    swa = AveragedModel(members[0], use_buffers=True)
    for member in members:  # AveragedModel copies on the first update
        swa.update_parameters(member)
    ours = average_models(members, buffer_policy="average")
    reference = swa.module.state_dict()
    for key, value in ours.state_dict().items():
        torch.testing.assert_close(value, reference[key], rtol=0, atol=1e-6, msg=key)
    # buffers really differed, so this compared averaged statistics, not copies
    assert not torch.equal(members[0][1].running_mean, members[1][1].running_mean)


def test_parameters_only_average_equals_swa_without_buffers():
    members = [_bn_net(s) for s in range(3)]
    swa = AveragedModel(members[0], use_buffers=False)
    for member in members:  # AveragedModel copies on the first update
        swa.update_parameters(member)
    ours = average_models(members, buffer_policy="from_first")
    for (name, p_ours), p_ref in zip(ours.named_parameters(), swa.module.parameters()):
        torch.testing.assert_close(p_ours, p_ref, rtol=0, atol=1e-6, msg=name)
    torch.testing.assert_close(ours[1].running_var, members[0][1].running_var, rtol=0, atol=0)


def test_default_buffer_policy_rejects_different_bn_statistics():
    members = [_bn_net(s) for s in range(2)]
    with pytest.raises(ConfigError, match="buffer '1.running_mean' differs"):
        average_models(members)


def test_identical_members_give_bit_identical_model_and_float64_accumulation():
    torch.manual_seed(0)
    state = {"w": torch.randn(50, 50), "b": torch.randn(50)}
    out = average_state_dicts([state] * 60)
    assert all(torch.equal(out[k], state[k]) for k in state)
    members = [{"w": torch.randn(30, 30) * 1e3 + 1e4} for _ in range(60)]
    reference = torch.stack([m["w"].double() for m in members]).mean(0)
    got = average_state_dicts(members)["w"]
    assert got.dtype == torch.float32
    assert (got.double() - reference).abs().max() <= (reference.abs() * 2**-24).max() * 1.01


def test_two_linear_models_average_elementwise():
    a, b = nn.Linear(4, 2), nn.Linear(4, 2)
    merged = average_models([a, b])
    torch.testing.assert_close(merged.weight, (a.weight + b.weight) / 2, rtol=0, atol=1e-7)
    torch.testing.assert_close(merged.bias, (a.bias + b.bias) / 2, rtol=0, atol=1e-7)


def test_shared_featurizer_linear_heads_wa_logits_equal_mean_logits():
    base = gn_cnn(1, 5, width=8)
    members = []
    for seed in range(4):
        member = gn_cnn(1, 5, width=8)
        member.load_state_dict(base.state_dict())
        torch.manual_seed(seed + 10)
        member.classifier.reset_parameters()
        members.append(member.eval())
    x = torch.rand(6, 1, 14, 14)
    merged = average_models(members).eval()
    mean_logits = torch.stack([m(x) for m in members]).mean(0)
    torch.testing.assert_close(merged(x), mean_logits, rtol=1e-5, atol=1e-6)


def test_averaged_model_is_an_ordinary_module_with_one_member_cost():
    members = [gn_cnn(1, 10) for _ in range(3)]
    fps = [None] * 3
    merged = average_models(members, fingerprints=fps)
    assert type(merged) is DiwaNet
    assert sum(p.numel() for p in merged.parameters()) == sum(p.numel() for p in members[0].parameters())
    assert [n for n, _ in merged.named_modules()] == [n for n, _ in members[0].named_modules()]
    traced_merged = torch.fx.symbolic_trace(merged).graph
    traced_member = torch.fx.symbolic_trace(members[0]).graph
    assert [n.op for n in traced_merged.nodes] == [n.op for n in traced_member.nodes]


def test_fingerprints_must_match_unless_forced():
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    fa, fb = init_fingerprint(a.state_dict()), init_fingerprint(b.state_dict())
    assert fa != fb and fa == init_fingerprint(a.state_dict())
    with pytest.raises(ConfigError, match="different initialisations"):
        average_models([a, b], fingerprints=[fa, fb])
    average_models([a, b], fingerprints=[fa, fb], force=True)
    average_models([a, b], fingerprints=[fa, fa])


def test_key_mismatch_and_weights():
    with pytest.raises(ConfigError, match="different keys"):
        average_state_dicts([{"a": torch.zeros(1)}, {"b": torch.zeros(1)}])
    out = average_state_dicts([{"a": torch.zeros(2)}, {"a": torch.ones(2)}], weights=[1, 3])
    torch.testing.assert_close(out["a"], torch.full((2,), 0.75))


def test_recompute_batchnorm_matches_statistics_of_the_data():
    net = _bn_net(0)
    data = [torch.randn(16, 3, 6, 6) * 3 + 1 for _ in range(3)]
    recompute_batchnorm(net, data)
    conv_out = torch.cat([net[0](x) for x in data])
    torch.testing.assert_close(net[1].running_mean, conv_out.mean((0, 2, 3)), rtol=1e-4, atol=1e-4)
    assert "1.running_mean" in buffer_keys(net)


def _brute_force_greedy(scores, merged_table, strict):
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept = [order[0]]
    for cand in order[1:]:
        old, new = merged_table[frozenset(kept)], merged_table[frozenset(kept + [cand])]
        if new > old or (not strict and new == old):
            kept = kept + [cand]
    return kept


@pytest.mark.parametrize("trial", range(20))
def test_greedy_matches_brute_force_on_recorded_accuracies(trial):
    rng = random.Random(trial)
    n = 6
    scores = [rng.choice([0.70, 0.72, 0.75, 0.75, 0.8]) for _ in range(n)]  # ties in individual scores
    table = {
        frozenset(s): rng.choice([0.70, 0.72, 0.74, 0.76])  # coarse values: many ties in merged scores
        for k in range(1, n + 1)
        for s in itertools.combinations(range(n), k)
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for tie, strict in (("ge", False), ("gt", True)):
            result = greedy_select(scores, lambda idx: table[frozenset(idx)], tie=tie)
            assert result.selected == _brute_force_greedy(scores, table, strict)
            assert result.selected[0] == result.order[0]


def test_greedy_compares_exact_scores_and_orders_ties_by_run_id():
    from fractions import Fraction

    # runs 1 and 2 tie exactly in individual val: run 1 (the lower id) goes first, as in the official loop
    individual = [Fraction(1, 2), Fraction(2, 3), Fraction(4, 6)]
    merged = {(1,): Fraction(2, 3), (1, 2): Fraction(2, 3), (1, 2, 0): Fraction(13, 20), (1, 0): Fraction(3, 5)}
    result = greedy_select(individual, lambda chosen: merged[tuple(chosen)], tie="ge")
    assert result.order == [1, 2, 0] and result.selected == [1, 2]  # an exact tie is accepted under ">="
    strict = greedy_select(individual, lambda chosen: merged[tuple(chosen)], tie="gt", warn_single=False)
    assert strict.selected == [1]


def test_greedy_tie_rules_on_crafted_table():
    scores = [0.5, 0.9, 0.9, 0.7]  # order: 1, 2 (tie broken by index), 3, 0
    table = {(1,): 0.8, (1, 2): 0.8, (1, 2, 3): 0.85, (1, 2, 3, 0): 0.84, (1, 3): 0.81, (1, 3, 0): 0.81}
    ge = greedy_select(scores, lambda idx: table[tuple(idx)], tie="ge")
    gt = greedy_select(scores, lambda idx: table[tuple(idx)], tie="gt")
    assert ge.order == [1, 2, 3, 0] and ge.selected == [1, 2, 3]
    assert gt.selected == [1, 3]
    with pytest.warns(UserWarning, match="kept only 1 of 2"):
        one = greedy_select([0.9, 0.1], lambda idx: 1.0 if idx == [0] else 0.0)
    assert one.selected == [0]


def test_functional_ensemble_is_mean_of_softmax():
    members = [nn.Linear(5, 3) for _ in range(4)]
    x = torch.randn(7, 5)
    expected = sum(torch.softmax(m(x), -1) for m in members) / 4
    torch.testing.assert_close(ensemble_probs(members, x), expected)
    torch.testing.assert_close(FunctionalEnsemble(members)(x).exp(), expected, rtol=1e-5, atol=1e-6)


def _official_ma(snapshots: list[dict[str, torch.Tensor]], start: int) -> torch.Tensor:
    """The official ``MA.update_ma`` on in-place updated weights: before ``start`` the MA *is* the live tensor."""
    live = snapshots[0]["w"].clone()
    ma, count = live, 0  # aliased
    for step, state in enumerate(snapshots, start=1):
        live.copy_(state["w"])  # the optimiser updates the live weights in place (the alias sees it)
        if step >= start:
            count += 1
            ma = (ma * count + live) / (1.0 + count)
        else:
            ma = live
    return ma


def test_task_moving_average_is_the_official_ma_with_its_alias_fixed():
    """Official: (2 w_s + w_{s+1} + ... + w_T) / (T - s + 2); ours (alias fixed): mean(w_{s-1} .. w_T)."""
    from frugalvision.methods.diwa.task import DiwaTask

    torch.manual_seed(0)
    snapshots = [{"w": torch.randn(3, 3)} for _ in range(10)]  # w_1 .. w_10
    start = 4
    official = (2 * snapshots[3]["w"] + sum(s["w"] for s in snapshots[4:])) / (10 - 4 + 2)
    torch.testing.assert_close(_official_ma(snapshots, start), official, rtol=1e-5, atol=1e-6)
    task = DiwaTask(lambda: nn.Linear(3, 3, bias=False), [], per_domain=1, max_steps=10, ma_start=start)
    task.build_model()
    for step, state in enumerate(snapshots, start=1):
        task.moving_average.update({"weight": state["w"]}, step)
    fixed = torch.stack([s["w"] for s in snapshots[2:]]).double().mean(0).float()  # w_3 .. w_10
    torch.testing.assert_close(task.moving_average.state_dict()["weight"], fixed, rtol=0, atol=1e-6)


def test_moving_average_equals_mean_of_snapshots_from_start_step():
    torch.manual_seed(0)
    snapshots = [{"w": torch.randn(3, 3), "n": torch.tensor(s)} for s in range(1, 11)]
    ma = MovingAverage(start_step=4)
    added = [ma.update(state, step) for step, state in enumerate(snapshots, start=1)]
    assert added == [False] * 3 + [True] * 7
    expected = torch.stack([s["w"] for s in snapshots[3:]]).double().mean(0).float()
    torch.testing.assert_close(ma.state_dict()["w"], expected, rtol=0, atol=1e-7)
    assert int(ma.state_dict()["n"]) == 10
    clone = MovingAverage(start_step=4)
    clone.load_tensors(ma.to_tensors())
    torch.testing.assert_close(clone.state_dict()["w"], ma.state_dict()["w"], rtol=0, atol=0)
