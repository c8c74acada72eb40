"""Camera and BEV geometry of LaRa (pure functions on tensors; any leading batch dimensions).

Frames follow nuScenes / Lift-Splat-Shoot: ego x forward, y left, z up; camera x right, y down, z forward. A camera
is given by its intrinsics ``K`` (3×3, pixel-centre convention: the centre of pixel ``(u, v)`` has coordinates
``(u, v)``) and its camera-to-ego pose ``(R, t)``: ``p_ego = R p_cam + t``; ``t`` is the camera centre in the ego
frame (metres).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

PixelOffset = Literal["center", "official"]


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from unit quaternions in (w, x, y, z) order (nuScenes' order).

    Args:
        q: (..., 4) quaternions (normalised here).

    Returns:
        (..., 3, 3) rotation matrices.
    """
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z),
        2 * (x * y - z * w),
        2 * (x * z + y * w),
        2 * (x * y + z * w),
        1 - 2 * (x * x + z * z),
        2 * (y * z - x * w),
        2 * (x * z - y * w),
        2 * (y * z + x * w),
        1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)


def yaw_matrix(yaw: torch.Tensor) -> torch.Tensor:
    """Rotations about the z axis by ``yaw`` radians: (...,) → (..., 3, 3)."""
    c, s = torch.cos(yaw), torch.sin(yaw)
    zero, one = torch.zeros_like(yaw), torch.ones_like(yaw)
    return torch.stack([c, -s, zero, s, c, zero, zero, zero, one], dim=-1).reshape(*yaw.shape, 3, 3)


def quaternion_yaw(q: torch.Tensor) -> torch.Tensor:
    """Yaw (rotation about z, radians) of (w, x, y, z) quaternions: the heading of the rotated x axis."""
    rot = quaternion_to_matrix(q)
    return torch.atan2(rot[..., 1, 0], rot[..., 0, 0])


# Camera axes (x right, y down, z forward) expressed in the ego frame for a camera looking along ego +x.
CAM_TO_EGO_BASE = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def camera_rotation(yaw: torch.Tensor, pitch: torch.Tensor | None = None) -> torch.Tensor:
    """Camera-to-ego rotation of a camera with optical axis at ``yaw`` (left positive) and ``pitch`` (down positive).

    Args:
        yaw: (...,) radians.
        pitch: (...,) radians (default 0).

    Returns:
        (..., 3, 3).
    """
    base = CAM_TO_EGO_BASE.to(yaw)
    if pitch is None:
        return yaw_matrix(yaw) @ base
    c, s = torch.cos(pitch), torch.sin(pitch)
    zero, one = torch.zeros_like(pitch), torch.ones_like(pitch)
    # rotation about the ego y axis that tilts +x towards −z (looking down)
    tilt = torch.stack([c, zero, s, zero, one, zero, -s, zero, c], dim=-1).reshape(*pitch.shape, 3, 3)
    return yaw_matrix(yaw) @ tilt @ base


def pinhole_intrinsics(width: int, height: int, hfov_deg: float) -> torch.Tensor:
    """Intrinsics of a square-pixel pinhole with horizontal field of view ``hfov_deg`` centred on the image."""
    f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return torch.tensor([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def resize_crop_intrinsics(
    k: torch.Tensor, scale: float, crop_left: float = 0.0, crop_top: float = 0.0
) -> torch.Tensor:
    """Intrinsics after resizing an image by ``scale`` then cropping ``(crop_left, crop_top)`` pixels off.

    Uses LSS's convention (the same as the official LaRa loader): ``fx, fy, cx, cy`` are scaled, then the crop offset
    is subtracted from the principal point.

    Args:
        k: (..., 3, 3) intrinsics.
        scale: resize factor.
        crop_left: pixels removed on the left after the resize.
        crop_top: pixels removed at the top after the resize.

    Returns:
        (..., 3, 3) updated intrinsics.
    """
    out = k.clone()
    out[..., :2, :] = out[..., :2, :] * scale
    out[..., 0, 2] = out[..., 0, 2] - crop_left
    out[..., 1, 2] = out[..., 1, 2] - crop_top
    return out


def project(points: torch.Tensor, k: torch.Tensor, rot: torch.Tensor, trans: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Project ego-frame points into cameras.

    Args:
        points: (..., P, 3) ego-frame points.
        k: (..., 3, 3) intrinsics.
        rot: (..., 3, 3) camera-to-ego rotation.
        trans: (..., 3) camera centre in the ego frame.

    Returns:
        pixels (..., P, 2) as (u, v) and depths (..., P) along the optical axis (≤ 0: behind the camera).
    """
    cam = (points - trans.unsqueeze(-2)) @ rot  # R^T (p - t), row-vector form
    depth = cam[..., 2]
    uvw = cam @ k.transpose(-1, -2)
    pix = uvw[..., :2] / depth.unsqueeze(-1).clamp_min(1e-6)
    return pix, depth


def feature_pixel_coords(height: int, width: int, stride: int, offset: PixelOffset = "center") -> torch.Tensor:
    """Image coordinates (u, v) of the feature cells of a stride-``stride`` map of an ``height × width`` image.

    Args:
        height: image height in pixels.
        width: image width in pixels.
        stride: feature stride.
        offset: "center" (the cell centre ``u·s + (s−1)/2``, our default) or "official" (``u·s``: the cell's first
            pixel, as the official code obtains by dividing the intrinsics by the stride).

    Returns:
        (H/s, W/s, 2) float coordinates, ``[..., 0] = u`` (column), ``[..., 1] = v`` (row).
    """
    if height % stride or width % stride:
        raise ValueError(f"image {height}x{width} is not divisible by stride {stride}")
    shift = (stride - 1) / 2.0 if offset == "center" else 0.0
    if offset not in ("center", "official"):
        raise ValueError(f"ray_pixel_offset={offset!r} is invalid; use 'center' or 'official'")
    us = torch.arange(width // stride, dtype=torch.float32) * stride + shift
    vs = torch.arange(height // stride, dtype=torch.float32) * stride + shift
    v, u = torch.meshgrid(vs, us, indexing="ij")
    return torch.stack([u, v], dim=-1)


def camera_rays(
    k: torch.Tensor,
    rot: torch.Tensor,
    trans: torch.Tensor,
    height: int,
    width: int,
    stride: int = 1,
    offset: PixelOffset = "center",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature-cell viewing rays in the ego frame: origin ``t`` and unit direction ``R K⁻¹ [u, v, 1]ᵀ``.

    Args:
        k: (..., 3, 3) intrinsics of the full-resolution image.
        rot: (..., 3, 3) camera-to-ego rotations.
        trans: (..., 3) camera centres in the ego frame.
        height: image height.
        width: image width.
        stride: feature stride (rays through the cells of the stride-``stride`` map).
        offset: which point of a cell the ray passes through (see :func:`feature_pixel_coords`).

    Returns:
        origins and unit directions, each (..., H/s, W/s, 3).
    """
    uv = feature_pixel_coords(height, width, stride, offset).to(k)
    hom = torch.cat([uv, torch.ones_like(uv[..., :1])], dim=-1)  # (h, w, 3)
    lead = k.shape[:-2]
    kinv = torch.linalg.inv(k)
    cam_dirs = torch.einsum("...ij,hwj->...hwi", kinv, hom)
    dirs = torch.einsum("...ij,...hwj->...hwi", rot, cam_dirs)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = trans.reshape(*lead, 1, 1, 3).expand_as(dirs)
    return origins, dirs


def plucker_moment(origins: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Plücker moment ``m = o × d̂``, always over the last axis (never the first axis of size 3)."""
    return torch.linalg.cross(origins, directions, dim=-1)


def ray_features(
    origins: torch.Tensor, directions: torch.Tensor, plucker: bool = True, origin_scale: float = 1.0
) -> torch.Tensor:
    """Raw ray embedding ``[o, d̂]`` (6) or ``[o, d̂, o × d̂]`` (9) on the last axis.

    Args:
        origins: (..., 3) ray origins in metres.
        directions: (..., 3) unit directions.
        plucker: append the Plücker moment.
        origin_scale: divide origins by this (1: raw metres, faithful to the official code).

    Returns:
        (..., 6) or (..., 9).
    """
    o = origins / origin_scale
    parts = [o, directions] + ([plucker_moment(o, directions)] if plucker else [])
    return torch.cat(parts, dim=-1)


@dataclass(frozen=True)
class BevGrid:
    """An ego-centred BEV grid: rows index x (forward), columns index y (left).

    Cell ``(i, j)`` covers ``x ∈ [x_min + i·res, x_min + (i+1)·res)``, ``y ∈ [y_min + j·res, y_min + (j+1)·res)``.
    The paper preset is ``BevGrid(-50, 50, -50, 50, 0.5)`` (200 × 200).
    """

    x_min: float = -50.0
    x_max: float = 50.0
    y_min: float = -50.0
    y_max: float = 50.0
    res: float = 0.5

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) = (cells along x, cells along y)."""
        return round((self.x_max - self.x_min) / self.res), round((self.y_max - self.y_min) / self.res)

    def centers(self) -> torch.Tensor:
        """Cell centres (rows, cols, 2) as (x, y) metres."""
        rows, cols = self.shape
        xs = self.x_min + (torch.arange(rows, dtype=torch.float32) + 0.5) * self.res
        ys = self.y_min + (torch.arange(cols, dtype=torch.float32) + 0.5) * self.res
        x, y = torch.meshgrid(xs, ys, indexing="ij")
        return torch.stack([x, y], dim=-1)

    def normalized_coords(self) -> torch.Tensor:
        """LaRa's decoder query inputs (rows, cols, 3): ``(x̃, ỹ, r)`` with x̃, ỹ = linspace(−1, 1) and r = √(x̃²+ỹ²)."""
        rows, cols = self.shape
        x, y = torch.meshgrid(torch.linspace(-1, 1, rows), torch.linspace(-1, 1, cols), indexing="ij")
        return torch.stack([x, y, torch.sqrt(x * x + y * y)], dim=-1)

    def index(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(row, col, inside) of the cells containing ego-frame points (..., ≥2) (x, y first)."""
        row = torch.floor((points[..., 0] - self.x_min) / self.res).long()
        col = torch.floor((points[..., 1] - self.y_min) / self.res).long()
        rows, cols = self.shape
        inside = (row >= 0) & (row < rows) & (col >= 0) & (col < cols)
        return row, col, inside


def box_corners_2d(center: torch.Tensor, size_wl: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
    """Footprint corners (..., 4, 2) of oriented boxes: centre (..., 2), (width, length) (..., 2), yaw (...,).

    Length is along the box heading, width across it (nuScenes' ``size = [w, l, h]``).
    """
    half_w, half_l = size_wl[..., 0] / 2, size_wl[..., 1] / 2
    local = torch.stack(
        [
            torch.stack([half_l, half_w], -1),
            torch.stack([-half_l, half_w], -1),
            torch.stack([-half_l, -half_w], -1),
            torch.stack([half_l, -half_w], -1),
        ],
        dim=-2,
    )
    c, s = torch.cos(yaw)[..., None], torch.sin(yaw)[..., None]
    x = local[..., 0] * c - local[..., 1] * s
    y = local[..., 0] * s + local[..., 1] * c
    return torch.stack([x, y], dim=-1) + center.unsqueeze(-2)


def rasterize_boxes(
    grid: BevGrid,
    center: torch.Tensor,
    size_wl: torch.Tensor,
    yaw: torch.Tensor,
    values: torch.Tensor | None = None,
    background: int = 0,
) -> torch.Tensor:
    """Paint oriented footprints on the BEV grid (a cell is inside when its centre is inside the rectangle).

    Boxes are painted in order: a later box overwrites an earlier one where they overlap (as in the official code).

    Args:
        grid: the BEV grid.
        center: (K, 2) box centres (x, y) in the ego frame.
        size_wl: (K, 2) (width, length).
        yaw: (K,) headings.
        values: (K,) value painted by each box (default 1).
        background: value of cells no box covers.

    Returns:
        (rows, cols) long map.
    """
    rows, cols = grid.shape
    out = torch.full((rows, cols), background, dtype=torch.long)
    if center.shape[0] == 0:
        return out
    values = torch.ones(center.shape[0], dtype=torch.long) if values is None else values.long()
    cells = grid.centers().reshape(-1, 2)
    rel = cells[:, None, :] - center[None].float()
    c, s = torch.cos(yaw.float()), torch.sin(yaw.float())
    along = rel[..., 0] * c + rel[..., 1] * s
    across = -rel[..., 0] * s + rel[..., 1] * c
    inside = (along.abs() <= size_wl[:, 1] / 2) & (across.abs() <= size_wl[:, 0] / 2)  # (cells, K)
    k = inside.shape[1]
    last = torch.where(inside, torch.arange(k), torch.full_like(inside, -1, dtype=torch.long)).max(dim=1).values
    flat = out.reshape(-1)
    hit = last >= 0
    flat[hit] = values[last[hit]]
    return flat.reshape(rows, cols)


def visibility_token(ratio: torch.Tensor) -> torch.Tensor:
    """Visibility tokens (nuScenes bins) from visible fractions: 1 (0–40 %), 2 (40–60 %), 3 (60–80 %), 4 (80–100 %)."""
    return 1 + (ratio >= 0.4).long() + (ratio >= 0.6).long() + (ratio >= 0.8).long()
