import pytest
import torch

from frugalvision.data import DomainBedDataset
from frugalvision.errors import DataError


def test_domains_and_consistent_classes(domainbed_root):
    db = DomainBedDataset(domainbed_root)
    assert db.domains == ["art", "photo", "sketch"] and db.classes == ["dog", "elephant", "horse"]
    sketch = db.domain_dataset("sketch")
    assert sketch.classes == db.classes and set(sketch.targets) == {0, 1}
    photo = db.domain_dataset("photo")
    assert {p.parent.name: y for p, y in photo.samples} == {"dog": 0, "elephant": 1, "horse": 2}
    assert db.domain_dataset("photo") is photo


def test_leave_one_domain_out(domainbed_root):
    db = DomainBedDataset(domainbed_root)
    split = db.leave_one_domain_out("art", holdout_fraction=0.2, seed=0)
    assert split.train_domains == ["photo", "sketch"] and split.test_domain == "art"
    assert {d: len(s) for d, s in split.val_parts.items()} == {"photo": 3, "sketch": 1}
    assert {d: len(s) for d, s in split.train_parts.items()} == {"photo": 12, "sketch": 4}
    assert (len(split.train), len(split.val), len(split.test)) == (16, 4, 10)
    for dom in split.train_domains:  # in/out splits are disjoint and cover the domain
        tr, va = set(split.train_parts[dom].indices), set(split.val_parts[dom].indices)
        assert not tr & va and len(tr | va) == len(db.domain_dataset(dom))
    test_paths = {p for p, _ in split.test.samples}
    assert all(p.parts[-3] == "art" for p in test_paths) and len(test_paths) == 10  # test domain untouched
    train_paths = {split.train_parts[d].dataset.samples[i][0] for d in split.train_domains
                   for i in split.train_parts[d].indices}  # fmt: skip
    assert not train_paths & test_paths
    x, y = split.train[0]
    assert x.shape == (3, 6, 6) and 0 <= y < 3
    again = db.leave_one_domain_out("art", seed=0)
    assert again.val_parts["photo"].indices == split.val_parts["photo"].indices
    assert db.leave_one_domain_out("art", seed=1).val_parts["photo"].indices != split.val_parts["photo"].indices


def test_train_transform_only_on_train(domainbed_root):
    db = DomainBedDataset(domainbed_root, domains=["photo", "sketch"])
    split = db.leave_one_domain_out("sketch", train_transform=lambda im: torch.zeros(1))
    assert torch.equal(split.train[0][0], torch.zeros(1))
    assert split.val[0][0].shape == (3, 6, 6) and split.test[0][0].shape == (3, 6, 6)


def test_errors(domainbed_root, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        DomainBedDataset(tmp_path / "nope")
    with pytest.raises(DataError, match="'cartoon' not found.*art, photo, sketch"):
        DomainBedDataset(domainbed_root, domains=["art", "cartoon"])
    db = DomainBedDataset(domainbed_root, domains=["art"])
    with pytest.raises(DataError, match="none left"):
        db.leave_one_domain_out("art")
    with pytest.raises(DataError, match="unknown test domain"):
        db.leave_one_domain_out("photo")
    with pytest.raises(DataError, match="holdout_fraction"):
        DomainBedDataset(domainbed_root).leave_one_domain_out("art", holdout_fraction=1.0)
