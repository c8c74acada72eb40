import torch
from torch import nn

from frugalvision.engine.syncbn import GlobalBatchNorm, convert_sync_batchnorm, has_batchnorm


def test_conversion_keeps_parameters_buffers_and_the_state_dict_and_is_plain_batchnorm_in_one_process():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.BatchNorm1d(4 * 6 * 6))
    reference = nn.Sequential(*[m for m in model])  # same modules, before conversion
    x = torch.randn(5, 1, 8, 8)
    expected_keys = list(model.state_dict())
    weight = model[1].weight
    converted = convert_sync_batchnorm(nn.Sequential(*[m for m in model]), cuda=False)
    assert isinstance(converted[1], GlobalBatchNorm) and isinstance(converted[4], GlobalBatchNorm)
    assert converted[1].weight is weight and list(converted.state_dict()) == expected_keys
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.BatchNorm1d(144))
    plain.load_state_dict(reference.state_dict())
    out, expected = converted(x), plain(x)
    assert torch.equal(out, expected)
    assert torch.equal(converted[1].running_var, plain[1].running_var)
    assert has_batchnorm(converted) and not has_batchnorm(nn.Linear(2, 2))
