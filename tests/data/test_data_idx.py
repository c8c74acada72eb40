import gzip

import numpy as np
import pytest
import torch

from frugalvision.data import read_idx, write_idx
from frugalvision.errors import DataError


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip_uint8(tmp_path, suffix):
    images = torch.randint(0, 256, (7, 5, 4), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 9], dtype=torch.uint8)
    ip = write_idx(tmp_path / f"imgs-idx3-ubyte{suffix}", images)
    lp = write_idx(tmp_path / f"labs-idx1-ubyte{suffix}", labels)
    assert torch.equal(read_idx(ip, ndim=3), images)
    assert torch.equal(read_idx(lp, ndim=1), labels)
    if suffix == ".gz":
        with gzip.open(ip) as fh:
            assert fh.read(4) == b"\x00\x00\x08\x03"
    else:
        assert ip.read_bytes()[:8] == b"\x00\x00\x08\x03\x00\x00\x00\x07"
        assert len(ip.read_bytes()) == 4 + 3 * 4 + 7 * 5 * 4


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip_other_dtypes_are_big_endian(tmp_path, dtype):
    arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    path = write_idx(tmp_path / "x.idx", arr)
    raw = path.read_bytes()
    assert raw[4 + 12 :] == arr.astype(np.dtype(dtype).newbyteorder(">")).tobytes()
    np.testing.assert_array_equal(read_idx(path).numpy(), arr)


def test_truncated_raw_file_names_the_file(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte", torch.zeros(10, 28, 28, dtype=torch.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated") as err:
        read_idx(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_truncated_gzip_file_names_the_file(tmp_path):
    path = write_idx(tmp_path / "train-images-idx3-ubyte.gz", torch.randint(0, 256, (50, 28, 28), dtype=torch.uint8))
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_truncated_header(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


def test_bad_magic(tmp_path):
    path = tmp_path / "not-idx"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(DataError, match="magic") as err:
        read_idx(path)
    assert str(path) in str(err.value)
    path.write_bytes(b"\x00\x00\x07\x01" + bytes(8))  # unknown dtype code
    with pytest.raises(DataError, match="magic"):
        read_idx(path)


def test_too_long_and_wrong_rank(tmp_path):
    path = write_idx(tmp_path / "labels", torch.zeros(4, dtype=torch.uint8))
    with pytest.raises(DataError, match="3 dimensions|expected 3"):
        read_idx(path, ndim=3)
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(DataError, match="too long"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_idx(tmp_path / "nope.gz")
