"""The method registry: every paper of the project, its metadata, and (once implemented) its experiment.

A method becomes runnable when ``frugalvision/methods/<name>/experiment.py`` exists; that module defines
``EXPERIMENT``, a :class:`frugalvision.harness.Experiment` (config class, presets smoke / standard / extended /
paper and any extra ones, the main study, optional studies and benchmark). Listing the registry imports nothing
heavy: a method's modules are imported only when its experiment is loaded.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from frugalvision.errors import ConfigError

if TYPE_CHECKING:
    from frugalvision.harness import Experiment

CORE_PRESETS = ("smoke", "standard", "extended", "paper")
_METHODS_DIR = Path(__file__).resolve().parent / "methods"


@dataclass(frozen=True)
class MethodInfo:
    """Static facts about one registered method.

    Attributes:
        name: short id used on the command line.
        title: paper title (or a description for non-paper experiments).
        arxiv: arXiv identifier, empty for non-paper experiments.
        kind: "paper" for the ten papers, "baseline" for shared reference experiments.
        summary: one line on what the method does.
    """

    name: str
    title: str
    arxiv: str
    kind: Literal["paper", "baseline"]
    summary: str

    @property
    def module_name(self) -> str:
        """Import path of the method's experiment module."""
        return f"frugalvision.methods.{self.name}.experiment"

    @property
    def status(self) -> str:
        """'available' when the experiment module exists, else 'planned' (checked on disk, nothing imported)."""
        return "available" if (_METHODS_DIR / self.name / "experiment.py").is_file() else "planned"

    @property
    def paper(self) -> str:
        """Paper reference as written in results.json (``arXiv:<id>``), or the title for baselines."""
        return f"arXiv:{self.arxiv}" if self.arxiv else self.title

    def load(self) -> Experiment[Any]:
        """Import the experiment module and return its ``EXPERIMENT`` declaration.

        Raises:
            ConfigError: the method is planned but not implemented yet.
        """
        if self.status != "available":
            raise ConfigError(f"method '{self.name}' is planned but not implemented yet; see `frugal list`")
        experiment = importlib.import_module(self.module_name).EXPERIMENT
        if experiment.name != self.name:
            raise ConfigError(f"{self.module_name}.EXPERIMENT is named {experiment.name!r}, not {self.name!r}")
        return experiment


METHODS: dict[str, MethodInfo] = {
    info.name: info
    for info in [
        MethodInfo(
            "baseline",
            "ERM reference on the embedded data (small ViT and ResNet)",
            "",
            "baseline",
            "plain supervised training that every method compares against",
        ),
        MethodInfo(
            "deit3",
            "DeiT III: Revenge of the ViT",
            "2204.07118",
            "paper",
            "supervised ViT recipe: LayerScale, 3-Augment, BCE, LAMB, low-res training then fine-tune",
        ),
        MethodInfo(
            "perceiver",
            "Dynamic Query Selection for Fast Visual Perceiver",
            "2205.10873",
            "paper",
            "Perceiver that runs with fewer latent queries at inference, chosen per image",
        ),
        MethodInfo(
            "mimo",
            "Towards efficient feature sharing in MIMO architectures",
            "2205.10139",
            "paper",
            "multi-input multi-output subnetworks in one network, trained with unmixing",
        ),
        MethodInfo(
            "scimix",
            "Swapping Semantic Contents for Mixing Images (SciMix)",
            "2205.10158",
            "paper",
            "a learned generator mixes labelled and unlabelled images for SSL",
        ),
        MethodInfo(
            "singe",
            "SInGE: Sparsity via Integrated Gradients Estimation of Neuron Relevance",
            "2207.04089",
            "paper",
            "integrated-gradient structured pruning entwined with fine-tuning",
        ),
        MethodInfo(
            "diwa",
            "Diverse Weight Averaging for Out-of-Distribution Generalization",
            "2205.09739",
            "paper",
            "average the weights of diverse fine-tunings from one shared initialisation",
        ),
        MethodInfo(
            "muhdi",
            "Multi-Head Distillation for Continual Unsupervised Domain Adaptation in Semantic Segmentation",
            "2204.11667",
            "paper",
            "adapt a segmenter to new domains in sequence without forgetting",
        ),
        MethodInfo(
            "tfood",
            "Transformer Decoders with MultiModal Regularization for Cross-Modal Food Retrieval",
            "2204.09730",
            "paper",
            "cross-modal recipe retrieval with hierarchical transformers",
        ),
        MethodInfo(
            "vicha",
            "Efficient Vision-Language Pretraining with Visual Concepts and Hierarchical Alignment",
            "2208.13628",
            "paper",
            "vision-language pretraining with concepts and multi-level alignment",
        ),
        MethodInfo(
            "lara",
            "LaRa: Latents and Rays for Multi-Camera Bird's-Eye-View Semantic Segmentation",
            "2206.13294",
            "paper",
            "six cameras to a BEV vehicle map through a compact latent space",
        ),
    ]
}


def get_method(name: str) -> MethodInfo:
    """Look up a method by name.

    Raises:
        ConfigError: the name is not registered (the message lists the valid names).
    """
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}'; choose one of: {', '.join(METHODS)} (see `frugal list`)")
    return METHODS[name]


def available_methods() -> list[str]:
    """Names of the methods whose experiment exists, in registry order."""
    return [name for name, info in METHODS.items() if info.status == "available"]
