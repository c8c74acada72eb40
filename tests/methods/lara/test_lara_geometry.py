"""Geometry of LaRa: rays, projections, intrinsics updates, Plücker moments, BEV grid indexing."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.spatial.transform import Rotation

from frugalvision.methods.lara.geometry import (
    BevGrid,
    box_corners_2d,
    camera_rays,
    camera_rotation,
    feature_pixel_coords,
    plucker_moment,
    project,
    quaternion_to_matrix,
    quaternion_yaw,
    rasterize_boxes,
    ray_features,
    resize_crop_intrinsics,
)


def random_cameras(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random pinhole intrinsics, camera-to-ego rotations (scipy) and centres."""
    g = torch.Generator().manual_seed(seed)
    f = 20 + 200 * torch.rand(n, generator=g)
    k = torch.zeros(n, 3, 3)
    k[:, 0, 0] = f
    k[:, 1, 1] = f * (0.8 + 0.4 * torch.rand(n, generator=g))
    k[:, 0, 2] = 10 + 50 * torch.rand(n, generator=g)
    k[:, 1, 2] = 10 + 30 * torch.rand(n, generator=g)
    k[:, 2, 2] = 1
    rot = torch.from_numpy(Rotation.random(n, random_state=seed).as_matrix()).float()
    trans = 5 * torch.randn(n, 3, generator=g)
    return k, rot, trans


def test_quaternion_matches_scipy() -> None:
    q = torch.randn(20, 4, dtype=torch.float64)
    ours = quaternion_to_matrix(q)
    ref = Rotation.from_quat(q[:, [1, 2, 3, 0]].numpy()).as_matrix()  # scipy is x, y, z, w
    assert torch.allclose(ours, torch.from_numpy(ref), atol=1e-10)
    yaw = torch.tensor(0.7, dtype=torch.float64)
    q_yaw = torch.stack([torch.cos(yaw / 2), torch.zeros(()), torch.zeros(()), torch.sin(yaw / 2)])
    assert float(quaternion_yaw(q_yaw)) == pytest.approx(0.7)


@pytest.mark.parametrize(("stride", "offset"), [(1, "center"), (4, "center"), (8, "center"), (4, "official")])
def test_rays_reproject_to_their_feature_cell(stride: int, offset: str) -> None:
    k, rot, trans = random_cameras(7, seed=stride)
    height, width = 32, 64
    origins, dirs = camera_rays(k, rot, trans, height, width, stride, offset)
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(()), atol=1e-5)
    assert torch.allclose(origins, trans[:, None, None, :].expand_as(origins))
    points = origins + 10.0 * dirs  # 10 m along each ray
    pix, depth = project(points.reshape(7, -1, 3), k, rot, trans)
    assert bool((depth > 0).all())
    shift = (stride - 1) / 2 if offset == "center" else 0.0
    rows, cols = height // stride, width // stride
    v, u = torch.meshgrid(torch.arange(rows) * stride + shift, torch.arange(cols) * stride + shift, indexing="ij")
    expected = torch.stack([u, v], -1).float().reshape(1, -1, 2).expand(7, -1, -1)
    assert torch.allclose(pix, expected, atol=1e-3)


def test_project_back_project_round_trip() -> None:
    k, rot, trans = random_cameras(5, seed=11)
    g = torch.Generator().manual_seed(0)
    cam_points = torch.randn(5, 50, 3, generator=g)
    cam_points[..., 2] = 1 + 30 * torch.rand(5, 50, generator=g)
    ego = cam_points @ rot.transpose(-1, -2) + trans[:, None]
    pix, depth = project(ego, k, rot, trans)
    assert torch.allclose(depth, cam_points[..., 2], atol=1e-4)
    hom = torch.cat([pix, torch.ones_like(pix[..., :1])], -1)
    back = (hom @ torch.linalg.inv(k).transpose(-1, -2)) * depth[..., None]
    assert torch.allclose(back @ rot.transpose(-1, -2) + trans[:, None], ego, atol=1e-3)


def test_resized_cropped_intrinsics_follow_the_pixel() -> None:
    k, rot, trans = random_cameras(3, seed=5)
    points = trans[:, None] + 8.0 * camera_rays(k, rot, trans, 16, 16, 1)[1].reshape(3, -1, 3)
    pix, _ = project(points, k, rot, trans)
    k2 = resize_crop_intrinsics(k, 0.3, crop_left=2.0, crop_top=46.0)
    pix2, _ = project(points, k2, rot, trans)
    assert torch.allclose(pix2, pix * 0.3 - torch.tensor([2.0, 46.0]), atol=1e-3)


def test_plucker_moment_last_axis_for_batch_of_three() -> None:
    g = torch.Generator().manual_seed(3)
    o = torch.randn(3, 10, 3, generator=g)
    d = torch.nn.functional.normalize(torch.randn(3, 10, 3, generator=g), dim=-1)
    m = plucker_moment(o, d)
    ref = torch.stack(
        [
            o[..., 1] * d[..., 2] - o[..., 2] * d[..., 1],
            o[..., 2] * d[..., 0] - o[..., 0] * d[..., 2],
            o[..., 0] * d[..., 1] - o[..., 1] * d[..., 0],
        ],
        -1,
    )
    assert torch.allclose(m, ref, atol=1e-6)
    assert not torch.allclose(torch.linalg.cross(o, d, dim=0), ref, atol=1e-3)  # the official bug mixes samples
    assert torch.allclose((m * d).sum(-1), torch.zeros(()), atol=1e-5)
    slid = plucker_moment(o + 2.5 * d, d)
    assert torch.allclose(slid, m, atol=1e-5)
    per_sample = torch.stack([ray_features(o[i : i + 1], d[i : i + 1])[0] for i in range(3)])
    assert torch.allclose(ray_features(o, d), per_sample)
    assert ray_features(o, d, plucker=False).shape[-1] == 6


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_rays_batch_invariance(batch: int) -> None:
    k, rot, trans = random_cameras(batch * 6, seed=batch)
    o, d = camera_rays(k.view(batch, 6, 3, 3), rot.view(batch, 6, 3, 3), trans.view(batch, 6, 3), 32, 64, 4)
    feats = ray_features(o, d)
    for b in range(batch):
        ob, db = camera_rays(
            k.view(batch, 6, 3, 3)[b], rot.view(batch, 6, 3, 3)[b], trans.view(batch, 6, 3)[b], 32, 64, 4
        )
        assert torch.allclose(feats[b], ray_features(ob, db), atol=1e-6)


def test_camera_rotation_axes() -> None:
    rot = camera_rotation(torch.tensor([0.0, math.pi / 2]))
    assert torch.allclose(rot[0] @ torch.tensor([0.0, 0.0, 1.0]), torch.tensor([1.0, 0.0, 0.0]))  # forward -> +x
    assert torch.allclose(rot[0] @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, -1.0, 0.0]))  # right -> -y
    assert torch.allclose(rot[0] @ torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, -1.0]))  # down -> -z
    assert torch.allclose(rot[1] @ torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)


def test_bev_grid_paper_shape_and_indexing() -> None:
    grid = BevGrid()
    assert grid.shape == (200, 200)
    centers = grid.centers()
    row, col, inside = grid.index(centers.reshape(-1, 2))
    assert bool(inside.all())
    assert torch.equal(row.view(200, 200), torch.arange(200)[:, None].expand(200, 200))
    assert torch.equal(col.view(200, 200), torch.arange(200)[None, :].expand(200, 200))
    r, c, _ = grid.index(torch.tensor([[10.0, 0.2], [-0.1, 20.3], [60.0, 0.0]]))
    assert (int(r[0]), int(c[0])) == (120, 100)  # forward = rows
    assert (int(r[1]), int(c[1])) == (99, 140)  # left = columns
    assert not bool(grid.index(torch.tensor([[60.0, 0.0]]))[2][0])
    coords = grid.normalized_coords()
    assert coords.shape == (200, 200, 3) and float(coords[0, 0, 0]) == -1 and float(coords[-1, -1, 1]) == 1
    assert torch.allclose(coords[..., 2], coords[..., :2].norm(dim=-1))
    assert feature_pixel_coords(224, 480, 8).shape == (28, 60, 2)


def test_rasterized_footprint_area_and_overwrite_order() -> None:
    grid = BevGrid(-16, 16, -16, 16, 0.25)
    center = torch.tensor([[5.0, -3.0], [5.0, -1.0]])
    size = torch.tensor([[2.0, 4.5], [2.0, 4.5]])
    yaw = torch.tensor([0.3, 0.0])
    single = rasterize_boxes(grid, center[:1], size[:1], yaw[:1])
    area = float(single.sum()) * grid.res**2
    assert area == pytest.approx(2.0 * 4.5, rel=0.08)
    corners = box_corners_2d(center[0], size[0], yaw[0])
    assert torch.allclose(corners.mean(0), center[0])
    assert float((corners[0] - corners[1]).norm()) == pytest.approx(4.5, rel=1e-5)  # length along the heading
    both = rasterize_boxes(grid, center, size, yaw, values=torch.tensor([1, 2]))
    first_only = rasterize_boxes(grid, center[:1], size[:1], yaw[:1])
    second_only = rasterize_boxes(grid, center[1:], size[1:], yaw[1:])
    overlap = (first_only > 0) & (second_only > 0)
    assert bool(overlap.any()) and bool((both[overlap] == 2).all())  # later boxes overwrite earlier ones
