"""PreActResNet / WideResNet: parameter count against the closed form, blocks against a functional reference."""

import pytest
import torch
from torch.nn import functional as F

from frugalvision.nn.wide_resnet import PreActBlock, preact_resnet, wide_resnet


def _wrn_parameters(depth: int, k: int, classes: int, channels: int = 3) -> int:
    """Closed-form count: 3x3 convs, BN scale+shift, 1x1 shortcuts where the shape changes, the linear head."""
    n, total, inp = (depth - 4) // 6, 9 * channels * 16, 16
    for width in (16 * k, 32 * k, 64 * k):
        for block in range(n):
            total += 2 * inp + 9 * inp * width + 2 * width + 9 * width * width
            total += inp * width if (block == 0 and (inp != width or width != 16 * k)) else 0
            inp = width
    return total + 2 * inp + inp * classes + classes


@pytest.mark.parametrize("depth, k", [(16, 4), (10, 1), (22, 2)])
def test_wide_resnet_parameter_count_matches_the_closed_form(depth, k):
    model = wide_resnet(depth, k, num_classes=100)
    assert sum(p.numel() for p in model.parameters()) == _wrn_parameters(depth, k, 100)


def test_wrn_28_10_has_the_published_36_5_million_parameters():
    assert round(sum(p.numel() for p in wide_resnet(28, 10).parameters()) / 1e6, 1) == 36.5


def test_block_equals_a_functional_reference():
    torch.manual_seed(0)
    block = PreActBlock(4, 6, stride=2).eval()
    for bn in (block.bn1, block.bn2):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 4, 8, 8)

    def bn(module, value):
        return F.batch_norm(value, module.running_mean, module.running_var, module.weight, module.bias, False)

    act = F.relu(bn(block.bn1, x))
    out = F.conv2d(act, block.conv1.weight, stride=2, padding=1)
    out = F.conv2d(F.relu(bn(block.bn2, out)), block.conv2.weight, padding=1)
    expected = out + F.conv2d(act, block.shortcut.weight, stride=2)
    torch.testing.assert_close(block(x), expected)


def test_preact_resnet_8_has_eight_weight_layers_and_the_stage_widths():
    model = preact_resnet(8, blocks=1, num_classes=10, in_chans=1)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) + 1 == 8
    assert model.forward_map(torch.zeros(2, 1, 16, 16)).shape == (2, 32, 4, 4)
    assert model(torch.zeros(2, 1, 16, 16)).shape == (2, 10)


def test_invalid_architectures_are_rejected():
    with pytest.raises(ValueError, match="6n"):
        wide_resnet(27, 2)
    with pytest.raises(ValueError, match="three positive"):
        preact_resnet(0)
