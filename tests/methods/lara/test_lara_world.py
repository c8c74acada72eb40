"""ToyBEV world: ray casting against brute force, BEV ground truth, visibility, determinism."""

from __future__ import annotations

import math

import torch

from frugalvision.methods.lara.geometry import project
from frugalvision.methods.lara.world import (
    VISIBILITY_IGNORE,
    Boxes,
    WorldConfig,
    camera_rig,
    generate_scenes,
    ray_box_hits,
    render_scene,
)

CONFIG = WorldConfig()


def boxes(centers: list[tuple[float, float]], yaws: list[float] | None = None, size=(1.8, 4.5, 1.6)) -> Boxes:
    n = len(centers)
    return Boxes(torch.tensor(centers), torch.tensor([size] * n), torch.tensor(yaws or [0.0] * n), torch.rand(n, 3))


def test_slab_test_matches_ray_marching() -> None:
    g = torch.Generator().manual_seed(0)
    scene = boxes([(6.0, 1.0), (-5.0, -4.0), (3.0, -7.0)], [0.4, -1.2, 2.0])
    origins = torch.tensor([[0.0, 0.0, 1.5]]).expand(400, 3)
    dirs = torch.nn.functional.normalize(torch.randn(400, 3, generator=g) * torch.tensor([1.0, 1.0, 0.2]), dim=-1)
    t_hit, _ = ray_box_hits(origins, dirs, scene)
    steps = torch.arange(0, 20, 0.005)
    for p in range(0, 400, 7):
        pts = origins[p] + steps[:, None] * dirs[p]
        for b in range(3):
            rel = pts[:, :2] - scene.center[b]
            c, s = math.cos(float(scene.yaw[b])), math.sin(float(scene.yaw[b]))
            along, across = rel[:, 0] * c + rel[:, 1] * s, -rel[:, 0] * s + rel[:, 1] * c
            inside = (along.abs() <= 2.25) & (across.abs() <= 0.9) & (pts[:, 2] >= 0) & (pts[:, 2] <= 1.6)
            if bool(inside.any()):
                assert abs(float(steps[inside.nonzero()[0, 0]]) - float(t_hit[p, b])) < 0.01
            else:
                assert math.isinf(float(t_hit[p, b])) or float(t_hit[p, b]) > 19.9


def test_box_straight_ahead_is_centred_in_the_front_camera() -> None:
    scene = render_scene(CONFIG, boxes([(10.0, 0.0)]))
    front = 1
    cols = (scene.instance[front] == 0).nonzero()[:, 1].float()
    assert cols.numel() > 0
    assert abs(float(cols.mean()) - (CONFIG.image_width - 1) / 2) < 0.6
    assert int((scene.instance[torch.arange(6) != front] == 0).sum()) == 0  # no other camera sees it
    assert int(scene.box_token[0]) == 4 and float(scene.box_visibility[0]) == 1.0
    k, rot, trans = camera_rig(CONFIG)
    pix, depth = project(torch.tensor([[10.0, 0.0, 0.8]]), k[front], rot[front], trans[front])
    assert float(depth[0]) > 0 and abs(float(pix[0, 0]) - (CONFIG.image_width - 1) / 2) < 1e-3


def test_occluded_box_has_lower_visibility() -> None:
    scene = render_scene(CONFIG, boxes([(7.0, 0.0), (13.0, 0.3)]))
    assert int(scene.box_token[0]) == 4
    assert float(scene.box_visibility[1]) < 0.4 and int(scene.box_token[1]) == 1
    vis = scene.sample["visibility"]
    row_near, row_far = int((7.0 + 16) // 1), int((13.0 + 16) // 1)
    assert int(vis[row_near, 16]) == 4 and int(vis[row_far, 16]) == 1
    assert int(vis[0, 0]) == VISIBILITY_IGNORE


def test_bev_target_matches_the_generator_boxes() -> None:
    grid = CONFIG.grid
    for scene in generate_scenes(CONFIG, 5, seed=3):
        bev = scene.sample["bev"][0]
        assert bev.shape == grid.shape == (32, 32)
        row, col, inside = grid.index(scene.boxes.center)
        assert bool(inside.all())
        assert bool((bev[row, col] == 1).all())  # every box centre is painted at (row = x, col = y)
        area = scene.boxes.size[:, 0] * scene.boxes.size[:, 1]
        assert abs(float(bev.sum()) - float(area.sum())) < 0.35 * float(area.sum())
        painted = scene.sample["visibility"] != VISIBILITY_IGNORE
        assert torch.equal(painted, bev > 0)


def test_scene_shapes_and_determinism() -> None:
    a = generate_scenes(CONFIG, 3, seed=7)
    b = generate_scenes(CONFIG, 3, seed=7)
    c = generate_scenes(CONFIG, 3, seed=8)
    for x, y in zip(a, b, strict=True):
        for key in x.sample:
            assert torch.equal(x.sample[key], y.sample[key])
    assert not torch.equal(a[0].sample["images"], c[0].sample["images"])
    s = a[0].sample
    assert s["images"].shape == (6, 3, 32, 64) and 0 <= float(s["images"].min()) and float(s["images"].max()) <= 1
    assert s["intrinsics"].shape == (6, 3, 3) and s["rotation"].shape == (6, 3, 3) and s["translation"].shape == (6, 3)
    assert s["bev"].shape == (1, 32, 32) and s["visibility"].dtype == torch.long
    assert all(CONFIG.min_vehicles <= len(x.boxes) <= CONFIG.max_vehicles for x in a)


def test_every_scene_has_its_own_rig_and_the_models_get_a_wrong_calibration() -> None:
    from frugalvision.methods.lara.world import WorldConfig, camera_rig, generate_scenes

    exact = WorldConfig()
    jittered = WorldConfig(rig_yaw_std_deg=5.0, rig_height_std=0.1, calib_yaw_std_deg=2.0, calib_trans_std_m=0.2)
    a, b = generate_scenes(jittered, 2, seed=0)
    assert not torch.allclose(a.sample["rotation"], b.sample["rotation"])  # one rig per scene
    _, nominal_rot, _ = camera_rig(exact)
    assert not torch.allclose(a.sample["rotation"], nominal_rot)
    # the handed calibration differs from the rig that rendered the images: rebuild the true rig from the seed
    generator = torch.Generator().manual_seed(0)
    from frugalvision.methods.lara.world import render_scene, sample_boxes

    boxes = sample_boxes(jittered, generator)
    true_rig = camera_rig(jittered, generator)
    assert torch.allclose(a.boxes.center, boxes.center)
    assert not torch.allclose(true_rig[1], a.sample["rotation"])  # calibration error on top of the true rig
    rendered = render_scene(jittered, boxes, None, true_rig)
    assert rendered.sample["images"].shape == a.sample["images"].shape
    # without jitter the scenes and their calibration are exactly the nominal ones (cache-compatible default)
    plain = generate_scenes(exact, 1, seed=0)[0]
    assert torch.equal(plain.sample["rotation"], nominal_rot)
