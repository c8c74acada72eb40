"""DeiT III ViT: sizes and logits vs timm, LayerScale, position-free class token, drop path, resizing, converter."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from timm.layers.drop import calculate_drop_path_rates

from frugalvision.errors import ConfigError
from frugalvision.methods.deit3.model import (
    VIT_PRESETS,
    SkipDropPathBlock,
    _skip_residual,
    build_vit,
    drop_path_rates,
    fold_layer_scale,
    interpolate_pos_embed,
    load_pretrained,
    official_to_timm,
    resize_vit,
    set_drop_path,
    timm_to_official,
)


def tiny(**kw):
    args = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=5)
    args.update(kw)
    return build_vit(None, **args)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("size", ["small", "base"])
def test_param_count_and_logits_equal_timm(size: str) -> None:
    with torch.device("meta"):
        assert n_params(build_vit(size, img_size=224)) == n_params(
            timm.create_model(f"deit3_{size}_patch16_224", pretrained=False)
        )
    # Logits at 64 px (16 patches) keep the test fast; every weight but the position table has the 224-px shape.
    # Both models are built on the meta device (skipping the slow init) and get the same random weights.
    with torch.device("meta"):
        ours = build_vit(size, img_size=64, num_classes=1000)
        ref = timm.create_model(f"deit3_{size}_patch16_224", pretrained=False, img_size=64)
    ours, ref = ours.to_empty(device="cpu").eval(), ref.to_empty(device="cpu").eval()
    assert set(ours.state_dict()) == set(ref.state_dict())
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=generator) * 0.02 for k, v in ours.state_dict().items()}
    ours.load_state_dict(state)
    ref.load_state_dict(state)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)


# Paper / official model zoo, millions of parameters at 224 px (ViT-Ti from the DeiT family). The paper rounds
# inconsistently (S 22.06 -> 22.0, B 86.59 -> 86.6), hence the 0.1 M tolerance.
PAPER_PARAMS_M = {"tiny": 5.7, "small": 22.0, "medium": 38.8, "base": 86.6, "large": 304.4, "huge": 632.1}


@pytest.mark.parametrize("size", list(VIT_PRESETS))
def test_every_preset_matches_paper_param_count(size: str) -> None:
    with torch.device("meta"):
        model = build_vit(size, img_size=224, num_classes=1000)
    assert n_params(model) / 1e6 == pytest.approx(PAPER_PARAMS_M[size], abs=0.1)


@pytest.mark.parametrize("size", list(VIT_PRESETS))
def test_every_preset_builds_and_runs_at_tiny_width(size: str) -> None:
    patch, _, depth, heads = VIT_PRESETS[size]
    model = build_vit(
        size, img_size=2 * patch, embed_dim=8 * heads, depth=min(depth, 2), num_classes=3, drop_rate=0.1, drop_path=0.1
    )
    out = model(torch.randn(2, 3, 2 * patch, 2 * patch))
    out.sum().backward()  # dropout > 0 works in train mode (the official code crashes there)
    assert out.shape == (2, 3)


def test_layerscale_block_equals_hand_computation() -> None:
    torch.manual_seed(0)
    model = tiny(layer_scale_init=0.3).eval()
    block = model.blocks[0]
    assert block.ls1.gamma.shape == (32,) and torch.all(block.ls1.gamma == 0.3)
    assert torch.all(block.ls2.gamma == 0.3)
    with torch.no_grad():
        block.ls1.gamma.uniform_(-1, 1)
        block.ls2.gamma.uniform_(-1, 1)
        x = torch.randn(3, 17, 32)
        attn = block.attn
        h = block.norm1(x)
        qkv = F.linear(h, attn.qkv.weight, attn.qkv.bias).reshape(3, 17, 3, 2, 16).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = torch.softmax(q @ k.transpose(-2, -1) / 16**0.5, dim=-1) @ v
        a = F.linear(a.transpose(1, 2).reshape(3, 17, 32), attn.proj.weight, attn.proj.bias)
        y = x + block.ls1.gamma * a
        m = F.linear(F.gelu(block.mlp.fc1(block.norm2(y))), block.mlp.fc2.weight, block.mlp.fc2.bias)  # raw weights
        expected = y + block.ls2.gamma * m
        torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


def test_no_layerscale_and_defaults() -> None:
    model = tiny(layer_scale_init=None)
    assert not any("gamma" in k for k in model.state_dict())
    assert float(tiny().blocks[1].ls2.gamma[0]) == pytest.approx(1e-4)  # official init
    assert model.norm.eps == 1e-6 and model.blocks[0].attn.qkv.bias is not None


def test_class_token_has_no_position_embedding() -> None:
    model = tiny().eval()
    assert model.pos_embed.shape == (1, 16, 32)
    captured = {}
    model.blocks[0].register_forward_pre_hook(lambda m, args: captured.setdefault("x", args[0].clone()))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        model(x)
        first = captured.pop("x")
        model.pos_embed.add_(torch.randn_like(model.pos_embed))
        model(x)
        second = captured.pop("x")
    torch.testing.assert_close(first[:, 0], second[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(first[:, 0], model.cls_token.expand(2, -1, -1)[:, 0])
    assert not torch.allclose(first[:, 1:], second[:, 1:])


def test_drop_path_uniform_by_default_and_linear_option() -> None:
    model = tiny(depth=4, drop_path=0.2)
    assert [b.drop_path1.drop_prob for b in model.blocks] == [0.2] * 4
    assert [b.drop_path2.drop_prob for b in model.blocks] == [0.2] * 4
    linear = drop_path_rates(0.2, 4, "linear")
    assert linear == pytest.approx(calculate_drop_path_rates(0.2, 4))
    set_drop_path(model, 0.2, "linear")
    assert [getattr(b.drop_path1, "drop_prob", 0.0) for b in model.blocks] == pytest.approx(linear)
    with pytest.raises(ConfigError):
        drop_path_rates(0.1, 2, "cubic")  # type: ignore[arg-type]


def test_drop_path_per_sample_and_unbiased() -> None:
    model = tiny(drop_path=0.3)
    dp = model.blocks[0].drop_path1
    x = torch.ones(10000, 2, 3)
    dp.eval()
    assert torch.equal(dp(x), x)
    dp.train()
    torch.manual_seed(0)
    y = dp(x)
    per_sample = y.flatten(1)
    assert torch.all((per_sample == 0).all(1) | torch.isclose(per_sample, torch.tensor(1 / 0.7)).all(1))
    assert float(y.mean()) == pytest.approx(1.0, rel=0.01 * 3)  # within 3 standard errors-ish of 1


def test_interpolation_identity_and_equal_to_timm() -> None:
    pe = torch.randn(1, 9, 8)
    assert interpolate_pos_embed(pe, (3, 3)) is pe
    up = interpolate_pos_embed(pe, (4, 4))
    ref = resample_abs_pos_embed(pe, [4, 4], num_prefix_tokens=0, antialias=False)
    torch.testing.assert_close(up, ref)
    explicit = (
        F.interpolate(pe.reshape(1, 3, 3, 8).permute(0, 3, 1, 2), size=(4, 4), mode="bicubic", align_corners=False)
        .permute(0, 2, 3, 1)
        .reshape(1, 16, 8)
    )
    torch.testing.assert_close(up, explicit)
    with_cls = torch.randn(1, 10, 8)
    out = interpolate_pos_embed(with_cls, (4, 4), num_prefix_tokens=1)
    torch.testing.assert_close(out[:, :1], with_cls[:, :1])


def test_resize_vit_equals_explicit_interpolation_and_runs_at_both_sizes() -> None:
    torch.manual_seed(0)
    low = build_vit(None, img_size=12, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=5).eval()
    high = resize_vit(low, 16).eval()
    assert high.pos_embed.shape == (1, 16, 32) and low.pos_embed.shape == (1, 9, 32)
    fresh = build_vit(None, img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=5).eval()
    state = dict(low.state_dict())
    grid = state["pos_embed"].reshape(1, 3, 3, 32).permute(0, 3, 1, 2)
    state["pos_embed"] = F.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    state["pos_embed"] = state["pos_embed"].reshape(1, 16, 32)
    fresh.load_state_dict(state)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(high(x), fresh(x), rtol=0, atol=0)
        assert low(torch.randn(2, 3, 12, 12)).shape == (2, 5)
    assert resize_vit(low, 12).pos_embed.data_ptr() != low.pos_embed.data_ptr()  # a copy, never aliasing


def test_weight_converter_round_trip_gives_identical_logits() -> None:
    torch.manual_seed(0)
    model = tiny().eval()
    official = timm_to_official(model.state_dict())
    assert "blocks.0.gamma_1" in official and "blocks.1.gamma_2" in official
    assert not any(".ls1." in k or ".ls2." in k for k in official)
    other = tiny(layer_scale_init=0.5).eval()
    other.load_state_dict(official_to_timm({"model": official}))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), other(x), rtol=0, atol=0)
    assert official_to_timm(official).keys() == model.state_dict().keys()


def test_bad_sizes_raise_config_error() -> None:
    with pytest.raises(ConfigError):
        build_vit("gigantic")
    with pytest.raises(ConfigError):
        build_vit(None, img_size=3, patch_size=4, embed_dim=8, depth=1, num_heads=1)
    with pytest.raises(ConfigError):
        build_vit(None, img_size=16)


def test_an_image_size_that_is_not_a_multiple_of_the_patch_drops_the_remainder_as_timm() -> None:
    """ViT-H/14 pre-trains on ImageNet-21k at 128 px: a 9 x 9 grid, the last 2 pixel rows/columns unseen."""
    torch.manual_seed(0)
    model = build_vit(None, img_size=30, patch_size=7, embed_dim=16, depth=1, num_heads=2, num_classes=3).eval()
    assert tuple(model.patch_embed.grid_size) == (4, 4) and model.pos_embed.shape[1] == 16
    x = torch.randn(2, 3, 30, 30)
    changed = x.clone()
    changed[..., 28:, :] = 5.0
    changed[..., :, 28:] = -5.0
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(changed), rtol=0, atol=0)
    h14 = build_vit(None, img_size=128, patch_size=14, embed_dim=8, depth=1, num_heads=1, num_classes=3)
    assert tuple(h14.patch_embed.grid_size) == (9, 9) and h14(torch.randn(1, 3, 128, 128)).shape == (1, 3)


def test_load_pretrained_keeps_a_new_head_and_interpolates_positions() -> None:
    torch.manual_seed(0)
    src = build_vit(None, img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=7)
    state = timm_to_official(src.state_dict())  # official key names load too
    torch.manual_seed(1)
    dst = build_vit(None, img_size=20, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=3)
    head = {k: v.clone() for k, v in dst.state_dict().items() if k.startswith("head.")}
    load_pretrained(dst, state)
    for key, value in dst.state_dict().items():
        if key.startswith("head."):
            assert torch.equal(value, head[key])  # the new 3-class head, untouched
        elif key == "pos_embed":
            torch.testing.assert_close(value, interpolate_pos_embed(src.pos_embed.data, (5, 5)))
        else:
            assert torch.equal(value, src.state_dict()[key]), key
    same = build_vit(None, img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=7)
    load_pretrained(same, src.state_dict(), reset_head=False)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(same.eval()(x), src.eval()(x), rtol=0, atol=0)
    no_ls = build_vit(None, img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, layer_scale_init=None)
    with pytest.raises(ConfigError, match="do not fit"):
        load_pretrained(no_ls, src.state_dict())


def test_folded_layer_scale_same_function_gradients_and_keys() -> None:
    torch.manual_seed(0)
    folded = tiny(layer_scale_init=0.3, drop_rate=0.1)
    plain = tiny(layer_scale_init=0.3, drop_rate=0.1, fast_blocks=False)
    plain.load_state_dict(folded.state_dict())
    assert list(folded.state_dict()) == list(plain.state_dict())
    assert isinstance(plain.blocks[0].ls1, timm.layers.LayerScale)
    assert type(plain.blocks[0].attn.proj) is torch.nn.Linear
    with torch.no_grad():
        for a, b in zip(folded.blocks, plain.blocks):
            for g in (torch.linspace(-1, 1, 32), torch.linspace(2, -0.5, 32)):
                a.ls1.gamma.copy_(g), b.ls1.gamma.copy_(g), a.ls2.gamma.copy_(-g), b.ls2.gamma.copy_(-g)
    x = torch.randn(4, 3, 16, 16)
    outs = []
    for model in (folded, plain):
        torch.manual_seed(1)  # same dropout masks: dropout commutes with the per-channel scale
        out = model.train()(x)
        out.square().sum().backward()
        outs.append(out)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(folded.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
    moved = resize_vit(folded, 20)  # deep copies keep each Linear tied to its own block's gamma
    assert moved.blocks[1].mlp.fc2._scale is moved.blocks[1].ls2 and moved.blocks[1].ls2 is not folded.blocks[1].ls2
    assert fold_layer_scale(tiny(layer_scale_init=None)).blocks[0].attn.proj.__class__ is torch.nn.Linear


def test_skipping_drop_path_block_is_per_sample_unbiased_and_exact() -> None:
    torch.manual_seed(0)
    model = tiny(drop_path=0.3, layer_scale_init=0.5)
    block = model.blocks[0]
    assert isinstance(block, SkipDropPathBlock) and block.drop_path1.drop_prob == 0.3
    x = torch.randn(1, 17, 32).expand(4000, -1, -1).contiguous()
    with torch.no_grad():
        attn = block.ls1(block.attn(block.norm1(x[:1])))
        kept = x[:1] + attn / 0.7
        torch.manual_seed(1)
        y = _skip_residual(x, lambda t: block.ls1(block.attn(block.norm1(t))), block.drop_path1)
    dropped = torch.isclose(y, x, atol=1e-7).flatten(1).all(1)
    on = torch.isclose(y, kept.expand_as(y), atol=1e-5).flatten(1).all(1)
    assert torch.all(dropped ^ on)  # each sample: exactly the skipped residual or x + branch / keep_prob
    assert float(dropped.float().mean()) == pytest.approx(0.3, abs=3 * (0.3 * 0.7 / 4000) ** 0.5)
    torch.testing.assert_close(y.mean(0), (x[:1] + attn)[0], atol=0.05, rtol=0)  # unbiased
    ref = tiny(drop_path=0.3, layer_scale_init=0.5, fast_blocks=False)
    ref.load_state_dict(model.state_dict())
    z = torch.randn(3, 3, 16, 16)
    torch.testing.assert_close(model.eval()(z), ref.eval()(z), rtol=1e-5, atol=1e-6)  # eval: no stochastic depth
    set_drop_path(model, 0.0)
    torch.testing.assert_close(model.train()(z), ref.eval()(z), rtol=1e-5, atol=1e-6)  # p = 0: plain residuals
