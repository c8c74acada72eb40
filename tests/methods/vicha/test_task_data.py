"""Downstream loaders on tiny fixtures in the official layouts, the caption-world task generators, the public API."""

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from frugalvision.data.caption_world import (
    caption_world,
    entailment_hypothesis,
    nlvr_statement,
    referring_expression,
    vqa_questions,
)
from frugalvision.engine import LoopConfig
from frugalvision.errors import DataError
from frugalvision.methods.vicha.task_data import (
    TaskDataset,
    collate_task,
    load_grounding,
    load_grounding_json,
    load_nlvr_json,
    load_retrieval_json,
    load_ve_json,
    load_vqa_json,
    read_plain_pickle,
    task_image_root,
    write_task_world,
)
from frugalvision.methods.vicha.text import WordTokenizer


def _image(path, size=(20, 24)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), 90, np.uint8)).save(path)


@pytest.fixture
def official(tmp_path):
    """Tiny files in the ALBEF/ViCHA layouts."""
    for rel in ("coco/train2014/COCO_train2014_000000000009.jpg", "visual_genome/VG_100K/1.jpg", "nlvr2/a-img0.png",
                "nlvr2/a-img1.png", "flickr30k-images/1000092795.jpg"):  # fmt: skip
        _image(tmp_path / rel)
    ann = tmp_path / "annotations"
    ann.mkdir()
    coco_image = "train2014/COCO_train2014_000000000009.jpg"
    files = {
        "coco_train": [{"image": coco_image, "caption": "a plate of food", "image_id": 9, "kwords": ["plate"]}],
        "coco_test": [{"image": coco_image, "caption": ["a plate", "food on a table"]}],
        "vqa_train": [
            {"question_id": 1, "question": "What is on the plate?", "answer": ["food"] * 9 + ["rice"],
             "image": coco_image, "dataset": "vqa"},
            {"question_id": 2, "question": "Is it sunny?", "answer": "yes", "image": "VG_100K/1.jpg",
             "dataset": "vg"},
        ],
        "nlvr_train": [{"images": ["a-img0.png", "a-img1.png"], "sentence": "Two dogs.", "label": "True",
                        "kwords1": ["dog"], "kwords2": ["grass"]}],
        "ve_train": [{"image": "1000092795", "sentence": "Two men outside.", "label": "entailment"}],
        "refcoco+_val": [{"image": coco_image, "text": "left plate", "ref_id": 5}],
    }  # fmt: skip
    for name, rows in files.items():
        (ann / f"{name}.json").write_text(json.dumps(rows))
    refer = tmp_path / "refcoco+"
    refer.mkdir()
    refs = [{"ref_id": 5, "ann_id": 50, "image_id": 9, "split": "val", "sentences": [{"sent": "left plate"}]}]
    (refer / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    instances = {"images": [{"id": 9, "height": 20, "width": 24}], "annotations": [{"id": 50, "bbox": [1, 2, 8, 9]}]}
    (refer / "instances.json").write_text(json.dumps(instances))
    (ann / "dets.json").write_text(json.dumps({"9": [[1, 2, 8, 9, 0.9], [12, 2, 8, 9, 0.8]]}))
    return tmp_path


def test_every_official_layout_loads(official):
    root, ann = official, official / "annotations"
    train = load_retrieval_json(ann / "coco_train.json", root / "coco", train=True)
    test = load_retrieval_json(ann / "coco_test.json", root / "coco", train=False)
    assert train[0].label == 9 and train[0].kwords == (("plate",),) and test[0].label == ("a plate", "food on a table")
    vqa = load_vqa_json([ann / "vqa_train.json"], root / "coco", root / "visual_genome")
    assert vqa[0].label == ("food",) * 9 + ("rice",) and vqa[1].label == ("yes",)
    assert vqa[1].images[0] == root / "visual_genome/VG_100K/1.jpg"
    nlvr = load_nlvr_json([ann / "nlvr_train.json"], root / "nlvr2")
    assert nlvr[0].label == 1 and nlvr[0].kwords == (("dog",), ("grass",)) and len(nlvr[0].images) == 2
    ve = load_ve_json(ann / "ve_train.json", root / "flickr30k-images")
    assert ve[0].label == 2 and ve[0].images[0].name == "1000092795.jpg"
    grounding = load_grounding_json([ann / "refcoco+_val.json"], root / "coco", train=False)
    truth = load_grounding(root / "refcoco+/refs(unc).p", root / "refcoco+/instances.json", ann / "dets.json")
    assert grounding[0].label == 5 and truth.boxes[5] == (1, 2, 8, 9) and truth.splits[5] == "val"
    assert truth.sizes[9] == (20, 24) and truth.proposals[9] == [(1, 2, 8, 9), (12, 2, 8, 9)]


def test_bad_inputs_fail_with_one_line(official, tmp_path):
    ann = official / "annotations"
    with pytest.raises(DataError, match="not found"):
        load_ve_json(tmp_path / "nope.json", official)
    with pytest.raises(DataError, match="lacks"):
        (ann / "bad.json").write_text(json.dumps([{"image": "x"}]))
        load_nlvr_json([ann / "bad.json"], official)
    with pytest.raises(DataError, match="pass vg_root"):
        load_vqa_json([ann / "vqa_train.json"], official / "coco")
    with pytest.raises(DataError, match="image .* not found"):
        load_ve_json(ann / "ve_train.json", official / "elsewhere")

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    (tmp_path / "evil.p").write_bytes(pickle.dumps([Evil()]))
    with pytest.raises(DataError, match="plain-data pickle"):
        read_plain_pickle(tmp_path / "evil.p")


def test_the_caption_world_tasks_are_exact():
    rng = np.random.default_rng(0)
    world = caption_world(60, seed=4, image_size=48)
    for scene in world.scenes:
        for question, answer in vqa_questions(scene, rng):
            if question.startswith("how many"):
                assert answer == ("zero", "one", "two", "three")[len(scene.objects)]
            elif question.startswith("is there a"):
                colour, shape = question.split()[-2:]
                present = any(o.colour == colour and o.shape == shape for o in scene.objects)
                assert answer == ("yes" if present else "no")
            elif question.startswith("what colour is the"):
                assert [o.colour for o in scene.objects if o.shape == question.split()[-1]] == [answer]
        for k in range(len(scene.objects)):
            text = referring_expression(scene, k)
            if text is not None:
                words = set(text.split()) - {"one"}
                matches = [o for o in scene.objects if words <= {o.shape, o.colour, o.size}]
                assert matches == [scene.objects[k]]
        for label in ("entailment", "contradiction", "neutral"):
            hypothesis = entailment_hypothesis(scene, label, rng)
            if hypothesis.startswith("there is a") and len(hypothesis.split()) == 5 and label != "neutral":
                colour, shape = hypothesis.split()[-2:]
                present = any(o.colour == colour and o.shape == shape for o in scene.objects)
                assert present == (label == "entailment")
    truths = []
    for left, right in zip(world.scenes[::2], world.scenes[1::2], strict=True):
        sentence, truth = nlvr_statement(left, right, rng)
        truths.append(truth)
        if sentence.startswith("both images contain a"):
            shape = sentence.split()[-1]
            has = [any(o.shape == shape for o in side.objects) for side in (left, right)]
            assert truth == all(has)
    assert 0.2 < np.mean(truths) < 0.8


@pytest.mark.parametrize("task", ["retrieval", "vqa", "nlvr", "ve", "grounding"])
def test_written_tasks_read_back_with_the_official_loaders(tmp_path, task):
    files = write_task_world(task, tmp_path, "test", 6, seed=1, image_size=48)
    root = task_image_root(task, tmp_path)
    reader = {
        "retrieval": lambda: load_retrieval_json(files["json"], root, train=False),
        "vqa": lambda: load_vqa_json([files["json"]], root),
        "nlvr": lambda: load_nlvr_json([files["json"]], root),
        "ve": lambda: load_ve_json(files["json"], root),
        "grounding": lambda: load_grounding_json([files["json"]], root, train=False),
    }[task]
    examples = reader()
    assert examples and all(p.is_file() for e in examples for p in e.images)
    if task == "grounding":
        truth = load_grounding(files["refs"], files["instances"], files["dets"])
        assert all(truth.boxes[e.label] in truth.proposals[truth.image_of[e.label]] for e in examples)
    tokenizer = WordTokenizer(["a", "red", "circle"])
    items = [TaskDataset(examples, tokenizer, transform=lambda im: torch.zeros(3, 48, 48), use_concepts=True,
                         target=lambda e: torch.tensor(0))[i] for i in range(2)]  # fmt: skip
    batch = collate_task(items)
    images = 2 if task == "nlvr" else 1
    assert batch.images.shape == ((2, 2, 3, 48, 48) if images == 2 else (2, 3, 48, 48))
    assert batch.concept_ids.shape[:-1] == ((2, 2) if images == 2 else (2,))


def test_finetune_api_runs_on_your_json(tmp_path):
    from frugalvision.methods.vicha import finetune
    from frugalvision.methods.vicha.api import Pretrained, load_pretrained, save_pretrained
    from frugalvision.methods.vicha.model import ModelConfig, ViCHAModel, momentum_copy

    files = write_task_world("ve", tmp_path, "train", 8, seed=2, image_size=32)
    examples = load_ve_json(files["json"], task_image_root("ve", tmp_path))
    from frugalvision.data.caption_world import vocabulary

    tokenizer = WordTokenizer(vocabulary())
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=len(tokenizer), vision_width=16, vision_depth=2, vision_heads=2, text_width=16,
                      text_heads=2, text_intermediate=32, text_layers=2, fusion_layers=1, embed_dim=8)  # fmt: skip
    model = ViCHAModel(cfg)
    path = save_pretrained(tmp_path / "tiny.safetensors", Pretrained(model, momentum_copy(model), tokenizer, {}))
    result = finetune(path, "ve", examples, examples, loop=LoopConfig(max_steps=2, batch_size=4, lr=1e-4))
    assert set(result.metrics) == {"acc"} and 0 <= result.metrics["acc"] <= 1
    bigger = load_pretrained(path, image_size=48)
    assert bigger.model.visual.vit.pos_embed.shape[1] == 1 + 36
