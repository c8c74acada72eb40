"""Repeated-augmentation order (world-size independent), LAMB vs a hand-written reference, LR scaling."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

from frugalvision.engine import GlobalBatchSampler
from frugalvision.errors import ConfigError
from frugalvision.methods.deit3.model import build_vit
from frugalvision.methods.deit3.optim import build_optimizer, scale_lr
from frugalvision.methods.deit3.sampler import ra_epoch_length, repeated_aug_order


def test_ra_order_repeats_consecutively_and_has_documented_length() -> None:
    order = repeated_aug_order(1000, repeats=3)
    idx = order(0, 7)
    assert len(idx) == ra_epoch_length(1000) == 768  # floor(1000 / 256) * 256, as the official RASampler
    full = repeated_aug_order(1000, repeats=3, truncate=False)(0, 7)
    assert len(full) == 3000 and all(v == 3 for v in Counter(full.tolist()).values())
    assert torch.equal(full.view(-1, 3), full.view(-1, 3)[:, :1].expand(-1, 3))
    assert torch.equal(idx, full[:768])
    assert not torch.equal(order(1, 7), idx) and torch.equal(order(0, 7), idx)
    assert ra_epoch_length(100) == 100  # smaller than 256: keep everything


def test_ra_union_over_ranks_is_world_size_independent() -> None:
    n, batch = 600, 8
    order = repeated_aug_order(n, repeats=3)

    def seen(world: int) -> list[list[int]]:
        steps: list[list[int]] = []
        samplers = [
            GlobalBatchSampler(n, batch // world, seed=3, rank=r, world_size=world, order=order) for r in range(world)
        ]
        for s in samplers:
            s.set_epoch(2)
        for batches in zip(*samplers):
            steps.append(sorted(i for b in batches for i in b))
        return steps

    one, two = seen(1), seen(2)
    assert one == two and len(one) == ra_epoch_length(n) // batch
    # at world size 2 the copies of an index go to different ranks (round-robin), as in the official sampler
    sampler0 = GlobalBatchSampler(n, 4, seed=3, rank=0, world_size=2, order=order)
    first = next(iter(sampler0))
    assert len(set(first)) > 1


def lamb_reference(params, grads, states, lr, wd, step, beta1=0.9, beta2=0.999, eps=1e-8, max_norm=1.0):
    """Hand-written LAMB (timm/apex semantics): global-norm clip, Adam moments, decay, trust ratio."""
    gnorm = torch.sqrt(sum((g**2).sum() for g in grads))
    clip = max(float(gnorm) / max_norm, 1.0)
    out = []
    for p, g, st, decay in zip(params, grads, states, wd):
        g = g / clip
        st["m"] = beta1 * st["m"] + (1 - beta1) * g
        st["v"] = beta2 * st["v"] + (1 - beta2) * g * g
        update = (st["m"] / (1 - beta1**step)) / ((st["v"] / (1 - beta2**step)).sqrt() + eps)
        if decay:
            update = update + decay * p
            w_norm, u_norm = float(p.norm()), float(update.norm())
            trust = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
            update = update * trust
        out.append(p - lr * update)
    return out


def test_lamb_step_equals_reference_including_zero_norm_case() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4, bias=True))
    with torch.no_grad():
        model[0].bias.zero_()  # 1-D: no decay, no trust ratio
    extra = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        extra.weight.zero_()  # zero weight norm: trust ratio 1
    model.append(extra)
    opt = build_optimizer(model, "lamb", lr=0.01, weight_decay=0.05)
    params = [model[0].weight, model[0].bias, extra.weight]
    decay = [0.05, 0.0, 0.05]
    states = [{"m": torch.zeros_like(p), "v": torch.zeros_like(p)} for p in params]
    for step in (1, 2, 3):
        grads = [torch.randn_like(p) * 3 for p in params]
        expected = lamb_reference([p.detach().clone() for p in params], grads, states, 0.01, decay, step)
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        for p, e in zip(params, expected):
            torch.testing.assert_close(p.detach(), e, atol=1e-6, rtol=1e-5)


def test_no_weight_decay_on_tokens_norms_biases_layerscale() -> None:
    model = build_vit(None, img_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=1, num_classes=3)
    opt = build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            no_decay = p.ndim <= 1 or name in ("pos_embed", "cls_token")
            assert group["weight_decay"] == (0.0 if no_decay else 0.05), name
    assert isinstance(build_optimizer(model, "lamb"), torch.optim.Optimizer)
    with pytest.raises(ConfigError):
        build_optimizer(model, "sgd")  # type: ignore[arg-type]


def test_lr_scaling_modes() -> None:
    assert scale_lr(4e-3, 2048, "none") == 4e-3
    assert scale_lr(5e-4, 1024, "linear_512") == pytest.approx(1e-3)
    with pytest.raises(ConfigError):
        scale_lr(1e-3, 64, "sqrt")  # type: ignore[arg-type]
