"""A tiny deterministic task shared by the engine tests (and the kill-and-resume subprocess)."""

from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.data import TensorDataset

from frugalvision.engine import Task


class ToyTask(Task):
    """Linear classification of Gaussian blobs with a 2-layer MLP and dropout (uses the RNG in every step)."""

    def __init__(self, n: int = 96, dim: int = 8, classes: int = 3, sleep_s: float = 0.0, nan_at: int = -1):
        generator = torch.Generator().manual_seed(1234)
        self.x = torch.randn(n, dim, generator=generator)
        self.y = torch.randint(0, classes, (n,), generator=generator)
        self.x += torch.nn.functional.one_hot(self.y, dim).float() * 2
        self.dim, self.classes, self.sleep_s, self.nan_at = dim, classes, sleep_s, nan_at

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(self.dim, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, self.classes))

    def train_dataset(self):
        return TensorDataset(self.x, self.y)

    def eval_datasets(self):
        return {"val": TensorDataset(self.x[:40], self.y[:40])}

    def training_step(self, model, batch, step):
        if self.sleep_s:
            time.sleep(self.sleep_s)
        inputs, targets = batch
        loss = nn.functional.cross_entropy(model(inputs), targets)
        if step == self.nan_at:
            loss = loss * float("nan")
        return loss, {"ce": loss.item()}
