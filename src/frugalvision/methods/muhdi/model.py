"""MuHDi's modules: segmenter branches, ADVENT's discriminators, one iteration's graph, teacher, heads, export.

The segmenter with its branches, ADVENT's entropy discriminators, one iteration's graph wiring, the frozen teacher,
the head initialisation across steps and the exported (agnostic-only) inference model.

Branch names: ``agnostic`` (the target-agnostic heads A_aux, A_main: the only ones used at test time, and the only
branch of ADVENT models) and ``specialist`` (S_aux, S_main: adversarially adapted to the current target, then
teaching the agnostic heads).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

from frugalvision.errors import ConfigError
from frugalvision.methods.muhdi.functional import self_information, upsample
from frugalvision.nn.deeplab import ASPPClassifier, DeepLabV2, deeplab_v2

__all__ = [
    "AGNOSTIC",
    "SPECIALIST",
    "AdaptationModel",
    "ModelSettings",
    "build_segmenter",
    "entropy_discriminator",
    "export_agnostic",
    "frozen_call",
    "fresh_heads",
    "make_discriminators",
    "make_teacher",
    "with_branches",
]

AGNOSTIC, SPECIALIST = "agnostic", "specialist"
HeadInit = Literal["carry", "official"]


@dataclass(frozen=True)
class ModelSettings:
    """Architecture of the segmenter and discriminators.

    Attributes:
        backbone: "resnet101" / "resnet50" (torchvision, output stride 8) or "tiny" (CPU).
        widths: stage widths of the tiny backbone.
        blocks: blocks per stage of the tiny backbone.
        maxpool: the tiny backbone's stem max-pool (False: output stride 4).
        aspp_dilations: dilations of the ASPP classifiers (DeepLab-V2: 6, 12, 18, 24).
        discriminator_width: base channels of the discriminators (ADVENT: 64).
        normalization: input normalisation of [0, 1] RGB images: "imagenet" (torchvision weights) or "caffe".
        feature_tap: features distilled by POD: "post_relu" (the official code) or "pre_relu" (the paper's text).
        backbone_weights: torchvision-layout ImageNet checkpoint of the ResNet (safetensors), or None.
    """

    backbone: str = "resnet101"
    widths: tuple[int, ...] = (16, 32, 64, 128)
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    maxpool: bool = True
    aspp_dilations: tuple[int, ...] = (6, 12, 18, 24)
    discriminator_width: int = 64
    normalization: Literal["imagenet", "caffe"] = "imagenet"
    feature_tap: Literal["post_relu", "pre_relu"] = "post_relu"
    backbone_weights: str | None = None


def build_segmenter(settings: ModelSettings, num_classes: int, branches: tuple[str, ...] = (AGNOSTIC,)) -> DeepLabV2:
    """A DeepLab-V2 with the given branches (ADVENT: agnostic only; MuHDi: agnostic and specialist)."""
    extra: dict[str, Any] = {}
    if settings.backbone == "tiny":
        extra = {"widths": settings.widths, "blocks": settings.blocks, "maxpool": settings.maxpool}
    return deeplab_v2(
        settings.backbone,
        num_classes,
        branches,
        weights=settings.backbone_weights,
        dilations=settings.aspp_dilations,
        normalization=settings.normalization,
        tap=settings.feature_tap,
        **extra,
    )


def entropy_discriminator(num_classes: int, width: int = 64) -> nn.Sequential:
    """ADVENT's fully convolutional discriminator: five 4x4 stride-2 convolutions (w, 2w, 4w, 8w, 1), LeakyReLU 0.2."""
    layers: list[nn.Module] = []
    channels = [num_classes, width, 2 * width, 4 * width, 8 * width]
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
    layers.append(nn.Conv2d(channels[-1], 1, 4, 2, 1))
    return nn.Sequential(*layers)


def frozen_call(module: nn.Module, inputs: Tensor) -> Tensor:
    """``module(inputs)`` with detached parameters: the gradient reaches ``inputs`` but never the module's weights."""
    state = {name: p.detach() for name, p in module.named_parameters()}
    state.update(dict(module.named_buffers()))
    return functional_call(module, state, (inputs,))


class AdaptationModel(nn.Module):
    """The trainable part of one UDA step: the segmenter and (for adversarial steps) the discriminators.

    ``model(source, target)`` runs one iteration's graph and returns the tensors every loss needs;
    ``model(images)`` is inference with the agnostic main head (upsampled logits).

    Args:
        segmenter: the DeepLab-V2 being trained.
        discriminators: ``{"main": D_main, "aux": D_aux}`` or None (no adversarial alignment).
        adapt_branch: the branch adapted on the target (agnostic for ADVENT, specialist for MuHDi).
    """

    def __init__(self, segmenter: DeepLabV2, discriminators: nn.ModuleDict | None, adapt_branch: str = AGNOSTIC):
        super().__init__()
        if adapt_branch not in segmenter.branches:
            raise ConfigError(f"adapt_branch={adapt_branch!r} is not a branch of the segmenter {segmenter.branches}")
        self.segmenter = segmenter
        self.discriminators = discriminators
        self.adapt_branch = adapt_branch

    def forward(self, source: Tensor, target: Tensor | None = None, train: bool = False) -> Any:
        """Inference (``model(images)``) or one training iteration's outputs (``train=True``; target optional)."""
        if not train:
            return self.segmenter(source)
        # separate forwards, as the official code: BatchNorm normalises each domain's batch with its own statistics
        src = self.segmenter.forward_all(source)
        out: dict[str, Any] = {"source": {"logits": src.logits, "features": src.features}}
        if target is None:
            return out
        trg = self.segmenter.forward_all(target)
        out["target"] = {"logits": trg.logits, "features": trg.features}
        if self.discriminators is not None:
            out.update(self._discriminate(src.logits[self.adapt_branch], trg.logits[self.adapt_branch], source, target))
        return out

    def _discriminate(
        self, source_logits: tuple[Tensor | None, Tensor], target_logits: tuple[Tensor | None, Tensor], source, target
    ) -> dict[str, dict[str, Tensor]]:
        """D outputs: on the target maps with frozen weights (adversarial term), on detached maps (D's own loss)."""
        assert self.discriminators is not None
        adversarial, d_source, d_target = {}, {}, {}
        for level, s_logits, t_logits in zip(("aux", "main"), source_logits, target_logits):
            if s_logits is None or level not in self.discriminators:
                continue
            disc = self.discriminators[level]
            s_map = self_information(torch.softmax(upsample(s_logits, source.shape[-2:]), dim=1))
            t_map = self_information(torch.softmax(upsample(t_logits, target.shape[-2:]), dim=1))
            adversarial[level] = frozen_call(disc, t_map)
            d_source[level], d_target[level] = disc(s_map.detach()), disc(t_map.detach())
        return {"adversarial": adversarial, "d_source": d_source, "d_target": d_target}


def make_discriminators(num_classes: int, width: int, aux: bool = True) -> nn.ModuleDict:
    """Fresh ``{"main", "aux"}`` entropy discriminators."""
    levels = ("main", "aux") if aux else ("main",)
    return nn.ModuleDict({level: entropy_discriminator(num_classes, width) for level in levels})


def with_branches(
    previous: DeepLabV2,
    branches: tuple[str, ...],
    policy: HeadInit = "carry",
    new_branch: Literal["fresh", "agnostic"] = "fresh",
) -> tuple[DeepLabV2, dict[str, str]]:
    """A new segmenter for the next step: the previous backbone and the requested branches.

    Heads, by ``policy``:

    * ``"carry"`` (ours): a branch that existed before keeps its previous heads.
    * ``"official"``: the official state-dict loop (``scripts/train.py``): as ``carry``, except that the agnostic
      heads are overwritten by the previous *specialist* heads when the previous model has them (step 3 onwards).

    A branch the previous model lacks (the specialist at the first MuHDi step) gets fresh heads (N(0, 0.01), drawn
    from the current RNG: the official choice) with ``new_branch="fresh"``, or a copy of the previous agnostic heads
    with ``new_branch="agnostic"`` (a warm start).

    Returns:
        The new segmenter and, per branch, where its heads came from ("previous agnostic", "previous specialist"
        or "fresh").
    """
    if policy not in ("carry", "official") or new_branch not in ("fresh", "agnostic"):
        raise ConfigError(
            f"head_init={policy!r} / specialist_init={new_branch!r} is invalid; use carry|official and fresh|agnostic"
        )
    model = copy.deepcopy(previous)
    old = previous.classifiers
    heads, origin = nn.ModuleDict(), {}
    for branch in branches:
        source = branch if branch in old else None
        if policy == "official" and branch == AGNOSTIC and SPECIALIST in old and SPECIALIST in branches:
            source = SPECIALIST
        if source is None and new_branch == "agnostic" and AGNOSTIC in old:
            source = AGNOSTIC
        if source is None:
            heads[branch] = fresh_heads(previous)
            origin[branch] = "fresh"
        else:
            heads[branch] = copy.deepcopy(old[source])
            origin[branch] = f"previous {source}"
    model.classifiers = heads
    return model, origin


def fresh_heads(model: DeepLabV2) -> nn.ModuleDict:
    """New (aux, main) ASPP classifiers shaped like ``model``'s."""
    c3, c4 = model.backbone.channels[2], model.backbone.channels[3]
    heads = {"main": ASPPClassifier(c4, model.num_classes, model.dilations)}
    if model.aux:
        heads["aux"] = ASPPClassifier(c3, model.num_classes, model.dilations)
    return nn.ModuleDict(heads)


def make_teacher(previous: DeepLabV2) -> DeepLabV2:
    """The frozen previous model: backbone + agnostic heads, eval mode, no trainable parameter."""
    teacher = export_agnostic(previous, keep_aux=True)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher.eval()


def export_agnostic(model: DeepLabV2, keep_aux: bool = False) -> DeepLabV2:
    """A copy of ``model`` with only the agnostic branch (and, by default, only its main head): the test model."""
    exported = copy.deepcopy(model)
    keep = exported.classifiers[AGNOSTIC]
    if not keep_aux and "aux" in keep:
        del keep["aux"]
        exported.aux = False
    exported.classifiers = nn.ModuleDict({AGNOSTIC: keep})
    return exported
