"""CIFAR readers on tiny fixtures written in the official binary and Python-pickle layouts; unsafe pickles refused."""

import os
import pickle

import numpy as np
import pytest
import torch

from frugalvision.data.cifar import find_cifar, load_cifar, safe_unpickle
from frugalvision.errors import DataError


def _images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 3072), dtype=np.uint8)


def _write_binary(root, variant):
    """Official binary layout: records of label byte(s) + 3,072 channel-planar image bytes."""
    folder = root / ("cifar-10-batches-bin" if variant == "cifar10" else "cifar-100-binary")
    folder.mkdir(parents=True)
    if variant == "cifar10":
        files = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    else:
        files = ["train.bin", "test.bin"]
    expected = {}
    for index, name in enumerate(files):
        data = _images(3, index)
        fine = np.arange(3, dtype=np.uint8) + index
        coarse = fine // 5
        heads = [fine[:, None]] if variant == "cifar10" else [coarse[:, None], fine[:, None]]
        (folder / name).write_bytes(np.concatenate([*heads, data], 1).tobytes())
        expected[name] = (data, fine, coarse)
    if variant == "cifar10":
        (folder / "batches.meta.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n\n")
    return folder, expected


def _write_python(root, variant):
    """Official Python layout: pickled dicts with 'data' [N, 3072] uint8 and 'labels' / 'fine_labels'."""
    folder = root / ("cifar-10-batches-py" if variant == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True)
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if variant == "cifar10" else ["train", "test"]
    for index, name in enumerate(files):
        labels = list(range(index, index + 3))
        batch = {"batch_label": f"batch {index}", "data": _images(3, index), "filenames": [f"{i}.png" for i in labels]}
        batch.update({"labels": labels} if variant == "cifar10" else {"fine_labels": labels, "coarse_labels": labels})
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    if variant == "cifar10":
        meta = {"label_names": [f"c{i}" for i in range(10)]}
    else:
        meta = {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]}
    (folder / ("batches.meta" if variant == "cifar10" else "meta")).write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def test_cifar10_binary_reads_every_batch_in_order_channel_planar(tmp_path):
    folder, expected = _write_binary(tmp_path, "cifar10")
    train = load_cifar(tmp_path, "cifar10", train=True)
    assert train.images.shape == (15, 3, 32, 32) and train.classes[3] == "class3"
    first = expected["data_batch_1.bin"][0][0]
    assert torch.equal(train.images[0, 1].flatten(), torch.from_numpy(first[1024:2048]))  # green plane, row-major
    assert train.labels.tolist() == [i + b for b in range(5) for i in range(3)]
    test = load_cifar(folder, "cifar10", train=False)
    assert torch.equal(test.images.flatten(1), torch.from_numpy(expected["test_batch.bin"][0]))


def test_cifar100_binary_fine_and_coarse_labels(tmp_path):
    _, expected = _write_binary(tmp_path, "cifar100")
    fine = load_cifar(tmp_path, "cifar100", train=False)
    coarse = load_cifar(tmp_path, "cifar100", train=False, label="coarse")
    assert fine.labels.tolist() == expected["test.bin"][1].tolist() and fine.num_classes == 100
    assert coarse.labels.tolist() == expected["test.bin"][2].tolist() and coarse.num_classes == 20
    assert torch.equal(fine.images, coarse.images)


def test_binary_files_with_a_partial_record_or_bad_labels_raise_one_line(tmp_path):
    folder, _ = _write_binary(tmp_path, "cifar100")
    raw = (folder / "test.bin").read_bytes()
    (folder / "test.bin").write_bytes(raw[:-5])
    with pytest.raises(DataError, match="not a multiple of the 3074-byte"):
        load_cifar(tmp_path, "cifar100", train=False)
    (folder / "test.bin").write_bytes(bytes([0, 200]) + raw[2:])
    with pytest.raises(DataError, match="labels span"):
        load_cifar(tmp_path, "cifar100", train=False)
    with pytest.raises(DataError, match="no cifar10 train files"):
        find_cifar(tmp_path / "nowhere", "cifar10")


@pytest.mark.parametrize("variant", ["cifar10", "cifar100"])
def test_python_release_needs_the_opt_in_and_then_loads_safely(tmp_path, variant):
    _write_python(tmp_path, variant)
    with pytest.raises(DataError, match="allow_pickle=True"):
        load_cifar(tmp_path, variant)
    train = load_cifar(tmp_path, variant, allow_pickle=True)
    assert train.images.shape == ((15 if variant == "cifar10" else 3), 3, 32, 32)
    assert torch.equal(train.images[0].flatten(), torch.from_numpy(_images(3, 0)[0]))
    assert train.classes[1] == ("c1" if variant == "cifar10" else "f1")


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickle_that_names_any_other_callable_is_refused_without_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = _write_python(tmp_path, "cifar100")
    (folder / "train").write_bytes(pickle.dumps({"data": _Payload(), "fine_labels": [0]}, protocol=2))
    with pytest.raises(DataError, match="refused without running it"):
        load_cifar(tmp_path, "cifar100", allow_pickle=True)
    assert not (tmp_path / "pwned").exists()
    (folder / "odd").write_bytes(pickle.dumps([np.arange(3), {"k": b"v"}], protocol=4))
    assert safe_unpickle(folder / "odd")[1] == {"k": b"v"}
