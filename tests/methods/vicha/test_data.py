import json

import numpy as np
import pytest
import torch
from PIL import Image

from frugalvision.data.caption_world import caption_world, scene_concepts, write_caption_world
from frugalvision.errors import DataError
from frugalvision.methods.vicha.data import (
    CaptionDataset,
    collate_batch,
    eval_transform,
    load_caption_json,
    pretrain_files,
    pretrain_transform,
    resolve_image_path,
    write_caption_json,
)
from frugalvision.methods.vicha.text import WordTokenizer, pre_caption


@pytest.fixture
def albef_root(tmp_path):
    """A tiny pre-training tree in the official layout: annotations/<source>_kw.json + image folders."""
    for folder, name in (("coco/train2014", "a.jpg"), ("visual_genome/VG_100K", "b.jpg"), ("sbu/images", "c.jpg")):
        (tmp_path / folder).mkdir(parents=True)
        Image.fromarray(np.full((20, 24, 3), 100, np.uint8)).save(tmp_path / folder / name)
    ann = tmp_path / "annotations"
    ann.mkdir()
    kw = ["dog", "grass", "ball"]
    coco = [
        {"image": "/data/mshukor/data/coco/train2014/a.jpg", "caption": ["A dog, on grass!", "a ball"], "kwords": kw}
    ]
    vg = [{"image": "/data/mshukor/data/visual_genome/VG_100K/b.jpg", "caption": "a tree", "kwords": kw}]
    sbu = [{"image": "/data/mshukor/data/sbu/images/c.jpg", "caption": "the sky", "kwords": kw}]
    for name, rows in (("coco_kw", coco), ("vg_kw", vg), ("sbu_kw", sbu)):
        (ann / f"{name}.json").write_text(json.dumps(rows))
    return tmp_path


def test_author_paths_resolve_by_dropping_four_components_as_the_official_reader(albef_root):
    assert resolve_image_path("/data/mshukor/data/coco/x.jpg", "/r", 4).as_posix() == "/r/coco/x.jpg"
    assert resolve_image_path("coco/x.jpg", "/r").as_posix() == "/r/coco/x.jpg"
    assert resolve_image_path("/abs/x.jpg").as_posix() == "/abs/x.jpg"
    files = pretrain_files(albef_root, ("coco", "vg", "sbu"))
    entries = [e for path, _ in files for e in load_caption_json(path, albef_root, strip_prefix=4)]
    assert [e.image.name for e in entries] == ["a.jpg", "b.jpg", "c.jpg"]
    assert entries[0].captions == ("A dog, on grass!", "a ball") and entries[1].captions == ("a tree",)
    assert entries[0].kwords == ("dog", "grass", "ball")


def test_bad_files_fail_with_one_line(tmp_path, albef_root):
    with pytest.raises(DataError, match="not found"):
        load_caption_json(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_caption_json(bad)
    bad.write_text(json.dumps([{"image": "x.jpg"}]))
    with pytest.raises(DataError, match="lacks 'image' or 'caption'"):
        load_caption_json(bad)
    with pytest.raises(DataError, match="strip_prefix"):
        load_caption_json(albef_root / "annotations" / "coco_kw.json", albef_root)  # author paths, no strip
    with pytest.raises(DataError, match="unknown pre-training sources"):
        pretrain_files(albef_root, ("laion",))


def test_datasets_from_files_train_and_eval_modes(albef_root):
    entries = load_caption_json(albef_root / "annotations" / "coco_kw.json", albef_root, strip_prefix=4)
    tokenizer = WordTokenizer.fit(["a dog on grass", "a ball", "dog grass ball"])
    train = CaptionDataset(entries, tokenizer, True, transform=pretrain_transform(16), concept_fraction=0.67)
    image, text, concepts = train[0]
    assert image.shape == (3, 16, 16) and text[0] == tokenizer.cls and text[-1] == tokenizer.sep
    assert len(concepts) == 2 + 2  # int(0.67 * 3) concepts between CLS and SEP
    test = CaptionDataset(entries, tokenizer, False, transform=eval_transform(16))
    _, text, concepts = test[0]
    assert tokenizer.decode(text) == "a dog on grass" and tokenizer.decode(concepts) == "dog grass ball"
    batch = collate_batch([test[0], train[0]])
    assert batch.images.shape == (2, 3, 16, 16) and batch.concept_ids.shape == (2, 5)
    assert batch.concept_ids[1, -1] == 0  # padded


def test_write_and_read_back_a_caption_world_with_exact_concepts(tmp_path):
    world = caption_world(5, seed=3)
    again = caption_world(5, seed=3)
    assert np.array_equal(world.images, again.images) and world.scenes == again.scenes
    path = write_caption_world(world, tmp_path, "train")
    rows = json.loads(path.read_text())
    assert rows[0]["concepts"] == sorted(scene_concepts(world.scenes[0]))
    entries = load_caption_json(path, tmp_path)
    assert np.array_equal(np.asarray(Image.open(entries[2].image)), world.images[2])
    out = write_caption_json(entries, tmp_path / "copy.json", tmp_path)
    assert load_caption_json(out, tmp_path) == entries


def test_caption_world_captions_follow_the_scene_graph():
    world = caption_world(200, seed=0, unique_captions=True)
    assert len({s.captions[0] for s in world.scenes}) == 200
    for scene in world.scenes:
        for subject, relation, obj in scene.relations:
            a, b = scene.objects[subject], scene.objects[obj]
            holds = {
                "left of": a.col < b.col,
                "right of": a.col > b.col,
                "above": a.row < b.row,
                "below": a.row > b.row,
            }
            assert holds[relation]
        for o in scene.objects:
            assert f"{o.colour} {o.shape}" in scene.captions[0]


def test_pre_caption_matches_the_official_cleaning():
    assert pre_caption("A Dog-walker, on the  beach!", 30) == "a dog walker on the beach"
    assert pre_caption("one two three four", 2) == "one two"
    assert torch.is_tensor(collate_batch([(torch.zeros(3, 2, 2), [2, 3], None)]).text_ids)
