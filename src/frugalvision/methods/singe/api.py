"""The public API: SInGE pruning entwined with fine-tuning, on a user's own model and data (no CLI, no run folder)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

if TYPE_CHECKING:
    from frugalvision.engine import Engine
    from frugalvision.methods.singe.pruning import CriterionSettings


def default_settings() -> CriterionSettings:
    """The frozen default reading of the SInGE criterion (``config.SingeCriterion``: taylor_path, gate, layer, K=8)."""
    from frugalvision.methods.singe.config import SingeCriterion
    from frugalvision.methods.singe.pruning import CriterionSettings

    s = SingeCriterion()
    return CriterionSettings(granularity=s.granularity, scope=s.scope, steps=s.steps, rule=s.rule, p=s.p)


def calibration_from(loader: DataLoader, samples: int, device: torch.device) -> list[tuple[Tensor, Tensor]]:
    """The first ``samples`` (inputs, targets) of a loader, as batches on ``device`` (the calibration set D_c)."""
    batches, seen = [], 0
    for inputs, targets in loader:
        take = min(len(inputs), samples - seen)
        batches.append((inputs[:take].to(device), targets[:take].to(device)))
        seen += take
        if seen >= samples:
            break
    if not batches:
        raise ValueError("the loader yielded no batch; pass a loader of (inputs, targets) batches")
    return batches


def prune(
    model: nn.Module,
    example_inputs: Tensor,
    loader: DataLoader,
    target_macs: float = 0.5,
    rounds: int = 5,
    finetune_steps: int = 150,
    lr: float = 0.01,
    calibration: int = 256,
    criterion: str | None = None,
    settings: CriterionSettings | None = None,
    engine: Engine | None = None,
    seed: int = 0,
    channel_multiple: int = 1,
) -> nn.Module:
    """Prune ``model`` to ``target_macs`` of its MACs with SInGE, entwined with fine-tuning (a new module).

    Round t of ``rounds`` scores the current model on the calibration images (the first ``calibration`` samples of
    ``loader``), removes channels (local: the same fraction of every Torch-Pruning group) down to
    1 - (1 - target_macs) t / rounds of the dense MACs, then fine-tunes ``finetune_steps / rounds`` steps
    (cross-entropy, SGD Nesterov, one cosine over all steps) on ``loader.dataset`` at ``loader.batch_size``.
    ``rounds=1`` is prune-once-then-fine-tune; ``finetune_steps=0`` prunes without training.

    Args:
        model: a classifier Torch-Pruning can trace (its last Linear is never pruned); left unchanged.
        example_inputs: one input batch for tracing (e.g. ``x[:1]``).
        loader: (inputs, targets) batches of the user's training data.
        target_macs: fraction of the dense MACs kept, in (0, 1).
        rounds: entwined rounds T.
        finetune_steps: total fine-tuning steps F, shared by the rounds.
        lr: peak learning rate.
        calibration: calibration samples.
        criterion: any criterion of :func:`pruning.compute_scores` (default: the SInGE reading, "taylor_path").
        settings: path-integration settings (default: :func:`default_settings`).
        engine: the engine that fine-tunes (default: one process on the model's device).
        seed: data-order seed.
        channel_multiple: keep channel counts that are multiples of this (e.g. 8: hardware-friendly widths that run
            faster than odd ones at the same MACs; Torch-Pruning's ``round_to``); 1 keeps the exact local counts.

    Returns:
        The physically pruned, fine-tuned model in eval mode.
    """
    from frugalvision.engine import Engine, FabricConfig
    from frugalvision.methods.singe import task as T

    if not 0.0 < target_macs < 1.0:
        raise ValueError(f"target_macs={target_macs} is invalid; pass the fraction of MACs to keep, in (0, 1)")
    device = next(model.parameters()).device
    if engine is None:
        accelerator = "cuda" if device.type == "cuda" else "cpu"
        engine = Engine(FabricConfig(accelerator=accelerator, devices="1"), progress=False)
    batch_size = loader.batch_size or 32
    finetune = T.FinetuneSettings(steps=finetune_steps, batch_size=batch_size, lr=lr)
    run = T.prune_and_finetune(
        engine if finetune_steps > 0 else None,
        model,
        example_inputs.to(device),
        criterion or "taylor_path",
        calibration_from(loader, calibration, device),
        target_macs,
        rounds,
        loader.dataset,
        finetune,
        settings or default_settings(),
        seed=seed,
        ratios=T.RatioCache(model, example_inputs.to(device), channel_multiple),
    )
    return run.model.eval()
