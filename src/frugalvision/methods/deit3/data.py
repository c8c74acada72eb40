"""ColourFashion: the offline small-scale data of the DeiT III experiment (spec section 6).

Grey images (Fashion-MNIST, else the MNIST 5k subset, else scikit-learn digits upsampled to 16 px) become RGB with a
random per-image foreground tint and background colour. Two shifted test sets come from the same test images:
tints from a held-out hue band, and a Gaussian blur of standard deviation 1 pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from frugalvision.data.arrays import ImageArrays
from frugalvision.data.folders import ImageFolderDataset
from frugalvision.data.sources import available_default_source, load_source
from frugalvision.data.splits import stratified_split, stratified_subset
from frugalvision.engine.seeding import derive_seed
from frugalvision.errors import DataError
from frugalvision.methods.deit3.augment import gaussian_blur

TRAIN_HUES = (0.0, 0.8)
SHIFT_HUES = (0.8, 1.0)


@dataclass
class ColourSets:
    """Train/val/test image sets of the experiment (uint8 RGB)."""

    train: ImageArrays
    val: ImageArrays
    test: ImageArrays
    test_hue: ImageArrays
    test_blur: ImageArrays
    source: str

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return self.train.num_classes


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Vectorised HSV -> RGB (all in [0, 1]); returns ``[N, 3]``."""
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.long() % 6
    r = torch.stack([v, q, p, p, t, v], 1).gather(1, i.view(-1, 1))
    g = torch.stack([t, v, v, q, p, p], 1).gather(1, i.view(-1, 1))
    b = torch.stack([p, p, t, v, v, q], 1).gather(1, i.view(-1, 1))
    return torch.cat([r, g, b], 1)


def colourise(
    arrays: ImageArrays, seed: int, hues: tuple[float, float] = TRAIN_HUES, name: str | None = None
) -> ImageArrays:
    """Tint each grey image: ``rgb = g * fg + (1 - g) * bg`` with a random foreground hue in ``hues``.

    The background colour has any hue and a low value, the foreground a high value; both are drawn per image.
    """
    gen = torch.Generator().manual_seed(derive_seed("colourise", seed))
    n = len(arrays)
    u = torch.rand(n, 6, generator=gen)
    fg = hsv_to_rgb(hues[0] + (hues[1] - hues[0]) * u[:, 0], 0.5 + 0.5 * u[:, 1], 0.7 + 0.3 * u[:, 2])
    bg = hsv_to_rgb(u[:, 3], 0.2 + 0.6 * u[:, 4], 0.05 + 0.35 * u[:, 5])
    g = arrays.images.float().div(255.0)
    if g.shape[1] != 1:
        g = g.mean(1, keepdim=True)
    rgb = g * fg.view(n, 3, 1, 1) + (1 - g) * bg.view(n, 3, 1, 1)
    images = (rgb * 255).round().clamp(0, 255).to(torch.uint8)
    return ImageArrays(images, arrays.labels, arrays.classes, name or f"{arrays.name}-colour")


def _blurred(arrays: ImageArrays, sigma: float) -> ImageArrays:
    x = arrays.images.float().div(255.0)
    y = gaussian_blur(x, torch.full((len(arrays),), sigma))
    images = (y * 255).round().clamp(0, 255).to(torch.uint8)
    return ImageArrays(images, arrays.labels, arrays.classes, f"{arrays.name}-blur")


def _upsample(arrays: ImageArrays, size: int) -> ImageArrays:
    x = F.interpolate(arrays.images.float(), size=(size, size), mode="bilinear", align_corners=False)
    return ImageArrays(x.round().clamp(0, 255).to(torch.uint8), arrays.labels, arrays.classes, arrays.name)


def load_colour_sets(
    dataset: str = "auto",
    data_root: str | None = None,
    n_train: int = 12000,
    n_val: int = 2000,
    n_test: int = 5000,
    seed: int = 0,
) -> ColourSets:
    """Build the fixed ColourFashion splits (same for every seed of an experiment).

    Args:
        dataset: "fashion-mnist", "mnist5k", "digits" (upsampled to 16 px) or "auto" (first available).
        data_root: folder of the real files (None: the offline defaults).
        n_train: training images (class-stratified, from the source's train split).
        n_val: validation images (disjoint from training, same split).
        n_test: test images (from the source's test split).
        seed: data seed.
    """
    name = available_default_source(data_root) if dataset == "auto" else dataset
    train_src = load_source(name, root=data_root, train=True)
    test_src = load_source(name, root=data_root, train=False)
    if name == "digits":
        train_src, test_src = _upsample(train_src, 16), _upsample(test_src, 16)
    n_train, n_val = min(n_train, len(train_src) - 1), min(n_val, len(train_src) // 5)
    n_test = min(n_test, len(test_src))
    total = len(train_src)
    frac_train, frac_val = n_train / total, n_val / total
    if frac_train + frac_val > 1:
        frac_train = 1 - frac_val
    train_idx, val_idx = stratified_split(train_src.labels, [frac_train, frac_val], seed=seed)
    test_idx = stratified_subset(test_src.labels, total=n_test, seed=seed)
    test_grey = test_src.subset(test_idx)
    test = colourise(test_grey, derive_seed(seed, "test"), name="test")
    return ColourSets(
        train=colourise(train_src.subset(train_idx), derive_seed(seed, "train"), name="train"),
        val=colourise(train_src.subset(val_idx), derive_seed(seed, "val"), name="val"),
        test=test,
        test_hue=colourise(test_grey, derive_seed(seed, "test"), hues=SHIFT_HUES, name="test_hue"),
        test_blur=_blurred(test, 1.0).renamed("test_blur"),
        source=name,
    )


# ------------------------------------------------------------------------------------- real data (paper scale)
@dataclass
class FolderSets:
    """Class-folder image sets on disk (ImageNet layout); transforms are chosen per training stage.

    Attributes:
        train: ``<root>/<class>/<image>`` folder of the training images.
        evals: named evaluation folders (ImageNet val with synset folders, ImageNet-V2 with integer folders).
        classes: class folder names of ``train`` (label = position, as in the sorted layout).
        skip_bad_files: skip corrupt images instead of stopping.
        source: name written in results.json.
        list_root: file-list mode (``train`` and ``evals`` are ``.csv`` files): folder that relative paths resolve
            against (None: each CSV's folder).
    """

    train: Path
    evals: dict[str, Path]
    classes: list[str]
    skip_bad_files: bool = False
    source: str = "imagenet"
    list_root: Path | None = None

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)


def find_imagenet(data_root: str | Path, skip_bad_files: bool = False, name: str = "imagenet") -> FolderSets:
    """Locate ``<root>/<name>/{train,val}`` (or ``<root>/{train,val}``) and the optional ImageNet-V2 folder.

    ``name`` is "imagenet" or "imagenet21k" (the number of classes is read from the folders, never hard-coded).

    Raises:
        DataError: no training folder (the message names the expected layout).
    """
    root = Path(data_root).expanduser()
    base = root / name if (root / name / "train").is_dir() else root
    train = base / "train"
    if not train.is_dir():
        raise DataError(
            f"no training folder at {root}/{name}/train or {root}/train; fix: lay the data out as "
            f"<data_root>/{name}/{{train,val}}/<wnid>/<image>.JPEG"
        )
    classes = sorted(d.name for d in train.iterdir() if d.is_dir() and not d.name.startswith("."))
    evals = {}
    if (base / "val").is_dir():
        evals["val"] = base / "val"
    v2 = root / "imagenetv2-matched-frequency-format-val"
    if v2.is_dir():
        evals["v2"] = v2
    if not evals:
        raise DataError(f"no evaluation folder next to {train}; fix: add {base / 'val'}/<wnid>/<image>")
    return FolderSets(train=train, evals=evals, classes=classes, skip_bad_files=skip_bad_files, source=name)


def csv_classes(csv_path: str | Path, root: str | Path | None = None) -> list[str]:
    """Class names of a ``path,label`` file list, as :meth:`ImageFolderDataset.from_csv` assigns them."""
    return ImageFolderDataset.from_csv(csv_path, root).classes


def file_list_sets(
    train: str | Path,
    evals: dict[str, str | Path],
    root: str | Path | None = None,
    skip_bad_files: bool = False,
    name: str = "imagenet",
) -> FolderSets:
    """Image sets given as ``path,label`` CSV file lists (train, and named evaluation lists).

    Raises:
        DataError: a list is missing, malformed, or names a file that does not exist.
    """
    files = {"train": Path(train).expanduser(), **{k: Path(v).expanduser() for k, v in evals.items()}}
    for key, path in files.items():
        if not path.is_file():
            raise DataError(f"file list {key}={path} does not exist; fix: pass a CSV with path,label rows")
    list_root = Path(root).expanduser() if root is not None else None
    return FolderSets(
        train=files.pop("train"),
        evals=files,
        classes=csv_classes(train, list_root),
        skip_bad_files=skip_bad_files,
        source=name,
        list_root=list_root,
    )
