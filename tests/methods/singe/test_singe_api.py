"""The public API: ``prune(model, example_inputs, loader, target_macs=...)`` on a user's own model and data."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from frugalvision.methods import singe
from frugalvision.methods.singe import api
from frugalvision.methods.singe import pruning as P

torch.set_num_threads(1)


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    )


def test_prune_hits_the_mac_target_trains_and_leaves_the_input_model_alone() -> None:
    model = _cnn()
    original = copy.deepcopy(model.state_dict())
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 4, (64,))
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    pruned = singe.prune(model, x[:1], loader, target_macs=0.5, rounds=2, finetune_steps=4, calibration=32)
    dense_macs, dense_params = P.count_macs_params(model, x[:1])
    macs, params = P.count_macs_params(pruned, x[:1])
    assert macs <= 0.5 * dense_macs and params < dense_params and not pruned.training
    assert pruned(x[:3]).shape == (3, 4)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in original.items())
    untrained = singe.prune(model, x[:1], loader, target_macs=0.5, rounds=2, finetune_steps=0, calibration=32)
    assert {k: v.shape for k, v in untrained.state_dict().items()} == {
        k: v.shape for k, v in pruned.state_dict().items()
    }
    assert not all(torch.equal(v, pruned.state_dict()[k]) for k, v in untrained.state_dict().items())
    rounded = singe.prune(model, x[:1], loader, target_macs=0.5, finetune_steps=0, calibration=32, channel_multiple=4)
    assert rounded[0].out_channels % 4 == 0 and rounded[3].out_channels % 4 == 0
    assert P.count_macs_params(rounded, x[:1])[0] <= 0.5 * dense_macs


def test_prune_rejects_a_bad_target_and_calibration_reads_only_what_it_needs() -> None:
    x, y = torch.randn(40, 1, 8, 8), torch.randint(0, 4, (40,))
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    with pytest.raises(ValueError, match="target_macs"):
        singe.prune(_cnn(), x[:1], loader, target_macs=1.5)
    batches = api.calibration_from(loader, 20, torch.device("cpu"))
    assert [len(b[0]) for b in batches] == [16, 4]
    assert api.default_settings().granularity == "gate" and api.default_settings().steps == 8
