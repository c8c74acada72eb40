"""Loaders of the real benchmark in its official folder layouts: GTA5, Cityscapes, IDD and Mapillary Vistas.

Every loader returns ``(image (3, H, W) float RGB in [0, 1], labels (H, W) int64 in {0..6, 255}, name)`` with the
7-class map of :mod:`.labels` applied. Images are resized (bicubic) and labels resized (nearest) to ``size =
(height, width)`` (official: 320 x 640), except Mapillary, which is letterboxed as the official loader does: resized
to fit, placed top-left, the image padded with 0 and the labels with "Unlabeled" (-> 255).

Layouts (``root`` is the dataset's own folder):

* GTA5: ``root/images/<name>``, ``root/labels/<name>`` (Cityscapes label ids), names from a list file.
* Cityscapes: ``root/leftImg8bit/<split>/<city>/<x>_leftImg8bit.png`` and
  ``root/gtFine/<split>/<city>/<x>_gtFine_labelIds.png``.
* IDD: ``root/leftImg8bit/<split>/<seq>/<x>_leftImg8bit.png``, ``root/gtFine/<split>/<seq>/<x>_gtFine_labelids.png``
  (label PNGs written by the IDD toolkit at its ``id`` level, 0-39).
* Mapillary: ``root/<training|train|validation|val>/{images,labels}/``, class names in ``root/config.json``.

List files hold one name per line, as the official ``*_list/<split>.txt`` (e.g.
``aachen/aachen_000000_000019_leftImg8bit.png``); without one (``list_file=None`` and no ``root/<split>.txt``)
the folder is scanned in sorted order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from frugalvision.errors import DataError
from frugalvision.methods.muhdi.labels import LabelMapName, label_lookup, label_table, mapillary_table

__all__ = [
    "BENCHMARK_FOLDERS",
    "SegmentationFiles",
    "cityscapes",
    "gta5",
    "idd",
    "load_benchmark",
    "mapillary",
    "read_list",
]

#: the folder of each dataset under the data root (spec section 5)
BENCHMARK_FOLDERS = {"gta5": "GTA5", "cityscapes": "cityscapes", "idd": "IDD", "mapillary": "mapillary"}
Size = tuple[int, int]


def read_list(path: str | Path) -> list[str]:
    """Names of a list file (one per line, blank lines skipped).

    Raises:
        DataError: the file is missing or empty.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"list file {path} does not exist; pass list_file=<the official *_list/<split>.txt>")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(f"list file {path} is empty; it must name one image per line")
    return names


def _open(path: Path, mode: str):  # noqa: ANN202 - PIL image
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DataError(f"{path} does not exist; check the dataset layout (see frugalvision.methods.muhdi.datasets)")
    try:
        with Image.open(path) as image:
            return image.convert(mode) if mode else image.copy()
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"{path} is not a readable image ({error}); re-download or remove it") from None


def _letterbox(image, size: Size, resample: int, fill: int) -> np.ndarray:  # noqa: ANN001 - PIL image
    """The official Mapillary resize: fit inside ``size``, keep the aspect ratio, place top-left, pad with ``fill``."""
    height, width = size
    if image.width / image.height > width / height:
        new = (width, int(image.height * width / image.width))
    else:
        new = (int(image.width * height / image.height), height)
    resized = np.asarray(image.resize(new, resample))
    canvas = np.full((height, width, *resized.shape[2:]), fill, resized.dtype)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    return canvas


class SegmentationFiles(Dataset):
    """Image/label file pairs with a label lookup table, resized or letterboxed to one size.

    Args:
        pairs: (image path, label path, name) triples.
        lookup: ``(256,)`` uint8 array: raw label id -> 7-class id or 255.
        size: output (height, width).
        letterbox_fill: when not None, letterbox with this raw label value for the padding (Mapillary).
    """

    def __init__(
        self, pairs: Sequence[tuple[Path, Path, str]], lookup: np.ndarray, size: Size, letterbox_fill: int | None = None
    ) -> None:
        if not pairs:
            raise DataError("no image found; check the data root and the split name")
        self.pairs, self.lookup, self.size, self.letterbox_fill = list(pairs), lookup, tuple(size), letterbox_fill

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        from PIL import Image

        image_path, label_path, name = self.pairs[index]
        image, label = _open(image_path, "RGB"), _open(label_path, "")
        height, width = self.size
        if self.letterbox_fill is None:
            rgb = np.asarray(image.resize((width, height), Image.BICUBIC))
            raw = np.asarray(label.resize((width, height), Image.NEAREST))
        else:
            rgb = _letterbox(image, self.size, Image.BICUBIC, 0)
            raw = _letterbox(label, self.size, Image.NEAREST, self.letterbox_fill)
        if raw.ndim != 2:
            raise DataError(f"{label_path} is not a single-channel label image; pass the *labelIds / label PNGs")
        labels = self.lookup[np.clip(raw.astype(np.int64), 0, len(self.lookup) - 1)]
        return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0, torch.from_numpy(labels).long(), name


def _names(root: Path, split: str, list_file: str | Path | None, scan: str) -> list[str]:
    if list_file is not None:
        return read_list(list_file)
    default = root / f"{split}.txt"
    if default.is_file():
        return read_list(default)
    folder = root / scan
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist; pass the dataset folder as root (or a list_file)")
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))


def gta5(
    root: str | Path, split: str = "all", list_file: str | Path | None = None, size: Size = (320, 640),
    label_map: LabelMapName = "consistent",
) -> SegmentationFiles:  # fmt: skip
    """GTA5 (``images/`` and ``labels/``, Cityscapes label ids)."""
    root = Path(root)
    names = _names(root, split, list_file, "images")
    pairs = [(root / "images" / n, root / "labels" / n, n) for n in names]
    return SegmentationFiles(pairs, label_lookup(label_table("gta5", label_map)), size)


def _city_like(
    root: Path, split: str, list_file, suffix: str, dataset: str, size: Size, label_map
) -> SegmentationFiles:  # noqa: ANN001
    names = _names(root, split, list_file, f"leftImg8bit/{split}")
    pairs = [
        (root / "leftImg8bit" / split / n, root / "gtFine" / split / n.replace("leftImg8bit", suffix), n) for n in names
    ]
    return SegmentationFiles(pairs, label_lookup(label_table(dataset, label_map)), size)


def cityscapes(
    root: str | Path, split: str = "train", list_file: str | Path | None = None, size: Size = (320, 640),
    label_map: LabelMapName = "consistent",
) -> SegmentationFiles:  # fmt: skip
    """Cityscapes (``leftImg8bit`` / ``gtFine`` ``*_gtFine_labelIds.png``)."""
    return _city_like(Path(root), split, list_file, "gtFine_labelIds", "cityscapes", size, label_map)


def idd(
    root: str | Path, split: str = "train", list_file: str | Path | None = None, size: Size = (320, 640),
    label_map: LabelMapName = "consistent",
) -> SegmentationFiles:  # fmt: skip
    """IDD (``leftImg8bit`` / ``gtFine`` ``*_gtFine_labelids.png``, toolkit ``id`` level)."""
    return _city_like(Path(root), split, list_file, "gtFine_labelids", "idd", size, label_map)


_MAPILLARY_SPLITS = {"train": ("training", "train"), "val": ("validation", "val"), "validation": ("validation", "val")}


def mapillary(
    root: str | Path, split: str = "train", list_file: str | Path | None = None, size: Size = (320, 640),
    label_map: LabelMapName = "consistent",
) -> SegmentationFiles:  # fmt: skip
    """Mapillary Vistas (``<split>/images/*.jpg`` + ``<split>/labels/*.png``, names from ``config.json``)."""
    root = Path(root)
    folder = next((root / d for d in _MAPILLARY_SPLITS.get(split, (split,)) if (root / d).is_dir()), None)
    if folder is None:
        raise DataError(
            f"no {split} folder under {root}; expected {' or '.join(_MAPILLARY_SPLITS.get(split, (split,)))}"
        )
    config = root / "config.json"
    if not config.is_file():
        raise DataError(f"{config} does not exist; Mapillary's config.json names the classes")
    classes = [label["readable"] for label in json.loads(config.read_text())["labels"]]
    stems = (
        [Path(n).stem for n in read_list(list_file)]
        if list_file
        else sorted(p.stem for p in (folder / "images").iterdir() if p.is_file())
    )
    pairs = []
    for stem in stems:
        image = next(
            (
                folder / "images" / f"{stem}{ext}"
                for ext in (".jpg", ".png")
                if (folder / "images" / f"{stem}{ext}").is_file()
            ),
            None,
        )  # noqa: E501
        pairs.append((image or folder / "images" / f"{stem}.jpg", folder / "labels" / f"{stem}.png", stem))
    return SegmentationFiles(pairs, label_lookup(mapillary_table(classes, label_map)), size, len(classes) - 1)


_LOADERS = {"gta5": gta5, "cityscapes": cityscapes, "idd": idd, "mapillary": mapillary}


def load_benchmark(
    data_root: str | Path, dataset: str, split: str, size: Size = (320, 640), label_map: LabelMapName = "consistent",
    list_dir: str | Path | None = None,
) -> SegmentationFiles:  # fmt: skip
    """One dataset of the benchmark under ``data_root/<BENCHMARK_FOLDERS[dataset]>``.

    Args:
        data_root: folder holding GTA5/, cityscapes/, IDD/, mapillary/.
        dataset: "gta5", "cityscapes", "idd" or "mapillary".
        split: "all" (GTA5), "train", "val".
        size: output (height, width).
        label_map: "consistent" or "muhdi_official".
        list_dir: folder of the official ``<dataset>_list/<split>.txt`` files (None: each dataset folder's own
            ``<split>.txt``, else a folder scan).
    """
    if dataset not in _LOADERS:
        raise DataError(f"dataset={dataset!r} is unknown; use one of {', '.join(_LOADERS)}")
    root = Path(data_root) / BENCHMARK_FOLDERS[dataset]
    list_file = None
    if list_dir is not None and (Path(list_dir) / f"{dataset}_list" / f"{split}.txt").is_file():
        list_file = Path(list_dir) / f"{dataset}_list" / f"{split}.txt"
    return _LOADERS[dataset](root, split, list_file, size, label_map)  # type: ignore[operator]
