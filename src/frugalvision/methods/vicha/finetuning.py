"""Fine-tuning a pre-trained ViCHA on a downstream task: engine task, evaluation protocols, public API.

Tasks (ALBEF's recipes, which ViCHA uses): retrieval (ITC with same-image positives + ITM with hard negatives of
other images; test: ITM re-ranking of the ITC top-k), VQA (answer classifier, our reading of ALBEF's decoder), NLVR2
(two-image fusion), SNLI-VE (three-way classifier), weakly supervised grounding (retrieval training on expressions;
test: Grad-CAM of the ITM score on a fusion layer's cross-attention, detector proposals scored by the map).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn
from torch.utils.data import Dataset

from frugalvision.engine import LoopConfig, Task
from frugalvision.errors import ConfigError, DataError
from frugalvision.methods.vicha.downstream import (
    answer_targets,
    box_iou,
    build_answer_vocabulary,
    distill_classification_loss,
    gradcam_map,
    itm_rerank,
    multi_caption_recall,
    retrieval_itc_loss,
    same_id,
    score_proposals,
    weighted_answer_loss,
)
from frugalvision.methods.vicha.functional import ema_update
from frugalvision.methods.vicha.heads import NLVRClassifier, VLClassifier, gradcam_layer, strip_for
from frugalvision.methods.vicha.model import ViCHAModel
from frugalvision.methods.vicha.objectives import itm_loss
from frugalvision.methods.vicha.task_data import (
    TASKS,
    GroundingTruth,
    TaskBatch,
    TaskDataset,
    TaskExample,
    collate_task,
)
from frugalvision.methods.vicha.text import TextTokenizer, pre_caption

__all__ = [
    "PAPER_FINETUNE",
    "PRIMARY_METRIC",
    "FinetuneTask",
    "Finetuned",
    "TaskData",
    "build_head_model",
    "evaluate_grounding",
    "evaluate_retrieval",
    "finetune",
    "task_datasets",
]

#: the paper's fine-tuning learning rate and epochs per task (spec 2.4)
PAPER_FINETUNE = {"retrieval": (1e-5, 5), "vqa": (2e-5, 8), "nlvr": (2e-5, 10), "ve": (2e-5, 5), "grounding": (1e-5, 5)}
#: the metric each task is judged on
PRIMARY_METRIC = {"retrieval": "r1_mean", "vqa": "vqa_acc", "nlvr": "acc", "ve": "acc", "grounding": "acc"}


@dataclass
class TaskData:
    """One task's examples and what its evaluation needs.

    Attributes:
        task: one of :data:`~.task_data.TASKS`.
        train: training examples.
        test: test examples.
        images: path -> preloaded ``uint8`` image (the caption world), or None to read files.
        answers: the VQA answer vocabulary.
        truth: grounding ground truth and proposals.
        chance: the metric of a guess (the verdict's floor).
    """

    task: str
    train: list[TaskExample]
    test: list[TaskExample]
    images: dict[Path, np.ndarray] | None = None
    answers: list[str] = field(default_factory=list)
    truth: GroundingTruth | None = None
    chance: float = 0.0


def build_head_model(task: str, base: ViCHAModel, answers: Sequence[str] = ()) -> nn.Module:
    """The fine-tuned model of a task on a (pre-trained) base model (changed in place)."""
    if task in ("retrieval", "grounding"):
        return strip_for(base, task)
    if task == "vqa":
        if not answers:
            raise DataError("VQA needs an answer vocabulary; build it with build_answer_vocabulary on the train set")
        return VLClassifier(base, len(answers))
    if task == "ve":
        return VLClassifier(base, 3)
    if task == "nlvr":
        return NLVRClassifier(base)
    raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")


def _base(model: nn.Module) -> ViCHAModel:
    return model if isinstance(model, ViCHAModel) else model.model


def task_datasets(
    data: TaskData, tokenizer: TextTokenizer, use_concepts: bool, transforms: tuple[Any, Any] = (None, None)
) -> tuple[TaskDataset, TaskDataset]:
    """Training and test datasets of a task (VQA: answer weights to train, answer counts to score)."""
    train_target: Callable[[TaskExample], Tensor] | None = None
    test_target: Callable[[TaskExample], Tensor] | None = None
    if data.task == "vqa":
        train_target = lambda e: answer_targets([e.label], data.answers)[0]  # noqa: E731
        test_target = lambda e: answer_targets([e.label], data.answers)[0] * len(e.label)  # noqa: E731
    elif data.task in ("retrieval", "grounding"):
        test_target = lambda e: torch.tensor(0)  # noqa: E731  (evaluated by their own protocols)
    common = {"tokenizer": tokenizer, "images": data.images, "use_concepts": use_concepts}
    train = TaskDataset(data.train, transform=transforms[0], target=train_target, **common)
    test = TaskDataset(data.test, transform=transforms[1], target=test_target, **common)
    return train, test


class FinetuneTask(Task):
    """Fine-tune a downstream model (:func:`build_head_model`); optional momentum distillation as ALBEF.

    Args:
        task: the task.
        model_fn: builds the model (from the pre-trained weights).
        train_set: training examples.
        eval_sets: classification test sets (retrieval and grounding are evaluated by their own protocols).
        distill: momentum distillation (ALBEF: on) with ``alpha`` and EMA decay ``momentum``.
        alpha: distillation weight [0.4].
        momentum: EMA decay [0.995].
    """

    def __init__(
        self,
        task: str,
        model_fn: Callable[[], nn.Module],
        train_set: Dataset,
        eval_sets: dict[str, Dataset] | None = None,
        distill: bool = False,
        alpha: float = 0.4,
        momentum: float = 0.995,
    ) -> None:
        self.task = task
        self.model_fn = model_fn
        self.train_set = train_set
        self.eval_sets = eval_sets or {}
        self.distill = distill
        self.alpha = alpha
        self.decay = momentum
        self.momentum: nn.Module | None = None

    def build_model(self) -> nn.Module:
        """The model, and its momentum copy when distilling."""
        model = self.model_fn()
        if self.distill:
            self.momentum = copy.deepcopy(model).requires_grad_(False)
        return model

    def train_dataset(self) -> Dataset:
        """Training examples."""
        return self.train_set

    def collate(self):
        """Stack images, pad texts and concepts."""
        return collate_task

    def _momentum_on(self, reference: Tensor) -> nn.Module | None:
        if self.momentum is not None and next(self.momentum.parameters()).device != reference.device:
            self.momentum.to(reference.device)
        return self.momentum

    def training_step(self, model: nn.Module, batch: TaskBatch, step: int) -> tuple[Tensor, dict[str, float]]:
        """The task's loss on one batch."""
        momentum = self._momentum_on(batch.images)
        alpha = self.alpha if momentum is not None else 0.0
        if self.task in ("retrieval", "grounding"):
            return retrieval_finetune_loss(model, momentum, batch, alpha)
        logits = model(batch)
        logits_m = None
        if momentum is not None:
            with torch.no_grad():
                logits_m = momentum(batch)
        if self.task == "vqa":
            loss = weighted_answer_loss(logits, batch.targets)
            if logits_m is not None:
                soft = -(F.log_softmax(logits.float(), 1) * F.softmax(logits_m.float(), 1)).sum(1).mean()
                loss = (1 - alpha) * loss + alpha * soft
        else:
            loss = distill_classification_loss(logits, batch.targets, logits_m, alpha)
        return loss, {"loss_task": float(loss.detach())}

    def on_step_end(self, model: nn.Module, step: int) -> None:
        """EMA of the momentum copy."""
        if self.momentum is not None:
            ema_update(self.momentum, model, self.decay)

    def state_dict(self) -> dict[str, Any]:
        """The momentum weights (checkpointed)."""
        if self.momentum is None:
            return {}
        return {"momentum": {k: v.detach().cpu().clone() for k, v in self.momentum.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the momentum weights."""
        if state and self.momentum is not None:
            self.momentum.load_state_dict(state["momentum"])

    def eval_datasets(self) -> dict[str, Dataset]:
        """The classification test sets."""
        return self.eval_sets if self.task in ("vqa", "nlvr", "ve") else {}

    @torch.no_grad()
    def eval_step(self, model: nn.Module, batch: TaskBatch) -> dict[str, Tensor]:
        """Logits and targets."""
        return {"logits": model(batch).float(), "targets": batch.targets.float()}

    def eval_metrics(self, outputs: dict[str, Tensor]) -> dict[str, float]:
        """Accuracy (NLVR2, SNLI-VE) or VQA accuracy ``min(1, count of the predicted answer / 3)``."""
        prediction = outputs["logits"].argmax(1)
        if self.task == "vqa":
            counts = outputs["targets"].gather(1, prediction[:, None])[:, 0]
            return {"vqa_acc": float((counts / 3).clamp(max=1).mean())}
        return {"acc": float((prediction == outputs["targets"].long()).float().mean())}


def retrieval_finetune_loss(
    model: ViCHAModel, momentum: ViCHAModel | None, batch: TaskBatch, alpha: float
) -> tuple[Tensor, dict[str, float]]:
    """ITC with same-image positives (+ distillation) and ITM with hard negatives from other images."""
    with torch.no_grad():
        model.temp.clamp_(0.001, 0.5)
    concepts = batch.concept_ids if model.uses_concepts else None
    image, text = model.encode_image(batch.images, concepts), model.encode_text(batch.text_ids)
    image_feat, text_feat = model.image_feature(image), model.text_feature(text)
    image_feat_m = text_feat_m = None
    if momentum is not None:
        with torch.no_grad():
            image_feat_m = momentum.image_feature(momentum.encode_image(batch.images, concepts))
            text_feat_m = momentum.text_feature(momentum.encode_text(batch.text_ids))
    loss_itc = retrieval_itc_loss(image_feat, text_feat, batch.targets, model.temp, image_feat_m, text_feat_m, alpha)
    with torch.no_grad():
        sim = image_feat @ text_feat.T / model.temp
    loss_itm = itm_loss(model, image, text, sim, sim.T, exclude=same_id(batch.targets))
    loss = loss_itc + loss_itm
    return loss, {"loss_itc": float(loss_itc.detach()), "loss_itm": float(loss_itm.detach())}


# ------------------------------------------------------------------------------------------------ evaluation
def _batches(dataset: TaskDataset, batch_size: int) -> list[TaskBatch]:
    return [
        collate_task([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        for start in range(0, len(dataset), batch_size)
    ]


@torch.no_grad()
def evaluate_retrieval(
    model: ViCHAModel, dataset: TaskDataset, tokenizer: TextTokenizer, k_test: int = 16, batch_size: int = 64
) -> dict[str, float]:
    """ALBEF's retrieval test: ITC similarities, ITM scores of each query's top ``k_test``, recall with all captions.

    ``dataset`` holds one example per image whose ``label`` is the tuple of its captions.
    """
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    tokens, valid, image_feat = [], [], []
    for batch in _batches(dataset, batch_size):
        concepts = batch.concept_ids.to(device) if model.uses_concepts and batch.concept_ids is not None else None
        image = model.encode_image(batch.images.to(device), concepts)
        tokens.append(image.tokens), valid.append(image.valid), image_feat.append(model.image_feature(image))
    captions = [(i, c) for i, e in enumerate(dataset.examples) for c in e.label]
    txt2img = [i for i, _ in captions]
    img2txt = [[j for j, (i, _) in enumerate(captions) if i == image] for image in range(len(dataset))]
    states, text_valid, text_feat = [], [], []
    max_len = max(len(tokenizer.encode(pre_caption(c, 30), 25)) for _, c in captions)
    for start in range(0, len(captions), batch_size):
        from frugalvision.methods.vicha.data import pad_ids

        ids = pad_ids([tokenizer.encode(pre_caption(c, 30), 25) for _, c in captions[start : start + batch_size]])
        ids = F.pad(ids, (0, max_len - ids.shape[1])).to(device)
        text = model.encode_text(ids)
        states.append(text.states), text_valid.append(text.valid), text_feat.append(model.text_feature(text))
    image_tokens, image_valid, image_feat_t = torch.cat(tokens), torch.cat(valid), torch.cat(image_feat)
    text_states, text_valid_t, text_feat_t = torch.cat(states), torch.cat(text_valid), torch.cat(text_feat)
    sim = (image_feat_t @ text_feat_t.T).float().cpu()

    def itm(image_index: Tensor, text_index: Tensor) -> Tensor:
        scores = []
        for start in range(0, len(image_index), batch_size):
            i, t = image_index[start : start + batch_size], text_index[start : start + batch_size]
            fused = model.fuse(text_states[t], text_valid_t[t], image_tokens[i], image_valid[i])
            scores.append(model.itm_logits(fused, text_valid_t[t])[:, 1])
        return torch.cat(scores)

    score_i2t = itm_rerank(sim, k_test, lambda q, c: itm(q, c))
    score_t2i = itm_rerank(sim.T.contiguous(), k_test, lambda q, c: itm(c, q))
    model.train(was)
    metrics = multi_caption_recall(score_i2t, score_t2i, img2txt, txt2img)
    itc = multi_caption_recall(sim, sim.T.contiguous(), img2txt, txt2img)
    metrics["itc_r1_mean"] = itc["r1_mean"]
    return metrics


def evaluate_grounding(
    model: ViCHAModel, dataset: TaskDataset, truth: GroundingTruth, layer: int = -1, batch_size: int = 64
) -> dict[str, float]:
    """Weakly supervised grounding: Grad-CAM of the ITM match score on a fusion layer's cross-attention.

    The map over the patches is resized to the image and each proposal is scored by its mass / sqrt(area); the
    reference counts as correct when the chosen proposal has IoU >= 0.5 with the ground truth (per split and overall).
    """
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    fusion = gradcam_layer(model, layer)
    grid = int(round(model.visual.num_patches**0.5))
    predicted, truths, splits = [], [], []
    fusion.record_cross_attention = True
    try:
        for start, batch in zip(range(0, len(dataset), batch_size), _batches(dataset, batch_size), strict=True):
            cams = gradcam_patches(model, batch, device, fusion)
            for offset, cam in enumerate(cams.view(-1, grid, grid)):
                ref = dataset.examples[start + offset].key
                image_id = truth.image_of[ref]
                boxes = truth.proposals[image_id]
                predicted.append(boxes[score_proposals(cam, truth.sizes[image_id], boxes)])
                truths.append(truth.boxes[ref])
                splits.append(truth.splits[ref])
    finally:
        fusion.record_cross_attention = False
        fusion.cross_attention = None
        model.train(was)
    hits = np.array([box_iou(p, t) >= 0.5 for p, t in zip(predicted, truths, strict=True)])
    metrics = {"acc": float(hits.mean())}
    for split in sorted(set(splits)):
        metrics[f"acc_{split}"] = float(hits[[s == split for s in splits]].mean())
    metrics["chance"] = float(
        np.mean([np.mean([box_iou(b, truth.boxes[e.key]) >= 0.5 for b in truth.proposals[truth.image_of[e.key]]])
                 for e in dataset.examples])
    )  # fmt: skip
    return metrics


def gradcam_patches(model: ViCHAModel, batch: TaskBatch, device: torch.device, fusion: nn.Module) -> Tensor:
    """Grad-CAM ``[B, P]`` over the patches of the ITM match score (the layer must record its cross-attention)."""
    with torch.enable_grad():
        concepts = batch.concept_ids.to(device) if model.uses_concepts and batch.concept_ids is not None else None
        image = model.encode_image(batch.images.to(device), concepts)
        text = model.encode_text(batch.text_ids.to(device))
        fused = model.fuse(text.states, text.valid, image.tokens, image.valid)
        score = model.itm_logits(fused, text.valid)[:, 1].sum()
        probs = fusion.cross_attention
        (grads,) = torch.autograd.grad(score, probs)
    cam = gradcam_map(probs.detach(), grads, text.valid)
    return cam[:, 1 : 1 + model.visual.num_patches]


# ------------------------------------------------------------------------------------------------ public API
@dataclass
class Finetuned:
    """A fine-tuned model, its tokenizer, its test metrics and (VQA) the answer vocabulary."""

    model: nn.Module
    tokenizer: TextTokenizer
    metrics: dict[str, float]
    answers: list[str] = field(default_factory=list)


def finetune(
    checkpoint: str | Path,
    task: str,
    train: Sequence[TaskExample],
    test: Sequence[TaskExample] = (),
    *,
    loop: LoopConfig | None = None,
    image_size: int | None = None,
    truth: GroundingTruth | None = None,
    answers: Sequence[str] | None = None,
    k_test: int = 16,
    distill: bool = False,
    run_dir: str | Path | None = None,
) -> Finetuned:
    """Fine-tune a :func:`~.api.save_pretrained` checkpoint on one task, then evaluate on ``test``.

    The examples are the task loaders' output (e.g. :func:`~.task_data.load_vqa_json` on your JSON).

    Args:
        checkpoint: the pre-trained ViCHA (or ablation) file.
        task: retrieval, vqa, nlvr, ve or grounding.
        train: training examples.
        test: test examples (retrieval: one per image with all captions; grounding: needs ``truth``).
        loop: optimisation (default: the paper's learning rate of the task, 1,000 steps of batch 16).
        image_size: fine-tuning resolution (default: the checkpoint's; positions are interpolated).
        truth: grounding ground truth and proposals (:func:`~.task_data.load_grounding`).
        answers: VQA answer vocabulary (default: every training answer given at least twice).
        k_test: retrieval re-ranking depth.
        distill: momentum distillation.
        run_dir: checkpoints and logs (None: none written).
    """
    from frugalvision.engine import Engine
    from frugalvision.methods.vicha.api import load_pretrained
    from frugalvision.methods.vicha.data import eval_transform, pretrain_transform

    if task not in TASKS:
        raise ConfigError(f"task={task!r} is invalid; choose one of {', '.join(TASKS)}")
    if task == "grounding" and test and truth is None:
        raise DataError("grounding evaluation needs truth=load_grounding(refs, instances, dets)")
    pretrained = load_pretrained(checkpoint, image_size)
    size = pretrained.model.cfg.image_size
    if task == "vqa" and answers is None:
        answers = build_answer_vocabulary((e.label for e in train), min_count=2)
    data = TaskData(task, list(train), list(test), answers=list(answers or ()), truth=truth)
    transforms = (pretrain_transform(size, min_scale=0.5), eval_transform(size))
    uses_concepts = pretrained.model.uses_concepts
    train_set, test_set = task_datasets(data, pretrained.tokenizer, uses_concepts, transforms)
    lr = PAPER_FINETUNE[task][0]
    loop = loop or LoopConfig(max_steps=1000, batch_size=16, lr=lr, weight_decay=0.02, warmup_steps=50, min_lr=lr / 10)

    def build() -> nn.Module:
        return build_head_model(task, load_pretrained(checkpoint, image_size).model, data.answers)

    finetune_task = FinetuneTask(task, build, train_set, {"test": test_set} if test else {}, distill=distill)
    result = Engine(progress=False).fit(finetune_task, loop, run_dir=run_dir)
    metrics = dict(result.metrics.get("test", {}))
    if test and task == "retrieval":
        metrics = evaluate_retrieval(result.model, test_set, pretrained.tokenizer, k_test)
    elif test and task == "grounding":
        assert truth is not None
        metrics = evaluate_grounding(result.model, test_set, truth)
    return Finetuned(result.model, pretrained.tokenizer, metrics, data.answers)
