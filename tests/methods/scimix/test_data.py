"""FashionComposite splits and the real-data paths (CIFAR python-pickle fixture, ImageFolder, labeled.json)."""

import os
import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from frugalvision.data.object_composites import BACKGROUNDS, background_image, crop_backgrounds
from frugalvision.errors import DataError
from frugalvision.methods.scimix.config import smoke
from frugalvision.methods.scimix.data import build_problem, build_references
from frugalvision.ssl import composite_mix, labeled_split, write_labeled_json


@pytest.fixture(scope="module")
def problem():
    return build_problem(replace(smoke(), labels_per_class=3, unlabeled=150, val_size=40, test_size=60), seed=0)


def test_composites_are_deterministic_per_seed_and_split_exactly(problem):
    config = replace(smoke(), labels_per_class=3, unlabeled=150, val_size=40, test_size=60)
    again, other = build_problem(config, 0), build_problem(config, 1)
    assert torch.equal(again.labeled.fields["image"], problem.labeled.fields["image"])
    assert not torch.equal(other.labeled.fields["image"], problem.labeled.fields["image"])
    assert torch.bincount(problem.labeled.fields["label"], minlength=10).tolist() == [3] * 10
    assert len(problem.unlabeled) == 150 and len(problem.val) == 40 and len(problem.test) == 60


def test_labeled_unlabeled_and_validation_images_are_disjoint_and_outside_the_oracle_pool(problem):
    from frugalvision.methods.scimix.data import _objects, _pools

    config = replace(smoke(), labels_per_class=3, unlabeled=150, val_size=40, test_size=60)
    parts = {name: set(problem.indices[name].tolist()) for name in ("labeled", "unlabeled", "val")}
    assert not (parts["labeled"] & parts["unlabeled"]) and not (parts["labeled"] & parts["val"])
    assert not (parts["unlabeled"] & parts["val"])
    _, oracle_pool = _pools(config, len(_objects(config, True)))
    assert not set(oracle_pool.tolist()) & (parts["labeled"] | parts["unlabeled"] | parts["val"])
    assert len(set(problem.indices["test"].tolist())) == len(problem.test)


def test_the_generator_sees_images_and_labels_only(problem):
    labeled, unlabeled = problem.generator_images()
    assert set(labeled.fields) == set(unlabeled.fields) == {"image", "label"}
    assert (unlabeled.fields["label"] == -1).all() and (labeled.fields["label"] >= 0).all()


def test_the_exact_composite_of_an_image_with_its_own_background_is_the_image(problem):
    batch = {k: v[:8].float() / 255 if v.dtype == torch.uint8 else v[:8] for k, v in problem.test.fields.items()}
    torch.testing.assert_close(composite_mix(batch, batch), batch["image"], atol=0.6 / 255, rtol=0)


def test_backgrounds_follow_the_class_in_the_labeled_set_only():
    config = replace(smoke(), labels_per_class=40, unlabeled=400, nuisance=0.8, oracle_size=600)
    data = build_problem(config, 0)
    tied = (data.labeled.fields["background_id"] == data.labeled.fields["label"] % len(BACKGROUNDS)).float().mean()
    free = (data.unlabeled.fields["background_id"] == data.unlabeled.fields["label"]).float().mean()
    assert 0.7 < tied < 0.95 and free < 0.25


def test_train_and_test_crops_come_from_disjoint_columns():
    ids = torch.full((6,), BACKGROUNDS.index("china"))
    image = background_image("china")
    split = int(round(image.shape[2] * 0.6))
    for region, (c0, c1) in (("train", (0, split)), ("test", (split, image.shape[2]))):
        crops = crop_backgrounds(ids, 16, seed=3, region=region)
        for crop in crops:
            hits = [
                x for y in range(image.shape[1] - 15) for x in range(image.shape[2] - 15)
                if torch.equal(image[:, y : y + 16, x : x + 16], crop)
            ]  # fmt: skip
            assert hits and all(c0 <= x and x + 16 <= c1 for x in hits)


def test_references_have_their_own_pool_and_pure_background_crops(problem):
    refs = build_references(replace(smoke(), labels_per_class=3))
    assert refs.background_train is not None and int(refs.background_train.fields["label"].max()) == 9
    assert len(refs.oracle) > 0


# ------------------------------------------------------------------------------------------------ real data
def _cifar_python(root, per_class=6):
    """A tiny CIFAR-10 in the official python-pickle layout (cifar-10-batches-py; Python 2 str keys load as str)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [c for c in range(10) for _ in range(per_class // 2)]
        batch = {"batch_label": name, "labels": labels, "data": rng.integers(0, 256, (len(labels), 3072),
                 dtype=np.uint8), "filenames": [f"{i}.png" for i in range(len(labels))]}  # fmt: skip
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}, 2))
    return folder


def _cifar_config(root, **changes):
    config = replace(smoke(), dataset="cifar10", data_root=str(root), allow_pickle=True, labels_per_class=2,
                     unlabeled=0, val_size=10, test_size=0, image_size=32, rows=())  # fmt: skip
    return replace(config, **changes)


def test_cifar_python_release_is_read_safely_and_split_by_labels_per_class(tmp_path):
    _cifar_python(tmp_path)
    problem = build_problem(_cifar_config(tmp_path), seed=1)
    assert problem.classes[:2] == ["c0", "c1"] and problem.channels == 3
    assert torch.bincount(problem.labeled.fields["label"], minlength=10).tolist() == [2] * 10
    assert len(problem.test) == 30 and (problem.unlabeled.fields["label"] == -1).all()
    assert len(problem.labeled) + len(problem.val) + len(problem.unlabeled) == 150
    with pytest.raises(DataError, match="allow_pickle"):
        build_problem(_cifar_config(tmp_path, allow_pickle=False), seed=1)


def test_a_pickle_that_names_a_callable_is_refused_without_running_it(tmp_path):
    folder = _cifar_python(tmp_path)

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": Payload(), "labels": [0]}, protocol=2))
    with pytest.raises(DataError, match="refused"):
        build_problem(_cifar_config(tmp_path), seed=0)
    assert not (tmp_path / "pwned").exists()


def test_a_labeled_json_replays_the_split(tmp_path):
    _cifar_python(tmp_path)
    labels = torch.arange(10).repeat_interleave(15)
    path = write_labeled_json(tmp_path / "labeled.json", labeled_split(torch.tensor(labels), 3, seed=5))
    problem = build_problem(_cifar_config(tmp_path, labeled_json=str(path)), seed=0)
    assert len(problem.labeled) == 30


def test_imagefolder_train_and_test_folders(tmp_path):
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (20, 20), (i * 40, 10, 200)).save(tmp_path / split / name / f"{i}.png")
    config = replace(smoke(), dataset="imagefolder", data_root=str(tmp_path), labels_per_class=2, unlabeled=0,
                     val_size=2, test_size=0, image_size=16, rows=())  # fmt: skip
    problem = build_problem(config, seed=0)
    assert problem.classes == ["cat", "dog"] and problem.test.fields["image"].shape == (8, 3, 16, 16)
    with pytest.raises(DataError, match="test"):
        (tmp_path / "test").rename(tmp_path / "other")
        build_problem(config, seed=0)
