"""Seeded N-labels-per-class splits and their labeled.json files."""

import pytest
import torch

from frugalvision.errors import DataError
from frugalvision.ssl import TensorDictDataset, labeled_split, read_labeled_json, split_name, write_labeled_json


def test_exactly_n_labels_per_class_disjoint_and_seeded():
    labels = torch.arange(10).repeat_interleave(30)
    split = labeled_split(labels, per_class=4, seed=1)
    assert torch.bincount(labels[split.labeled], minlength=10).tolist() == [4] * 10
    assert len(set(split.labeled.tolist()) & set(split.unlabeled.tolist())) == 0
    assert len(split.labeled) + len(split.unlabeled) == 300
    assert torch.equal(split.labeled, labeled_split(labels, 4, seed=1).labeled)
    assert not torch.equal(split.labeled, labeled_split(labels, 4, seed=2).labeled)
    assert len(labeled_split(labels, 4, seed=1, unlabeled_includes_labeled=True).unlabeled) == 300
    assert split_name("cifar10", 10, 25, 1) == "cifar10.1@250"


def test_too_few_images_or_labels_is_a_one_line_error():
    with pytest.raises(DataError, match="per_class"):
        labeled_split(torch.tensor([0, 0, 1]), per_class=2, seed=0)
    with pytest.raises(DataError, match="at least 1"):
        labeled_split(torch.tensor([0, 1]), per_class=0, seed=0)


def test_labeled_json_round_trip_and_checks(tmp_path):
    split = labeled_split(torch.arange(3).repeat(5), per_class=2, seed=0)
    path = write_labeled_json(tmp_path / "labeled.json", split, files=[f"img{i}.png" for i in range(15)])
    assert torch.equal(read_labeled_json(path, 15), split.labeled)
    with pytest.raises(DataError, match="outside"):
        read_labeled_json(path, 3)
    with pytest.raises(DataError, match="does not exist"):
        read_labeled_json(tmp_path / "nope.json", 15)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataError, match="unreadable"):
        read_labeled_json(tmp_path / "bad.json", 15)


def test_tensor_dict_dataset_scales_uint8_and_checks_lengths():
    data = TensorDictDataset({"image": torch.full((2, 1, 2, 2), 255, dtype=torch.uint8), "label": torch.tensor([0, 1])})
    assert data[0]["image"].max() == 1.0 and data[1]["label"] == 1
    with pytest.raises(DataError, match="lengths"):
        TensorDictDataset({"image": torch.zeros(2, 1, 2, 2), "label": torch.tensor([0])})
