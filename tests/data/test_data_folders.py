import warnings

import pytest
import torch
from PIL import ImageFile

from frugalvision.data import ImageFolderDataset, load_image, provenance
from frugalvision.errors import DataError


def test_labels_and_default_transform(image_folder):
    ds = ImageFolderDataset(image_folder)
    assert ds.classes == ["cat", "dog", "emu"] and len(ds) == 6
    assert ds.targets == [0, 0, 0, 1, 1, 2]
    names = [p.name for p, _ in ds.samples]
    assert "notes.txt" not in names and ".hidden.png" not in names and "c.PNG" in names
    x, y = ds[2]  # grayscale PNG comes back as RGB
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32 and 0.0 <= float(x.min()) <= float(x.max()) <= 1.0
    assert y == 0 and torch.allclose(x[0], x[1])
    assert ImageFolderDataset(image_folder, transform=lambda im: im.size)[0] == ((8, 8), 0)


def test_integer_class_folders_use_their_value(tmp_path, make_image):
    for name in ["0", "1", "2", "10"]:
        make_image(tmp_path / name / "img.png", int(name))
    ds = ImageFolderDataset(tmp_path)
    assert sorted(ds.targets) == [0, 1, 2, 10]
    assert {p.parent.name: y for p, y in ds.samples} == {"0": 0, "1": 1, "2": 2, "10": 10}
    assert len(ds.classes) == 11 and ds.classes[10] == "10"


def test_mixed_names_fall_back_to_sorted_position(tmp_path, make_image):
    for name in ["10", "2", "b"]:
        make_image(tmp_path / name / "img.png")
    assert {p.parent.name: y for p, y in ImageFolderDataset(tmp_path).samples} == {"10": 0, "2": 1, "b": 2}


@pytest.mark.parametrize("name", ["broken.jpg", "broken.png"])
def test_truncated_file_raises_naming_it(image_folder, name, make_image, truncated):
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    bad = truncated(make_image(image_folder / "dog" / name, 9, size=64))
    ds = ImageFolderDataset(image_folder)
    index = [p for p, _ in ds.samples].index(bad)
    with pytest.raises(DataError) as err:
        ds[index]
    assert str(bad) in str(err.value) and "\n" not in str(err.value) and "skip_bad_files" in str(err.value)
    assert bad in ds.verify()


def test_not_an_image_file(image_folder):
    bad = image_folder / "emu" / "fake.png"
    bad.write_bytes(b"this is text")
    with pytest.raises(DataError, match="fake.png"):
        load_image(bad)


def test_skip_bad_files_prefilters_and_counts(image_folder, make_image, truncated):
    bad_jpg = truncated(make_image(image_folder / "cat" / "t.jpg", 10, size=64))
    bad_png = truncated(make_image(image_folder / "dog" / "t.png", 11, size=64))
    start = provenance.mark()
    with pytest.warns(RuntimeWarning, match="skipping corrupt"):
        ds = ImageFolderDataset(image_folder, skip_bad_files=True)
    assert len(ds) == 6 and sorted(ds.skipped) == sorted([bad_jpg, bad_png])
    assert all(ds[i][0].shape == (3, 8, 8) for i in range(len(ds)))
    assert ds.verify() == []
    read, skipped = provenance.since(start)  # what the harness writes into results.json
    assert sorted(skipped) == sorted([str(bad_jpg), str(bad_png)]) and read == [
        {"name": "imagefolder", "path": str(image_folder)}
    ]


def test_skip_bad_files_at_load_time_without_prefilter(image_folder, make_image, truncated):
    bad = truncated(make_image(image_folder / "cat" / "t.jpg", 10, size=64))
    ds = ImageFolderDataset(image_folder, skip_bad_files=True, prefilter=False)
    index = [p for p, _ in ds.samples].index(bad)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x, _ = ds[index]
        ds[index]
    assert x.shape == (3, 8, 8) and ds.skipped == [bad] and len(caught) == 1


def test_missing_and_empty_roots(tmp_path, make_image):
    with pytest.raises(DataError, match="does not exist") as err:
        ImageFolderDataset(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        ImageFolderDataset(tmp_path / "empty")
    make_image(tmp_path / "root" / "cat" / "a.png")
    (tmp_path / "root" / "dog").mkdir()
    (tmp_path / "root" / "dog" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="has no images") as err:
        ImageFolderDataset(tmp_path / "root")
    assert str(tmp_path / "root" / "dog") in str(err.value)


def test_csv_file_list(image_folder, tmp_path):
    csv_path = tmp_path / "val.csv"
    csv_path.write_text("path,label\ncat/a.png,3\ndog/b.png,0\n\n" + f"{image_folder / 'emu' / 'x.bmp'},7\n")
    ds = ImageFolderDataset.from_csv(csv_path, image_folder)
    assert len(ds) == 3 and ds.targets == [3, 0, 7] and len(ds.classes) == 8
    x, y = ds[0]
    assert x.shape == (3, 8, 8) and y == 3
    named = tmp_path / "named.csv"
    named.write_text("cat/a.png,cat\ndog/b.png,dog\n")
    assert ImageFolderDataset.from_csv(named, image_folder).targets == [0, 1]


def test_csv_errors(image_folder, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderDataset.from_csv(tmp_path / "none.csv", image_folder)
    bad = tmp_path / "bad.csv"
    bad.write_text("cat/a.png,0\ncat/missing.png,1\n")
    with pytest.raises(DataError, match="line 2.*missing.png"):
        ImageFolderDataset.from_csv(bad, image_folder)
    bad.write_text("cat/a.png,0,extra\n")
    with pytest.raises(DataError, match="line 1"):
        ImageFolderDataset.from_csv(bad, image_folder)
    bad.write_text("path,label\n")
    with pytest.raises(DataError, match="no rows"):
        ImageFolderDataset.from_csv(bad, image_folder)
