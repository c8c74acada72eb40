import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from frugalvision.methods.vicha.functional import (
    ema_update,
    enqueue,
    gathered_infonce,
    itc_distill_loss,
    mask_tokens,
    mim_loss,
    patchify,
    random_masking,
    sample_negatives,
    unpatchify,
)
from frugalvision.methods.vicha.objectives import gather_keys
from frugalvision.methods.vicha.task import OfficialSchedule, official_lr


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.mark.parametrize("alpha", [0.0, 0.4])
def test_itc_with_distillation_equals_a_brute_force_loop_over_rows_and_candidates(alpha):
    b, q, d, temp = 4, 6, 8, 0.07
    v, t, vm, tm, qi, qt = (_unit(n, d, seed=s) for s, n in enumerate((b, b, b, b, q, q)))
    loss, sim_i2t, _ = itc_distill_loss(v, t, vm, tm, qi, qt, temp, alpha)
    total = 0.0
    for query, query_m, keys in ((v, vm, torch.cat([tm, qt])), (t, tm, torch.cat([vm, qi]))):
        for i in range(b):
            logits = [float(query[i] @ keys[k]) / temp for k in range(b + q)]
            teacher = [float(query_m[i] @ keys[k]) / temp for k in range(b + q)]
            log_norm = math.log(sum(math.exp(x) for x in logits))
            t_norm = sum(math.exp(x) for x in teacher)
            for k in range(b + q):
                target = alpha * math.exp(teacher[k]) / t_norm + (1 - alpha) * (k == i)
                total -= target * (logits[k] - log_norm) / b
    assert loss.item() == pytest.approx(total / 2, rel=1e-5)
    assert sim_i2t.shape == (b, b + q)


def _row_losses(v, t, temp):
    """Brute force, single process over the global batch: per-row i2t and t2i cross-entropies."""
    n = v.shape[0]
    out = []
    for i in range(n):
        i2t = [float(v[i] @ t[k]) / temp for k in range(n)]
        t2i = [float(t[i] @ v[k]) / temp for k in range(n)]
        out.append(tuple(math.log(sum(math.exp(x) for x in s)) - s[i] for s in (i2t, t2i)))
    return out


def test_hitc_level_on_two_simulated_ranks_equals_the_single_process_loss_on_each_ranks_rows():
    b, d, temp = 3, 8, 0.1
    v, t = _unit(2 * b, d, seed=1), _unit(2 * b, d, seed=2)
    rows = _row_losses(v, t, temp)
    for rank in (0, 1):
        local = slice(rank * b, (rank + 1) * b)
        loss = gathered_infonce(v[local], t[local], v, t, temp, offset=rank * b)
        expected = sum(a + c for a, c in rows[local]) / (2 * b)
        assert loss.item() == pytest.approx(expected, rel=1e-5)
    # the official targets (columns 0..B-1 on every rank) are wrong on rank 1
    official = gathered_infonce(v[b:], t[b:], v, t, temp, offset=0)
    assert official.item() != pytest.approx(sum(a + c for a, c in rows[b:]) / (2 * b), rel=1e-3)


def test_detached_keys_give_i2t_gradients_only_to_the_queries():
    v = _unit(4, 8, seed=3).requires_grad_(True)
    t = _unit(4, 8, seed=4).requires_grad_(True)
    keys_t = gather_keys(t, detach=True)
    F.cross_entropy(v @ keys_t.T / 0.1, torch.arange(4)).backward()
    assert t.grad is None and v.grad is not None
    t2 = _unit(4, 8, seed=4).requires_grad_(True)
    F.cross_entropy(v.detach() @ gather_keys(t2, detach=False).T, torch.arange(4)).backward()
    assert t2.grad is not None and t2.grad.abs().sum() > 0


@pytest.mark.parametrize("size, batch, steps", [(10, 4, 7), (8, 3, 5), (5, 8, 2)])
def test_queue_enqueue_equals_the_closed_form_ring_buffer(size, batch, steps):
    queue, pointer = torch.zeros(size, 2), 0
    expected = torch.zeros(size, 2)
    written = 0
    for step in range(steps):
        feats = torch.arange(batch, dtype=torch.float32)[:, None].repeat(1, 2) + 100 * step
        pointer = enqueue(queue, pointer, feats)
        for row in feats[-size:]:
            expected[written % size] = row
            written += 1
    assert pointer == written % size
    assert torch.equal(queue, expected)


def test_ema_update_matches_the_closed_form_and_momentum_never_gets_gradients():
    online, momentum = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    momentum.requires_grad_(False)
    before = {k: v.clone() for k, v in momentum.state_dict().items()}
    ema_update(momentum, online, 0.9)
    for key, value in momentum.state_dict().items():
        assert torch.allclose(value, 0.9 * before[key] + 0.1 * online.state_dict()[key])
    (momentum(torch.randn(1, 3)).sum() + online(torch.randn(1, 3)).sum()).backward()
    assert all(p.grad is None for p in momentum.parameters())


@pytest.mark.parametrize(
    "sim",
    [
        torch.tensor([[1.0, 0.5], [0.2, 1.0]]),  # batch of 2: the only negative
        torch.eye(4) * 1e4,  # softmax underflow off the diagonal
        torch.full((3, 3), float("nan")),  # broken similarities fall back to uniform
        torch.full((3, 3), -1e30),
    ],
)
def test_itm_sampler_never_crashes_and_never_samples_the_positive(sim):
    torch.manual_seed(0)
    for _ in range(200):
        picks = sample_negatives(sim)
        assert (picks != torch.arange(sim.shape[0])).all()


def test_itm_sampler_follows_the_softmax_of_the_negatives():
    sim = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    generator = torch.Generator().manual_seed(0)
    picks = torch.stack([sample_negatives(sim, generator) for _ in range(4000)])
    share = (picks[:, 0] == 1).float().mean().item()
    assert share == pytest.approx(math.e / (math.e + 1), abs=0.03)


def test_itm_sampler_refuses_a_single_pair_with_a_clear_error():
    with pytest.raises(ValueError, match="B >= 2"):
        sample_negatives(torch.zeros(1, 1))


def test_mlm_masking_statistics_over_many_draws():
    pad, cls, sep, mask_id, vocab = 0, 2, 3, 4, 50
    ids = torch.randint(5, vocab, (400, 20), generator=torch.Generator().manual_seed(0))
    ids[:, 0], ids[:, 15], ids[:, 16:] = cls, sep, pad
    eligible = (ids != pad) & (ids != cls)
    masked, labels = mask_tokens(ids, vocab, mask_id, (pad, cls), 0.15, torch.Generator().manual_seed(1))
    chosen = labels != -100
    assert chosen.sum() / eligible.sum() == pytest.approx(0.15, abs=0.01)
    assert not chosen[(ids == pad) | (ids == cls)].any()
    assert chosen[ids == sep].any()  # official: SEP stays maskable
    assert torch.equal(labels[chosen], ids[chosen])
    replaced = (masked == mask_id) & chosen
    kept = (masked == ids) & chosen
    assert replaced.sum() / chosen.sum() == pytest.approx(0.8, abs=0.03)
    assert (chosen & ~replaced & ~kept).sum() / chosen.sum() == pytest.approx(0.1, abs=0.03)
    assert torch.equal(masked[~chosen], ids[~chosen])


def test_patchify_round_trip_and_mae_order():
    images = torch.randn(2, 3, 16, 16)
    patches = patchify(images, 8)
    assert patches.shape == (2, 4, 8 * 8 * 3)
    assert torch.equal(unpatchify(patches, 8), images)
    # patch 1 is the top-right block, flattened as (row, column, channel)
    assert torch.equal(patches[0, 1], images[0, :, :8, 8:].permute(1, 2, 0).reshape(-1))


def test_random_masking_keeps_int_l_quarter_and_restores_the_order():
    ids_keep, mask, ids_restore = random_masking(5, 16, 0.75, generator=torch.Generator().manual_seed(0))
    assert ids_keep.shape == (5, 4) and mask.sum(1).eq(12).all()
    shuffle = torch.argsort(ids_restore, dim=1)
    assert torch.equal(torch.gather(shuffle, 1, ids_restore), torch.arange(16).expand(5, 16))
    assert torch.equal(torch.gather(mask, 1, ids_keep), torch.zeros(5, 4))


def test_mim_loss_counts_masked_patches_only_and_a_perfect_predictor_scores_zero():
    target = torch.randn(2, 4, 12)
    mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
    normed = (target - mean) / (var + 1e-6) ** 0.5
    assert torch.allclose(normed.mean(-1), torch.zeros(2, 4), atol=1e-6)
    assert torch.allclose(normed.var(-1), torch.ones(2, 4), atol=1e-4)
    mask = torch.tensor([[1.0, 0, 1, 0], [0, 0, 1, 1]])
    assert mim_loss(normed, target, mask).item() == pytest.approx(0.0, abs=1e-10)
    pred = normed.clone()
    pred[mask == 0] += 5.0  # errors on visible patches do not count
    assert mim_loss(pred, target, mask).item() == pytest.approx(0.0, abs=1e-10)
    pred[0, 0] += 1.0
    assert mim_loss(pred, target, mask).item() == pytest.approx(1.0 / 4, rel=1e-5)


def test_official_schedule_values():
    s = OfficialSchedule(steps_per_epoch=10_000, epochs=11)
    assert official_lr(0, s) == pytest.approx(1e-5)
    assert official_lr(1000, s) == pytest.approx(1e-5 + 9e-5 * 9 / 20)  # stair set after iteration 900
    assert official_lr(2001, s) == pytest.approx(1e-4)
    assert official_lr(9999, s) == pytest.approx(1e-4)
    assert official_lr(10 * 10_000, s) == pytest.approx(1.18e-5, rel=0.01)  # never reaches 1e-5
