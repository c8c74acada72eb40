"""Latent attention modules against float64 brute-force references, masks, prefixes, invariances, LaRa shapes."""

from __future__ import annotations

import math

import pytest
import torch

from frugalvision.nn.latent import (
    CrossAttention,
    LatentBlock,
    LatentEncoder,
    MeanPoolHead,
    QueryDecoder,
    fourier_features,
    grid_coords,
)


def _brute_attention(q, k, v, heads, mask=None):
    """softmax(q kᵀ/√d_h) v with explicit loops over batch, heads and query rows (float64)."""
    b, m, inner = q.shape
    dh = inner // heads
    out = torch.zeros(b, m, inner, dtype=torch.float64)
    for i in range(b):
        for h in range(heads):
            sl = slice(h * dh, (h + 1) * dh)
            for row in range(m):
                logits = torch.stack([q[i, row, sl] @ k[i, j, sl] / math.sqrt(dh) for j in range(k.shape[1])])
                if mask is not None:
                    logits = logits.masked_fill(~mask[i], float("-inf"))
                out[i, row, sl] = torch.softmax(logits, 0) @ v[i, :, sl]
    return out


def _brute_cross(module: CrossAttention, q, kv, mask=None):
    qn, kvn = module.norm_q(q), module.norm_kv(kv)
    inner = module.heads * module.head_dim
    keys, values = module.to_kv(kvn).split(inner, dim=-1)
    attn = _brute_attention(module.to_q(qn), keys, values, module.heads, mask)
    out = module.proj(attn)
    return q + out if module.residual else out


@pytest.mark.parametrize("impl", ["sdpa", "math"])
@pytest.mark.parametrize("masked", [False, True])
def test_cross_attention_matches_brute_force(impl, masked):
    torch.manual_seed(0)
    module = CrossAttention(12, 10, heads=3, head_dim=4, attn_impl=impl).double()
    q, kv = torch.randn(2, 5, 12, dtype=torch.float64), torch.randn(2, 7, 10, dtype=torch.float64)
    mask = torch.rand(2, 7) > 0.4 if masked else None
    if mask is not None:
        mask[:, 0] = True
    torch.testing.assert_close(module(q, kv, mask), _brute_cross(module, q, kv, mask), atol=1e-10, rtol=0)


def test_non_residual_decoder_returns_attention_output():
    torch.manual_seed(1)
    decoder = QueryDecoder(6, 8, heads=2, head_dim=4, out_dim=5, residual=False, mlp_ratio=0).double()
    latents, queries = torch.randn(2, 9, 8, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    expected = _brute_cross(decoder.attn, queries.expand(2, -1, -1), latents)
    torch.testing.assert_close(decoder(latents, queries), expected, atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="out_dim == q_dim"):
        CrossAttention(6, 8, 2, 4, out_dim=5, residual=True)


@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_latent_block_matches_brute_force(impl):
    torch.manual_seed(2)
    block = LatentBlock(8, heads=2, head_dim=4, mlp_ratio=2.0, attn_impl=impl).double()
    x = torch.randn(3, 6, 8, dtype=torch.float64)
    xn = block.norm1(x)
    q, k, v = block.attn.qkv(xn).split(8, dim=-1)
    y = x + block.attn.proj(_brute_attention(q, k, v, 2))
    y = y + block.mlp.fc2(torch.nn.functional.gelu(block.mlp.fc1(block.norm2(y))))
    torch.testing.assert_close(block(x), y, atol=1e-10, rtol=0)


def test_masked_tokens_never_leak_and_all_masked_rows_are_rejected():
    torch.manual_seed(3)
    enc = LatentEncoder(8, 6, 16, cross_heads=2, self_heads=2, self_layers=2, pos_mode="none").eval()
    tokens = torch.randn(2, 10, 8)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[0, 6:] = False
    mask[1, :3] = False
    changed = tokens.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), 8) * 100
    torch.testing.assert_close(enc(tokens, token_mask=mask), enc(changed, token_mask=mask), atol=1e-6, rtol=0)
    assert not torch.allclose(enc(tokens), enc(changed))
    mask[1] = False
    with pytest.raises(ValueError, match="every token masked"):
        enc(tokens, token_mask=mask)


def test_prefix_consistency_of_the_first_cross_attention():
    torch.manual_seed(4)
    enc = LatentEncoder(8, 12, 16, cross_heads=1, self_heads=4, self_layers=2, num_blocks=2).eval()
    tokens, pos = torch.randn(3, 9, 8), torch.randn(9, 8)
    _, first_full = enc(tokens, pos, return_first=True)
    out_k, first_k = enc(tokens, pos, num_latents=5, return_first=True)
    torch.testing.assert_close(first_full[:, :5], first_k, atol=1e-6, rtol=0)
    x = enc.inputs(tokens, pos)
    torch.testing.assert_close(out_k, enc.process(first_full[:, :5], x), atol=1e-6, rtol=0)


def test_latent_index_gather_equals_per_image_loop():
    torch.manual_seed(5)
    enc = LatentEncoder(8, 10, 16, cross_heads=2, self_heads=2, self_layers=1).eval()
    tokens = torch.randn(4, 7, 8)
    index = torch.stack([torch.randperm(10)[:4] for _ in range(4)])
    batched = enc(tokens, latent_index=index)
    for i in range(4):
        single = LatentEncoder(8, 4, 16, cross_heads=2, self_heads=2, self_layers=1).eval()
        state = {k: v for k, v in enc.state_dict().items() if k != "latents"}
        single.load_state_dict({**state, "latents": enc.latents[index[i]].detach()})
        torch.testing.assert_close(batched[i : i + 1], single(tokens[i : i + 1]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("pos_mode", ["add", "concat"])
def test_token_permutation_with_positions_leaves_latents_unchanged(pos_mode):
    torch.manual_seed(6)
    pos_dim = 8 if pos_mode == "add" else 5
    enc = LatentEncoder(
        8,
        6,
        16,
        cross_heads=2,
        self_heads=2,
        self_layers=2,
        pos_mode=pos_mode,
        pos_dim=0 if pos_mode == "add" else pos_dim,
    ).eval()
    tokens, pos = torch.randn(2, 11, 8), torch.randn(11, pos_dim)
    perm = torch.randperm(11)
    torch.testing.assert_close(enc(tokens, pos), enc(tokens[:, perm], pos[perm]), atol=1e-5, rtol=0)


def test_latent_permutation_leaves_mean_pooled_logits_unchanged():
    torch.manual_seed(7)
    enc = LatentEncoder(8, 6, 16, cross_heads=1, self_heads=2, self_layers=2).eval()
    head = MeanPoolHead(16, 5)
    tokens = torch.randn(2, 9, 8)
    before = head(enc(tokens))
    with torch.no_grad():
        enc.latents.copy_(enc.latents[torch.randperm(6)])
    torch.testing.assert_close(head(enc(tokens)), before, atol=1e-5, rtol=0)
    assert head(enc(tokens, num_latents=2)).shape == (2, 5)


def test_batch_invariance():
    torch.manual_seed(8)
    enc = LatentEncoder(8, 6, 16, cross_heads=2, self_heads=2, self_layers=2).eval()
    dec = QueryDecoder(4, 16, heads=2, out_dim=4, residual=True).eval()
    tokens, queries = torch.randn(5, 9, 8), torch.randn(3, 4)
    mask = torch.rand(5, 9) > 0.3
    mask[:, 0] = True
    batched = dec(enc(tokens, token_mask=mask), queries)
    for size in (1, 2, 3):
        alone = dec(enc(tokens[:size], token_mask=mask[:size]), queries)
        torch.testing.assert_close(batched[:size], alone, atol=1e-5, rtol=0)


def test_lara_configuration_shapes_and_token_order_invariance():
    torch.manual_seed(9)
    enc = LatentEncoder(
        256,
        256,
        256,
        cross_heads=32,
        cross_head_dim=8,
        self_heads=16,
        self_head_dim=16,
        self_layers=4,
        mlp_ratio=1.0,
        pos_mode="none",
    ).eval()
    dec = QueryDecoder(256, 256, heads=16, out_dim=256, residual=False, mlp_ratio=1.0).eval()
    tokens = torch.randn(2, 120, 256)
    latents = enc(tokens)
    assert latents.shape == (2, 256, 256)
    assert dec(latents, torch.randn(400, 256)).shape == (2, 400, 256)
    perm = torch.randperm(120)
    torch.testing.assert_close(enc(tokens[:, perm]), latents, atol=1e-4, rtol=0)
    assert enc.cross[0].attn.to_kv.out_features == 2 * 32 * 8


def test_shared_blocks_tie_blocks_after_the_first():
    kwargs = dict(cross_heads=1, self_heads=2, self_layers=1)
    shared = LatentEncoder(8, 4, 16, num_blocks=4, share_blocks=True, **kwargs)
    separate = LatentEncoder(8, 4, 16, num_blocks=4, share_blocks=False, **kwargs)
    one = LatentEncoder(8, 4, 16, num_blocks=1, **kwargs)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    block = count(one) - one.latents.numel()
    assert count(shared) == one.latents.numel() + 2 * block
    assert count(separate) == one.latents.numel() + 4 * block
    assert shared(torch.randn(2, 5, 8)).shape == (2, 4, 16)


def test_fourier_features_closed_form():
    coords = grid_coords(3, 4)
    assert coords.shape == (12, 2)
    assert coords[0].tolist() == [-1.0, -1.0] and coords[-1].tolist() == [1.0, 1.0]
    feats = fourier_features(coords, num_bands=3, max_freq=8.0)
    assert feats.shape == (12, 2 * (2 * 3 + 1))
    freqs = torch.tensor([1.0, 2.5, 4.0])
    x = coords[5]
    expected = torch.cat(
        [x, torch.sin(math.pi * x[:, None] * freqs).flatten(), torch.cos(math.pi * x[:, None] * freqs).flatten()]
    )
    torch.testing.assert_close(feats[5], expected)


def test_low_precision_stays_finite():
    torch.manual_seed(10)
    enc = LatentEncoder(8, 6, 16, cross_heads=2, self_heads=2, self_layers=2, attn_impl="math")
    tokens = torch.randn(2, 9, 8) * 1e3
    assert torch.isfinite(enc(tokens)).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = enc(tokens)
    assert torch.isfinite(out).all()
