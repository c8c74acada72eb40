"""CIFAR-10 / CIFAR-100 readers for the official releases: the binary version, and the Python pickles safely.

Binary release (https://www.cs.toronto.edu/~kriz/cifar.html): CIFAR-10 ``data_batch_{1..5}.bin`` and
``test_batch.bin`` hold records of 1 label byte + 3,072 image bytes; CIFAR-100 ``train.bin`` / ``test.bin`` hold
1 coarse-label byte + 1 fine-label byte + 3,072 image bytes. Images are channel-planar 32x32 (1,024 red, then green,
then blue bytes, each row-major). Class names come from ``batches.meta.txt`` / ``fine_label_names.txt`` /
``coarse_label_names.txt``.

Python release: pickled dicts (``data`` uint8 ``[N, 3072]``, ``labels`` or ``fine_labels``/``coarse_labels``) in
``data_batch_{1..5}``/``test_batch`` (+ ``batches.meta``) or ``train``/``test`` (+ ``meta``). Pickles can execute
code, so they are read only with ``allow_pickle=True`` and then through a restricted unpickler that admits numpy's
array reconstruction and nothing else: a file naming any other callable is refused without running it.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from frugalvision.data import provenance
from frugalvision.data.arrays import ImageArrays
from frugalvision.errors import DataError

__all__ = ["find_cifar", "load_cifar", "safe_unpickle"]

IMAGE_BYTES = 3 * 32 * 32
Variant = Literal["cifar10", "cifar100"]

_BINARY = {
    "cifar10": {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]},
    "cifar100": {"train": ["train.bin"], "test": ["test.bin"]},
}
_PYTHON = {
    "cifar10": {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
    "cifar100": {"train": ["train"], "test": ["test"]},
}
_SUBFOLDERS = ("", "cifar-10-batches-bin", "cifar-100-binary", "cifar-10-batches-py", "cifar-100-python")
#: the only globals a CIFAR pickle may name: numpy's array/dtype reconstruction and the bytes codec of protocol 2
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


def safe_unpickle(path: str | Path) -> Any:
    """Load a pickle that may hold only dicts, lists, strings, bytes, numbers and numpy arrays.

    Raises:
        DataError: the file is missing, corrupt, or names any other callable (it is never executed).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"cannot read {path} ({error.strerror or error}); check --data-root") from None
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise DataError(
            f"{path} is not a plain CIFAR pickle ({str(error).splitlines()[0]}); it was refused without running it, "
            "use the official file or the binary release"
        ) from None


def _folder(root: Path, names: list[str]) -> Path | None:
    for sub in _SUBFOLDERS:
        folder = root / sub if sub else root
        if all((folder / name).is_file() for name in names):
            return folder
    return None


def find_cifar(root: str | Path, variant: Variant, train: bool = True) -> tuple[Path, Literal["binary", "python"]]:
    """The folder holding one split of a CIFAR release under ``root`` (or its official sub-folder), and its format.

    Raises:
        DataError: neither release is found.
    """
    root, split = Path(root), "train" if train else "test"
    if variant not in _BINARY:
        raise DataError(f"variant={variant!r} is not a CIFAR release; use 'cifar10' or 'cifar100'")
    for kind, files in (("binary", _BINARY), ("python", _PYTHON)):
        folder = _folder(root, files[variant][split])
        if folder is not None:
            return folder, kind  # type: ignore[return-value]
    wanted = ", ".join(_BINARY[variant][split] + _PYTHON[variant][split])
    raise DataError(f"no {variant} {split} files ({wanted}) under {root}; pass the extracted release as --data-root")


def _names(folder: Path, variant: Variant, kind: str, label: str) -> list[str] | None:
    if kind == "binary":
        text = folder / ("batches.meta.txt" if variant == "cifar10" else f"{label}_label_names.txt")
        return [n.strip() for n in text.read_text().splitlines() if n.strip()] if text.is_file() else None
    meta = folder / ("batches.meta" if variant == "cifar10" else "meta")
    if not meta.is_file():
        return None
    key = "label_names" if variant == "cifar10" else f"{label}_label_names"
    names = safe_unpickle(meta).get(key, [])
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names] or None


def _read_binary(path: Path, variant: Variant, label: str) -> tuple[np.ndarray, np.ndarray]:
    head = 1 if variant == "cifar10" else 2
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    record = head + IMAGE_BYTES
    if raw.size == 0 or raw.size % record:
        raise DataError(
            f"{path} holds {raw.size} bytes, not a multiple of the {record}-byte {variant} record; re-extract it"
        )
    records = raw.reshape(-1, record)
    column = 0 if variant == "cifar10" else (1 if label == "fine" else 0)
    return records[:, head:], records[:, column].astype(np.int64)


def _read_python(path: Path, variant: Variant, label: str) -> tuple[np.ndarray, np.ndarray]:
    batch = safe_unpickle(path)
    if not isinstance(batch, dict):
        raise DataError(f"{path} holds a {type(batch).__name__}, not a CIFAR batch dict; use the official file")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    key = "labels" if variant == "cifar10" else f"{label}_labels"
    if "data" not in batch or key not in batch:
        raise DataError(f"{path} lacks the 'data' or '{key}' entry of a {variant} batch; use the official file")
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != IMAGE_BYTES:
        raise DataError(f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 [N, {IMAGE_BYTES}]")
    labels = np.asarray(batch[key], dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {labels.shape[0]} labels for {data.shape[0]} images; use the official file")
    return data, labels


def load_cifar(
    root: str | Path,
    variant: Variant = "cifar100",
    *,
    train: bool = True,
    label: Literal["fine", "coarse"] = "fine",
    allow_pickle: bool = False,
) -> ImageArrays:
    """Load one split of CIFAR-10/100 as uint8 ``[N, 3, 32, 32]`` images with labels.

    Args:
        root: the extracted release, or the folder that contains ``cifar-*-binary`` / ``cifar-*-python``.
        variant: "cifar10" or "cifar100".
        train: the training split (else the test split).
        label: CIFAR-100's "fine" (100 classes) or "coarse" (20 superclasses) labels.
        allow_pickle: read the Python release (through the restricted unpickler) when no binary release is found.

    Raises:
        DataError: missing or malformed files, labels out of range, or a Python release without ``allow_pickle``.
    """
    folder, kind = find_cifar(root, variant, train)
    if kind == "python" and not allow_pickle:
        raise DataError(
            f"{folder} holds the pickled Python release; pass allow_pickle=True (read safely, no code runs) or use "
            "the binary release"
        )
    files = (_BINARY if kind == "binary" else _PYTHON)[variant]["train" if train else "test"]
    reader = _read_binary if kind == "binary" else _read_python
    parts = [reader(folder / name, variant, label) for name in files]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    count = 10 if variant == "cifar10" else (100 if label == "fine" else 20)
    if labels.min() < 0 or labels.max() >= count:
        raise DataError(f"{folder}: labels span [{labels.min()}, {labels.max()}] for {count} classes; re-extract it")
    names = _names(folder, variant, kind, label)
    classes = names if names is not None and len(names) == count else [str(i) for i in range(count)]
    provenance.record_source(variant, folder, "train" if train else "test")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return ImageArrays(images, torch.from_numpy(labels), classes, variant)
