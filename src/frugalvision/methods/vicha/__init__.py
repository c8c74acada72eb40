"""ViCHA (arXiv:2208.13628): efficient vision-language pre-training with visual concepts and hierarchical alignment.

Central functions and classes, for your own images and captions:

* :func:`pretrain` ``(train_json, image_root, ...)``: pre-train on ALBEF-format caption JSON (with ``kwords``);
* :func:`score_pairs` ``(model, tokenizer, images, captions, concepts)``: ITC cosine and ITM match probability;
* :func:`extract_concepts` ``(folder, vocabulary, scorer, k)``: the top-k visual concepts of every image of a folder;
* :func:`finetune` ``(checkpoint, task, train, test)``: fine-tune a pre-trained checkpoint on retrieval, VQA, NLVR2,
  SNLI-VE or weakly supervised grounding, from the examples of the task loaders (:func:`load_vqa_json`, ...);
* :class:`ViCHAModel` with :class:`ModelConfig` (the online model; ``encode_image``, ``encode_text``, ``fuse``,
  ``itm_logits`` for downstream heads), :func:`momentum_copy`, :func:`pretrain_losses`;
* the objectives as pure functions: :func:`itc_distill_loss`, :func:`gathered_infonce` (H-ITC level with rank
  offsets), :func:`sample_negatives`, :func:`mask_tokens`, :func:`mim_loss`, :func:`patchify`, :func:`enqueue`,
  :func:`ema_update`; concepts: :func:`mine_vocabulary`, :func:`top_k_concepts`, :func:`train_dual_encoder`.

The names are imported on first use, so ``import frugalvision.methods.vicha`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from frugalvision.methods.vicha.api import extract_concepts, pretrain, score_pairs
    from frugalvision.methods.vicha.concepts import (
        DualEncoderScorer,
        assign_concepts,
        mine_vocabulary,
        open_clip_scorer,
        top_k_concepts,
        train_dual_encoder,
    )
    from frugalvision.methods.vicha.data import CaptionDataset, CaptionEntry, collate_batch, load_caption_json
    from frugalvision.methods.vicha.finetuning import finetune
    from frugalvision.methods.vicha.functional import (
        ema_update,
        enqueue,
        gathered_infonce,
        itc_distill_loss,
        mask_tokens,
        mim_loss,
        patchify,
        sample_negatives,
        unpatchify,
    )
    from frugalvision.methods.vicha.model import Batch, ModelConfig, ViCHAModel, momentum_copy
    from frugalvision.methods.vicha.objectives import FeatureQueue, ObjectiveConfig, pretrain_losses
    from frugalvision.methods.vicha.task import ViCHATask
    from frugalvision.methods.vicha.task_data import (
        load_grounding,
        load_grounding_json,
        load_nlvr_json,
        load_retrieval_json,
        load_ve_json,
        load_vqa_json,
    )
    from frugalvision.methods.vicha.text import WordTokenizer

_EXPORTS = {
    "extract_concepts": "api",
    "pretrain": "api",
    "score_pairs": "api",
    "DualEncoderScorer": "concepts",
    "assign_concepts": "concepts",
    "mine_vocabulary": "concepts",
    "open_clip_scorer": "concepts",
    "top_k_concepts": "concepts",
    "train_dual_encoder": "concepts",
    "CaptionDataset": "data",
    "CaptionEntry": "data",
    "collate_batch": "data",
    "load_caption_json": "data",
    "finetune": "finetuning",
    "load_grounding": "task_data",
    "load_grounding_json": "task_data",
    "load_nlvr_json": "task_data",
    "load_retrieval_json": "task_data",
    "load_ve_json": "task_data",
    "load_vqa_json": "task_data",
    "ema_update": "functional",
    "enqueue": "functional",
    "gathered_infonce": "functional",
    "itc_distill_loss": "functional",
    "mask_tokens": "functional",
    "mim_loss": "functional",
    "patchify": "functional",
    "sample_negatives": "functional",
    "unpatchify": "functional",
    "Batch": "model",
    "ModelConfig": "model",
    "ViCHAModel": "model",
    "momentum_copy": "model",
    "FeatureQueue": "objectives",
    "ObjectiveConfig": "objectives",
    "pretrain_losses": "objectives",
    "ViCHATask": "task",
    "WordTokenizer": "text",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
