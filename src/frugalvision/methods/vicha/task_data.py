"""Downstream data in the official ALBEF/ViCHA layouts: readers, datasets, collate, and caption-world writers.

Formats (the official readers' fields; ViCHA adds the visual concepts ``kwords``, ``kwords1``/``kwords2`` for NLVR2):

* retrieval: train ``[{"image", "caption", "image_id"}]`` (one entry per caption), test
  ``[{"image", "caption": [..]}]``;
* VQA: ``[{"question_id", "question", "answer": [annotators' answers], "image", "dataset": "vqa" | "vg"}]``, images
  under ``vqa_root`` (or ``vg_root``), plus ``answer_list.json``;
* NLVR2: ``[{"images": [left, right], "sentence", "label": "True" | "False"}]``;
* SNLI-VE: ``[{"image": <Flickr30k id>, "sentence", "label": "entailment" | "neutral" | "contradiction"}]``, the
  image file being ``<image_root>/<id>.jpg``;
* RefCOCO+ (weakly supervised grounding): ``[{"image", "text", "ref_id"}]`` per split, the ground truth in the
  REFER files ``refs(unc).p`` and ``instances.json``, and the detector proposals ``dets.json`` (image id -> boxes).

The caption-world writers produce every task in these layouts with exact labels from the scene graphs.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from frugalvision.errors import DataError
from frugalvision.methods.vicha.data import image_to_tensor, pad_ids
from frugalvision.methods.vicha.text import TextTokenizer, pre_caption

__all__ = [
    "TASKS",
    "VE_LABELS",
    "GroundingTruth",
    "TaskBatch",
    "TaskDataset",
    "TaskExample",
    "collate_task",
    "load_grounding",
    "load_grounding_json",
    "load_nlvr_json",
    "load_retrieval_json",
    "load_ve_json",
    "load_vqa_json",
    "read_plain_pickle",
    "task_image_root",
    "write_task_world",
]

TASKS = ("retrieval", "vqa", "nlvr", "ve", "grounding")
#: the official SNLI-VE label ids
VE_LABELS = {"contradiction": 0, "neutral": 1, "entailment": 2}


@dataclass(frozen=True)
class TaskExample:
    """One downstream example.

    Attributes:
        images: its image paths (two for NLVR2).
        text: question, statement, hypothesis, caption or referring expression.
        label: class index (NLVR2, SNLI-VE), the annotators' answers (VQA), or the image index (retrieval,
            grounding training: captions of one image are positives of each other).
        kwords: visual concepts of each image.
        key: question id, reference id or image id.
    """

    images: tuple[Path, ...]
    text: str
    label: Any
    kwords: tuple[tuple[str, ...], ...] = ()
    key: Any = None


def _read_list(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"annotation file {path} not found; pass the path of the task's JSON file")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not valid JSON ({error}); re-download or regenerate it") from error
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise DataError(f"{path} must hold a JSON list of objects (the ALBEF format)")
    return raw


def _need(path: str | Path, index: int, item: dict[str, Any], fields: Sequence[str]) -> None:
    missing = [f for f in fields if f not in item]
    if missing:
        raise DataError(f"{path} entry {index} lacks {missing}; use the ALBEF format of this task")


def _image(root: str | Path, relative: str, check: bool) -> Path:
    path = Path(root) / relative
    if check and not path.is_file():
        raise DataError(f"image {path} not found; check the image root of this task")
    return path


def load_retrieval_json(
    path: str | Path, image_root: str | Path, train: bool, check_images: bool = True
) -> list[TaskExample]:
    """Retrieval files: train entries are (image, caption, image_id); test entries hold every caption of an image.

    Test examples carry ``label`` = the tuple of captions; train examples the image id.
    """
    out = []
    for index, item in enumerate(_read_list(path)):
        _need(path, index, item, ("image", "caption") + (("image_id",) if train else ()))
        image = _image(image_root, item["image"], check_images)
        kwords = (tuple(item.get("kwords", ())),)
        if train:
            caption = item["caption"] if isinstance(item["caption"], str) else item["caption"][0]
            out.append(TaskExample((image,), caption, item["image_id"], kwords, item["image_id"]))
        else:
            captions = item["caption"] if isinstance(item["caption"], list) else [item["caption"]]
            out.append(TaskExample((image,), captions[0], tuple(captions), kwords, index))
    return out


def load_vqa_json(
    paths: Sequence[str | Path], vqa_root: str | Path, vg_root: str | Path | None = None, check_images: bool = True
) -> list[TaskExample]:
    """VQA files (train, val or test): answers are the annotators' list (absent in test files)."""
    out = []
    for path in paths:
        for index, item in enumerate(_read_list(path)):
            _need(path, index, item, ("question_id", "question", "image"))
            source = item.get("dataset", "vqa")
            if source == "vg" and vg_root is None:
                raise DataError(f"{path} entry {index} is a Visual Genome question; pass vg_root")
            root = vg_root if source == "vg" else vqa_root
            answers = item.get("answer", ())
            answers = (answers,) if isinstance(answers, str) else tuple(answers)
            kwords = (tuple(item.get("kwords", ())),)
            image = _image(root, item["image"], check_images)
            out.append(TaskExample((image,), item["question"], answers, kwords, item["question_id"]))
    return out


def load_nlvr_json(paths: Sequence[str | Path], image_root: str | Path, check_images: bool = True) -> list[TaskExample]:
    """NLVR2 files: two images, one sentence, label 1 for "True"; ViCHA's concept lists ``kwords1``, ``kwords2``."""
    out = []
    for path in paths:
        for index, item in enumerate(_read_list(path)):
            _need(path, index, item, ("images", "sentence", "label"))
            if len(item["images"]) != 2:
                raise DataError(f"{path} entry {index} has {len(item['images'])} images; NLVR2 pairs two")
            images = tuple(_image(image_root, p, check_images) for p in item["images"])
            kwords = (tuple(item.get("kwords1", ())), tuple(item.get("kwords2", ())))
            out.append(TaskExample(images, item["sentence"], int(item["label"] == "True"), kwords, index))
    return out


def load_ve_json(path: str | Path, image_root: str | Path, check_images: bool = True) -> list[TaskExample]:
    """SNLI-VE files: the image is ``<image_root>/<id>.jpg``; labels contradiction 0, neutral 1, entailment 2."""
    out = []
    for index, item in enumerate(_read_list(path)):
        _need(path, index, item, ("image", "sentence", "label"))
        if item["label"] not in VE_LABELS:
            raise DataError(f"{path} entry {index} has label {item['label']!r}; use one of {', '.join(VE_LABELS)}")
        image = _image(image_root, f"{item['image']}.jpg", check_images)
        kwords = (tuple(item.get("kwords", ())),)
        out.append(TaskExample((image,), item["sentence"], VE_LABELS[item["label"]], kwords, item["image"]))
    return out


def load_grounding_json(
    paths: Sequence[str | Path], image_root: str | Path, train: bool, check_images: bool = True
) -> list[TaskExample]:
    """RefCOCO+ text files: training examples are labelled by image (ALBEF: the file name), test ones by ``ref_id``."""
    out, image_ids = [], {}
    for path in paths:
        for index, item in enumerate(_read_list(path)):
            _need(path, index, item, ("image", "text", "ref_id"))
            name = item["image"].split("/")[-1]
            image_ids.setdefault(name, len(image_ids))
            label = image_ids[name] if train else item["ref_id"]
            kwords = (tuple(item.get("kwords", ())),)
            image = _image(image_root, item["image"], check_images)
            out.append(TaskExample((image,), item["text"], label, kwords, item["ref_id"]))
    return out


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain lists, dicts and numbers")


def read_plain_pickle(path: str | Path) -> Any:
    """Read a pickle of plain Python values (REFER's ``refs(unc).p``) without executing code.

    Any class or function reference in the file is refused, so nothing can run while loading.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found; pass the REFER refs file (refs(unc).p)")
    try:
        return _PlainUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise DataError(f"{path} is not a plain-data pickle ({error}); use the official REFER refs file") from error


@dataclass(frozen=True)
class GroundingTruth:
    """What the weakly supervised grounding evaluation needs per reference and per image.

    Attributes:
        boxes: ref id -> ground-truth ``(x, y, w, h)``.
        splits: ref id -> split ("val", "testA", "testB", ...).
        image_of: ref id -> image id.
        sizes: image id -> ``(height, width)``.
        proposals: image id -> detector boxes ``(x, y, w, h)``.
    """

    boxes: dict[int, tuple[float, ...]] = field(default_factory=dict)
    splits: dict[int, str] = field(default_factory=dict)
    image_of: dict[int, int] = field(default_factory=dict)
    sizes: dict[int, tuple[int, int]] = field(default_factory=dict)
    proposals: dict[int, list[tuple[float, ...]]] = field(default_factory=dict)


def load_grounding(refs: str | Path, instances: str | Path, dets: str | Path) -> GroundingTruth:
    """The REFER ground truth (``refs(unc).p`` + ``instances.json``) and the proposals (``dets.json``)."""
    ref_list = read_plain_pickle(refs)
    raw = json.loads(Path(instances).read_text()) if Path(instances).is_file() else None
    if raw is None or "annotations" not in raw or "images" not in raw:
        raise DataError(f"{instances} is missing or lacks 'images'/'annotations'; pass REFER's instances.json")
    if not Path(dets).is_file():
        raise DataError(f"{dets} not found; pass the detections file dets.json (image id -> boxes)")
    ann_box = {a["id"]: tuple(a["bbox"]) for a in raw["annotations"]}
    truth = GroundingTruth(sizes={im["id"]: (im["height"], im["width"]) for im in raw["images"]})
    for ref in ref_list:
        truth.boxes[ref["ref_id"]] = ann_box[ref["ann_id"]]
        truth.splits[ref["ref_id"]] = ref["split"]
        truth.image_of[ref["ref_id"]] = ref["image_id"]
    for image_id, boxes in json.loads(Path(dets).read_text()).items():
        truth.proposals[int(image_id)] = [tuple(b[:4]) for b in boxes]
    return truth


# ------------------------------------------------------------------------------------------------ dataset
class TaskBatch(NamedTuple):
    """A downstream batch.

    Attributes:
        images: ``[B, 3, H, W]`` (NLVR2: ``[B, 2, 3, H, W]``).
        text_ids: ``[B, L]``.
        concept_ids: ``[B, K]`` (NLVR2: ``[B, 2, K]``), or None.
        targets: class ``[B]``, answer weights ``[B, A]`` (VQA), or image index ``[B]``.
    """

    images: Tensor
    text_ids: Tensor
    concept_ids: Tensor | None
    targets: Tensor


class TaskDataset(Dataset):
    """Tokenised downstream examples with their images (preloaded arrays or files through ``transform``).

    Fine-tuning and evaluation use every stored concept (spec 2.3.3).

    Args:
        examples: the examples.
        tokenizer: the pre-trained model's tokenizer.
        images: path -> ``uint8 [H, W, 3]`` preloaded images (caption world), or None to read files.
        transform: PIL image -> tensor for files.
        use_concepts: return concept ids.
        target: ``example -> tensor``: the training target (class, answer weights, image index).
        max_tokens: text tokens [30 words / 25 tokens in ALBEF's fine-tuning].
        max_concept_tokens: concept-string tokens.
    """

    def __init__(
        self,
        examples: Sequence[TaskExample],
        tokenizer: TextTokenizer,
        images: dict[Path, np.ndarray] | None = None,
        transform: Callable | None = None,
        use_concepts: bool = False,
        target: Callable[[TaskExample], Tensor] | None = None,
        max_tokens: int = 25,
        max_concept_tokens: int = 55,
    ) -> None:
        if images is None and transform is None:
            raise DataError("TaskDataset needs preloaded images or a transform to read image files")
        self.examples = list(examples)
        self.tokenizer = tokenizer
        self.images = images
        self.transform = transform
        self.use_concepts = use_concepts
        self.target = target or (lambda example: torch.tensor(int(example.label)))
        self.max_tokens = max_tokens
        self.max_concept_tokens = max_concept_tokens

    def __len__(self) -> int:
        return len(self.examples)

    def _image(self, path: Path) -> Tensor:
        if self.images is not None:
            return image_to_tensor(self.images[path])
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as handle:
                return self.transform(handle.convert("RGB"))
        except (OSError, UnidentifiedImageError) as error:
            raise DataError(f"cannot read image {path} ({error}); remove the entry or replace the file") from error

    def __getitem__(self, index: int) -> tuple[Tensor, list[int], list[list[int]] | None, Tensor]:
        example = self.examples[index]
        images = torch.stack([self._image(p) for p in example.images])
        text = self.tokenizer.encode(pre_caption(example.text, 30), self.max_tokens)
        concepts = None
        if self.use_concepts:
            kwords = example.kwords or ((),) * len(example.images)
            concepts = [self.tokenizer.encode(" ".join(k), self.max_concept_tokens) for k in kwords]
        return images, text, concepts, self.target(example)


def collate_task(items: Sequence[tuple[Tensor, list[int], list[list[int]] | None, Tensor]]) -> TaskBatch:
    """Stack images (squeezing the image axis of one-image tasks), pad texts and concept strings."""
    images = torch.stack([item[0] for item in items])
    if images.shape[1] == 1:
        images = images[:, 0]
    concepts = None
    if items[0][2] is not None:
        per_image = len(items[0][2])
        flat = pad_ids([ids for item in items for ids in item[2]])
        concepts = flat if per_image == 1 else flat.view(len(items), per_image, -1)
    return TaskBatch(images, pad_ids([item[1] for item in items]), concepts, torch.stack([item[3] for item in items]))


# ------------------------------------------------------------------------------------------------ caption world
def _save_images(world: Any, root: Path, folder: str, prefix: str = "", suffix: str = ".png") -> list[str]:
    """Write the world's images as ``root/folder/<prefix><index>.<suffix>``; return the paths relative to ``root``."""
    from PIL import Image

    (root / folder).mkdir(parents=True, exist_ok=True)
    names = []
    for index, image in enumerate(world.images):
        name = f"{folder}/{prefix}{index:06d}{suffix}"
        Image.fromarray(image).save(root / name, **({"quality": 95} if suffix == ".jpg" else {}))
        names.append(name)
    return names


#: where a task's images live under the writer's root (SNLI-VE ids are file names in one Flickr30k folder)
def task_image_root(task: str, root: str | Path) -> Path:
    """The image root of a written task: ``root`` (paths in the JSON are relative to it), SNLI-VE's image folder."""
    return Path(root) / "flickr30k-images" if task == "ve" else Path(root)


def write_task_world(task: str, root: str | Path, split: str, n: int, seed: int, image_size: int) -> dict[str, Path]:
    """Generate one split of a task from the caption world in its official layout under ``root``; return its files.

    Every label comes from the scene graphs (:mod:`frugalvision.data.caption_world`): exact answers, statement
    truth values, entailment labels and object boxes.

    Args:
        task: one of :data:`TASKS`.
        root: output folder.
        split: "train" or a test split name ("test", "val").
        n: images (NLVR2: image pairs).
        seed: world seed.
        image_size: image side.
    """
    import importlib

    cw = importlib.import_module("frugalvision.data.caption_world")  # the package re-exports a function of that name

    root = Path(root)
    rng = np.random.default_rng(seed + 7919)
    min_objects = 2 if task == "grounding" else 1
    world = cw.caption_world(n * (2 if task == "nlvr" else 1), seed, image_size, 3, unique_captions=split != "train")
    keep = [i for i, s in enumerate(world.scenes) if len(s.objects) >= min_objects]
    if task == "ve":
        names = [Path(p).stem for p in _save_images(world, root, "flickr30k-images", split, ".jpg")]
    else:
        names = _save_images(world, root, f"images/{task}-{split}")
    files: dict[str, Path] = {}
    if task == "retrieval":
        if split == "train":
            rows = [{"image": names[i], "caption": c, "image_id": i} for i in keep for c in world.scenes[i].captions]
        else:
            rows = [{"image": names[i], "caption": list(world.scenes[i].captions)} for i in keep]
    elif task == "vqa":
        rows = []
        for i in keep:
            questions = cw.vqa_questions(world.scenes[i], rng)
            for q in rng.choice(len(questions), min(3, len(questions)), replace=False):
                question, answer = questions[int(q)]
                rows.append({"question_id": len(rows), "question": question, "answer": [answer] * 10, "image": names[i],
                             "dataset": "vqa"})  # fmt: skip
        answers = sorted({r["answer"][0] for r in rows})
        files["answer_list"] = root / f"answer_list_{split}.json"
        files["answer_list"].write_text(json.dumps(answers))
    elif task == "nlvr":
        rows = []
        for pair in range(n):
            left, right = world.scenes[2 * pair], world.scenes[2 * pair + 1]
            sentence, truth = cw.nlvr_statement(left, right, rng)
            rows.append({"images": [names[2 * pair], names[2 * pair + 1]], "sentence": sentence, "label": str(truth)})
    elif task == "ve":
        labels = list(VE_LABELS)
        rows = []
        for i in keep:
            label = labels[int(rng.integers(3))]
            rows.append({"image": names[i], "sentence": cw.entailment_hypothesis(world.scenes[i], label, rng),
                         "label": label})  # fmt: skip
    elif task == "grounding":
        rows, refs, annotations = [], [], []
        for i in keep:
            scene = world.scenes[i]
            for k in range(len(scene.objects)):
                text = cw.referring_expression(scene, k)
                if text is None:
                    continue
                ref_id, ann_id = len(refs), len(annotations)
                annotations.append({"id": ann_id, "image_id": i, "bbox": list(world.boxes[i][k]), "category_id": 1})
                refs.append({"ref_id": ref_id, "ann_id": ann_id, "image_id": i, "split": split,
                             "sentences": [{"sent": text}], "category_id": 1})  # fmt: skip
                rows.append({"image": names[i], "text": text, "ref_id": ref_id})
        refer = root / "data" / f"refcoco+-{split}"
        refer.mkdir(parents=True, exist_ok=True)
        (refer / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
        images = [{"id": i, "height": image_size, "width": image_size, "file_name": names[i]} for i in keep]
        (refer / "instances.json").write_text(json.dumps({"images": images, "annotations": annotations}))
        dets = {str(i): [list(b) for b in world.boxes[i]] for i in keep}
        (root / f"dets_{split}.json").write_text(json.dumps(dets))
        files.update(refs=refer / "refs(unc).p", instances=refer / "instances.json", dets=root / f"dets_{split}.json")
    else:
        raise DataError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    name = {"grounding": "refcoco+", "ve": "ve", "nlvr": "nlvr", "vqa": "vqa", "retrieval": "retrieval"}[task]
    files["json"] = root / f"{name}_{split}.json"
    files["json"].write_text(json.dumps(rows))
    return files
