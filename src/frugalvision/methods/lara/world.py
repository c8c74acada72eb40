"""ToyBEV: a procedural multi-camera world with exact ground truth, in nuScenes / LSS conventions.

Six pinhole cameras on an ego car look at oriented vehicle boxes standing on a flat ground plane. Every pixel's ray is
cast against the ground and all boxes at once (slab test per box), which gives the image, depth and instance maps; a
box's visibility is the fraction of the pixels whose ray meets it where it is the first hit, binned into nuScenes
tokens 1–4. The BEV target marks the grid cells whose centre lies in a box footprint. A rendered scene is a sample
dict with the same keys as :mod:`frugalvision.methods.lara.nuscenes` produces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from frugalvision.methods.lara.geometry import (
    BevGrid,
    camera_rays,
    camera_rotation,
    pinhole_intrinsics,
    rasterize_boxes,
    visibility_token,
    yaw_matrix,
)

CAMERA_NAMES = ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT")
VISIBILITY_IGNORE = 255


@dataclass(frozen=True)
class WorldConfig:
    """Geometry and content of ToyBEV scenes (spec section 6).

    Attributes:
        image_height: image rows.
        image_width: image columns.
        camera_yaws_deg: optical-axis yaw of each camera (left positive), nuScenes camera order.
        camera_hfov_deg: horizontal field of view of each camera.
        camera_height: camera centre height above the ground (m).
        camera_offset: distance of each camera centre from the ego origin along its optical axis (m).
        min_vehicles: fewest boxes per scene.
        max_vehicles: most boxes per scene.
        extent: boxes have centres within ±extent metres.
        ego_clearance: no box centre closer than this to the ego origin (m).
        length_range: box length range (m).
        width_range: box width range (m).
        height_range: box height range (m).
        bev_res: BEV cell size (m); the grid spans ±extent.
        fog_distance: distance scale of the exponential fog (m).
        noise_std: std of the Gaussian pixel noise.
        rig_yaw_std_deg: per-scene, per-camera std of the true camera yaw around its nominal value (degrees):
            every scene gets its own rig, so rays are no constant positional code.
        rig_height_std: per-scene, per-camera std of the true camera height (m).
        rig_offset_std: per-scene, per-camera std of the true camera offset along its axis (m).
        calib_yaw_std_deg: per-camera yaw error of the calibration handed to the models (degrees): the images are
            rendered with the true rig, the sample holds the erroneous one, so no model has oracle geometry.
        calib_trans_std_m: per-camera, per-axis translation error of the handed calibration (m).
    """

    image_height: int = 32
    image_width: int = 64
    camera_yaws_deg: tuple[float, ...] = (55.0, 0.0, -55.0, 110.0, 180.0, -110.0)
    camera_hfov_deg: tuple[float, ...] = (70.0, 70.0, 70.0, 70.0, 110.0, 70.0)
    camera_height: float = 1.5
    camera_offset: float = 1.0
    min_vehicles: int = 3
    max_vehicles: int = 15
    extent: float = 16.0
    ego_clearance: float = 4.0
    length_range: tuple[float, float] = (3.5, 5.0)
    width_range: tuple[float, float] = (1.6, 2.1)
    height_range: tuple[float, float] = (1.4, 2.0)
    bev_res: float = 1.0
    fog_distance: float = 60.0
    noise_std: float = 0.02
    rig_yaw_std_deg: float = 0.0
    rig_height_std: float = 0.0
    rig_offset_std: float = 0.0
    calib_yaw_std_deg: float = 0.0
    calib_trans_std_m: float = 0.0

    @property
    def grid(self) -> BevGrid:
        """The BEV grid: ±extent at ``bev_res``."""
        return BevGrid(-self.extent, self.extent, -self.extent, self.extent, self.bev_res)


@dataclass
class Boxes:
    """Oriented vehicle boxes standing on the ground (ego frame).

    Attributes:
        center: (K, 2) footprint centres (x, y).
        size: (K, 3) (width, length, height) as nuScenes' ``size``.
        yaw: (K,) headings.
        color: (K, 3) RGB albedo.
    """

    center: torch.Tensor
    size: torch.Tensor
    yaw: torch.Tensor
    color: torch.Tensor

    def __len__(self) -> int:
        return int(self.center.shape[0])


Rig = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def camera_rig(config: WorldConfig, generator: torch.Generator | None = None) -> Rig:
    """Intrinsics (N, 3, 3), camera-to-ego rotations (N, 3, 3) and centres (N, 3) of the six cameras.

    With a generator and non-zero ``rig_*_std`` fields, each camera's yaw, height and offset are drawn around their
    nominal values (one rig per scene).
    """
    n = len(config.camera_yaws_deg)
    yaws = torch.tensor([math.radians(y) for y in config.camera_yaws_deg])
    height, offset = torch.full((n,), config.camera_height), torch.full((n,), config.camera_offset)
    if generator is not None:
        for std, value, scale in (
            (config.rig_yaw_std_deg, yaws, math.pi / 180),
            (config.rig_height_std, height, 1.0),
            (config.rig_offset_std, offset, 1.0),
        ):
            if std > 0:
                value += std * scale * torch.randn(n, generator=generator)
    k = torch.stack([pinhole_intrinsics(config.image_width, config.image_height, f) for f in config.camera_hfov_deg])
    rot = camera_rotation(yaws)
    trans = torch.stack([offset * torch.cos(yaws), offset * torch.sin(yaws), height], dim=-1)
    return k, rot, trans


def calibration_error(config: WorldConfig, rig: Rig, generator: torch.Generator) -> Rig:
    """The rig as handed to the models: each camera's rotation off by a yaw error, its centre by a shift."""
    k, rot, trans = rig
    n = rot.shape[0]
    if config.calib_yaw_std_deg > 0:
        yaw = torch.randn(n, generator=generator) * math.radians(config.calib_yaw_std_deg)
        rot = yaw_matrix(yaw) @ rot
    if config.calib_trans_std_m > 0:
        trans = trans + config.calib_trans_std_m * torch.randn(n, 3, generator=generator)
    return k, rot, trans


def sample_boxes(config: WorldConfig, generator: torch.Generator) -> Boxes:
    """Draw non-overlapping boxes (rejection on circumscribed circles) around the ego car."""

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=generator))

    count = int(torch.randint(config.min_vehicles, config.max_vehicles + 1, (), generator=generator))
    centers, sizes, yaws, radii = [], [], [], []
    for _ in range(count * 50):
        if len(centers) == count:
            break
        w, length, h = uniform(*config.width_range), uniform(*config.length_range), uniform(*config.height_range)
        x, y = uniform(-config.extent + 1, config.extent - 1), uniform(-config.extent + 1, config.extent - 1)
        radius = 0.5 * math.hypot(w, length)
        if math.hypot(x, y) < config.ego_clearance + radius:
            continue
        if any(math.hypot(x - cx, y - cy) < radius + r + 0.3 for (cx, cy), r in zip(centers, radii, strict=True)):
            continue
        centers.append((x, y))
        sizes.append((w, length, h))
        yaws.append(uniform(-math.pi, math.pi))
        radii.append(radius)
    colors = 0.15 + 0.8 * torch.rand(len(centers), 3, generator=generator)
    return Boxes(
        torch.tensor(centers, dtype=torch.float32).reshape(-1, 2),
        torch.tensor(sizes, dtype=torch.float32).reshape(-1, 3),
        torch.tensor(yaws, dtype=torch.float32),
        colors,
    )


def ray_box_hits(origins: torch.Tensor, dirs: torch.Tensor, boxes: Boxes) -> tuple[torch.Tensor, torch.Tensor]:
    """Slab test of P rays against K oriented boxes.

    Args:
        origins: (P, 3) ray origins.
        dirs: (P, 3) unit directions.
        boxes: the boxes (bottom at z = 0).

    Returns:
        entry distance (P, K) (``inf`` where the ray misses the box) and the index (P, K) of the box-local axis
        whose slab the ray enters through (0: along the length, 1: across, 2: vertical), for shading.
    """
    k = len(boxes)
    if k == 0:
        return torch.full((origins.shape[0], 0), math.inf), torch.zeros(origins.shape[0], 0, dtype=torch.long)
    c, s = torch.cos(boxes.yaw), torch.sin(boxes.yaw)
    rel = origins[:, None, :2] - boxes.center[None]
    o_local = torch.stack(
        [
            rel[..., 0] * c + rel[..., 1] * s,
            -rel[..., 0] * s + rel[..., 1] * c,
            origins[:, None, 2].expand(-1, k) - boxes.size[:, 2] / 2,
        ],
        dim=-1,
    )
    d_local = torch.stack(
        [
            dirs[:, None, 0] * c + dirs[:, None, 1] * s,
            -dirs[:, None, 0] * s + dirs[:, None, 1] * c,
            dirs[:, None, 2].expand(-1, k),
        ],
        dim=-1,
    )
    half = torch.stack([boxes.size[:, 1], boxes.size[:, 0], boxes.size[:, 2]], dim=-1) / 2  # (K, 3) l, w, h
    safe = torch.where(d_local.abs() < 1e-9, torch.full_like(d_local, 1e-9), d_local)
    t1 = (-half - o_local) / safe
    t2 = (half - o_local) / safe
    t_near, axis = torch.minimum(t1, t2).max(dim=-1)
    t_far = torch.maximum(t1, t2).min(dim=-1).values
    hit = (t_far >= t_near) & (t_near > 0)
    return torch.where(hit, t_near, torch.full_like(t_near, math.inf)), axis


@dataclass
class RenderedScene:
    """Everything known about one rendered scene.

    Attributes:
        sample: the model/loader sample dict (see :func:`render_scene`).
        boxes: the boxes.
        depth: (N, H, W) ray distance to the first hit (``inf`` for sky).
        instance: (N, H, W) index of the first-hit box, −1 for ground/sky.
        box_visibility: (K,) visible fraction per box.
        box_token: (K,) nuScenes visibility token per box.
    """

    sample: dict[str, torch.Tensor]
    boxes: Boxes
    depth: torch.Tensor
    instance: torch.Tensor
    box_visibility: torch.Tensor
    box_token: torch.Tensor


def render_scene(
    config: WorldConfig,
    boxes: Boxes,
    generator: torch.Generator | None = None,
    rig: Rig | None = None,
    calibration: Rig | None = None,
) -> RenderedScene:
    """Render the six cameras and the BEV ground truth of a scene.

    ``rig`` is the true camera rig used to render (default: the nominal one); ``calibration`` is the rig written
    into the sample for the models (default: the true one). The sample dict holds ``images`` (N, 3, H, W) in [0, 1],
    ``intrinsics`` (N, 3, 3), ``rotation`` (N, 3, 3, camera-to-ego), ``translation`` (N, 3), ``bev`` (1, rows, cols)
    float 0/1 vehicle map and ``visibility`` (rows, cols) long: the token (1–4) of the box covering the cell, 255
    elsewhere.
    """
    h, w = config.image_height, config.image_width
    k, rot, trans = rig if rig is not None else camera_rig(config)
    origins, dirs = camera_rays(k, rot, trans, h, w, stride=1)
    n = k.shape[0]
    o, d = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    t_box, axis = ray_box_hits(o, d, boxes)
    t_ground = torch.where(d[:, 2] < -1e-6, -o[:, 2] / d[:, 2].clamp(max=-1e-6), torch.full_like(d[:, 2], math.inf))
    if len(boxes):
        t_first_box, first = t_box.min(dim=1)
    else:
        t_first_box, first = torch.full_like(t_ground, math.inf), torch.zeros_like(t_ground, dtype=torch.long)
    box_first = t_first_box < t_ground
    depth = torch.minimum(t_first_box, t_ground)
    instance = torch.where(box_first, first, torch.full_like(first, -1))

    # shading: sky gradient, ground with a 2 m checker texture, Lambert-shaded boxes, distance fog
    light = torch.tensor([0.4, 0.3, 0.866])
    sky = torch.stack([0.55 + 0.3 * d[:, 2], 0.7 + 0.2 * d[:, 2], 0.9 + 0.1 * d[:, 2]], dim=-1).clamp(0, 1)
    hit_ground = o + d * torch.where(torch.isfinite(t_ground), t_ground, torch.zeros_like(t_ground))[:, None]
    checker = ((torch.floor(hit_ground[:, 0] / 2) + torch.floor(hit_ground[:, 1] / 2)) % 2)[:, None]
    ground = torch.tensor([0.35, 0.36, 0.33]) + 0.08 * checker
    color = torch.where(torch.isfinite(t_ground)[:, None], ground, sky)
    if len(boxes):
        ax = axis.gather(1, first[:, None]).squeeze(1)
        yaw = boxes.yaw[first]
        normal_local = torch.nn.functional.one_hot(ax, 3).float()
        normal = torch.stack(
            [
                normal_local[:, 0] * torch.cos(yaw) - normal_local[:, 1] * torch.sin(yaw),
                normal_local[:, 0] * torch.sin(yaw) + normal_local[:, 1] * torch.cos(yaw),
                normal_local[:, 2],
            ],
            dim=-1,
        )
        lambert = 0.35 + 0.65 * (normal @ light).abs()
        box_color = boxes.color[first] * lambert[:, None]
        color = torch.where(box_first[:, None], box_color, color)
    fog = torch.exp(-torch.where(torch.isfinite(depth), depth, torch.full_like(depth, 1e3)) / config.fog_distance)
    color = color * fog[:, None] + torch.tensor([0.7, 0.72, 0.75]) * (1 - fog[:, None])
    if generator is not None and config.noise_std > 0:
        color = color + config.noise_std * torch.randn(color.shape, generator=generator)
    images = color.clamp(0, 1).reshape(n, h, w, 3).permute(0, 3, 1, 2).contiguous()

    if len(boxes):
        any_hit = torch.isfinite(t_box)  # (P, K): the ray meets box k at all
        seen = torch.nn.functional.one_hot(first, len(boxes)).bool() & box_first[:, None]
        ratio = seen.sum(0).float() / any_hit.sum(0).clamp_min(1).float()
        ratio = torch.where(any_hit.sum(0) > 0, ratio, torch.zeros_like(ratio))
    else:
        ratio = torch.zeros(0)
    tokens = visibility_token(ratio)
    grid = config.grid
    bev = rasterize_boxes(grid, boxes.center, boxes.size[:, :2], boxes.yaw)
    vis = rasterize_boxes(grid, boxes.center, boxes.size[:, :2], boxes.yaw, tokens, background=VISIBILITY_IGNORE)
    given_k, given_rot, given_trans = calibration if calibration is not None else (k, rot, trans)
    sample = {
        "images": images,
        "intrinsics": given_k,
        "rotation": given_rot,
        "translation": given_trans,
        "bev": bev.float().unsqueeze(0),
        "visibility": vis,
    }
    return RenderedScene(sample, boxes, depth.reshape(n, h, w), instance.reshape(n, h, w), ratio, tokens)


def per_scene_rig(config: WorldConfig) -> bool:
    """Whether scenes get their own rig or calibration error (else every scene uses the nominal, exact rig)."""
    return any(
        v > 0
        for v in (
            config.rig_yaw_std_deg,
            config.rig_height_std,
            config.rig_offset_std,
            config.calib_yaw_std_deg,
            config.calib_trans_std_m,
        )
    )


def generate_scenes(config: WorldConfig, count: int, seed: int) -> list[RenderedScene]:
    """Render ``count`` scenes deterministically from ``seed`` (each with its own rig and calibration error if set)."""
    generator = torch.Generator().manual_seed(seed)
    scenes = []
    for _ in range(count):
        boxes = sample_boxes(config, generator)
        rig = calibration = None
        if per_scene_rig(config):
            rig = camera_rig(config, generator)
            calibration = calibration_error(config, rig, generator)
        scenes.append(render_scene(config, boxes, generator, rig, calibration))
    return scenes


class SceneDataset(Dataset):
    """Rendered scenes held in memory, yielding the sample dicts (default collate stacks them)."""

    def __init__(self, scenes: list[RenderedScene] | list[dict[str, torch.Tensor]]) -> None:
        self.samples = [s.sample if isinstance(s, RenderedScene) else s for s in scenes]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.samples[index]
