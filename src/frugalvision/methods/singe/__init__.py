"""SInGE (arXiv:2207.04089): integrated-gradient channel relevance for structured pruning, entwined with fine-tuning.

Public API: ``prune(model, example_inputs, loader, target_macs=0.5, rounds=5, finetune_steps=150)`` prunes a user's
own classifier with the SInGE criterion entwined with fine-tuning and returns the physically smaller ``nn.Module``
(:mod:`.api`). For finer control: ``pruning.SInGEImportance`` (a Torch-Pruning ``Importance``),
``pruning.compute_scores`` (every criterion), ``task.prune_and_finetune`` (the flowchart, with its history) and
``pruning.save_pruned`` / ``load_pruned`` (plan + safetensors).

Pure functions in :mod:`.functional`, Torch-Pruning plumbing in :mod:`.pruning`, ViT MLP units and heads in
:mod:`.vit`, the engine adapter and the flowchart in :mod:`.task`, data in :mod:`.data`, latency in :mod:`.bench`,
the experiment declaration (harness units, verdicts, the variant study) in :mod:`.experiment`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["prune"]

if TYPE_CHECKING:
    from frugalvision.methods.singe.api import prune


def __getattr__(name: str) -> Any:
    if name == "prune":
        from frugalvision.methods.singe.api import prune

        return prune
    raise AttributeError(f"module 'frugalvision.methods.singe' has no attribute {name!r}")
