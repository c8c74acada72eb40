"""Downstream models on a (pre-trained) :class:`~.model.ViCHAModel`: the ALBEF heads ViCHA fine-tunes.

* retrieval and weakly supervised grounding use the model itself (ITC features, ITM head);
* :class:`VLClassifier`: fused text-and-image representation -> ``Linear, ReLU, Linear`` (SNLI-VE's three classes as
  ALBEF; VQA as a classifier over the answer vocabulary, our reading: ALBEF decodes answers with a 6-layer decoder);
* :class:`NLVRClassifier`: ALBEF's two-image fusion (each fusion layer doubled, one copy per image) and a 2-way head.

:func:`strip_for` removes the parts a task does not use (no unused parameters under DDP).
"""

from __future__ import annotations

from torch import Tensor, nn

from frugalvision.methods.vicha.model import ViCHAModel
from frugalvision.methods.vicha.task_data import TaskBatch
from frugalvision.nn.xbert import TwoImageFusion

__all__ = ["ClassifierHead", "NLVRClassifier", "VLClassifier", "gradcam_layer", "strip_for"]


class ClassifierHead(nn.Sequential):
    """ALBEF's classification head: ``Linear(w, w), ReLU, Linear(w, classes)``."""

    def __init__(self, width: int, classes: int) -> None:
        super().__init__(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, classes))


def strip_for(model: ViCHAModel, task: str) -> ViCHAModel:
    """Drop the parts a task does not use; the model is changed in place and returned.

    Always the pre-training-only parts (MIM decoder, H-ITC heads, MLM transform); for the classifiers also the ITC
    projections, the temperature and the ITM head.
    """
    model.mim_decoder = None
    model.hitc_vision, model.hitc_text, model.level_pairs = nn.ModuleList(), nn.ModuleList(), []
    model.text.mlm = None
    if task not in ("retrieval", "grounding"):
        model.vision_proj = model.text_proj = model.itm_head = None
        if hasattr(model, "temp"):
            del model.temp
    return model


def _concepts(model: ViCHAModel, concept_ids: Tensor | None) -> Tensor | None:
    return concept_ids if model.uses_concepts else None


class VLClassifier(nn.Module):
    """Image + text -> class logits through the fusion layers (SNLI-VE; VQA over an answer vocabulary).

    Args:
        model: the (pre-trained) ViCHA model; stripped of the parts classification does not use.
        classes: number of outputs.
    """

    def __init__(self, model: ViCHAModel, classes: int) -> None:
        super().__init__()
        self.model = strip_for(model, "classification")
        self.head = ClassifierHead(model.text.width, classes)

    def forward(self, batch: TaskBatch) -> Tensor:
        """Logits ``[B, classes]`` of a :class:`~.task_data.TaskBatch`."""
        image = self.model.encode_image(batch.images, _concepts(self.model, batch.concept_ids))
        text = self.model.encode_text(batch.text_ids)
        fused = self.model.fuse(text.states, text.valid, image.tokens, image.valid)
        return self.head(self.model.pool_text(fused, text.valid))


class NLVRClassifier(nn.Module):
    """NLVR2: the text attends to the left image in the first copy of each fusion layer and to the right in the second.

    Both copies start from the pre-trained fusion layer and share its cross-attention key and value projections
    (ALBEF). ALBEF first trains the doubled layers for one epoch on a text-assignment task over the pre-training
    data; that step is not reproduced here (README).

    Args:
        model: the (pre-trained) ViCHA model.
    """

    def __init__(self, model: ViCHAModel) -> None:
        super().__init__()
        self.model = strip_for(model, "classification")
        self.fusion = TwoImageFusion(list(model.text.fusion_layers))
        model.text.fusion_layers = nn.ModuleList()
        self.head = ClassifierHead(model.text.width, 2)

    def forward(self, batch: TaskBatch) -> Tensor:
        """Logits ``[B, 2]`` (1 = the statement is true) of a batch with images ``[B, 2, 3, H, W]``."""
        n = batch.images.shape[0]
        concepts = batch.concept_ids.flatten(0, 1) if batch.concept_ids is not None else None
        image = self.model.encode_image(batch.images.flatten(0, 1), _concepts(self.model, concepts))
        tokens, valid = image.tokens.view(n, 2, *image.tokens.shape[1:]), image.valid.view(n, 2, -1)
        text = self.model.encode_text(batch.text_ids)
        fused = self.fusion(text.states, text.valid, (tokens[:, 0], tokens[:, 1]), (valid[:, 0], valid[:, 1]))
        return self.head(self.model.pool_text(fused, text.valid))


def gradcam_layer(model: ViCHAModel, layer: int = -1) -> nn.Module:
    """The fusion layer whose cross-attention Grad-CAM reads (ALBEF: the third of six, ``block_num=8``)."""
    return model.text.fusion_layers[layer]
