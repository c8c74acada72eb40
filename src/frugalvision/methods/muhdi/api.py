"""The public API: adapt a segmenter to the next target domain, evaluate it on every domain seen so far.

``adapt_to_next_domain(previous, source, target)`` is one step of continual UDA: it starts from the previous step's
segmenter (and discriminators), trains on the labelled source and the *unlabelled* new target only (no earlier
target), and returns the new segmenter; ``Adapted.inference_model()`` is the test model (agnostic main head only).
``evaluate_domains`` scores a segmenter on named labelled sets; :func:`accuracy_summary` turns the scores after every
step into the accuracy matrix, mean mIoU and forgetting.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from frugalvision.methods.muhdi.functional import forgetting
from frugalvision.methods.muhdi.model import export_agnostic
from frugalvision.methods.muhdi.task import SegmentationEval, StepSettings, UdaStep
from frugalvision.nn.deeplab import DeepLabV2

if TYPE_CHECKING:
    from frugalvision.engine import Engine, FitResult, LoopConfig

__all__ = ["Adapted", "accuracy_summary", "adapt_to_next_domain", "evaluate_domains", "fit_step", "step_loop"]


@dataclass
class Adapted:
    """The outcome of one adaptation step.

    Attributes:
        model: the new segmenter with all its branches (last iterate, eval mode, on the CPU).
        discriminators: its discriminators (to restore at the next step), or None.
        best_model: the snapshot with the best validation mIoU on the new target (when a validation set was given).
        best_step: the step of that snapshot (-1 without one).
        head_origin: branch -> where its heads came from at the start of the step.
        history: the engine's logged rows (losses, learning rate, validation mIoU).
    """

    model: DeepLabV2
    discriminators: nn.ModuleDict | None
    best_model: DeepLabV2 | None = None
    best_step: int = -1
    head_origin: dict[str, str] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)

    def inference_model(self, best: bool = False) -> DeepLabV2:
        """The test model: backbone + agnostic main head (of the best snapshot with ``best=True``)."""
        source = self.best_model if best and self.best_model is not None else self.model
        return export_agnostic(source).eval()


def step_loop(steps: int, batch_size: int = 1, lr: float = 2.5e-4, **changes: Any) -> LoopConfig:
    """The official optimisation loop: ``steps`` iterations of SGD at ``lr`` with poly decay (power 0.9)."""
    from frugalvision.engine import LoopConfig

    loop = LoopConfig(max_steps=steps, batch_size=batch_size, lr=lr, schedule="poly", poly_power=0.9, weight_decay=0.0)
    return replace(loop, **{"log_every": max(1, steps // 20), **changes})


def fit_step(fit: Callable[[UdaStep, LoopConfig], FitResult], task: UdaStep, loop: LoopConfig) -> Adapted:
    """Train one step through ``fit`` (``engine.fit`` or the harness's ``ctx.fit``) and package its outcome."""
    result = fit(task, loop)
    trained = result.model
    model = copy.deepcopy(trained.segmenter).cpu().eval()
    discriminators = copy.deepcopy(trained.discriminators).cpu() if trained.discriminators is not None else None
    best_model = None
    if task.best["state"]:
        best_model = copy.deepcopy(model)
        best_model.load_state_dict(task.best["state"])
    return Adapted(model, discriminators, best_model, int(task.best["step"]), dict(task.head_origin), result.history)


def adapt_to_next_domain(
    previous: DeepLabV2,
    source: Dataset,
    target: Dataset,
    *,
    method: str = "muhdi",
    steps: int = 1000,
    batch_size: int = 1,
    lr: float = 2.5e-4,
    settings: StepSettings | None = None,
    discriminators: nn.ModuleDict | Mapping[str, Tensor] | None = None,
    discriminator_width: int = 64,
    select: Dataset | None = None,
    eval_every: int = 0,
    engine: Engine | None = None,
    run_dir: str | Path | None = None,
    seed: int = 0,
) -> Adapted:
    """One continual-UDA step: adapt ``previous`` to the unlabelled ``target`` while keeping the labelled ``source``.

    Args:
        previous: the segmenter after the previous step (a :class:`~frugalvision.nn.deeplab.DeepLabV2`; left
            unchanged). MuHDi distils it (frozen) into the new model.
        source: labelled source set of ``(image (3, H, W) in [0, 1], labels (H, W))``.
        target: the new target's images (labels, if any, are never read).
        method: "muhdi" (default) or "advent" (plain adversarial fine-tuning, the sequential baseline).
        steps: iterations.
        batch_size: source and target images per iteration (official: 1 + 1).
        lr: the segmenter's peak learning rate (heads x10; poly decay).
        settings: every loss weight and option (default: the official values); ``method`` overrides its method.
        discriminators: the previous step's discriminators (or their state), restored when given.
        discriminator_width: base channels of new discriminators (ADVENT: 64), when none are given.
        select: labelled validation set of the new target: keeps the best snapshot (evaluated every ``eval_every``).
        eval_every: validation period in steps (0: only at the end).
        engine: the engine (default: one process on the model's device).
        run_dir: checkpoint folder (None: no checkpoints).
        seed: seed of the data order and of fresh heads.

    Returns:
        The new segmenter, its discriminators and the best-on-validation snapshot.
    """
    from frugalvision.engine import Engine, FabricConfig

    settings = replace(settings or StepSettings(), method=method)  # type: ignore[arg-type]
    if engine is None:
        device = next(previous.parameters()).device
        engine = Engine(
            FabricConfig(accelerator="cuda" if device.type == "cuda" else "cpu", devices="1"), progress=False
        )
    d_state = discriminators.state_dict() if isinstance(discriminators, nn.Module) else discriminators
    width = int(d_state["main.0.weight"].shape[0]) if d_state else discriminator_width
    task = UdaStep(settings, source, target, previous, None, d_state, width, select)
    loop = step_loop(steps, batch_size, lr, seed=seed, eval_every=eval_every if select is not None else 0)
    loop = replace(loop, ckpt_every_s=0.0 if run_dir is None else loop.ckpt_every_s)
    return fit_step(lambda t, lp: engine.fit(t, lp, run_dir=run_dir), task, loop)


@torch.no_grad()
def evaluate_domains(
    model: nn.Module, datasets: Mapping[str, Dataset], engine: Engine | None = None, batch_size: int = 8
) -> dict[str, dict[str, float]]:
    """MIoU and per-class IoU of ``model(images)`` (the agnostic main head) on each named labelled set.

    Args:
        model: a segmenter (its ``forward`` returns upsampled logits).
        datasets: name -> set of ``(image, labels, ...)``.
        engine: the engine that shards the evaluation over its processes (default: one CPU/GPU process).
        batch_size: images per batch and process.
    """
    from frugalvision.engine import Engine, FabricConfig

    if engine is None:
        device = next(model.parameters()).device
        engine = Engine(
            FabricConfig(accelerator="cuda" if device.type == "cuda" else "cpu", devices="1"), progress=False
        )
    num_classes = getattr(model, "num_classes", 7)
    model = model.to(engine.device)
    return engine.evaluate(SegmentationEval(num_classes), model, dict(datasets), batch_size=batch_size)


def accuracy_summary(matrix: Sequence[Sequence[float]]) -> dict[str, float]:
    """Mean mIoU, forgetting and plasticity of a continual run from its accuracy matrix.

    Args:
        matrix: ``A[step][domain]``: the mIoU after step i on target j (target j learned at step j).

    Returns:
        ``mean_miou`` (last row, over the targets seen), ``forgetting`` (mean over the targets learned before the
        last step; NaN with one step), ``plasticity`` (mean of ``A[j][j]``).
    """
    a = torch.as_tensor(matrix, dtype=torch.float64)
    steps = a.shape[0]
    drops = forgetting(a[:, :steps])
    return {
        "mean_miou": float(a[-1, :steps].mean()),
        "forgetting": float(drops.mean()) if drops.numel() else float("nan"),
        "plasticity": float(a.diagonal()[:steps].mean()),
    }
