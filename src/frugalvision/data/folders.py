"""Image-folder datasets in the real on-disk formats: ImageNet-style folders, CSV file lists, DomainBed domains.

``ImageFolderDataset`` reads ``root/<class>/<image>`` (ImageNet, ImageNet-V2 with integer class folders) or a
``path,label`` CSV list. ``DomainBedDataset`` reads ``root/<domain>/<class>/<image>`` (PACS, VLCS, OfficeHome,
TerraIncognita, DomainNet) and builds the leave-one-domain-out protocol of DomainBed.
"""

from __future__ import annotations

import copy
import csv
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset, Subset
from torchvision.transforms.functional import pil_to_tensor

from frugalvision.data import provenance
from frugalvision.data.splits import derive_seed, split_indices
from frugalvision.errors import DataError

__all__ = [
    "IMG_EXTENSIONS",
    "DomainBedDataset",
    "DomainSplit",
    "ImageFolderDataset",
    "load_image",
    "to_float_tensor",
]

IMG_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
"""File suffixes (compared case-insensitively) treated as images."""

Transform = Callable[[Any], Any]


def to_float_tensor(image: Image.Image) -> torch.Tensor:
    """Convert a PIL image to a float32 ``[C, H, W]`` tensor in ``[0, 1]``."""
    return pil_to_tensor(image).float().div_(255.0)


def load_image(path: str | Path) -> Image.Image:
    """Open an image with PIL, decode it fully and convert it to RGB.

    Truncated files are detected because the whole image is decoded (unless some other code has set
    ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES = True`` globally).

    Args:
        path: The image file.

    Returns:
        The decoded RGB image.

    Raises:
        DataError: If the file is missing, not an image, corrupt or truncated (the message names the file).

    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist; fix: restore it or remove it from the list") from None
    except Exception as err:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        msg = " ".join(str(err).split())
        raise DataError(
            f"image file {path} is corrupt or truncated ({type(err).__name__}: {msg}); fix: replace or delete it, "
            "or pass skip_bad_files=True"
        ) from err


def _is_image(path: Path, extensions: tuple[str, ...]) -> bool:
    return path.suffix.lower() in extensions and not path.name.startswith(".")


def _scan_images(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if _is_image(Path(f), extensions))
    return found


def _subdirs(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _is_int_name(name: str) -> bool:
    return name.isascii() and name.isdigit()


class ImageFolderDataset(Dataset):
    """Labelled images laid out as ``root/<class>/<image>`` (searched recursively inside each class folder).

    The label of a class folder is its position among the sorted folder names, except when every folder name is an
    integer (ImageNet-V2 style ``0, 1, 2, 10``): then the label is ``int(name)`` and ``classes`` is
    ``["0", ..., str(max label)]``.

    Args:
        root: Folder with one sub-folder per class.
        transform: Callable applied to the RGB PIL image; default converts to a float ``[C, H, W]`` tensor in [0, 1].
        skip_bad_files: Skip corrupt/truncated files instead of raising; skipped files are listed in ``skipped``
            and a warning is emitted once.
        extensions: Image file suffixes to include.
        classes: Fixed class list (label = position); folders not in it are an error, missing ones are allowed.
        prefilter: In skip mode, decode every file once at construction (:meth:`verify`) so ``len()`` counts only
            good files. Without it, a bad file met at load time is replaced by the next good one.

    Raises:
        DataError: If ``root`` is missing, has no class folders, or a class folder has no images.

    """

    def __init__(
        self,
        root: str | Path,
        transform: Transform | None = None,
        *,
        skip_bad_files: bool = False,
        extensions: Sequence[str] = IMG_EXTENSIONS,
        classes: Sequence[str] | None = None,
        prefilter: bool = True,
    ) -> None:
        root = Path(root).expanduser()
        exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
        if not root.is_dir():
            raise DataError(
                f"image folder {root} does not exist; fix: pass the folder that holds one sub-folder per class"
            )
        class_dirs = _subdirs(root)
        if classes is None:
            if not class_dirs:
                raise DataError(
                    f"image folder {root} has no class sub-folders; fix: lay it out as {root}/<class>/<image>"
                )
            if all(_is_int_name(n) for n in class_dirs):
                class_to_idx = {n: int(n) for n in class_dirs}
                class_list = [str(i) for i in range(max(class_to_idx.values()) + 1)]
            else:
                class_list = list(class_dirs)
                class_to_idx = {n: i for i, n in enumerate(class_list)}
        else:
            class_list = list(classes)
            class_to_idx = {n: i for i, n in enumerate(class_list)}
            unknown = [n for n in class_dirs if n not in class_to_idx]
            if unknown:
                raise DataError(
                    f"class folder {root / unknown[0]} is not in classes; fix: add it to classes or move it away"
                )
            if not class_dirs:
                raise DataError(
                    f"image folder {root} has no class sub-folders; fix: lay it out as {root}/<class>/<image>"
                )
        samples: list[tuple[Path, int]] = []
        for name in class_dirs:
            files = _scan_images(root / name, exts)
            if not files:
                raise DataError(
                    f"class folder {root / name} has no images ({'/'.join(exts)}); fix: add images or remove the folder"
                )
            samples.extend((f, class_to_idx[name]) for f in files)
        self._setup(root, samples, class_list, class_to_idx, transform, skip_bad_files, prefilter)

    def _setup(
        self,
        root: Path,
        samples: list[tuple[Path, int]],
        classes: list[str],
        class_to_idx: dict[str, int],
        transform: Transform | None,
        skip_bad_files: bool,
        prefilter: bool,
    ) -> None:
        self.root = root
        self.samples = samples
        self.classes = classes
        self.class_to_idx = class_to_idx
        self.transform = transform
        self.skip_bad_files = skip_bad_files
        self.skipped: list[Path] = []
        self._warned = False
        if skip_bad_files and prefilter:
            bad = set(self.verify())
            if bad:
                self.samples = [s for s in self.samples if s[0] not in bad]
                for path in sorted(bad):
                    self._note_skip(path)
        if not self.samples:
            raise DataError(f"image set {root} has no readable images; fix: check the folder or the file list")
        provenance.record_source("imagefolder", root)

    @classmethod
    def from_csv(
        cls,
        csv_path: str | Path,
        root: str | Path | None = None,
        transform: Transform | None = None,
        *,
        skip_bad_files: bool = False,
        classes: Sequence[str] | None = None,
        prefilter: bool = True,
    ) -> ImageFolderDataset:
        """Build the dataset from a ``path,label`` CSV file list (an optional header row is skipped).

        Labels are integers, or class names (then mapped by their position in ``classes`` or in the sorted names).

        Args:
            csv_path: The CSV file.
            root: Folder that relative paths are resolved against; defaults to the CSV's folder.
            transform: As in the constructor.
            skip_bad_files: As in the constructor.
            classes: Optional class names; with integer labels, ``classes[label]`` names the label.
            prefilter: As in the constructor.

        Returns:
            The dataset.

        Raises:
            DataError: If the CSV is missing, empty or malformed, or lists a file that does not exist.

        """
        csv_path = Path(csv_path).expanduser()
        if not csv_path.is_file():
            raise DataError(f"file list {csv_path} does not exist; fix: pass a CSV with path,label rows")
        base = Path(root).expanduser() if root is not None else csv_path.parent
        rows: list[tuple[int, str, str]] = []
        with csv_path.open(newline="") as fh:
            for lineno, row in enumerate(csv.reader(fh), start=1):
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != 2:
                    raise DataError(f"{csv_path} line {lineno}: expected 2 columns path,label, got {len(row)}; fix it")
                rows.append((lineno, row[0].strip(), row[1].strip()))
        if rows and rows[0][1].lower() in ("path", "file", "filename", "image") and rows[0][2].lower() == "label":
            rows = rows[1:]
        if not rows:
            raise DataError(f"file list {csv_path} has no rows; fix: add path,label rows")
        int_labels = all(_is_int_name(r[2]) for r in rows)
        if int_labels:
            labels = [int(r[2]) for r in rows]
            class_list = list(classes) if classes is not None else [str(i) for i in range(max(labels) + 1)]
            bad = next((r for r, lab in zip(rows, labels) if lab >= len(class_list)), None)
            if bad is not None:
                raise DataError(f"{csv_path} line {bad[0]}: label {bad[2]} >= {len(class_list)} classes; fix: check it")
            class_to_idx = {name: i for i, name in enumerate(class_list)}
        else:
            class_list = list(classes) if classes is not None else sorted({r[2] for r in rows})
            class_to_idx = {name: i for i, name in enumerate(class_list)}
            bad = next((r for r in rows if r[2] not in class_to_idx), None)
            if bad is not None:
                raise DataError(f"{csv_path} line {bad[0]}: unknown class {bad[2]!r}; fix: use one of the class names")
            labels = [class_to_idx[r[2]] for r in rows]
        samples: list[tuple[Path, int]] = []
        for (lineno, rel, _), label in zip(rows, labels):
            path = Path(rel) if Path(rel).is_absolute() else base / rel
            if not path.is_file():
                raise DataError(f"{csv_path} line {lineno}: image {path} does not exist; fix: correct the path or root")
            samples.append((path, label))
        self = cls.__new__(cls)
        self._setup(base, samples, class_list, class_to_idx, transform, skip_bad_files, prefilter)
        return self

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def targets(self) -> list[int]:
        """Label of every sample."""
        return [label for _, label in self.samples]

    @property
    def num_classes(self) -> int:
        """Number of classes (length of ``classes``)."""
        return len(self.classes)

    def _note_skip(self, path: Path) -> None:
        if path not in self.skipped:
            self.skipped.append(path)
            provenance.record_skipped(path)
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"skipping corrupt or truncated image {path} (skip_bad_files=True); further skips are counted in "
                "dataset.skipped",
                RuntimeWarning,
                stacklevel=3,
            )

    def _apply(self, image: Image.Image) -> Any:
        return self.transform(image) if self.transform is not None else to_float_tensor(image)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        try:
            return self._apply(load_image(path)), label
        except DataError:
            if not self.skip_bad_files:
                raise
            self._note_skip(path)
        n = len(self.samples)
        for step in range(1, n):  # replace a bad file met at load time by the next readable one
            path, label = self.samples[(index + step) % n]
            try:
                return self._apply(load_image(path)), label
            except DataError:
                self._note_skip(path)
        raise DataError(f"image set {self.root} has no readable images left; fix: check the files")

    def verify(self, num_threads: int | None = None) -> list[Path]:
        """Fully decode every file and return the corrupt or truncated ones (in sample order).

        Args:
            num_threads: Decoder threads; default uses up to 8 threads for large sets, one for small ones.

        Returns:
            Paths of the unreadable files.

        """
        paths = [p for p, _ in self.samples]

        def bad(path: Path) -> bool:
            try:
                load_image(path)
            except DataError:
                return True
            return False

        threads = num_threads or (min(8, os.cpu_count() or 1) if len(paths) > 256 else 1)
        if threads <= 1:
            flags = [bad(p) for p in paths]
        else:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                flags = list(pool.map(bad, paths, chunksize=64))
        return [p for p, f in zip(paths, flags) if f]

    def with_transform(self, transform: Transform | None) -> ImageFolderDataset:
        """Return a copy sharing the file list but using another transform (e.g. train vs eval augmentation)."""
        clone = copy.copy(self)
        clone.transform = transform
        return clone


@dataclass
class DomainSplit:
    """Leave-one-domain-out datasets (DomainBed protocol).

    Attributes:
        train: Union of the in-splits (1 - holdout) of the training domains.
        val: Union of the out-splits (holdout) of the training domains: training-domain validation.
        test: The whole held-out test domain.
        test_domain: Name of the held-out domain.
        train_domains: Names of the training domains.
        train_parts: Per training domain, its in-split.
        val_parts: Per training domain, its out-split.

    """

    train: Dataset
    val: Dataset
    test: Dataset
    test_domain: str
    train_domains: list[str]
    train_parts: dict[str, Subset] = field(default_factory=dict)
    val_parts: dict[str, Subset] = field(default_factory=dict)


class DomainBedDataset:
    """Multi-domain image folders laid out as ``root/<domain>/<class>/<image>`` (the DomainBed layout).

    The class list is the sorted union of class folder names over all domains under ``root``, so a class has the same
    label in every domain even when some domain lacks it.

    Args:
        root: Folder with one sub-folder per domain.
        domains: Domains to use (default: every sub-folder, sorted).
        transform: Default transform of every domain dataset (see :class:`ImageFolderDataset`).
        skip_bad_files: Passed to each :class:`ImageFolderDataset`.
        extensions: Image file suffixes.

    Raises:
        DataError: If ``root`` is missing or empty, a requested domain does not exist, or a domain has no classes.

    """

    def __init__(
        self,
        root: str | Path,
        domains: Sequence[str] | None = None,
        transform: Transform | None = None,
        *,
        skip_bad_files: bool = False,
        extensions: Sequence[str] = IMG_EXTENSIONS,
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"DomainBed folder {self.root} does not exist; fix: pass the folder holding one per domain")
        available = _subdirs(self.root)
        if not available:
            raise DataError(f"DomainBed folder {self.root} has no domain sub-folders; fix: use root/<domain>/<class>/")
        if domains is None:
            self.domains = available
        else:
            missing = [d for d in domains if d not in available]
            if missing:
                raise DataError(
                    f"domain {missing[0]!r} not found in {self.root}; fix: use some of {', '.join(available)}"
                )
            self.domains = list(domains)
        union: set[str] = set()
        for dom in available:
            names = _subdirs(self.root / dom)
            if not names and dom in self.domains:
                raise DataError(f"domain folder {self.root / dom} has no class sub-folders; fix: add <class>/ folders")
            union.update(names)
        self.classes: list[str] = sorted(union)
        self.transform = transform
        self.skip_bad_files = skip_bad_files
        self.extensions = tuple(extensions)
        self._cache: dict[str, ImageFolderDataset] = {}

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def domain_dataset(self, name: str) -> ImageFolderDataset:
        """Return the image dataset of one domain (built once, then cached), labelled with the shared class list.

        Raises:
            DataError: If ``name`` is not one of ``domains``.

        """
        if name not in self.domains:
            raise DataError(f"unknown domain {name!r}; fix: use one of {', '.join(self.domains)}")
        if name not in self._cache:
            self._cache[name] = ImageFolderDataset(
                self.root / name,
                self.transform,
                skip_bad_files=self.skip_bad_files,
                extensions=self.extensions,
                classes=self.classes,
            )
        return self._cache[name]

    def leave_one_domain_out(
        self,
        test_domain: str,
        holdout_fraction: float = 0.2,
        seed: int = 0,
        *,
        train_transform: Transform | None = None,
    ) -> DomainSplit:
        """Split for domain generalisation: train on the other domains, validate in-domain, test on ``test_domain``.

        Each training domain is split at random (seeded by ``seed`` and the domain name) into an in-split of
        ``n - floor(n * holdout_fraction)`` images for training and an out-split of ``floor(n * holdout_fraction)``
        images for validation, as in DomainBed. The test domain is used whole.

        Args:
            test_domain: The held-out domain.
            holdout_fraction: Fraction of each training domain kept for validation, in ``[0, 1)``.
            seed: Split seed.
            train_transform: Optional transform for the training part only (e.g. augmentation).

        Returns:
            The train / val / test datasets.

        Raises:
            DataError: If the domain is unknown, no training domain is left, or the fraction is out of range.

        """
        if test_domain not in self.domains:
            raise DataError(f"unknown test domain {test_domain!r}; fix: use one of {', '.join(self.domains)}")
        if not 0.0 <= holdout_fraction < 1.0:
            raise DataError(f"holdout_fraction={holdout_fraction} is outside [0, 1); fix: use e.g. 0.2")
        train_domains = [d for d in self.domains if d != test_domain]
        if not train_domains:
            raise DataError(f"only domain {test_domain!r} is selected, none left to train on; fix: add domains")
        train_parts: dict[str, Subset] = {}
        val_parts: dict[str, Subset] = {}
        for dom in train_domains:
            ds = self.domain_dataset(dom)
            out_idx, in_idx = split_indices(
                len(ds), (holdout_fraction, 1.0 - holdout_fraction), derive_seed(seed, "domainbed", dom)
            )
            train_ds = ds.with_transform(train_transform) if train_transform is not None else ds
            train_parts[dom] = Subset(train_ds, in_idx.tolist())
            val_parts[dom] = Subset(ds, out_idx.tolist())
        return DomainSplit(
            train=ConcatDataset(list(train_parts.values())),
            val=ConcatDataset(list(val_parts.values())),
            test=self.domain_dataset(test_domain),
            test_domain=test_domain,
            train_domains=train_domains,
            train_parts=train_parts,
            val_parts=val_parts,
        )
