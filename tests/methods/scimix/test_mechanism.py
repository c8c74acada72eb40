"""A generator trained on a toy problem keeps the semantic parent's class and the context parent's background,
and reconstructs an image mixed with itself (the issue's mechanism tests; slow)."""

import pytest
import torch

from frugalvision.methods.scimix import GeneratorConfig, LossWeights, SciMixGenerator, generator_loss


def toy_images(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """8x8 images: a pure red/green/blue 4x4 square (the class) on a uniform grey background (its level)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(3, (count,), generator=gen)
    levels = torch.rand(count, generator=gen) * 0.6 + 0.2
    images = levels.view(-1, 1, 1, 1).expand(count, 3, 8, 8).clone()
    images[:, :, 2:6, 2:6] = 0.0
    images[torch.arange(count), labels, 2:6, 2:6] = 1.0
    return images, labels, levels


class ColourOracle(torch.nn.Module):
    """A fixed classifier: the brightest channel of the centre square."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centre = x[:, :, 2:6, 2:6].mean(dim=(2, 3))
        return 20.0 * (centre - centre.mean(1, keepdim=True))


def _border(x: torch.Tensor) -> torch.Tensor:
    mask = torch.ones(8, 8, dtype=torch.bool)
    mask[2:6, 2:6] = False
    return x[:, :, mask].mean(dim=(1, 2))


@pytest.mark.slow
def test_a_trained_generator_keeps_the_semantic_class_and_the_context_background():
    torch.manual_seed(0)
    config = GeneratorConfig(num_classes=3, width=8, style_dim=16, content_channels=8, decoder="layered")
    generator = SciMixGenerator(config)
    oracle = ColourOracle()
    optimizer = torch.optim.Adam(generator.parameters(), lr=3e-3, betas=(0.5, 0.99))
    images, labels, _ = toy_images(512, seed=1)
    for _step in range(400):
        index = torch.randint(len(images), (32,))
        loss, _, _ = generator_loss(
            generator, oracle, images[index], labels[index], torch.ones(32), torch.randperm(32), LossWeights()
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    generator.eval()
    a, y_a, level_a = toy_images(200, seed=2)
    b, y_b, level_b = toy_images(200, seed=3)
    keep = y_a != y_b
    with torch.no_grad():
        mixes = generator.mix(a[keep], b[keep])
        recon = generator.mix(a, a)
    fidelity = (oracle(mixes).argmax(1) == y_a[keep]).float().mean()
    border = _border(mixes)
    closer_to_b = ((border - level_b[keep]).abs() < (border - level_a[keep]).abs()).float().mean()
    assert fidelity > 0.9, fidelity
    assert closer_to_b > 0.8, closer_to_b
    assert (recon - a).abs().mean() < 0.05
