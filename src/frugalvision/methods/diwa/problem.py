"""The benchmark of a DiWA run: a network builder, pre-training data and the per-seed domain splits.

Offline: RotatedFashion (real images rotated per domain, :mod:`.benchmark_data`) with the GroupNorm CNN. Paper:
DomainBed folders (leave-one-domain-out, the full test domain) with the frozen-BN ResNet-50.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset, Subset

from frugalvision.data import ArrayDataset
from frugalvision.errors import ConfigError
from frugalvision.methods.diwa.config import DiwaConfig
from frugalvision.methods.diwa.model import DiwaNet, gn_cnn

__all__ = ["Problem", "Splits", "build_problem"]

Splits = tuple[list[Dataset], list[Dataset], Dataset]


@dataclass
class Problem:
    """What a benchmark provides: a network builder, pre-training data, and per-seed domain splits."""

    name: str
    build_net: Callable[[], DiwaNet]
    pretrain_set: Dataset | None
    splits: Callable[[int], Splits]
    test_domain: str


def _rotated_problem(config: DiwaConfig) -> Problem:
    from frugalvision.data import available_default_source
    from frugalvision.methods.diwa.benchmark_data import rotated_benchmark
    from frugalvision.methods.diwa.splits import domain_splits

    source = available_default_source(config.data_root) if config.dataset == "auto" else config.dataset
    bench = rotated_benchmark(
        source,
        root=config.data_root,
        image_size=config.image_size,
        angles=config.angles,
        per_domain=config.per_domain_images,
        pretrain_images=config.pretrain_images,
    )
    names = list(bench.domains)
    test_name = names[config.test_domain]
    train_names = [n for n in names if n != test_name]
    in_chans, classes = bench.pretrain.image_shape[0], bench.pretrain.num_classes

    def splits(seed: int) -> Splits:
        datasets = [ArrayDataset(bench.domains[n]) for n in train_names]
        parts = domain_splits([len(d) for d in datasets], seed, config.holdout_fraction)
        train = [Subset(d, p.train.tolist()) for d, p in zip(datasets, parts)]
        val = [Subset(d, p.val.tolist()) for d, p in zip(datasets, parts)]
        return train, val, ArrayDataset(bench.domains[test_name])

    return Problem(
        f"rotated-{source}",
        lambda: gn_cnn(in_chans, classes, config.width),
        ArrayDataset(bench.pretrain),
        splits,
        test_name,
    )


def _domainbed_problem(config: DiwaConfig) -> Problem:
    from torchvision import transforms as T

    from frugalvision.data import DomainBedDataset
    from frugalvision.methods.diwa.model import resnet50_frozen_bn

    assert config.data_root is not None
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    size = config.image_size
    eval_tf = T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize(mean, std)])
    train_tf = T.Compose(
        [
            T.RandomResizedCrop(size, scale=(0.7, 1.0)),
            T.RandomHorizontalFlip(),
            T.ColorJitter(0.3, 0.3, 0.3, 0.3),
            T.RandomGrayscale(),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )
    data = DomainBedDataset(
        Path(config.data_root) / config.domainbed_dataset, transform=eval_tf, skip_bad_files=config.skip_bad_files
    )
    if not 0 <= config.test_domain < len(data.domains):
        raise ConfigError(f"test_domain={config.test_domain} is outside [0, {len(data.domains)}) for {data.domains}")
    test_name = data.domains[config.test_domain]

    def splits(seed: int) -> Splits:
        split = data.leave_one_domain_out(test_name, config.holdout_fraction, seed=seed, train_transform=train_tf)
        return list(split.train_parts.values()), list(split.val_parts.values()), split.test

    return Problem(
        config.domainbed_dataset,
        lambda: resnet50_frozen_bn(data.num_classes, config.resnet_weights),
        None,
        splits,
        test_name,
    )


def build_problem(config: DiwaConfig) -> Problem:
    """The benchmark of the config: offline RotatedFashion, or DomainBed folders."""
    return _domainbed_problem(config) if config.benchmark == "domainbed" else _rotated_problem(config)
