"""nuScenes reader for LaRa that needs only the official JSON tables (the devkit pins numpy < 2).

An optional second backend (``backend="devkit"``) builds the same samples through ``nuscenes-devkit`` (its table
index, ``pyquaternion`` rotations and ``Box`` transforms); the two are tested for equality on a fixture.

Per keyframe it produces the same sample dict as the ToyBEV world: six resized and cropped camera images, their
updated intrinsics, camera-to-ego rotations and translations (from ``calibrated_sensor``), the 200 × 200 BEV
vehicle map and the per-cell visibility token (255 where no vehicle). Boxes are moved into the yaw-only ego frame
of the LIDAR_TOP keyframe, as in the official code.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from frugalvision.errors import DataError
from frugalvision.methods.lara.geometry import (
    BevGrid,
    quaternion_to_matrix,
    quaternion_yaw,
    rasterize_boxes,
    resize_crop_intrinsics,
    yaw_matrix,
)
from frugalvision.methods.lara.world import CAMERA_NAMES, VISIBILITY_IGNORE

TABLES = (
    "scene",
    "sample",
    "sample_data",
    "calibrated_sensor",
    "sensor",
    "ego_pose",
    "sample_annotation",
    "instance",
    "category",
    "visibility",
)
# the official mini split (nuscenes.utils.splits); trainval needs the devkit or explicit scene lists
MINI_SPLITS = {
    "train": (
        "scene-0061",
        "scene-0553",
        "scene-0655",
        "scene-0757",
        "scene-0796",
        "scene-1077",
        "scene-1094",
        "scene-1100",
    ),
    "val": ("scene-0103", "scene-0916"),
}


@dataclass(frozen=True)
class ImageTransform:
    """Deterministic resize-then-crop of every camera (the same at train and test time).

    The paper preset is ``scale=0.3, crop_top=46, height=224, width=480`` for 1600 × 900 images.
    """

    scale: float = 0.3
    crop_left: int = 0
    crop_top: int = 46
    height: int = 224
    width: int = 480

    def apply(self, image: Image.Image, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Resize and crop a PIL image; return (3, H, W) float in [0, 1] and the updated intrinsics."""
        new_w, new_h = int(image.width * self.scale), int(image.height * self.scale)
        if self.crop_left + self.width > new_w or self.crop_top + self.height > new_h:
            raise DataError(
                f"crop {self.width}x{self.height} at ({self.crop_left}, {self.crop_top}) exceeds the "
                f"resized image {new_w}x{new_h}; adjust scale / crop_top / height / width"
            )
        resized = image.convert("RGB").resize((new_w, new_h), Image.BILINEAR)
        box = (self.crop_left, self.crop_top, self.crop_left + self.width, self.crop_top + self.height)
        array = np.asarray(resized.crop(box), dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1).contiguous(), resize_crop_intrinsics(
            k, self.scale, self.crop_left, self.crop_top
        )


def keyframes_of_scenes(
    scenes: Iterable[dict[str, Any]],
    scene_names: Sequence[str],
    next_sample: Callable[[str], str],
    strict: bool = True,
) -> list[str]:
    """Keyframe sample tokens of the named scenes, in scene order then time order, following each ``next`` link.

    Args:
        scenes: scene records (name, first_sample_token, optionally nbr_samples).
        scene_names: scenes to walk.
        next_sample: sample token -> the next sample's token ("" at the end of the scene).
        strict: raise when a named scene is absent (False: skip it, as the official loader filters a split).
    """
    by_name = {rec["name"]: rec for rec in scenes}
    missing = [name for name in scene_names if name not in by_name]
    if (missing and strict) or len(missing) == len(scene_names):
        raise DataError(f"scenes {missing[:3]} are not in the tables; check the version and the split")
    tokens: list[str] = []
    for name in (n for n in scene_names if n in by_name):
        token, count = by_name[name]["first_sample_token"], 0
        while token:
            tokens.append(token)
            token = next_sample(token)
            count += 1
        if count != by_name[name].get("nbr_samples", count):
            raise DataError(f"scene {name} lists {by_name[name]['nbr_samples']} samples but links {count}")
    return tokens


class NuScenesTables:
    """The official JSON tables of one nuScenes version, indexed by token.

    Args:
        root: dataset root holding ``samples/`` and ``<version>/``.
        version: "v1.0-trainval", "v1.0-mini", ...
    """

    def __init__(self, root: str | Path, version: str = "v1.0-trainval") -> None:
        self.root = Path(root)
        folder = self.root / version
        if not folder.is_dir():
            raise DataError(f"{folder} does not exist; pass the nuScenes root (holding {version}/) as data_root")
        self.tables: dict[str, dict[str, dict[str, Any]]] = {}
        for name in TABLES:
            path = folder / f"{name}.json"
            if not path.exists():
                raise DataError(f"table {path} is missing; the nuScenes metadata is incomplete")
            self.tables[name] = {rec["token"]: rec for rec in json.loads(path.read_text())}
        self.annotations: dict[str, list[dict[str, Any]]] = {}
        for ann in self.tables["sample_annotation"].values():
            self.annotations.setdefault(ann["sample_token"], []).append(ann)
        self.keyframe_data: dict[str, dict[str, dict[str, Any]]] = {}
        for rec in self.tables["sample_data"].values():
            if rec.get("is_key_frame", True):
                channel = self.channel(rec)
                self.keyframe_data.setdefault(rec["sample_token"], {})[channel] = rec

    def channel(self, sample_data: dict[str, Any]) -> str:
        """Sensor channel ("CAM_FRONT", "LIDAR_TOP", ...) of a sample_data record."""
        calib = self.tables["calibrated_sensor"][sample_data["calibrated_sensor_token"]]
        return self.tables["sensor"][calib["sensor_token"]]["channel"]

    def samples_of_scenes(self, scene_names: tuple[str, ...] | list[str], strict: bool = True) -> list[str]:
        """Keyframe sample tokens of the named scenes, in scene order then time order.

        Args:
            scene_names: scene names ("scene-0103", ...).
            strict: raise when a named scene is absent (False: skip it, as the official loader filters a split).
        """
        tables = self.tables
        return keyframes_of_scenes(tables["scene"].values(), scene_names, lambda t: tables["sample"][t]["next"], strict)

    def category(self, ann: dict[str, Any]) -> str:
        """Category name of an annotation (through its instance)."""
        instance = self.tables["instance"][ann["instance_token"]]
        return self.tables["category"][instance["category_token"]]["name"]

    def calibration(
        self, sample_token: str, cameras: tuple[str, ...]
    ) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image paths, intrinsics (N, 3, 3), camera-to-ego rotations (N, 3, 3) and translations (N, 3)."""
        records = self.keyframe_data[sample_token]
        paths, ks, rots, trans = [], [], [], []
        for cam in cameras:
            if cam not in records:
                raise DataError(f"sample {sample_token} has no keyframe for {cam}")
            calib = self.tables["calibrated_sensor"][records[cam]["calibrated_sensor_token"]]
            paths.append(str(self.root / records[cam]["filename"]))
            ks.append(torch.tensor(calib["camera_intrinsic"], dtype=torch.float32))
            rots.append(quaternion_to_matrix(torch.tensor(calib["rotation"], dtype=torch.float64)).float())
            trans.append(torch.tensor(calib["translation"], dtype=torch.float32))
        return paths, torch.stack(ks), torch.stack(rots), torch.stack(trans)

    def vehicle_boxes(self, sample_token: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Vehicle boxes in the yaw-only LIDAR_TOP ego frame: centres (K, 2), (w, l) (K, 2), yaws (K,), tokens (K,)."""
        lidar = self.keyframe_data[sample_token].get("LIDAR_TOP")
        if lidar is None:
            raise DataError(f"sample {sample_token} has no LIDAR_TOP keyframe (its ego pose defines the BEV frame)")
        pose = self.tables["ego_pose"][lidar["ego_pose_token"]]
        ego_t = torch.tensor(pose["translation"], dtype=torch.float64)
        ego_yaw = quaternion_yaw(torch.tensor(pose["rotation"], dtype=torch.float64))
        to_ego = yaw_matrix(-ego_yaw)
        boxes = []
        for ann in self.annotations.get(sample_token, []):
            if "vehicle" not in self.category(ann):
                continue
            if ann["visibility_token"] not in self.tables["visibility"]:
                raise DataError(f"annotation {ann['token']} has unknown visibility token {ann['visibility_token']!r}")
            center = to_ego @ (torch.tensor(ann["translation"], dtype=torch.float64) - ego_t)
            yaw = quaternion_yaw(torch.tensor(ann["rotation"], dtype=torch.float64)) - ego_yaw
            boxes.append(
                (center[:2], torch.tensor(ann["size"][:2], dtype=torch.float64), yaw, int(ann["visibility_token"]))
            )
        return stack_boxes(boxes)


def stack_boxes(
    boxes: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(centre, (w, l), yaw, visibility token) per box → centres (K, 2), sizes (K, 2), yaws (K,), tokens (K,)."""
    if not boxes:
        empty = torch.zeros(0, 2)
        return empty, empty, torch.zeros(0), torch.zeros(0, dtype=torch.long)
    centers, sizes, yaws, tokens = zip(*boxes, strict=True)
    yaw = torch.stack([torch.as_tensor(y, dtype=torch.float64) for y in yaws])
    yaw = torch.atan2(torch.sin(yaw), torch.cos(yaw))  # wrap to (−π, π]
    return (
        torch.stack(centers).float(),
        torch.stack(sizes).float(),
        yaw.float(),
        torch.tensor(tokens, dtype=torch.long),
    )


class DevkitReader:
    """The same records as :class:`NuScenesTables`, read through ``nuscenes-devkit`` (optional dependency).

    Args:
        root: dataset root.
        version: metadata version folder.

    Raises:
        DataError: the devkit is not installed.
    """

    def __init__(self, root: str | Path, version: str = "v1.0-trainval") -> None:
        try:
            from nuscenes.nuscenes import NuScenes  # type: ignore[import-not-found]
        except ImportError as exc:
            raise DataError(
                "backend='devkit' needs nuscenes-devkit (pip install nuscenes-devkit); or use backend='json'"
            ) from exc
        self.root = Path(root)
        self.version = version
        self.nusc = NuScenes(version=version, dataroot=str(root), verbose=False)

    def samples_of_scenes(self, scene_names: tuple[str, ...] | list[str], strict: bool = True) -> list[str]:
        """Keyframe sample tokens of the named scenes, in scene order then time order."""
        return keyframes_of_scenes(self.nusc.scene, scene_names, lambda t: self.nusc.get("sample", t)["next"], strict)

    def calibration(
        self, sample_token: str, cameras: tuple[str, ...]
    ) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image paths, intrinsics, camera-to-ego rotations (pyquaternion) and translations of the cameras."""
        from pyquaternion import Quaternion  # type: ignore[import-not-found]

        sample = self.nusc.get("sample", sample_token)
        paths, ks, rots, trans = [], [], [], []
        for cam in cameras:
            if cam not in sample["data"]:
                raise DataError(f"sample {sample_token} has no keyframe for {cam}")
            record = self.nusc.get("sample_data", sample["data"][cam])
            calib = self.nusc.get("calibrated_sensor", record["calibrated_sensor_token"])
            paths.append(self.nusc.get_sample_data_path(record["token"]))
            ks.append(torch.tensor(np.asarray(calib["camera_intrinsic"]), dtype=torch.float32))
            rots.append(torch.tensor(Quaternion(calib["rotation"]).rotation_matrix, dtype=torch.float32))
            trans.append(torch.tensor(calib["translation"], dtype=torch.float32))
        return paths, torch.stack(ks), torch.stack(rots), torch.stack(trans)

    def vehicle_boxes(self, sample_token: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Vehicle boxes moved by the devkit's ``Box`` into the yaw-only LIDAR_TOP ego frame."""
        from nuscenes.utils.data_classes import Box  # type: ignore[import-not-found]
        from pyquaternion import Quaternion  # type: ignore[import-not-found]

        sample = self.nusc.get("sample", sample_token)
        if "LIDAR_TOP" not in sample["data"]:
            raise DataError(f"sample {sample_token} has no LIDAR_TOP keyframe (its ego pose defines the BEV frame)")
        pose = self.nusc.get("ego_pose", self.nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["ego_pose_token"])
        yaw_only = Quaternion(axis=[0.0, 0.0, 1.0], angle=-Quaternion(pose["rotation"]).yaw_pitch_roll[0])
        boxes = []
        for token in sample["anns"]:
            ann = self.nusc.get("sample_annotation", token)
            if "vehicle" not in ann["category_name"]:
                continue
            box = Box(ann["translation"], ann["size"], Quaternion(ann["rotation"]))
            box.translate(-np.asarray(pose["translation"], dtype=np.float64))
            box.rotate(yaw_only)
            boxes.append(
                (
                    torch.tensor(box.center[:2], dtype=torch.float64),
                    torch.tensor(box.wlh[:2], dtype=torch.float64),
                    torch.tensor(box.orientation.yaw_pitch_roll[0], dtype=torch.float64),
                    int(ann["visibility_token"]),
                )
            )
        return stack_boxes(boxes)


def split_scenes(version: str, split: str) -> tuple[str, ...]:
    """Scene names of the official split: mini lists built in, trainval from the devkit when installed."""
    if version.endswith("mini"):
        if split not in MINI_SPLITS:
            raise DataError(f"split={split!r} is invalid for {version}; use 'train' or 'val'")
        return MINI_SPLITS[split]
    try:
        from nuscenes.utils.splits import create_splits_scenes  # type: ignore[import-not-found]
    except ImportError as exc:
        raise DataError(
            "the trainval scene split needs nuscenes-devkit (pip install frugalvision[nuscenes]) or explicit "
            "scene names (NuScenesBEV(scenes=...))"
        ) from exc
    return tuple(create_splits_scenes()[split])


class NuScenesBEV(Dataset):
    """Keyframes of nuScenes as LaRa samples (images, calibration, BEV vehicle map, visibility map).

    Args:
        root: dataset root.
        version: metadata version folder.
        split: "train" or "val" (ignored when ``scenes`` is given).
        scenes: explicit scene names.
        grid: the BEV grid (paper: 200 × 200 at 0.5 m).
        transform: image resize and crop.
        cameras: camera channels, in model order.
        tables: already loaded tables (shared between splits): a :class:`NuScenesTables` for "json", a
            :class:`DevkitReader` for "devkit".
        backend: "json" (our reader of the official tables) or "devkit" (``nuscenes-devkit``, when installed).
    """

    def __init__(
        self,
        root: str | Path,
        version: str = "v1.0-trainval",
        split: str = "train",
        scenes: tuple[str, ...] | None = None,
        grid: BevGrid | None = None,
        transform: ImageTransform | None = None,
        cameras: tuple[str, ...] = CAMERA_NAMES,
        tables: NuScenesTables | DevkitReader | None = None,
        backend: Literal["json", "devkit"] = "json",
    ) -> None:
        if backend == "json":
            self.tables: NuScenesTables | None = (
                tables if isinstance(tables, NuScenesTables) else NuScenesTables(root, version)
            )
            self.reader: NuScenesTables | DevkitReader = self.tables
        elif backend == "devkit":
            self.tables = None
            self.reader = tables if isinstance(tables, DevkitReader) else DevkitReader(root, version)
        else:
            raise DataError(f"backend={backend!r} is invalid; use 'json' or 'devkit'")
        self.grid = grid or BevGrid()
        self.transform = transform or ImageTransform()
        self.cameras = cameras
        if scenes:
            self.tokens = self.reader.samples_of_scenes(scenes)
        else:
            self.tokens = self.reader.samples_of_scenes(split_scenes(version, split), strict=False)
        if not self.tokens:
            raise DataError(f"no keyframe found for split={split!r} in {version}")

    def __len__(self) -> int:
        return len(self.tokens)

    def calibration(self, sample_token: str) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image paths, intrinsics (N, 3, 3), camera-to-ego rotations (N, 3, 3) and translations (N, 3)."""
        paths, ks, rots, trans = self.reader.calibration(sample_token, self.cameras)
        if not (torch.isfinite(ks).all() and torch.isfinite(rots).all() and torch.isfinite(trans).all()):
            raise DataError(f"sample {sample_token} has non-finite calibration")
        return paths, ks, rots, trans

    def vehicle_boxes(self, sample_token: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Vehicle boxes in the yaw-only LIDAR_TOP ego frame: centres (K, 2), (w, l) (K, 2), yaws (K,), tokens (K,)."""
        return self.reader.vehicle_boxes(sample_token)

    def positive_fraction(self, count: int = 16) -> float:
        """Fraction of vehicle cells over the first ``count`` keyframes (annotations only; no image is read).

        Raises:
            DataError: no vehicle cell at all (the "IoU stuck at 0" symptom: wrong frame, split or category).
        """
        total = cells = 0.0
        for token in self.tokens[:count]:
            centers, sizes, yaws, _ = self.vehicle_boxes(token)
            total += float(rasterize_boxes(self.grid, centers, sizes, yaws).sum())
            cells += self.grid.shape[0] * self.grid.shape[1]
        if total == 0:
            raise DataError(f"no vehicle cell in the first {count} keyframes; check the boxes' frame and the grid")
        return total / cells

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        token = self.tokens[index]
        paths, ks, rots, trans = self.calibration(token)
        images, new_ks = [], []
        for path, k in zip(paths, ks, strict=True):
            with Image.open(path) as image:
                tensor, k_new = self.transform.apply(image, k)
            images.append(tensor)
            new_ks.append(k_new)
        centers, sizes, yaws, vis = self.vehicle_boxes(token)
        bev = rasterize_boxes(self.grid, centers, sizes, yaws)
        visibility = rasterize_boxes(self.grid, centers, sizes, yaws, vis, background=VISIBILITY_IGNORE)
        return {
            "images": torch.stack(images),
            "intrinsics": torch.stack(new_ks),
            "rotation": rots,
            "translation": trans,
            "bev": bev.float().unsqueeze(0),
            "visibility": visibility,
        }
