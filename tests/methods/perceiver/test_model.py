"""The Perceiver classifier: exact Q'=Q forward, counted vs closed-form FLOPs, cascade, scorer, ranking, checkpoints."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from frugalvision.engine import load_weights, save_weights
from frugalvision.methods.perceiver.config import PerceiverConfig
from frugalvision.methods.perceiver.functional import cascade_decisions, nested_loss, width_grid
from frugalvision.methods.perceiver.model import (
    PerceiverClassifier,
    cascade_stage_macs,
    macs_breakdown,
    model_macs,
)
from frugalvision.methods.perceiver.selection import latent_importance, rank_latents

SMALL = PerceiverConfig(num_latents=8, latent_dim=16, token_dim=16, layers=2, self_heads=2, patch_size=7)


def _model(seed: int = 0, **changes) -> PerceiverClassifier:
    torch.manual_seed(seed)
    return PerceiverClassifier(dataclasses.replace(SMALL, **changes)).eval()


def _midpoint_tau(logits: torch.Tensor) -> float:
    """A threshold halfway between two middle confidences (never equal to one: no rounding-dependent ties)."""
    conf = logits.softmax(-1).amax(-1).sort().values
    middle = conf.shape[0] // 2
    return (conf[middle - 1] + conf[middle]).item() / 2


def _images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_full_query_set_equals_the_standard_forward_exactly():
    model = _model()
    x = _images()
    tokens = model.tokenizer(x).flatten(2).transpose(1, 2)
    standard = model.head(model.encoder(tokens, model.pos))
    assert torch.equal(model(x), standard)
    assert torch.equal(model(x, num_latents=8), standard)
    assert torch.equal(model(x, widths=[8, 4])[8], standard)
    assert torch.equal(model(x, widths=[8, 4])[4], model(x, num_latents=4))


def test_logits_shape_for_every_width_and_invalid_width():
    model = _model()
    for k in width_grid(8, 2):
        assert model(_images(3), num_latents=k).shape == (3, 10)
    with pytest.raises(ValueError, match="num_latents"):
        model(_images(3), num_latents=9)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"num_latents": 12, "latent_dim": 24, "layers": 3, "mlp_ratio": 2.0, "self_heads": 4},
        {"patch_size": 4, "num_latents": 6, "mlp_ratio": 1.0, "layers": 1},
        {"head": "query", "cross_heads": 2},
        {"pos": "fourier", "fourier_bands": 3, "num_blocks": 2},
        {"scorer": True},
    ],
)
def test_counted_flops_match_the_closed_form(changes):
    model = _model(**changes, attn_impl="math")
    cfg = model.config
    x = _images(2)
    for k in sorted({cfg.num_latents, cfg.num_latents // 2, 1}):
        with FlopCounterMode(display=False) as counter:
            model(x, num_latents=k)
        assert counter.get_total_flops() == 2 * 2 * model_macs(cfg, k)
        # the latent stack alone: L · (4·k·d² + 2·k²·d + 2·r·k·d²) MACs, quadratic in k
        prep = model.prepare(x)
        first = model.first_rows(prep, 0, k)
        with FlopCounterMode(display=False) as counter:
            for layer in model.encoder.layers[0]:
                first = layer(first)
        d, hidden = cfg.latent_dim, round(cfg.latent_dim * cfg.mlp_ratio)
        closed = cfg.layers * (4 * k * d * d + 2 * k * k * d + 2 * k * d * hidden)
        assert counter.get_total_flops() == 2 * 2 * closed
    parts = macs_breakdown(cfg, cfg.num_latents)
    assert parts["total"] == sum(v for key, v in parts.items() if key != "total")


def test_cascade_threshold_zero_uses_only_the_smallest_set_and_one_the_full_set():
    model = _model()
    x = _images(6)
    logits, stage = model.cascade(x, (2, 8), 0.0)
    assert (stage == 0).all()
    torch.testing.assert_close(logits, model(x, num_latents=2), atol=1e-6, rtol=0)
    logits, stage = model.cascade(x, (2, 8), 1.0)
    assert (stage == 1).all()
    torch.testing.assert_close(logits, model(x), atol=1e-6, rtol=0)


def test_cascade_escalation_with_reuse_equals_a_fresh_forward():
    model = _model(seed=3)
    x = _images(16, seed=1)
    small = model(x, num_latents=2)
    tau = _midpoint_tau(small)
    logits, stage = model.cascade(x, (2, 4, 8), tau)
    assert 0 < (stage == 0).sum() < 16
    expected_stage = cascade_decisions([small, model(x, num_latents=4), model(x)], tau)
    assert torch.equal(stage, expected_stage)
    for j, k in enumerate((2, 4, 8)):
        rows = stage == j
        if rows.any():
            torch.testing.assert_close(logits[rows], model(x[rows], num_latents=k), atol=1e-6, rtol=0)
    stacked = model.cascade_stage_logits(x, (2, 4, 8))
    for out, k in zip(stacked, (2, 4, 8), strict=True):
        torch.testing.assert_close(out, model(x, num_latents=k), atol=1e-6, rtol=0)


@pytest.mark.parametrize("scorer", [False, True])
def test_average_mac_formula_equals_counted_macs_of_the_dynamic_cascade(scorer):
    model = _model(seed=4, scorer=scorer, attn_impl="math")
    x = _images(12, seed=2)
    stages = (2, 4, 8)
    stage_logits = model.cascade_stage_logits(x, stages)
    tau = _midpoint_tau(stage_logits[0])
    with FlopCounterMode(display=False) as counter:
        _, stage = model.cascade(x, stages, tau)
    reached = [int((stage >= j).sum()) for j in range(3)]  # images reaching stage j = 12 · P(reach j)
    assert 0 < reached[1] < 12
    formula = sum(r * m for r, m in zip(reached, cascade_stage_macs(model.config, stages), strict=True))
    assert counter.get_total_flops() == 2 * formula


def test_batch_invariance_of_logits_and_cascade():
    model = _model(seed=5)
    x = _images(7, seed=3)
    full, quarter = model(x), model(x, num_latents=2)
    tau = _midpoint_tau(quarter)
    cascade_logits, cascade_stage = model.cascade(x, (2, 8), tau)
    for i in (0, 3, 6):
        xi = x[i : i + 1]
        torch.testing.assert_close(model(xi), full[i : i + 1], atol=1e-5, rtol=0)
        torch.testing.assert_close(model(xi, num_latents=2), quarter[i : i + 1], atol=1e-5, rtol=0)
        logits_i, stage_i = model.cascade(xi, (2, 8), tau)
        assert stage_i.item() == cascade_stage[i].item()
        torch.testing.assert_close(logits_i, cascade_logits[i : i + 1], atol=1e-5, rtol=0)


def test_token_and_latent_permutations():
    model = _model(seed=6)
    x = _images(3)
    tokens = model.tokenizer(x).flatten(2).transpose(1, 2)
    perm = torch.randperm(tokens.shape[1])
    logits = model.head(model.encoder(tokens, model.pos))
    permuted = model.head(model.encoder(tokens[:, perm], model.pos[perm]))
    torch.testing.assert_close(permuted, logits, atol=1e-5, rtol=0)
    before = model(x)
    with torch.no_grad():
        model.encoder.latents.copy_(model.encoder.latents[torch.randperm(8)])
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=0)


def test_scorer_full_set_reproduces_the_model_and_receives_gradient():
    model = _model(seed=7, scorer=True)
    x = _images(4)
    prep = model.prepare(x)
    plain = model.finish(model.first_rows(prep, 0, 8), prep)
    torch.testing.assert_close(model(x), plain, atol=1e-6, rtol=0)
    model.train()
    labels = torch.randint(0, 10, (4,))
    loss, _ = nested_loss(model(x, widths=[8, 4, 2]), labels, 0.5, 1.0)
    loss.backward()
    assert model.scorer[1].weight.grad.abs().sum() > 0
    assert model.encoder.latents.grad.abs().sum() > 0


def test_ranked_importance_equals_brute_force_and_full_reordering_is_harmless():
    model = _model(seed=8)
    x, y = _images(10, seed=4), torch.randint(0, 10, (10,))
    importance = latent_importance(model, x, y, batch_size=4)
    full_loss = F.cross_entropy(model(x), y)
    for q in range(8):
        keep = torch.tensor([j for j in range(8) if j != q]).expand(10, -1)
        dropped = F.cross_entropy(model(x, latent_index=keep), y)
        assert importance[q].item() == pytest.approx((dropped - full_loss).item(), abs=1e-5)
    before = model(x)
    order = rank_latents(model, x, y)
    assert sorted(order.tolist()) == list(range(8))
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=0)
    assert (importance[order][:-1] >= importance[order][1:]).all()


def test_safetensors_checkpoint_reproduces_every_width(tmp_path):
    model = _model(seed=9, head="query")
    path = save_weights(model.state_dict(), tmp_path / "perceiver.safetensors")
    clone = _model(seed=10, head="query")
    clone.load_state_dict(load_weights(path))
    x = _images(3)
    for k in width_grid(8, 2):
        assert torch.equal(clone(x, num_latents=k), model(x, num_latents=k))


def test_bf16_autocast_training_stays_finite():
    model = _model(seed=11, attn_impl="math").train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = _images(8), torch.randint(0, 10, (8,))
    for _ in range(20):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = nested_loss(model(x, widths=[8, 2]), y, 0.5, 1.0)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.isfinite(model(_images(2) * 1e3)).all()
