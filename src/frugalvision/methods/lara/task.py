"""Engine adapter: BEV segmentation training (weighted BCE) and dataset-level IoU evaluation."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from frugalvision.engine import Task
from frugalvision.methods.lara.functional import PAPER_POS_WEIGHT, BevIoU, bev_bce
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
    """

    def __init__(
        self,
        model_fn: Callable[[], nn.Module],
        train_set: Dataset,
        eval_sets: dict[str, Dataset],
        grid: BevGrid,
        pos_weight: float = PAPER_POS_WEIGHT,
        radial_bins: tuple[tuple[float, float], ...] = (),
    ) -> None:
        self.model_fn, self.train_set, self.eval_sets = model_fn, train_set, eval_sets
        self.grid, self.pos_weight, self.radial_bins = grid, pos_weight, radial_bins

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
        return meter.compute()
