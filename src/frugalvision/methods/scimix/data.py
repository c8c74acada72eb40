"""The experiment's data: FashionComposite (offline, with ground truth) or a real dataset (CIFAR, ImageFolder).

FashionComposite (spec §6): Fashion-MNIST items (the MNIST 5k items when Fashion-MNIST is not installed) composited
on crops of ten real photos/textures (:mod:`frugalvision.data.object_composites`). The Fashion-MNIST training
images are cut once into an oracle pool (the last ``oracle_size`` of a fixed permutation: the oracle classifier's
training data) and the SSL pool, from which every seed draws its labeled split (``labels_per_class`` per class), a
validation set and an unlabeled pool, all disjoint; the test set comes from the Fashion-MNIST test images on the
held-out right 40 % of every background. In the labeled set only, a background is tied to the class (class k ->
background k) with probability ``nuisance``: a shortcut the few labels teach and the unlabeled and test data do not
have.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from frugalvision.data import ImageArrays, ImageFolderDataset, available_default_source, load_source
from frugalvision.data.cifar import load_cifar
from frugalvision.data.object_composites import BACKGROUNDS, CompositeSet, composite_objects, crop_backgrounds
from frugalvision.errors import DataError
from frugalvision.methods.scimix.config import ScimixConfig
from frugalvision.seeding import derive_seed
from frugalvision.ssl import TensorDictDataset, labeled_split, read_labeled_json

__all__ = ["Problem", "References", "build_problem", "build_references", "object_source"]


@dataclass
class Problem:
    """One seed's splits.

    Attributes:
        source: the data actually used.
        classes: class names.
        labeled: labeled images (composites keep their ground-truth fields).
        unlabeled: unlabeled images (labels kept for logging pseudo-label accuracy only; -1 on real data).
        val: labeled validation images (drawn from the training pool).
        test: test images.
        indices: indices of ``labeled``, ``unlabeled`` and ``val`` in the training split and of ``test`` in the test
            split (``labeled`` is written to labeled.json).
        backgrounds: background names (composite data), else None.
    """

    source: str
    classes: list[str]
    labeled: TensorDictDataset
    unlabeled: TensorDictDataset
    val: TensorDictDataset
    test: TensorDictDataset
    indices: dict[str, torch.Tensor]
    backgrounds: list[str] | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def channels(self) -> int:
        """Image channels."""
        return int(self.test.fields["image"].shape[1])

    def generator_images(self) -> tuple[TensorDictDataset, TensorDictDataset]:
        """(labeled, unlabeled) images and labels (-1 for unlabeled), nothing else: the generator's training data."""
        labeled = TensorDictDataset({"image": self.labeled.fields["image"], "label": self.labeled.fields["label"]})
        unlabeled_images = self.unlabeled.fields["image"]
        unlabeled = TensorDictDataset({"image": unlabeled_images, "label": torch.full((len(unlabeled_images),), -1)})
        return labeled, unlabeled


@dataclass
class References:
    """Training data of the fixed reference models (never used to train a row).

    Attributes:
        oracle: fully labeled images of the oracle classifier.
        background_train: pure background crops labeled by background (composite data), else None.
        background_test: held-out-region background crops (composite data), else None.
    """

    oracle: TensorDictDataset
    background_train: TensorDictDataset | None = None
    background_test: TensorDictDataset | None = None


def object_source(config: ScimixConfig) -> str:
    """The object source of the composites: Fashion-MNIST when present (or under data_root), else MNIST 5k."""
    return available_default_source(config.data_root)


def _objects(config: ScimixConfig, train: bool) -> ImageArrays:
    return _load_objects(object_source(config), config.data_root, train)


@lru_cache(maxsize=4)
def _load_objects(name: str, root: str | None, train: bool) -> ImageArrays:
    """A source split, read once per process (callers never modify it)."""
    return load_source(name, root=root, train=train)


def _pools(config: ScimixConfig, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(SSL pool, oracle pool) indices of the object training set, fixed for every seed."""
    perm = torch.randperm(count, generator=torch.Generator().manual_seed(derive_seed("scimix", "pools")))
    oracle = min(config.oracle_size, count // 3)
    return perm[: count - oracle].sort().values, perm[count - oracle :].sort().values


def _dataset(data: CompositeSet) -> TensorDictDataset:
    return TensorDictDataset(data.fields())


def _composite(
    config: ScimixConfig, arrays: ImageArrays, index: torch.Tensor, backgrounds: torch.Tensor, seed: int, region: str
) -> CompositeSet:
    return composite_objects(
        arrays.images[index],
        arrays.labels[index],
        backgrounds,
        seed,
        region=region,  # type: ignore[arg-type]
        size=config.image_size,
        object_size=config.object_size,
        classes=arrays.classes,
        alpha_gain=config.alpha_gain,
    )


def _labeled_backgrounds(labels: torch.Tensor, nuisance: float, gen: torch.Generator) -> torch.Tensor:
    tied = torch.rand(len(labels), generator=gen) < nuisance
    uniform = torch.randint(len(BACKGROUNDS), (len(labels),), generator=gen)
    return torch.where(tied, labels % len(BACKGROUNDS), uniform)


def _take(rest: torch.Tensor, count: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random indices of ``rest`` (all when count is 0 or larger) and what is left."""
    perm = rest[torch.randperm(len(rest), generator=gen)]
    count = len(rest) if count <= 0 else min(count, len(rest))
    return perm[:count].sort().values, perm[count:]


def composite_problem(config: ScimixConfig, seed: int) -> Problem:
    """FashionComposite splits of one seed (see the module docstring)."""
    train, test = _objects(config, True), _objects(config, False)
    pool, _ = _pools(config, len(train))
    gen = torch.Generator().manual_seed(derive_seed(seed, "scimix-splits"))
    split = labeled_split(train.labels[pool], config.labels_per_class, seed)
    labeled = pool[split.labeled]
    val, rest = _take(pool[split.unlabeled], config.val_size, gen)
    unlabeled, _ = _take(rest, config.unlabeled, gen)
    test_index, _ = _take(torch.arange(len(test)), config.test_size, gen)
    uniform = lambda n: torch.randint(len(BACKGROUNDS), (n,), generator=gen)  # noqa: E731
    bg_labeled = _labeled_backgrounds(train.labels[labeled], config.nuisance, gen)
    sets = {
        "labeled": _composite(config, train, labeled, bg_labeled, derive_seed(seed, "labeled"), "train"),
        "unlabeled": _composite(config, train, unlabeled, uniform(len(unlabeled)), derive_seed(seed, "u"), "train"),
        "val": _composite(config, train, val, uniform(len(val)), derive_seed(seed, "val"), "train"),
        "test": _composite(config, test, test_index, uniform(len(test_index)), derive_seed(seed, "test"), "test"),
    }
    return Problem(
        source=f"{train.name} items on {len(BACKGROUNDS)} real photo/texture backgrounds",
        classes=list(train.classes),
        labeled=_dataset(sets["labeled"]),
        unlabeled=_dataset(sets["unlabeled"]),
        val=_dataset(sets["val"]),
        test=_dataset(sets["test"]),
        indices={"labeled": labeled, "unlabeled": unlabeled, "val": val, "test": test_index},
        backgrounds=list(BACKGROUNDS),
    )


def composite_references(config: ScimixConfig) -> References:
    """The oracle's fully labeled composites (its own pool, uniform backgrounds) and pure background crops."""
    train = _objects(config, True)
    _, oracle_pool = _pools(config, len(train))
    gen = torch.Generator().manual_seed(derive_seed("scimix", "references"))
    backgrounds = torch.randint(len(BACKGROUNDS), (len(oracle_pool),), generator=gen)
    oracle = _composite(config, train, oracle_pool, backgrounds, derive_seed("scimix", "oracle"), "train")
    crops = max(1000, len(oracle_pool) // 2)
    ids_train, ids_test = torch.arange(crops) % len(BACKGROUNDS), torch.arange(crops // 2) % len(BACKGROUNDS)
    size, seed = config.image_size, derive_seed("scimix", "background-crops")

    def crops(ids: torch.Tensor, region: str) -> TensorDictDataset:
        return TensorDictDataset({"image": crop_backgrounds(ids, size, seed, region), "label": ids})  # type: ignore[arg-type]

    return References(_dataset(oracle), crops(ids_train, "train"), crops(ids_test, "test"))


# ------------------------------------------------------------------------------------------------ real data
def _resize(arrays: ImageArrays, size: int) -> torch.Tensor:
    if arrays.images.shape[-1] == size and arrays.images.shape[-2] == size:
        return arrays.images
    images = F.interpolate(arrays.images.float(), size=(size, size), mode="bilinear", antialias=True)
    return images.round_().clamp_(0, 255).to(torch.uint8)


def _folder_arrays(root: Path, split: str, size: int, skip_bad_files: bool) -> ImageArrays:
    """Every image of ``root/split/<class>/`` resized to ``size`` x ``size`` (uint8 RGB in memory)."""

    def to_bytes(image: Image.Image) -> torch.Tensor:
        return pil_to_tensor(image.convert("RGB").resize((size, size), Image.BILINEAR))

    folder = ImageFolderDataset(root / split, transform=to_bytes, skip_bad_files=skip_bad_files)
    items = [folder[index] for index in range(len(folder))]
    images = torch.stack([image for image, _ in items])
    labels = torch.tensor([label for _, label in items])
    return ImageArrays(images, labels, folder.classes, f"imagefolder:{split}")


def real_arrays(config: ScimixConfig, train: bool) -> ImageArrays:
    """A split of the real dataset under ``data_root`` (CIFAR release or ImageFolder ``train/``, ``test/``)."""
    assert config.data_root is not None
    root = Path(config.data_root)
    if config.dataset in ("cifar10", "cifar100"):
        arrays = load_cifar(root, config.dataset, train=train, allow_pickle=config.allow_pickle)  # type: ignore[arg-type]
    else:
        split = "train" if train else "test"
        if not (root / split).is_dir():
            raise DataError(f"{root} has no {split}/ folder; lay the data out as {root}/{{train,test}}/<class>/<image>")
        arrays = _folder_arrays(root, split, config.image_size, config.skip_bad_files)
    return ImageArrays(_resize(arrays, config.image_size), arrays.labels, arrays.classes, arrays.name)


def real_problem(config: ScimixConfig, seed: int) -> Problem:
    """Labeled split (drawn with the seed, or replayed from labeled_json), validation, unlabeled pool and test."""
    train, test = real_arrays(config, True), real_arrays(config, False)
    gen = torch.Generator().manual_seed(derive_seed(seed, "scimix-splits"))
    if config.labeled_json:
        labeled = read_labeled_json(config.labeled_json, len(train))
        keep = torch.ones(len(train), dtype=torch.bool)
        keep[labeled] = False
        rest = torch.nonzero(keep).flatten()
    else:
        split = labeled_split(train.labels, config.labels_per_class, seed)
        labeled, rest = split.labeled, split.unlabeled
    val, rest = _take(rest, config.val_size, gen)
    unlabeled, _ = _take(rest, config.unlabeled, gen)
    test_index, _ = _take(torch.arange(len(test)), config.test_size, gen)

    def subset(arrays: ImageArrays, index: torch.Tensor, known: bool = True) -> TensorDictDataset:
        labels = arrays.labels[index] if known else torch.full((len(index),), -1)
        return TensorDictDataset({"image": arrays.images[index], "label": labels})

    return Problem(
        source=train.name,
        classes=list(train.classes),
        labeled=subset(train, labeled),
        unlabeled=subset(train, unlabeled, known=False),
        val=subset(train, val),
        test=subset(test, test_index),
        indices={"labeled": labeled, "unlabeled": unlabeled, "val": val, "test": test_index},
    )


def real_references(config: ScimixConfig) -> References:
    """The oracle on real data: a classifier trained on every labeled training image (no background ground truth)."""
    train = real_arrays(config, True)
    return References(TensorDictDataset({"image": train.images, "label": train.labels}))


def build_problem(config: ScimixConfig, seed: int) -> Problem:
    """The seed's splits of the configured dataset."""
    return composite_problem(config, seed) if config.synthetic else real_problem(config, seed)


def build_references(config: ScimixConfig) -> References:
    """The reference models' data of the configured dataset."""
    return composite_references(config) if config.synthetic else real_references(config)
