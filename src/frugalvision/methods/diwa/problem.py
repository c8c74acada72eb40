"""The benchmark of a DiWA run: a network builder, its pretrained start, and the per-seed domain splits.

Offline: "TextureFashion" (clothing items on real textures and photos, one domain per texture family) on the shipped
ImageNet EfficientNet-Lite0, whose frozen lower blocks' features are computed once and cached; or RotatedFashion
(real images rotated per domain) with the GroupNorm CNN pre-trained here. Paper: DomainBed folders
(leave-one-domain-out, the full test domain) with the frozen-BN ResNet-50.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from frugalvision.data import ArrayDataset
from frugalvision.errors import ConfigError
from frugalvision.methods.diwa.config import DiwaConfig
from frugalvision.methods.diwa.model import DiwaNet, gn_cnn

__all__ = ["Problem", "Splits", "build_problem"]

Splits = tuple[list[Dataset], list[Dataset], Dataset]


#: ``cached(file name, build) -> tensors``: load a cache file, or build the tensors and store them
Cache = Callable[[str, Callable[[], dict[str, torch.Tensor]]], dict[str, torch.Tensor]]


@dataclass
class Problem:
    """What a benchmark provides.

    Attributes:
        name: benchmark name (the dataset of results.json).
        build_net: a fresh, randomly initialised network.
        pretrain_set: images to pre-train the featurizer on here (None: no pre-training).
        splits: per seed, (training domains' in-splits, their out-splits, the test domain).
        test_domain: name of the test domain.
        pretrained: the featurizer's pretrained weights (keys of ``build_net()``'s state dict), when shipped.
    """

    name: str
    build_net: Callable[[], DiwaNet]
    pretrain_set: Dataset | None
    splits: Callable[[int], Splits]
    test_domain: str
    pretrained: Callable[[], dict[str, torch.Tensor]] | None = None


def _no_cache(_name: str, build: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return build()


def _domain_parts(datasets: list[Dataset], seed: int, holdout: float) -> tuple[list[Dataset], list[Dataset]]:
    from frugalvision.methods.diwa.splits import domain_splits

    parts = domain_splits([len(d) for d in datasets], seed, holdout)
    train = [Subset(d, p.train.tolist()) for d, p in zip(datasets, parts)]
    return train, [Subset(d, p.val.tolist()) for d, p in zip(datasets, parts)]


def _rotated_problem(config: DiwaConfig) -> Problem:
    from frugalvision.data import available_default_source
    from frugalvision.methods.diwa.benchmark_data import rotated_benchmark

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
        train, val = _domain_parts([ArrayDataset(bench.domains[n]) for n in train_names], seed, config.holdout_fraction)
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


def _texture_features(config: DiwaConfig, source: str) -> dict[str, torch.Tensor]:
    """Images of every texture domain through the frozen EfficientNet-Lite0 trunk: features and labels per domain."""
    from frugalvision.methods.diwa.benchmark_data import texture_benchmark
    from frugalvision.nn.efficientnet import split_efficientnet_lite0

    domains = texture_benchmark(
        source,
        root=config.data_root,
        image_size=config.image_size,
        families=config.families,
        per_domain=config.per_domain_images,
    )
    trunk, _ = split_efficientnet_lite0(config.top_start)
    out: dict[str, torch.Tensor] = {}
    for name, arrays in domains.items():
        out[f"{name}.features"] = trunk.features(arrays.images).contiguous()
        out[f"{name}.labels"] = arrays.labels.clone()
    return out


def _texture_problem(config: DiwaConfig, cache: Cache) -> Problem:
    from frugalvision.data import available_default_source
    from frugalvision.methods.diwa.model import FrozenBatchNorm
    from frugalvision.nn.efficientnet import LITE0_FEATURES, split_efficientnet_lite0

    source = available_default_source(config.data_root) if config.dataset == "auto" else config.dataset
    spec = {"source": source, "families": list(config.families), "size": config.image_size}
    spec |= {"per_domain": config.per_domain_images, "start": config.top_start, "trunk": "efficientnet-lite0"}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    tensors = cache(f"texture-features-{key}.safetensors", lambda: _texture_features(config, source))
    sets = {f: TensorDataset(tensors[f"{f}.features"], tensors[f"{f}.labels"]) for f in config.families}
    test_name = config.families[config.test_domain]
    train_names = [f for f in config.families if f != test_name]
    classes = int(max(int(tensors[f"{f}.labels"].max()) for f in config.families)) + 1

    def build_net() -> DiwaNet:
        _, top = split_efficientnet_lite0(config.top_start, pretrained=False)
        return DiwaNet(FrozenBatchNorm(top).train(), LITE0_FEATURES, classes)

    def pretrained() -> dict[str, torch.Tensor]:
        _, top = split_efficientnet_lite0(config.top_start, pretrained=True)
        return {f"featurizer.module.{k}": v.detach().clone() for k, v in top.state_dict().items()}

    def splits(seed: int) -> Splits:
        train, val = _domain_parts([sets[n] for n in train_names], seed, config.holdout_fraction)
        return train, val, sets[test_name]

    return Problem(f"texture-{source}", build_net, None, splits, test_name, pretrained)


def build_problem(config: DiwaConfig, cache: Cache | None = None) -> Problem:
    """The benchmark of the config: offline TextureFashion or RotatedFashion, or DomainBed folders.

    ``cache`` keeps the frozen trunk's features across runs (the experiment passes one under ``<out>/diwa/cache``).
    """
    if config.benchmark == "textures":
        return _texture_problem(config, cache or _no_cache)
    return _domainbed_problem(config) if config.benchmark == "domainbed" else _rotated_problem(config)
