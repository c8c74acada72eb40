"""Hyperparameter sampler, DomainBed splits and batch order, diversity measures, model builders."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from frugalvision.data import ArrayDataset, ImageArrays
from frugalvision.errors import ConfigError
from frugalvision.methods.diwa.diversity import disagreement, ratio_error
from frugalvision.methods.diwa.hparams import HParams, MildSpace, sample_hparams
from frugalvision.methods.diwa.model import FrozenBatchNorm, gn_cnn
from frugalvision.methods.diwa.splits import domain_batch_order, domain_splits, training_domain_val


def test_hparams_index_zero_is_default_and_draws_stay_in_the_mild_sets():
    space = MildSpace()
    assert sample_hparams(0, seed=7) == HParams(5e-5, 0.0, 0.0)
    draws = [sample_hparams(i, seed=3) for i in range(1, 200)]
    assert {d.lr for d in draws} == set(space.lr)
    assert {d.weight_decay for d in draws} == set(space.weight_decay)
    assert {d.dropout for d in draws} == set(space.dropout)
    assert draws == [sample_hparams(i, seed=3) for i in range(1, 200)]
    assert draws != [sample_hparams(i, seed=4) for i in range(1, 200)]
    with pytest.raises(ConfigError):
        sample_hparams(-1)


def test_domain_splits_are_seeded_disjoint_and_cover_each_domain():
    sizes = [50, 37, 80]
    a, b, c = domain_splits(sizes, 0), domain_splits(sizes, 0), domain_splits(sizes, 1)
    for split, size in zip(a, sizes):
        both = torch.cat([split.train, split.val])
        assert sorted(both.tolist()) == list(range(size))
        assert len(split.val) == int(size * 0.2)
    assert all(torch.equal(x.val, y.val) for x, y in zip(a, b))
    assert not all(torch.equal(x.val, y.val) for x, y in zip(a, c))
    assert not torch.equal(a[0].val, a[2].val[: len(a[0].val)])  # seeded per domain, not one shared permutation


def test_domain_batch_order_gives_each_domain_its_share_of_every_batch():
    sizes, per = [10, 7, 25], 4
    order = domain_batch_order(sizes, per)
    bounds = [0, 10, 17, 42]
    indices = order(0, 5)
    assert len(indices) == 7 * per * 3  # the largest domain needs ceil(25/4)=7 batches
    for chunk in indices.view(-1, per * 3):
        counts = [int(((chunk >= lo) & (chunk < hi)).sum()) for lo, hi in zip(bounds, bounds[1:])]
        assert counts == [per] * 3
    assert torch.equal(order(0, 5), indices) and not torch.equal(order(1, 5), indices)
    first_domain = indices.view(-1, per * 3)[:, :per].flatten()[:10]
    assert sorted(first_domain.tolist()) == list(range(10))  # a permutation before cycling


def test_training_domain_val_mean_and_merged():
    correct = [torch.tensor([1, 1, 0, 0]), torch.tensor([1, 1, 1, 1, 1, 1, 1, 1])]
    mean, merged = training_domain_val(correct)
    assert mean == pytest.approx((0.5 + 1.0) / 2)
    assert merged == pytest.approx(10 / 12)


def test_training_domain_val_is_exact_so_equal_accuracies_tie():
    """Two runs with equal per-domain fractions (1/3 + 2/3 vs 1/2 + 1/2 of ...) tie exactly, as in the official
    selection; a float32 mean breaks the tie by rounding noise."""
    from fractions import Fraction

    def correct(k: int, n: int) -> torch.Tensor:
        return torch.tensor([1] * k + [0] * (n - k), dtype=torch.bool)

    run_a = [correct(1, 3), correct(2, 3), correct(7, 10)]
    run_b = [correct(1, 2), correct(1, 2), correct(7, 10)]
    assert training_domain_val(run_a)[0] == training_domain_val(run_b)[0]
    assert training_domain_val(run_a)[0] == float((Fraction(1, 3) + Fraction(2, 3) + Fraction(7, 10)) / 3)
    float32 = [sum(float(c.float().mean()) for c in run) / 3 for run in (run_a, run_b)]
    assert float32[0] != float32[1]  # the old float32 per-domain means differ in the last bits
    merged_a = training_domain_val([correct(3, 10), correct(6, 10)])[1]
    assert merged_a == training_domain_val([correct(5, 10), correct(4, 10)])[1] == 9 / 20


def test_validation_data_is_deterministic_across_passes():
    images = torch.randint(0, 255, (20, 1, 8, 8), dtype=torch.uint8)
    arrays = ImageArrays(images, torch.arange(20) % 3, list("abc"), "d")
    val = Subset(ArrayDataset(arrays), domain_splits([20], 0)[0].val.tolist())
    first = torch.cat([x for x, _ in DataLoader(val, batch_size=3)])
    second = torch.cat([x for x, _ in DataLoader(val, batch_size=3)])
    assert torch.equal(first, second)


def test_ratio_error_and_disagreement_brute_force():
    torch.manual_seed(0)
    for _ in range(20):
        targets = torch.randint(0, 3, (40,))
        a, b = torch.randint(0, 3, (40,)), torch.randint(0, 3, (40,))
        single = both = differ = 0
        for t, x, y in zip(targets.tolist(), a.tolist(), b.tolist()):
            single += (x != t) != (y != t)
            both += (x != t) and (y != t)
            differ += x != y
        expected = single / both if both else math.inf
        assert ratio_error(a, b, targets) == pytest.approx(expected)
        assert disagreement(a, b) == pytest.approx(differ / 40)
    t = torch.tensor([0, 1])
    assert math.isnan(ratio_error(t, t, t)) and ratio_error(torch.tensor([1, 1]), t, t) == math.inf


def test_gn_cnn_has_no_buffers_and_frozen_bn_stays_in_eval():
    net = gn_cnn(1, 10, 32)
    assert list(net.buffers()) == []
    assert 15_000 < sum(p.numel() for p in net.parameters()) < 30_000
    assert net(torch.rand(2, 1, 14, 14)).shape == (2, 10)
    wrapped = FrozenBatchNorm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    wrapped.train()
    assert wrapped.training and not wrapped.module[1].training
    before = wrapped.module[1].running_mean.clone()
    wrapped(torch.randn(4, 3, 8, 8) + 5)
    assert torch.equal(before, wrapped.module[1].running_mean)


def test_domainbed_folder_protocol_splits(tmp_path):
    from PIL import Image

    from frugalvision.methods.diwa.config import DiwaConfig
    from frugalvision.methods.diwa.problem import _domainbed_problem

    generator = torch.Generator().manual_seed(0)
    for domain in ("art", "photo", "sketch"):
        for cls in ("dog", "cat"):
            folder = tmp_path / "PACS" / domain / cls
            folder.mkdir(parents=True)
            for i in range(5):
                pixels = torch.randint(0, 255, (20, 24, 3), generator=generator, dtype=torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{i}.png")
    config = DiwaConfig(benchmark="domainbed", data_root=str(tmp_path), test_domain=1, image_size=16)
    config.validate()
    problem = _domainbed_problem(config)
    train, val, test = problem.splits(0)
    assert problem.test_domain == "photo" and len(test) == 10  # the test domain is used in full
    assert len(train) == len(val) == 2 and [len(v) for v in val] == [2, 2] and [len(t) for t in train] == [8, 8]
    assert torch.equal(val[0][0][0], val[0][0][0])  # deterministic eval transform on validation
    assert val[0][0][0].shape == (3, 16, 16)
    train_again = problem.splits(0)[0]
    assert [t.indices for t in train_again] == [t.indices for t in train]
    assert [t.indices for t in problem.splits(1)[0]] != [t.indices for t in train]
