"""MimoNetwork: unmixing readings vs brute force, ensemble inference, backbone wrapping (spec section 7, tests 6-9)."""

import pytest
import timm
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from frugalvision.engine import load_weights, save_weights
from frugalvision.errors import ConfigError
from frugalvision.methods.mimo.mixing import MixingPlan, draw_plan
from frugalvision.methods.mimo.model import MimoNetwork, masked_mean, split_backbone, wrap_backbone
from frugalvision.metrics.calibration import ensemble_log_probs
from frugalvision.nn import cifar_resnet
from frugalvision.nn.wide_resnet import preact_resnet


def tiny(unmix="none", at="final", **options) -> MimoNetwork:
    torch.manual_seed(0)
    return wrap_backbone(preact_resnet(4, 1, 5, 1), 2, unmix, at, **options)


def copy_core(source: MimoNetwork, target: MimoNetwork) -> MimoNetwork:
    """Give ``target`` the encoders, core and heads of ``source`` (the unmixing modules stay)."""
    state = {k: v for k, v in source.state_dict().items() if k.split(".")[0] in ("encoders", "early", "last", "heads")}
    target.load_state_dict(state, strict=False)
    return target


def inputs(seed=0, n=6):
    torch.manual_seed(seed)
    return torch.randn(n, 2, 1, 16, 16)


def cut_plan(n=6, size=(16, 16), seed=1):
    torch.manual_seed(seed)
    return draw_plan("cut", n, 2, size, p_cut=1.0)


def test_spatial_unmixing_is_gap_without_cut_masks_and_a_masked_mean_with_them():
    none, spatial = tiny().eval(), copy_core(tiny(), tiny("spatial")).eval()
    x = inputs()
    linear = draw_plan("linear", 6, 2, (16, 16))
    assert torch.equal(spatial(x, linear), none(x, linear))
    assert torch.equal(spatial(x[:, 0]), none(x[:, 0]))
    plan = cut_plan()
    shared = spatial.shared(spatial.encode(x), plan.masks)
    weights = F.adaptive_avg_pool2d(plan.masks, shared.shape[2:])
    expected = torch.zeros(6, 2, shared.shape[1])
    for n in range(6):
        for m in range(2):
            for i in range(shared.shape[2]):
                for j in range(shared.shape[3]):
                    expected[n, m] += weights[n, m, i, j] * shared[n, :, i, j]
            expected[n, m] /= weights[n, m].sum() + 1e-6
    torch.testing.assert_close(spatial.member_features(shared, spatial.encode(x), plan)[0], expected)


def test_area_downsampling_preserves_the_mask_mean():
    plan = cut_plan(size=(16, 16))
    torch.testing.assert_close(F.adaptive_avg_pool2d(plan.masks, (4, 4)).mean((2, 3)), plan.ratios)


def test_learned_unmixing_without_norm_is_mixmo_at_initialisation():
    x, plan = inputs(), cut_plan()
    for at in ("final", "last_stage"):
        learned = copy_core(tiny(), tiny("learned", at, unmix_norm_act=False)).eval()
        torch.testing.assert_close(learned(x, plan), tiny().eval()(x, plan), atol=1e-5, rtol=1e-5)


def test_last_stage_unmixing_runs_the_last_stage_once_per_member():
    model = tiny("learned", "last_stage").eval()
    calls = []
    model.last.register_forward_hook(lambda *_: calls.append(1))
    model(inputs()[:, 0])
    assert len(calls) == 2


def test_soft_unmixing_with_the_true_masks_equals_spatial(monkeypatch):
    soft, spatial = copy_core(tiny(), tiny("soft")).eval(), copy_core(tiny(), tiny("spatial")).eval()
    x, plan = inputs(), cut_plan()
    monkeypatch.setattr(soft, "soft_masks", lambda stems, size: F.adaptive_avg_pool2d(plan.masks, size))
    torch.testing.assert_close(soft(x, plan), spatial(x, plan))


def test_soft_mask_loss_is_the_bce_to_the_downsampled_cut_masks_and_trains_the_predictors():
    soft = tiny("soft").train()
    x, plan = inputs(), cut_plan()
    logits, aux = soft(x, plan, with_aux=True)
    stems = soft.encode(x)
    size = soft.shared(stems, plan.masks).shape[2:]
    predicted = soft.soft_masks(stems, size)
    target = F.adaptive_avg_pool2d(plan.masks, size)
    torch.testing.assert_close(aux["mask_loss"], F.binary_cross_entropy(predicted, target), rtol=1e-4, atol=1e-5)
    aux["mask_loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in soft.mask_predictors.parameters())
    linear = draw_plan("linear", 6, 2, (16, 16))
    assert soft(x, linear, with_aux=True)[1]["mask_loss"] is None


def test_inference_feeds_the_same_image_to_every_input_and_averages_the_members():
    model = tiny("spatial").eval()
    x = inputs()[:, 0]
    z = sum(encoder(x) for encoder in model.encoders)
    features = model.last(model.early(z)).mean((2, 3))
    manual = torch.stack([head(features) for head in model.heads], 1)
    torch.testing.assert_close(model(x), manual)
    torch.testing.assert_close(model.ensemble_logits(x), manual.mean(1))
    torch.testing.assert_close(ensemble_log_probs(model(x)).exp(), manual.double().softmax(-1).mean(1))
    assert not torch.allclose(manual[:, 0], manual[:, 1])


def test_a_shared_head_collapses_the_spatial_ensemble_at_inference():
    shared = tiny("spatial", shared_head=True).eval()
    logits = shared(inputs()[:, 0])
    assert torch.equal(logits[:, 0], logits[:, 1])


def test_one_sample_with_a_full_mask_sees_m_times_its_own_stem():
    model = tiny().eval()
    x = inputs()
    masks = torch.zeros(6, 2, 16, 16)
    masks[:, 1] = 1.0
    plan = MixingPlan(masks, masks.mean((2, 3)), torch.zeros(6, dtype=torch.bool))
    stems = model.encode(x)
    torch.testing.assert_close(model.shared(stems, plan.masks), model.last(model.early(2 * stems[:, 1])))


@pytest.mark.parametrize(
    "make",
    [
        lambda: preact_resnet(4, 1, 5, 1),
        lambda: cifar_resnet(8, 4, 1, 5),
        lambda: torchvision.models.resnet18(num_classes=5),
        lambda: timm.create_model("resnet10t", num_classes=5),
    ],
    ids=["preact", "cifar", "torchvision", "timm"],
)
def test_one_member_without_reinit_equals_the_backbone(make):
    torch.manual_seed(0)
    backbone = make().eval()
    channels = next(m for m in backbone.modules() if isinstance(m, nn.Conv2d)).in_channels
    x = torch.randn(2, channels, 32, 32)
    wrapped = wrap_backbone(backbone, 1, reinit=False).eval()
    torch.testing.assert_close(wrapped(x)[:, 0], backbone(x), atol=1e-5, rtol=1e-5)
    assert wrap_backbone(backbone, 2, "learned", "last_stage")(x).shape == (2, 2, 5)


def test_copies_are_drawn_afresh_and_the_backbone_is_left_untouched():
    backbone = preact_resnet(4, 1, 5, 1)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = wrap_backbone(backbone, 3)
    assert not torch.equal(model.encoders[0].weight, model.encoders[1].weight)
    assert not torch.equal(model.heads[0].weight, model.heads[2].weight)
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    with pytest.raises(ConfigError, match="cannot split"):
        split_backbone(nn.Sequential(nn.Conv2d(1, 2, 3)))


def test_every_parameter_gets_a_gradient_and_weights_round_trip_through_safetensors(tmp_path):
    for unmix, at in (("spatial", "final"), ("learned", "last_stage"), ("soft", "final")):
        model = tiny(unmix, at).train()
        logits, aux = model(inputs(), cut_plan(), with_aux=True)
        (logits.sum() + (aux["mask_loss"] if aux["mask_loss"] is not None else 0)).backward()
        assert all(p.grad is not None for p in model.parameters()), unmix
        save_weights(model.state_dict(), tmp_path / f"{unmix}.safetensors")
        clone = tiny(unmix, at)
        clone.load_state_dict(load_weights(tmp_path / f"{unmix}.safetensors"))
        x = inputs()[:, 0]
        assert torch.equal(clone.eval()(x), model.eval()(x))


def test_masked_mean_with_uniform_weights_is_the_global_average():
    torch.manual_seed(2)
    features = torch.randn(3, 4, 5, 5)
    torch.testing.assert_close(masked_mean(features, torch.ones(3, 2, 5, 5))[:, 0], features.mean((2, 3)))
    with pytest.raises(ConfigError, match="inputs of shape"):
        tiny()(torch.randn(2, 3, 1, 16, 16))


def test_a_deep_ensemble_pools_its_members_predictions():
    from frugalvision.methods.mimo.evaluation import member_logits

    torch.manual_seed(3)
    first, second = (wrap_backbone(preact_resnet(4, 1, 5, 1), 1).eval() for _ in range(2))
    x = torch.rand(7, 1, 16, 16)
    pooled = member_logits([first, second], x)
    torch.testing.assert_close(pooled, torch.cat([first(x), second(x)], 1))
    mean_prob = (first(x)[:, 0].double().softmax(-1) + second(x)[:, 0].double().softmax(-1)) / 2
    torch.testing.assert_close(ensemble_log_probs(pooled).exp(), mean_prob)


def test_shape_probes_leave_batch_norm_statistics_alone():
    model = wrap_backbone(timm.create_model("resnet10t", num_classes=5), 2, "soft").train()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    assert model.stem_size((3, 32, 32)) == (16, 16)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if "running" in k)
    assert model.training
