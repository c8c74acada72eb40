"""Perturbed validation sets of the robustness study: one camera removed, wrong extrinsic calibration."""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

from frugalvision.methods.lara.geometry import yaw_matrix

#: the per-camera keys of a sample dict
CAMERA_KEYS = ("images", "intrinsics", "rotation", "translation")


class CameraDropout(Dataset):
    """Validation scenes with one camera removed (image and calibration): the model sees N - 1 cameras."""

    def __init__(self, base: Dataset, camera: int) -> None:
        self.base, self.camera = base, camera

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.base[index]
        keep = [i for i in range(sample["images"].shape[0]) if i != self.camera]
        return {k: (v[keep] if k in CAMERA_KEYS else v) for k, v in sample.items()}


class ExtrinsicNoise(Dataset):
    """Validation scenes whose camera-to-ego calibration is wrong by a fixed random yaw and translation per scene.

    The images are unchanged; only the calibration handed to the model is perturbed (deterministic per index).
    """

    def __init__(self, base: Dataset, yaw_deg: float, trans_m: float, seed: int = 0) -> None:
        self.base, self.yaw_deg, self.trans_m, self.seed = base, yaw_deg, trans_m, seed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = dict(self.base[index])
        n = sample["rotation"].shape[0]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        yaw = torch.randn(n, generator=generator, dtype=torch.float64) * math.radians(self.yaw_deg)
        shift = torch.randn(n, 3, generator=generator, dtype=torch.float64) * self.trans_m
        sample["rotation"] = (yaw_matrix(yaw) @ sample["rotation"].double()).to(sample["rotation"].dtype)
        sample["translation"] = (sample["translation"].double() + shift).to(sample["translation"].dtype)
        return sample
