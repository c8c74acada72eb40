"""A tiny nuScenes dataset in the official schema (JSON tables + JPEGs), rendered by the ToyBEV ray caster."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from PIL import Image

from frugalvision.methods.lara.world import CAMERA_NAMES, Boxes, WorldConfig, camera_rig, render_scene

EGO_T = (100.0, 200.0, 0.0)
EGO_YAW = math.radians(30.0)
CAR_EGO = (10.0, 2.0)  # vehicle centre in the ego frame (m)
CAR_YAW_EGO = 0.2
CAR_SIZE = (2.0, 4.5, 1.6)  # w, l, h
PED_EGO = (5.0, -5.0)
IMAGE_W, IMAGE_H = 160, 90
WORLD = WorldConfig(image_height=IMAGE_H, image_width=IMAGE_W, noise_std=0.0)


def _quat_yaw(yaw: float) -> list[float]:
    return [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]


def _quat_from_matrix(m: torch.Tensor) -> list[float]:
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(m.double().numpy()).as_quat()
    return [float(w), float(x), float(y), float(z)]


def _to_global(p: tuple[float, float], z: float) -> list[float]:
    c, s = math.cos(EGO_YAW), math.sin(EGO_YAW)
    return [EGO_T[0] + c * p[0] - s * p[1], EGO_T[1] + s * p[0] + c * p[1], z]


def write_fixture(root: Path) -> Path:
    """Write ``root/v1.0-mini`` (scene-0103, two keyframes: one vehicle + one pedestrian, then empty) and images."""
    version = root / "v1.0-mini"
    version.mkdir(parents=True)
    k, rot, trans = camera_rig(WORLD)
    car = Boxes(
        torch.tensor([CAR_EGO]), torch.tensor([CAR_SIZE]), torch.tensor([CAR_YAW_EGO]), torch.tensor([[0.9, 0.1, 0.1]])
    )
    scenes_imgs = [
        render_scene(WORLD, car).sample["images"],
        render_scene(WORLD, Boxes(torch.zeros(0, 2), torch.zeros(0, 3), torch.zeros(0), torch.zeros(0, 3))).sample[
            "images"
        ],
    ]
    tables: dict[str, list[dict]] = {
        name: []
        for name in (
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
            "log",
            "attribute",  # empty: read by the devkit only
            "map",  # read by the devkit only
        )
    }
    (root / "maps").mkdir()
    Image.new("L", (8, 8)).save(root / "maps" / "fixture.png")
    tables["map"].append(
        {"token": "map0", "log_tokens": ["log0"], "category": "semantic_prior", "filename": "maps/fixture.png"}
    )
    tables["log"].append(
        {
            "token": "log0",
            "logfile": "fixture",
            "vehicle": "n015",
            "date_captured": "2018-07-24",
            "location": "singapore-onenorth",
        }
    )
    tables["scene"].append(
        {
            "token": "scene0",
            "log_token": "log0",
            "nbr_samples": 2,
            "first_sample_token": "s0",
            "last_sample_token": "s1",
            "name": "scene-0103",
            "description": "fixture",
        }
    )
    for level, (token, name) in enumerate([("1", "v0-40"), ("2", "v40-60"), ("3", "v60-80"), ("4", "v80-100")]):
        tables["visibility"].append({"token": token, "level": name, "description": f"bin {level}"})
    tables["category"] += [
        {"token": "cat_car", "name": "vehicle.car", "description": "car"},
        {"token": "cat_ped", "name": "human.pedestrian.adult", "description": "adult"},
    ]
    tables["instance"] += [
        {
            "token": "inst_car",
            "category_token": "cat_car",
            "nbr_annotations": 1,
            "first_annotation_token": "a0",
            "last_annotation_token": "a0",
        },
        {
            "token": "inst_ped",
            "category_token": "cat_ped",
            "nbr_annotations": 1,
            "first_annotation_token": "a1",
            "last_annotation_token": "a1",
        },
    ]
    channels = (*CAMERA_NAMES, "LIDAR_TOP")
    for i, channel in enumerate(channels):
        tables["sensor"].append(
            {"token": f"sensor{i}", "channel": channel, "modality": "lidar" if channel == "LIDAR_TOP" else "camera"}
        )
        if channel == "LIDAR_TOP":
            calib = {"translation": [0.9, 0.0, 1.8], "rotation": [1.0, 0.0, 0.0, 0.0], "camera_intrinsic": []}
        else:
            calib = {
                "translation": trans[i].tolist(),
                "rotation": _quat_from_matrix(rot[i]),
                "camera_intrinsic": k[i].tolist(),
            }
        tables["calibrated_sensor"].append({"token": f"calib{i}", "sensor_token": f"sensor{i}", **calib})
    for s in range(2):
        tables["sample"].append(
            {
                "token": f"s{s}",
                "timestamp": 1000 + s,
                "prev": "" if s == 0 else "s0",
                "next": "s1" if s == 0 else "",
                "scene_token": "scene0",
            }
        )
        tables["ego_pose"].append(
            {"token": f"pose{s}", "timestamp": 1000 + s, "rotation": _quat_yaw(EGO_YAW), "translation": list(EGO_T)}
        )
        for i, channel in enumerate(channels):
            filename = f"samples/{channel}/fixture__{channel}__{s}.{'pcd.bin' if channel == 'LIDAR_TOP' else 'jpg'}"
            path = root / filename
            path.parent.mkdir(parents=True, exist_ok=True)
            if channel != "LIDAR_TOP":
                array = (scenes_imgs[s][i].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
                Image.fromarray(array).save(path, quality=95)
            tables["sample_data"].append(
                {
                    "token": f"sd{s}_{i}",
                    "sample_token": f"s{s}",
                    "ego_pose_token": f"pose{s}",
                    "calibrated_sensor_token": f"calib{i}",
                    "timestamp": 1000 + s,
                    "fileformat": "pcd" if channel == "LIDAR_TOP" else "jpg",
                    "is_key_frame": True,
                    "height": 0 if channel == "LIDAR_TOP" else IMAGE_H,
                    "width": 0 if channel == "LIDAR_TOP" else IMAGE_W,
                    "filename": filename,
                    "prev": "",
                    "next": "",
                }
            )
    tables["sample_annotation"] += [
        {
            "token": "a0",
            "sample_token": "s0",
            "instance_token": "inst_car",
            "visibility_token": "3",
            "attribute_tokens": [],
            "translation": _to_global(CAR_EGO, 0.8),
            "size": list(CAR_SIZE),
            "rotation": _quat_yaw(EGO_YAW + CAR_YAW_EGO),
            "prev": "",
            "next": "",
            "num_lidar_pts": 10,
            "num_radar_pts": 0,
        },
        {
            "token": "a1",
            "sample_token": "s0",
            "instance_token": "inst_ped",
            "visibility_token": "4",
            "attribute_tokens": [],
            "translation": _to_global(PED_EGO, 0.9),
            "size": [0.6, 0.6, 1.7],
            "rotation": _quat_yaw(0.0),
            "prev": "",
            "next": "",
            "num_lidar_pts": 5,
            "num_radar_pts": 0,
        },
    ]
    for name, records in tables.items():
        (version / f"{name}.json").write_text(json.dumps(records))
    return root
