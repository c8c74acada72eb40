import json
import pickle
from collections import Counter

import pytest
import torch

from frugalvision.errors import DataError
from frugalvision.methods.tfood.data import (
    RecipeImageDataset,
    class_pair_order,
    collate_pairs,
    convert_classes_pickle,
    image_path,
    load_recipe1m,
    write_mini_recipe1m,
)
from frugalvision.methods.tfood.text import WordTokenizer


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("r1m")
    write_mini_recipe1m(root, num_recipes=80, seed=3)
    return root


def test_generator_writes_the_real_formats_and_the_loader_reads_them_back(mini_root):
    base = mini_root / "recipe1m"
    layer1 = json.loads((base / "layer1.json").read_text())
    layer2 = json.loads((base / "layer2.json").read_text())
    det = json.loads((base / "det_ingrs.json").read_text())
    table = json.loads((base / "classes1M.json").read_text())
    assert len(layer1) == 80 and len(det) == 80
    assert Counter(r["partition"] for r in layer1) == {"train": 60, "val": 10, "test": 10}
    assert all(len(r["id"]) == 10 and set(r) >= {"title", "ingredients", "instructions", "url"} for r in layer1)
    assert table["class_names"][0] == "background"
    recipes, names = load_recipe1m(mini_root, with_det_ingrs=True)
    assert names == table["class_names"]
    assert [r.id for r in recipes] == [r["id"] for r in layer1]
    partition = {r["id"]: r["partition"] for r in layer1}
    n_images = 0
    for record in layer2:
        for image in record["images"]:
            path = image_path(mini_root, partition[record["id"]], image["id"])
            assert path.is_file()
            assert path.parent.relative_to(base / "images" / partition[record["id"]]).parts == tuple(image["id"][:4])
            n_images += 1
    assert sum(len(r.images) for r in recipes) == n_images
    by_id = {r.id: r for r in recipes}
    first = layer1[0]
    loaded = by_id[first["id"]]
    assert loaded.title == first["title"]
    assert loaded.ingredients == [i["text"] for i in first["ingredients"]]
    assert loaded.label == table["recipe_classes"][first["id"]]
    assert loaded.det_ingredients == [i["text"] for i in det[0]["ingredients"]]
    assert all(r.images for r in recipes if r.partition != "train")
    assert {r.label for r in recipes} >= {0} and max(r.label for r in recipes) < len(names)
    val = load_recipe1m(mini_root, partitions=("val",))[0]
    assert len(val) == 10 and all(r.partition == "val" for r in val)


def test_generator_is_deterministic(tmp_path):
    write_mini_recipe1m(tmp_path / "a", num_recipes=20, seed=1)
    write_mini_recipe1m(tmp_path / "b", num_recipes=20, seed=1)
    for name in ("layer1.json", "layer2.json", "det_ingrs.json", "classes1M.json"):
        assert (tmp_path / "a/recipe1m" / name).read_bytes() == (tmp_path / "b/recipe1m" / name).read_bytes()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.pop("title"), "'title'"),
        (lambda r: r.update(partition="dev"), "'partition'"),
        (lambda r: r.update(ingredients=["2 eggs"]), "'ingredients'"),
        (lambda r: r.update(id=7), "'id'"),
    ],
)
def test_loader_rejects_malformed_records_naming_the_record(tmp_path, mutate, message):
    write_mini_recipe1m(tmp_path, num_recipes=10, seed=0)
    path = tmp_path / "recipe1m" / "layer1.json"
    records = json.loads(path.read_text())
    bad_id = records[4]["id"]
    mutate(records[4])
    path.write_text(json.dumps(records))
    with pytest.raises(DataError, match=message) as info:
        load_recipe1m(tmp_path)
    assert "record 4" in str(info.value)
    if message != "'id'":
        assert bad_id in str(info.value)


def test_class_table_from_a_trusted_pickle_keeps_background_zero(tmp_path):
    src = tmp_path / "classes1M.pkl"
    with open(src, "wb") as handle:
        pickle.dump({"abc": 2, "def": 0}, handle)
        pickle.dump({0: "background", 1: "pie", 2: "salad"}, handle)
    with pytest.raises(DataError, match="trust"):
        convert_classes_pickle(src, tmp_path / "c.json")
    out = convert_classes_pickle(src, tmp_path / "c.json", trust=True)
    table = json.loads(out.read_text())
    assert table["class_names"] == ["background", "pie", "salad"]
    assert table["recipe_classes"] == {"abc": 2, "def": 0}


def test_loader_refuses_an_unconverted_pickle(tmp_path):
    write_mini_recipe1m(tmp_path, num_recipes=10, seed=0)
    (tmp_path / "recipe1m" / "classes1M.json").rename(tmp_path / "recipe1m" / "classes1M.pkl")
    with pytest.raises(DataError, match="convert"):
        load_recipe1m(tmp_path)


def test_dataset_eval_is_deterministic_and_collate_pads(mini_root):
    recipes, _ = load_recipe1m(mini_root)
    tok = WordTokenizer.fit(t for r in recipes for t in (r.title, *r.ingredients, *r.instructions))
    ds = RecipeImageDataset([r for r in recipes if r.partition == "test"], tok, img_size=32)
    first, second = ds[0], ds[0]
    assert torch.equal(first[0], second[0]) and 0.0 <= float(first[0].min()) and float(first[0].max()) <= 1.0
    images, title, ingredients, instructions, labels, index = collate_pairs([ds[i] for i in range(4)])
    assert images.shape == (4, 3, 32, 32) and index.tolist() == [0, 1, 2, 3]
    assert ingredients.ndim == 3 and instructions.ndim == 3 and title.shape[0] == 4
    assert (title[:, 0] == 2).all()


def test_class_pair_order_composition():
    labels = torch.tensor([0] * 30 + [1] * 5 + [2] * 4 + [3] * 6 + [4] * 3 + [5] * 2)
    order = class_pair_order(labels, batch_size=12, background_fraction=0.5)(0)
    assert len(order) == (len(labels) // 12) * 12
    for batch in order.view(-1, 12):
        assert len(set(batch.tolist())) == 12
        lab = labels[batch]
        assert (lab[:6] == 0).all()
        pairs = lab[6:].view(-1, 2)
        assert (pairs[:, 0] == pairs[:, 1]).all() and (pairs[:, 0] != 0).all()
        assert len(set(pairs[:, 0].tolist())) == 3
    assert torch.equal(order, class_pair_order(labels, 12)(0))
    assert not torch.equal(order, class_pair_order(labels, 12)(1))


def test_crop_ratio_centre_crop_at_eval_and_random_crop_in_training(mini_root):
    recipes, _ = load_recipe1m(mini_root, partitions=("test",))
    tok = WordTokenizer.fit(r.title for r in recipes)
    full = RecipeImageDataset(recipes[:2], tok, img_size=32)
    cropped = RecipeImageDataset(recipes[:2], tok, img_size=28, crop_ratio=28 / 32)
    assert cropped.load_size == 32 and cropped[0][0].shape == (3, 28, 28)
    assert torch.equal(cropped[0][0], full[0][0][:, 2:30, 2:30])
    train = RecipeImageDataset(recipes[:2], tok, img_size=28, crop_ratio=28 / 32, train=True)
    torch.manual_seed(0)
    crops = {tuple(train[0][0].flatten()[:5].tolist()) for _ in range(8)}
    assert len(crops) > 1


def test_trusted_classes_pickle_loads_plain_data_but_never_runs_code(tmp_path):
    import json
    import os
    import pickle

    import pytest

    from frugalvision.errors import DataError
    from frugalvision.methods.tfood.data import convert_classes_pickle

    plain = tmp_path / "classes1M.pkl"
    with open(plain, "wb") as handle:
        pickle.dump({"abc": 1, "def": 0}, handle)
        pickle.dump({0: "background", 1: "pizza"}, handle)
    out = convert_classes_pickle(plain, tmp_path / "classes.json", trust=True)
    assert json.loads(out.read_text()) == {
        "class_names": ["background", "pizza"],
        "recipe_classes": {"abc": 1, "def": 0},
    }

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pkl"
    with open(evil, "wb") as handle:
        pickle.dump({"abc": Exploit()}, handle)
    with pytest.raises(DataError, match="references"):
        convert_classes_pickle(evil, tmp_path / "x.json", trust=True)
    assert not marker.exists()
