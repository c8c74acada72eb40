import pytest
import torch

from frugalvision.data import ArrayDataset, ImageArrays, concat_arrays
from frugalvision.errors import DataError


def _arrays(n=6, c=1, name="toy"):
    images = torch.arange(n * c * 4 * 4, dtype=torch.int64).remainder(256).to(torch.uint8).view(n, c, 4, 4)
    return ImageArrays(images, torch.arange(n) % 3, ["a", "b", "c"], name)


def test_len_subset_to_float():
    a = _arrays()
    assert len(a) == 6 and a.num_classes == 3 and a.image_shape == (1, 4, 4)
    s = a.subset([4, 1])
    assert len(s) == 2 and s.labels.tolist() == [1, 1] and torch.equal(s.images[0], a.images[4])
    assert s.classes == a.classes and s.name == a.name
    f = a.to_float()
    assert f.dtype == torch.float32 and float(f.max()) <= 1.0 and float(f.min()) >= 0.0
    assert torch.allclose(f * 255, a.images.float())
    assert len(a.subset(a.labels == 0)) == 2


def test_validation():
    with pytest.raises(DataError, match="uint8"):
        ImageArrays(torch.zeros(2, 1, 4, 4), torch.zeros(2), ["a"], "x")
    with pytest.raises(DataError, match="labels"):
        ImageArrays(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3), ["a"], "x")
    with pytest.raises(DataError, match="classes"):
        ImageArrays(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 5]), ["a"], "x")


def test_array_dataset_and_transform():
    a = _arrays()
    ds = ArrayDataset(a)
    x, y = ds[2]
    assert x.shape == (1, 4, 4) and x.dtype == torch.float32 and isinstance(y, int) and y == 2
    ds2 = ArrayDataset(a, transform=lambda t: t * 2)
    assert torch.allclose(ds2[2][0], x * 2)
    assert len(ds) == 6 and ds.classes == ["a", "b", "c"]


def test_concat():
    a, b = _arrays(name="a"), _arrays(n=2, name="b")
    c = concat_arrays([a, b])
    assert len(c) == 8 and c.name == "a+b" and torch.equal(c.images[6:], b.images)
    with pytest.raises(DataError, match="image shapes"):
        concat_arrays([a, _arrays(c=3)])
    with pytest.raises(DataError):
        concat_arrays([])
