"""The JSON-table nuScenes reader on a tiny fixture in the official schema (no devkit needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from frugalvision.errors import DataError
from frugalvision.methods.lara.geometry import BevGrid, project, resize_crop_intrinsics
from frugalvision.methods.lara.nuscenes import ImageTransform, NuScenesBEV
from frugalvision.methods.lara.world import VISIBILITY_IGNORE, camera_rig

from .nuscenes_fixture import CAR_EGO, PED_EGO, WORLD, write_fixture

TRANSFORM = ImageTransform(scale=0.3, crop_top=3, height=24, width=48)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> NuScenesBEV:
    root = write_fixture(tmp_path_factory.mktemp("nuscenes"))
    return NuScenesBEV(root, version="v1.0-mini", split="val", transform=TRANSFORM)


def test_fixture_sample_shapes(dataset: NuScenesBEV) -> None:
    assert len(dataset) == 2
    sample = dataset[0]
    assert sample["images"].shape == (6, 3, 24, 48)
    assert sample["intrinsics"].shape == (6, 3, 3) and sample["rotation"].shape == (6, 3, 3)
    assert sample["translation"].shape == (6, 3)
    assert sample["bev"].shape == (1, 200, 200) and sample["visibility"].shape == (200, 200)
    assert float(dataset[1]["bev"].sum()) == 0  # second keyframe has no annotation
    assert dataset.positive_fraction() == pytest.approx(float(sample["bev"].sum()) / 2 / 200**2)


def test_fixture_frames_calibration_and_bev(dataset: NuScenesBEV) -> None:
    sample = dataset[0]
    k, rot, trans = camera_rig(WORLD)
    assert torch.allclose(sample["rotation"], rot, atol=1e-5)
    assert torch.allclose(sample["translation"], trans, atol=1e-6)
    assert torch.allclose(sample["intrinsics"], resize_crop_intrinsics(k, 0.3, 0, 3), atol=1e-4)
    grid = BevGrid()
    row, col, _ = grid.index(torch.tensor([CAR_EGO]))
    bev, vis = sample["bev"][0], sample["visibility"]
    assert float(bev[row, col]) == 1 and int(vis[row, col]) == 3  # box moved into the ego frame of LIDAR_TOP
    assert float(bev.sum()) * grid.res**2 == pytest.approx(2.0 * 4.5, rel=0.15)
    rows, cols = bev.nonzero().unbind(1)
    assert abs(float(rows.float().mean()) - float(row[0])) <= 1 and abs(float(cols.float().mean()) - float(col[0])) <= 1
    prow, pcol, _ = grid.index(torch.tensor([PED_EGO]))
    assert float(bev[prow, pcol]) == 0  # pedestrians are not vehicles
    assert torch.equal(vis != VISIBILITY_IGNORE, bev > 0)
    # the vehicle appears in the front camera where the loaded calibration projects it
    pix, depth = project(
        torch.tensor([[*CAR_EGO, 0.8]]), sample["intrinsics"][1], sample["rotation"][1], sample["translation"][1]
    )
    u, v = pix[0].round().long().tolist()
    assert float(depth[0]) > 0 and 0 <= u < 48 and 0 <= v < 24
    red = sample["images"][1, :, v, u]
    assert float(red[0]) > float(red[1]) + 0.2 and float(red[0]) > float(red[2]) + 0.2


def test_missing_tables_and_bad_crop(tmp_path: Path, dataset: NuScenesBEV) -> None:
    with pytest.raises(DataError, match="does not exist"):
        NuScenesBEV(tmp_path, version="v1.0-mini")
    too_big = NuScenesBEV(
        dataset.tables.root,
        version="v1.0-mini",
        split="val",
        tables=dataset.tables,
        transform=ImageTransform(scale=0.3, crop_top=10, height=24, width=48),
    )
    with pytest.raises(DataError, match="exceeds"):
        too_big[0]


def test_devkit_backend_equals_json_reader(dataset: NuScenesBEV) -> None:
    """The optional nuscenes-devkit path (pyquaternion, devkit Box transforms) builds the same samples."""
    pytest.importorskip("nuscenes.nuscenes", reason="nuscenes-devkit is not installed")
    devkit = NuScenesBEV(dataset.tables.root, version="v1.0-mini", split="val", transform=TRANSFORM, backend="devkit")
    assert devkit.tokens == dataset.tokens
    for index in range(len(dataset)):
        ours, theirs = dataset[index], devkit[index]
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert torch.allclose(ours[key].float(), theirs[key].float(), atol=1e-5), key
        for a, b in zip(
            dataset.vehicle_boxes(dataset.tokens[index]), devkit.vehicle_boxes(devkit.tokens[index]), strict=True
        ):
            assert torch.allclose(a.float(), b.float(), atol=1e-5)
    assert int(devkit[0]["bev"].sum()) > 0
    shared = NuScenesBEV(
        dataset.tables.root,
        version="v1.0-mini",
        split="val",
        transform=TRANSFORM,
        backend="devkit",
        tables=devkit.reader,
    )
    assert shared.reader is devkit.reader and shared.tokens == devkit.tokens


def test_devkit_backend_errors(dataset: NuScenesBEV) -> None:
    with pytest.raises(DataError, match="backend"):
        NuScenesBEV(dataset.tables.root, version="v1.0-mini", split="val", backend="bogus")  # type: ignore[arg-type]
