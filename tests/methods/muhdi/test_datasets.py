"""The real-format loaders on tiny fixtures in the official folder layouts (GTA5, Cityscapes, IDD, Mapillary)."""

import json

import numpy as np
import pytest
from PIL import Image

from frugalvision.errors import DataError
from frugalvision.methods.muhdi.datasets import cityscapes, gta5, idd, load_benchmark, mapillary, read_list
from frugalvision.methods.muhdi.labels import MAPILLARY_CLASSES, label_lookup, label_table, mapillary_table


def _ids(height, width, count):
    """A label map that holds every id in range(count), row-major, wrapping."""
    return (np.arange(height * width) % count).reshape(height, width).astype(np.uint8)


def _save_rgb(path, height, width, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return rgb


def _save_label(path, ids, palette=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(ids, mode="L")
    if palette:  # GTA5 and Mapillary ship palette PNGs whose indices are the ids
        image = image.convert("P")
        image.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    image.save(path)


@pytest.fixture
def benchmark_root(tmp_path):
    """GTA5/, cityscapes/, IDD/ and mapillary/ with one or two images each, in the official layouts."""
    root = tmp_path / "data"
    ids34 = _ids(4, 17, 34)
    _save_rgb(root / "GTA5/images/00001.png", 4, 17)
    _save_label(root / "GTA5/labels/00001.png", ids34, palette=True)
    (root / "GTA5/all.txt").write_text("00001.png\n")
    name = "aachen/aachen_000000_000019_leftImg8bit.png"
    _save_rgb(root / "cityscapes/leftImg8bit/val" / name, 4, 17)
    _save_label(root / "cityscapes/gtFine/val/aachen/aachen_000000_000019_gtFine_labelIds.png", ids34)
    for seq, stem in (("30", "067149"), ("31", "000123")):
        _save_rgb(root / f"IDD/leftImg8bit/train/{seq}/{stem}_leftImg8bit.png", 4, 10)
        _save_label(root / f"IDD/gtFine/train/{seq}/{stem}_gtFine_labelids.png", _ids(4, 10, 40))
    (root / "IDD/train.txt").write_text("30/067149_leftImg8bit.png\n31/000123_leftImg8bit.png\n")
    mapillary_root = root / "mapillary"
    config = {"labels": [{"readable": name, "name": name.lower()} for name in MAPILLARY_CLASSES]}
    mapillary_root.mkdir(parents=True)
    (mapillary_root / "config.json").write_text(json.dumps(config))
    _save_rgb(mapillary_root / "training/images/--abc.png", 30, 40)
    _save_label(mapillary_root / "training/labels/--abc.png", _ids(30, 40, 66), palette=True)
    return root


def test_gta5_maps_every_cityscapes_id_as_the_table_says(benchmark_root):
    for mapping in ("consistent", "muhdi_official"):
        data = gta5(benchmark_root / "GTA5", size=(4, 17), label_map=mapping)
        image, labels, name = data[0]
        assert name == "00001.png" and image.shape == (3, 4, 17) and 0.0 <= image.min() and image.max() <= 1.0
        lut = label_lookup(label_table("gta5", mapping))
        assert np.array_equal(labels.numpy(), lut[_ids(4, 17, 34)])


def test_cityscapes_reads_labelids_through_its_list_file(benchmark_root, tmp_path):
    list_file = tmp_path / "val.txt"
    list_file.write_text("aachen/aachen_000000_000019_leftImg8bit.png\n")
    data = cityscapes(benchmark_root / "cityscapes", "val", list_file, size=(4, 17))
    _, labels, _ = data[0]
    assert np.array_equal(labels.numpy(), label_lookup(label_table("cityscapes"))[_ids(4, 17, 34)])
    assert len(cityscapes(benchmark_root / "cityscapes", "val", size=(4, 17))) == 1  # folder scan without a list


def test_idd_maps_every_toolkit_id_and_resizes(benchmark_root):
    data = idd(benchmark_root / "IDD", "train", size=(4, 10), label_map="muhdi_official")
    assert len(data) == 2 and data[1][2] == "31/000123_leftImg8bit.png"
    assert np.array_equal(data[0][1].numpy(), label_lookup(label_table("idd", "muhdi_official"))[_ids(4, 10, 40)])
    small = idd(benchmark_root / "IDD", "train", size=(2, 5))
    image, labels, _ = small[0]
    assert image.shape == (3, 2, 5) and labels.shape == (2, 5)


def test_mapillary_is_letterboxed_top_left_with_unlabeled_padding(benchmark_root):
    data = mapillary(benchmark_root / "mapillary", "train", size=(20, 40))
    image, labels, name = data[0]
    assert name == "--abc" and image.shape == (3, 20, 40) and labels.shape == (20, 40)
    # 30 x 40 fitted into 20 x 40: resized to 20 x int(40 * 20 / 30) = 20 x 26, the rest padded
    assert image[:, :, 26:].abs().max() == 0.0 and image[:, :, :26].abs().max() > 0.0
    assert (labels[:, 26:] == 255).all()
    raw = np.asarray(Image.fromarray(_ids(30, 40, 66)).resize((26, 20), Image.NEAREST))
    assert np.array_equal(labels[:, :26].numpy(), label_lookup(mapillary_table())[raw])


def test_load_benchmark_uses_the_official_list_folder(benchmark_root, tmp_path):
    lists = tmp_path / "lists" / "idd_list"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("31/000123_leftImg8bit.png\n")
    data = load_benchmark(benchmark_root, "idd", "train", size=(4, 10), list_dir=tmp_path / "lists")
    assert len(data) == 1 and data[0][2] == "31/000123_leftImg8bit.png"
    assert len(load_benchmark(benchmark_root, "gta5", "all", size=(4, 17))) == 1


def test_bad_input_gets_one_line_errors(benchmark_root, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_list(tmp_path / "missing.txt")
    (benchmark_root / "GTA5/all.txt").write_text("00001.png\n00002.png\n")
    broken = gta5(benchmark_root / "GTA5", size=(4, 17))
    with pytest.raises(DataError, match="00002.png does not exist"):
        broken[1]
    (benchmark_root / "GTA5/images/00002.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="not a readable image"):
        broken[1]
    with pytest.raises(DataError, match="no val folder"):
        mapillary(tmp_path, "val")
    with pytest.raises(DataError, match="unknown"):
        load_benchmark(benchmark_root, "kitti", "train")
