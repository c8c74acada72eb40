"""The SciMix generator: modulated convolution, AdaIN and layers vs closed forms; invariances; reconstruction."""

import pytest
import torch
import torch.nn.functional as F

from frugalvision.engine import load_weights, save_weights
from frugalvision.methods.scimix import (
    GeneratorConfig,
    LossWeights,
    ModulatedConv2d,
    SciMixGenerator,
    adain,
    discriminator_loss,
    generator_loss,
)
from frugalvision.methods.scimix.generator import Discriminator


def _generator(decoder="modulated", classes=3):
    return SciMixGenerator(
        GeneratorConfig(num_classes=classes, width=4, style_dim=8, content_channels=6, decoder=decoder)
    )


def test_modulated_conv_equals_a_per_sample_loop_with_scaled_weights():
    torch.manual_seed(0)
    conv = ModulatedConv2d(5, 7, 3, style_dim=6)
    torch.nn.init.normal_(conv.affine.weight)
    torch.nn.init.normal_(conv.bias)
    x, style = torch.randn(4, 5, 6, 6), torch.randn(4, 6)
    out = conv(x, style)
    for i in range(4):
        scales = conv.affine(style[i])
        w = conv.scale * conv.weight * scales.view(1, 5, 1, 1)
        w = w / torch.sqrt((w**2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        expected = F.conv2d(x[i : i + 1], w, padding=1) + conv.bias.view(1, -1, 1, 1)
        torch.testing.assert_close(out[i : i + 1], expected, rtol=1e-4, atol=1e-5)


def test_demodulation_gives_unit_variance_outputs_on_unit_variance_inputs():
    torch.manual_seed(1)
    conv = ModulatedConv2d(32, 16, 3, style_dim=8)
    torch.nn.init.normal_(conv.affine.weight)
    out = conv(torch.randn(8, 32, 24, 24), torch.randn(8, 8))[:, :, 1:-1, 1:-1]  # away from the zero padding
    variance = out.var(dim=(2, 3))
    assert variance.mean().item() == pytest.approx(1.0, abs=0.1)


def test_adain_sets_mean_and_std_per_sample_and_channel():
    h, gamma, beta = torch.randn(3, 4, 5, 5) * 3 + 2, torch.rand(3, 4) + 0.5, torch.randn(3, 4)
    out = adain(h, gamma, beta)
    torch.testing.assert_close(out.mean(dim=(2, 3)), beta, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(2, 3), unbiased=False), gamma, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("decoder", ["modulated", "adain", "layered"])
def test_every_decoder_maps_images_to_images_and_is_batch_invariant_in_eval_mode(decoder):
    torch.manual_seed(2)
    generator = SciMixGenerator(
        GeneratorConfig(num_classes=4, width=4, style_dim=8, content_channels=6, decoder=decoder)
    )
    generator.eval()
    a, b = torch.rand(5, 3, 16, 16), torch.rand(5, 3, 16, 16)
    batch = generator.mix(a, b)
    assert batch.shape == a.shape and batch.min() >= 0 and batch.max() <= 1
    with torch.no_grad():
        for i in (0, 3):
            alone = generator.mix(a[i : i + 1], b[i : i + 1])
            torch.testing.assert_close(alone, batch[i : i + 1], atol=1e-5, rtol=1e-5)


def test_layered_output_is_the_alpha_composite_of_its_two_branches():
    torch.manual_seed(3)
    generator = SciMixGenerator(
        GeneratorConfig(num_classes=3, width=4, style_dim=8, content_channels=6, decoder="layered")
    )
    x = torch.rand(2, 3, 8, 8)
    content, style = generator.encode_content(x), generator.encode_semantic(x)
    with torch.no_grad():
        generator.to_rgb.bias[-1] = -80.0  # alpha -> 0: only the style-free background branch
    background = generator.render(content, style).image
    other_style = generator.encode_semantic(torch.rand(2, 3, 8, 8))
    torch.testing.assert_close(generator.render(content, other_style).image, background)  # s cannot reach it
    with torch.no_grad():
        generator.to_rgb.bias[-1] = 80.0  # alpha -> 1: only the modulated foreground
    rendered = generator.render(content, style)
    assert rendered.alpha.min() > 0.999
    h = content
    for block in generator.blocks:
        h = block(h, style)
    foreground = (torch.tanh(generator.to_rgb(h, style)[:, :-1]) + 1) / 2
    torch.testing.assert_close(rendered.image, foreground, atol=1e-5, rtol=1e-5)


def test_the_teacher_gets_no_gradient_and_the_cycle_targets_are_stopped():
    torch.manual_seed(4)
    generator = SciMixGenerator(GeneratorConfig(num_classes=3, width=4, style_dim=8, content_channels=6))
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    for p in teacher.parameters():
        p.requires_grad_(False)
    x, targets, mask = torch.rand(6, 3, 8, 8), torch.randint(3, (6,)), torch.ones(6)
    loss, logs, _ = generator_loss(generator, teacher, x, targets, mask, torch.randperm(6), LossWeights())
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert generator.semantic.head.weight.grad is not None  # L_cls reaches the class head
    assert set(logs) == {"g_rec", "g_sem", "g_cls", "g_cyc", "g_swap"}


def test_layered_background_loss_equals_its_formula():
    torch.manual_seed(5)
    generator = SciMixGenerator(
        GeneratorConfig(num_classes=3, width=4, style_dim=8, content_channels=6, decoder="layered")
    )
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    x, perm = torch.rand(4, 3, 8, 8), torch.tensor([1, 2, 3, 0])
    _, logs, mixes = generator_loss(generator, teacher, x, torch.zeros(4, dtype=torch.long), torch.ones(4), perm,
                                    LossWeights(a_max=0.01))  # fmt: skip
    rendered = generator.render(generator.encode_content(x)[perm], generator.encode_semantic(x))
    keep = 1 - rendered.alpha
    expected = (keep * (rendered.image - x[perm]).abs()).sum() / (keep.sum() * 3 + 1e-6)
    assert logs["g_bg"] == pytest.approx(expected.item(), rel=1e-5)
    assert logs["g_area"] == pytest.approx(max(rendered.alpha.mean().item() - 0.01, 0.0), rel=1e-5)


def test_safetensors_round_trip_reproduces_the_mixes(tmp_path):
    torch.manual_seed(6)
    config = GeneratorConfig(num_classes=3, width=4, style_dim=8, content_channels=6)
    generator = SciMixGenerator(config).eval()
    a, b = torch.rand(3, 3, 8, 8), torch.rand(3, 3, 8, 8)
    save_weights(generator.state_dict(), tmp_path / "g.safetensors")
    other = SciMixGenerator(config).eval()
    other.load_state_dict(load_weights(tmp_path / "g.safetensors"))
    assert torch.equal(other.mix(a, b), generator.mix(a, b))


@pytest.mark.slow
def test_adversarial_training_stays_finite_for_200_steps():
    torch.manual_seed(7)
    generator = SciMixGenerator(GeneratorConfig(num_classes=3, width=4, style_dim=8, content_channels=6))
    critic = Discriminator(3, 8, image_size=8)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3)).requires_grad_(False)
    optimizer = torch.optim.Adam([*generator.parameters(), *critic.parameters()], 1e-3, betas=(0.5, 0.99))
    weights = LossWeights(adv=0.1)
    for _ in range(200):
        x = torch.rand(8, 3, 8, 8)
        g_loss, _, mixes = generator_loss(generator, teacher, x, torch.randint(3, (8,)), torch.ones(8),
                                          torch.randperm(8), weights, critic)  # fmt: skip
        d_loss, _ = discriminator_loss(critic, x, mixes, weights.r1)
        optimizer.zero_grad()
        (g_loss + d_loss).backward()
        optimizer.step()
        assert torch.isfinite(g_loss) and torch.isfinite(d_loss)


def test_same_class_partners_share_the_class_and_respect_the_mask():
    from frugalvision.methods.scimix.losses import same_class_partners

    targets = torch.tensor([0, 1, 0, 2, 1, 0, 2])
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    partner, valid = same_class_partners(targets, mask)
    for i in range(7):
        if valid[i]:
            j = int(partner[i])
            assert j != i and targets[j] == targets[i] and mask[j] == 1 and mask[i] == 1
    assert valid.tolist() == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0]  # 3 is masked; 6's only partner (3) is masked


def test_the_swap_term_is_the_reconstruction_error_with_a_same_class_code():
    torch.manual_seed(8)
    generator = _generator()
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    x = torch.rand(4, 3, 8, 8)
    targets = torch.tensor([0, 0, 1, 2])
    torch.manual_seed(9)
    _, logs, _ = generator_loss(generator, teacher, x, targets, torch.ones(4), torch.arange(4), LossWeights())
    swapped = generator.render(generator.encode_content(x[:2]), generator.encode_semantic(x[[1, 0]])).image
    expected = (swapped - x[:2]).abs().mean(dim=(1, 2, 3)).sum() / 4  # samples 2 and 3 have no partner
    assert logs["g_swap"] == pytest.approx(expected.item(), rel=1e-5)
