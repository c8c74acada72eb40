"""Engine adapter: BEV segmentation training (weighted BCE) and dataset-level IoU evaluation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from frugalvision.engine import Task
from frugalvision.methods.lara.functional import PAPER_POS_WEIGHT, BevIoU, bev_bce, ranking_metrics
from frugalvision.methods.lara.geometry import BevGrid


class BevSegmentation(Task):
    """Any BEV model mapping a sample-dict batch to (B, 1, rows, cols) logits.

    Args:
        model_fn: builds a fresh model.
        train_set: dataset of sample dicts (ToyBEV or nuScenes).
        eval_sets: named evaluation sets.
        grid: the BEV grid.
        pos_weight: positive weight of the BCE.
        radial_bins: distance bins (m) for extra IoUs.
        select_key: ``(eval set, metric)`` whose maximum over the evaluations picks the weights kept (the official
            code keeps the best validation IoU); None keeps the last weights.
    """

    def __init__(
        self,
        model_fn: Callable[[], nn.Module],
        train_set: Dataset,
        eval_sets: dict[str, Dataset],
        grid: BevGrid,
        pos_weight: float = PAPER_POS_WEIGHT,
        radial_bins: tuple[tuple[float, float], ...] = (),
        select_key: tuple[str, str] | None = None,
    ) -> None:
        self.model_fn, self.train_set, self.eval_sets = model_fn, train_set, eval_sets
        self.grid, self.pos_weight, self.radial_bins = grid, pos_weight, radial_bins
        self.select_key = select_key
        self.best_score, self.best_step = float("-inf"), -1
        self.best_weights: dict[str, torch.Tensor] = {}

    def build_model(self) -> nn.Module:
        """Fresh model."""
        return self.model_fn()

    def train_dataset(self) -> Dataset:
        """The training scenes."""
        return self.train_set

    def eval_datasets(self) -> dict[str, Dataset]:
        """The evaluation scenes."""
        return self.eval_sets

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor], step: int):
        """Weighted BCE over every BEV cell."""
        logits = model(batch)
        loss = bev_bce(logits.float(), batch["bev"], self.pos_weight)
        return loss, {}

    @torch.no_grad()
    def eval_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-sample logits, target and visibility map."""
        return {"logits": model(batch).float(), "bev": batch["bev"], "visibility": batch["visibility"]}

    def eval_metrics(self, outputs: dict[str, torch.Tensor]) -> dict[str, float]:
        """IoU@0.5 accumulated over the whole set: "all", "vis ≥ 2" and the radial bins."""
        meter = BevIoU(self.grid, self.radial_bins)
        meter.update(outputs["logits"], outputs["bev"], outputs["visibility"])
        return meter.compute() | ranking_metrics(outputs["logits"].float().sigmoid(), outputs["bev"])

    def on_evaluate(self, model: nn.Module, step: int, metrics: dict[str, dict[str, float]]) -> None:
        """Keep a copy of the weights with the best ``select_key`` value (ties keep the earlier weights)."""
        if self.select_key is None:
            return
        score = metrics.get(self.select_key[0], {}).get(self.select_key[1], float("nan"))
        if score == score and score > self.best_score:
            self.best_score, self.best_step = float(score), int(step)
            self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        """The best weights so far and their step and score (saved in checkpoints: resume stays exact)."""
        return {"best_score": self.best_score, "best_step": self.best_step, "best_weights": self.best_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.best_score = float(state.get("best_score", float("-inf")))
        self.best_step = int(state.get("best_step", -1))
        self.best_weights = dict(state.get("best_weights", {}))
