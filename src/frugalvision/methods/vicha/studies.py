"""ViCHA's downstream studies on the harness: one study per task, rows scratch / ALBEF-style / ViCHA pre-trained.

``frugal run vicha --study <retrieval|vqa|nlvr|ve|grounding>``. Every row is fine-tuned with the same steps, batch
and learning rate on the same task data (equal fine-tuning compute); the pre-trained rows start from the albef and
vicha models of the main study's pre-training with the same config and seed (made once and cached, shared by every
study), the scratch row from the encoders the pre-training starts from. Offline each task is generated from the
caption world in its official layout, with exact labels, and read back with the real loaders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from frugalvision.engine.config import LoopConfig
from frugalvision.harness import (
    Context,
    Precondition,
    Study,
    Unit,
    UnitResult,
    Verdict,
    claim_verdict,
    compare,
    metric_values,
)
from frugalvision.methods.vicha.config import ViCHAConfig
from frugalvision.methods.vicha.data import image_to_tensor
from frugalvision.methods.vicha.downstream import build_answer_vocabulary
from frugalvision.methods.vicha.finetuning import (
    PAPER_FINETUNE,
    PRIMARY_METRIC,
    FinetuneTask,
    TaskData,
    build_head_model,
    evaluate_grounding,
    evaluate_retrieval,
    task_datasets,
)
from frugalvision.methods.vicha.task_data import (
    TASKS,
    load_grounding,
    load_grounding_json,
    load_nlvr_json,
    load_retrieval_json,
    load_ve_json,
    load_vqa_json,
    task_image_root,
    write_task_world,
)

__all__ = ["STUDIES", "downstream_verdict", "load_task_data", "run_finetune_unit"]

CLAIM = (
    "ViCHA's pre-training transfers better than the ALBEF-style pre-training at equal pre-training data and equal "
    "fine-tuning compute (the paper's downstream tables: retrieval, VQA, NLVR2, SNLI-VE, RefCOCO+)."
)
#: the official file names under ``--data-root`` (annotations/ and image folders), per task and split
REAL_FILES = {
    "retrieval": ("annotations/coco_train.json", "annotations/coco_test.json", "coco"),
    "vqa": ("annotations/vqa_train.json", "annotations/vqa_val.json", "coco"),
    "nlvr": ("annotations/nlvr_train.json", "annotations/nlvr_dev.json", "nlvr2"),
    "ve": ("annotations/ve_train.json", "annotations/ve_test.json", "flickr30k-images"),
    "grounding": ("annotations/refcoco+_train.json", "annotations/refcoco+_val.json", "coco"),
}


# ------------------------------------------------------------------------------------------------ data
def _concepts_for(ctx: Context[ViCHAConfig], paths: list[Path], images: dict[Path, np.ndarray]) -> dict[Path, list]:
    """The top-k concepts of each task image, by the scorer that assigned the pre-training concepts."""
    from frugalvision.methods.vicha.concepts import assign_concepts
    from frugalvision.methods.vicha.experiment import concept_scorer, concepts_dir, load_data

    pdata = ctx.memo("data", lambda: load_data(ctx))
    out = concepts_dir(ctx, pdata.root)
    stats = json.loads((out / "stats.json").read_text())
    scorer, _ = concept_scorer(ctx.config, pdata.root, out)
    stacked = torch.stack([image_to_tensor(images[p]) for p in paths])
    return dict(zip(paths, assign_concepts(scorer, stacked, stats["vocabulary"], stats["k"]), strict=True))


def _with_concepts(json_path: Path, task: str, root: Path, concepts: dict[Path, list]) -> None:
    images = task_image_root(task, root)
    rows = json.loads(json_path.read_text())
    for row in rows:
        if task == "nlvr":
            row["kwords1"], row["kwords2"] = (concepts[images / p] for p in row["images"])
        else:
            row["kwords"] = concepts[images / (f"{row['image']}.jpg" if task == "ve" else row["image"])]
    json_path.write_text(json.dumps(rows))


def _read(task: str, files: dict[str, Path], root: Path, train: bool) -> list:
    json_path = files["json"]
    if task == "retrieval":
        return load_retrieval_json(json_path, root, train)
    if task == "vqa":
        return load_vqa_json([json_path], root)
    if task == "nlvr":
        return load_nlvr_json([json_path], root)
    if task == "ve":
        return load_ve_json(json_path, root)
    return load_grounding_json([json_path], root, train)


def _world_files(ctx: Context[ViCHAConfig], task: str) -> tuple[Path, dict[str, dict[str, Path]]]:
    """Write a task's caption-world train and test splits (official layout, with concepts) once, rank 0 first."""
    from frugalvision.methods.vicha.experiment import _key

    c = ctx.config
    seed = c.data_seed + 100 + 10 * TASKS.index(task)
    root = ctx.cache_path(f"task-{task}-{_key(c.finetune_train, c.finetune_test, c.image_size, seed, c.concept_k)}")

    def build() -> dict[str, dict[str, Path]]:
        done = root / "files.json"
        if not done.is_file():
            files = {
                "train": write_task_world(task, root, "train", c.finetune_train, seed, c.image_size),
                "test": write_task_world(task, root, "test", c.finetune_test, seed + 1, c.image_size),
            }
            images = _preload(root)
            concepts = _concepts_for(ctx, sorted(images), images)
            for split in files.values():
                _with_concepts(split["json"], task, root, concepts)
            done.write_text(json.dumps({s: {k: str(v) for k, v in f.items()} for s, f in files.items()}))
        raw = json.loads(done.read_text())
        return {s: {k: Path(v) for k, v in f.items()} for s, f in raw.items()}

    return root, ctx.main_first(build)


def _preload(root: Path) -> dict[Path, np.ndarray]:
    from PIL import Image

    paths = sorted(p for p in root.rglob("*") if p.suffix in (".png", ".jpg"))
    return {p: np.array(Image.open(p).convert("RGB")) for p in paths}


def load_task_data(ctx: Context[ViCHAConfig], task: str) -> TaskData:
    """A task's examples: the caption world's (generated once) or the user's official files under ``--data-root``."""
    c = ctx.config
    if c.dataset == "albef-json":
        assert c.data_root is not None
        train_file, test_file, images = REAL_FILES[task]
        root = Path(c.data_root)
        files = {"train": {"json": root / train_file}, "test": {"json": root / test_file}}
        if task == "grounding":
            refer = root / "refcoco+"
            files["test"].update(refs=refer / "refs(unc).p", instances=refer / "instances.json")
            files["test"]["dets"] = root / "annotations/dets.json"
        image_root, preloaded = root / images, None
    else:
        root, files = _world_files(ctx, task)
        image_root, preloaded = task_image_root(task, root), _preload(root)
    train = _read(task, files["train"], image_root, train=True)
    test = _read(task, files["test"], image_root, train=False)
    data = TaskData(task, train, test, preloaded)
    if task == "vqa":
        data.answers = build_answer_vocabulary(e.label for e in train)
    if task == "grounding":
        test_files = files["test"]
        data.truth = load_grounding(test_files["refs"], test_files["instances"], test_files["dets"])
    data.chance = _chance(data)
    return data


def _chance(data: TaskData) -> float:
    """The primary metric of a data-only guess: majority class / answer; 1 / images for retrieval (grounding: later)."""
    if data.task == "retrieval":
        return 1.0 / len(data.test)
    if data.task == "vqa":
        majority = build_answer_vocabulary(e.label for e in data.train)[0]
        return float(np.mean([min(1.0, sum(a == majority for a in e.label) / 3) for e in data.test]))
    if data.task in ("nlvr", "ve"):
        counts = np.bincount([int(e.label) for e in data.test])
        return float(counts.max() / counts.sum())
    return 0.0


# ------------------------------------------------------------------------------------------------ units
def _base_model(ctx: Context[ViCHAConfig], row: str) -> Any:
    """The start of a row: the cached pre-trained albef / vicha model (pre-trained here if missing) or scratch."""
    from frugalvision.methods.vicha.api import load_pretrained
    from frugalvision.methods.vicha.experiment import load_data, pretrain_arm, pretrained_path
    from frugalvision.methods.vicha.model import ViCHAModel, load_vision_weights
    from frugalvision.methods.vicha.text import SubsetTokenizer

    c = ctx.config
    pdata = ctx.memo("data", lambda: load_data(ctx))
    if row == "scratch":
        kept = pdata.tokenizer.kept if isinstance(pdata.tokenizer, SubsetTokenizer) else ()
        cfg = c.model(len(pdata.tokenizer), "albef", kept)

        def scratch() -> ViCHAModel:
            model = ViCHAModel(cfg)
            weights = pdata.vision_weights or c.vision_weights
            if weights:
                load_vision_weights(model, str(weights))
            return model

        return scratch, pdata.tokenizer
    path = pretrained_path(ctx, row, ctx.seed)
    if not path.is_file():
        pretrain_arm(ctx, row, pdata, name=f"pretrain-{row}")
    return (lambda: load_pretrained(path).model), pdata.tokenizer


def finetune_loop(c: ViCHAConfig, task: str, train_size: int, world_size: int) -> LoopConfig:
    """The fine-tuning loop: the config's steps and rate, or the paper's epochs and rate of the task (when 0)."""
    lr = c.finetune_lr or PAPER_FINETUNE[task][0]
    per_epoch = max(1, train_size // (c.finetune_batch * world_size))
    steps = c.finetune_steps or PAPER_FINETUNE[task][1] * per_epoch
    log = max(1, steps // 10)
    return LoopConfig(
        max_steps=steps,
        batch_size=c.finetune_batch,
        lr=lr,
        weight_decay=0.02,
        warmup_steps=min(c.finetune_warmup, steps // 2),
        min_lr=lr / 10,
        log_every=log,
        num_workers=c.loop.num_workers,
    )


def run_finetune_unit(ctx: Context[ViCHAConfig], unit: Unit, task: str) -> UnitResult:
    """Fine-tune one row on one task for one seed and evaluate it with the task's protocol."""
    c = ctx.config
    data = ctx.memo(("task", task), lambda: load_task_data(ctx, task))
    make_base, tokenizer = _base_model(ctx, unit.name)
    probe = make_base()
    uses_concepts = probe.uses_concepts
    del probe
    train_set, test_set = task_datasets(data, tokenizer, uses_concepts)
    finetune_task = FinetuneTask(
        task,
        lambda: build_head_model(task, make_base(), data.answers),
        train_set,
        {"test": test_set},
        distill=c.finetune_distill,
        alpha=c.alpha,
        momentum=c.momentum,
    )
    result = ctx.fit(finetune_task, finetune_loop(c, task, len(train_set), ctx.engine.world_size), name="finetune")
    if task == "retrieval":
        metrics = evaluate_retrieval(result.model, test_set, tokenizer, c.finetune_k_test)
    elif task == "grounding":
        assert data.truth is not None
        metrics = evaluate_grounding(result.model, test_set, data.truth, c.finetune_layer)
    else:
        metrics = dict(result.metrics["test"])
    metrics.setdefault("chance", data.chance)
    metrics.update(train_s=result.wall_s, train_examples=float(len(train_set)), test_examples=float(len(test_set)))
    curve = [[h["step"], h["loss"]] for h in result.history if "loss" in h]
    return UnitResult.one_row(unit, metrics, dataset=f"{c.dataset}:{task}", curve=curve)


# ------------------------------------------------------------------------------------------------ verdict
def _mean(rows: list[dict[str, Any]], metric: str, name: str) -> float:
    values = list(metric_values(rows, metric, name).values())
    return sum(values) / len(values) if values else float("nan")


def downstream_verdict(task: str, rows: list[dict[str, Any]]) -> Verdict:
    """The downstream verdict of one task, computed from its rows.

    Supported iff both pre-trained rows beat the task's chance level on average and ViCHA's paired gain over the
    ALBEF-style row has its one-sided 95 % lower bound above 0; the rows against scratch are secondary evidence.
    """
    metric = PRIMARY_METRIC[task]
    names = {row["name"] for row in rows}
    chance = _mean(rows, "chance", "albef") if "albef" in names else 0.0
    preconditions = [
        Precondition(f"{name} beats chance on {metric}", _mean(rows, metric, name) > chance,
                     f"{_mean(rows, metric, name):.4f} vs chance {chance:.4f}")
        for name in ("albef", "vicha")
    ]  # fmt: skip
    has_both = {"albef", "vicha"} <= names
    main = claim_verdict(
        [compare(rows, metric, "vicha", "albef")] if has_both else [_empty(metric)],
        preconditions,
        claim="ViCHA pre-training transfers better than ALBEF-style pre-training",
    )
    secondary = tuple(
        "secondary (outside the rule): " + compare(rows, metric, name, "scratch").describe()
        for name in ("albef", "vicha")
        if {name, "scratch"} <= names
    )
    rule = main.rule + "; the pre-trained rows against scratch are secondary evidence outside the rule"
    return Verdict(main.verdict, rule, main.evidence + secondary, main.comparisons)


def _empty(metric: str) -> Any:
    from frugalvision.harness import Comparison

    return Comparison(metric, "vicha", "albef", ())


def _study(task: str) -> Study[ViCHAConfig]:
    def verdict(config: ViCHAConfig, rows: list[dict[str, Any]]) -> Verdict:
        return downstream_verdict(task, rows)

    def notes(config: ViCHAConfig, records: list[Any]) -> str:
        loop = finetune_loop(config, task, int(config.finetune_train), 1)
        return (
            f"{task}: rows {', '.join(config.finetune_rows)} fine-tuned {loop.max_steps} steps x batch "
            f"{loop.batch_size} at lr {loop.lr:g} (equal for every row); pre-trained rows from this config's "
            f"pre-training ({config.loop.max_steps} steps), cached; metric {PRIMARY_METRIC[task]}"
        )

    return Study(
        claim=CLAIM,
        primary_metric=PRIMARY_METRIC[task],
        run_unit=lambda ctx, unit: run_finetune_unit(ctx, unit, task),
        verdict=verdict,
        arms=lambda config: config.finetune_rows,
        notes=notes,
    )


#: one study per downstream task
STUDIES = {task: _study(task) for task in TASKS}
