"""nuScenes reader for LaRa that needs only the official JSON tables (the devkit pins numpy < 2).

Per keyframe it produces the same sample dict as the ToyBEV world: six resized and cropped camera images, their
updated intrinsics, camera-to-ego rotations and translations (from ``calibrated_sensor``), the 200 × 200 BEV
vehicle map and the per-cell visibility token (255 where no vehicle). Boxes are moved into the yaw-only ego frame
of the LIDAR_TOP keyframe, as in the official code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

TABLES = ("scene", "sample", "sample_data", "calibrated_sensor", "sensor", "ego_pose", "sample_annotation",
          "instance", "category", "visibility")
# the official mini split (nuscenes.utils.splits); trainval needs the devkit or explicit scene lists
MINI_SPLITS = {
    "train": ("scene-0061", "scene-0553", "scene-0655", "scene-0757", "scene-0796", "scene-1077", "scene-1094",
              "scene-1100"),
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
            raise DataError(f"crop {self.width}x{self.height} at ({self.crop_left}, {self.crop_top}) exceeds the "
                            f"resized image {new_w}x{new_h}; adjust scale / crop_top / height / width")
        resized = image.convert("RGB").resize((new_w, new_h), Image.BILINEAR)
        box = (self.crop_left, self.crop_top, self.crop_left + self.width, self.crop_top + self.height)
        array = np.asarray(resized.crop(box), dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1).contiguous(), resize_crop_intrinsics(
            k, self.scale, self.crop_left, self.crop_top
        )


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
        by_name = {rec["name"]: rec for rec in self.tables["scene"].values()}
        missing = [name for name in scene_names if name not in by_name]
        if (missing and strict) or len(missing) == len(scene_names):
            raise DataError(f"scenes {missing[:3]} are not in the tables; check the version and the split")
        tokens: list[str] = []
        for name in (n for n in scene_names if n in by_name):
            token = by_name[name]["first_sample_token"]
            count = 0
            while token:
                tokens.append(token)
                token = self.tables["sample"][token]["next"]
                count += 1
            if count != by_name[name].get("nbr_samples", count):
                raise DataError(f"scene {name} lists {by_name[name]['nbr_samples']} samples but links {count}")
        return tokens

    def category(self, ann: dict[str, Any]) -> str:
        """Category name of an annotation (through its instance)."""
        instance = self.tables["instance"][ann["instance_token"]]
        return self.tables["category"][instance["category_token"]]["name"]


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
        tables: already loaded tables (shared between splits).
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
        tables: NuScenesTables | None = None,
    ) -> None:
        self.tables = tables or NuScenesTables(root, version)
        self.grid = grid or BevGrid()
        self.transform = transform or ImageTransform()
        self.cameras = cameras
        if scenes:
            self.tokens = self.tables.samples_of_scenes(scenes)
        else:
            self.tokens = self.tables.samples_of_scenes(split_scenes(version, split), strict=False)
        if not self.tokens:
            raise DataError(f"no keyframe found for split={split!r} in {version}")

    def __len__(self) -> int:
        return len(self.tokens)

    def calibration(self, sample_token: str) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image paths, intrinsics (N, 3, 3), camera-to-ego rotations (N, 3, 3) and translations (N, 3)."""
        records = self.tables.keyframe_data[sample_token]
        paths, ks, rots, trans = [], [], [], []
        for cam in self.cameras:
            if cam not in records:
                raise DataError(f"sample {sample_token} has no keyframe for {cam}")
            calib = self.tables.tables["calibrated_sensor"][records[cam]["calibrated_sensor_token"]]
            paths.append(str(self.tables.root / records[cam]["filename"]))
            ks.append(torch.tensor(calib["camera_intrinsic"], dtype=torch.float32))
            rots.append(quaternion_to_matrix(torch.tensor(calib["rotation"], dtype=torch.float64)).float())
            trans.append(torch.tensor(calib["translation"], dtype=torch.float32))
        ks_t, rots_t, trans_t = torch.stack(ks), torch.stack(rots), torch.stack(trans)
        if not (torch.isfinite(ks_t).all() and torch.isfinite(rots_t).all() and torch.isfinite(trans_t).all()):
            raise DataError(f"sample {sample_token} has non-finite calibration")
        return paths, ks_t, rots_t, trans_t

    def vehicle_boxes(self, sample_token: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Vehicle boxes in the yaw-only LIDAR_TOP ego frame: centres (K, 2), (w, l) (K, 2), yaws (K,), tokens (K,)."""
        lidar = self.tables.keyframe_data[sample_token].get("LIDAR_TOP")
        if lidar is None:
            raise DataError(f"sample {sample_token} has no LIDAR_TOP keyframe (its ego pose defines the BEV frame)")
        pose = self.tables.tables["ego_pose"][lidar["ego_pose_token"]]
        ego_t = torch.tensor(pose["translation"], dtype=torch.float64)
        ego_yaw = quaternion_yaw(torch.tensor(pose["rotation"], dtype=torch.float64))
        to_ego = yaw_matrix(-ego_yaw)
        centers, sizes, yaws, tokens = [], [], [], []
        for ann in self.tables.annotations.get(sample_token, []):
            if "vehicle" not in self.tables.category(ann):
                continue
            center = to_ego @ (torch.tensor(ann["translation"], dtype=torch.float64) - ego_t)
            centers.append(center[:2])
            sizes.append(torch.tensor(ann["size"][:2], dtype=torch.float64))
            yaws.append(quaternion_yaw(torch.tensor(ann["rotation"], dtype=torch.float64)) - ego_yaw)
            if ann["visibility_token"] not in self.tables.tables["visibility"]:
                raise DataError(f"annotation {ann['token']} has unknown visibility token {ann['visibility_token']!r}")
            tokens.append(int(ann["visibility_token"]))
        if not centers:
            empty = torch.zeros(0, 2)
            return empty, empty, torch.zeros(0), torch.zeros(0, dtype=torch.long)
        return (torch.stack(centers).float(), torch.stack(sizes).float(), torch.stack(yaws).float(),
                torch.tensor(tokens, dtype=torch.long))

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
