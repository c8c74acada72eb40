"""T-Food's engine adapter (training, dual-encoder evaluation) and the retrieval protocol with ITM re-ranking."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from frugalvision.engine import LoopConfig, Task, gather_global_batch, rank_and_world_size
from frugalvision.errors import ConfigError
from frugalvision.methods.tfood.data import RecipeImageDataset, class_pair_order, collate_pairs
from frugalvision.methods.tfood.losses import TripletWeights, incremental_margin, itm_loss, triplet_loss
from frugalvision.methods.tfood.model import RecipeOutput, TFoodModel
from frugalvision.methods.tfood.text import RecipeTokens
from frugalvision.metrics import bidirectional_retrieval, retrieval_metrics

__all__ = [
    "LossConfig",
    "TFoodTask",
    "bag_indices",
    "embed_dataset",
    "rerank_similarity",
    "reranked_retrieval",
    "retrieval_protocol",
]

DIRECTIONS = ("image_to_recipe", "recipe_to_image")


@dataclass
class LossConfig:
    """Loss settings of one arm.

    Attributes:
        margin_mode: "fixed" (``margin``), "incremental" (``min(start + delta * epoch, max)``) or "adaptive"
            (AdaMine-style adaptive margin on IRR/RII with ``margin`` as the base).
        margin: fixed / base margin.
        margin_start: alpha_0 of the incremental margin (paper 0.18 with CLIP).
        margin_delta: delta per epoch (paper 0.005).
        margin_max: alpha_max of the incremental margin (paper 0.3).
        adaptive_min: alpha_min of the adaptive margin (0.05).
        adaptive_max: alpha_max of the adaptive margin (0.7).
        semantic_weight: weight of SIRR and SRII (paper 0.1; 0 disables).
        itm_weight: weight of the ITM loss (paper 1.0; 0 disables; needs the MMR).
        itm_temperature: softmax temperature of the hard-negative sampler (official 1.0).
    """

    margin_mode: str = "incremental"
    margin: float = 0.3
    margin_start: float = 0.18
    margin_delta: float = 0.005
    margin_max: float = 0.3
    adaptive_min: float = 0.05
    adaptive_max: float = 0.7
    semantic_weight: float = 0.1
    itm_weight: float = 1.0
    itm_temperature: float = 1.0

    def validate(self) -> None:
        """Raise ConfigError on an invalid value."""
        if self.margin_mode not in ("fixed", "incremental", "adaptive"):
            raise ConfigError(f"margin_mode={self.margin_mode!r} is invalid; use fixed, incremental or adaptive")
        if self.itm_temperature <= 0:
            raise ConfigError(f"itm_temperature={self.itm_temperature} is invalid; use a positive value")


class TFoodTask(Task):
    """Train the dual encoder with the triplet losses (+ ITM through the MMR) and evaluate it by retrieval.

    Args:
        model_fn: builds a fresh :class:`TFoodModel`.
        train_set: training pairs.
        eval_sets: named evaluation pairs.
        loss: loss settings.
        steps_per_epoch: optimiser steps per epoch (the margin schedule is per epoch).
        freeze_image_steps: the image encoder is frozen for these first steps (paper: 20 epochs).
        image_lr_scale: learning rate of the image encoder relative to the rest (paper 0.1: 1e-6 vs 1e-5).
        batch_size: batch size of the class-pair order (0: plain shuffling).
        background_fraction: share of background items per batch.
        protocols: ``(name, bag_size, n_bags)`` retrieval settings of the evaluation.
        eval_seed: seed of the bags.
        select_key: ``(eval set, metric)`` whose maximum selects the kept weights (``on_evaluate``); None keeps none.

    The triplet losses are computed on the global batch gathered from every rank
    (:func:`frugalvision.engine.gather_global_batch`), so a run on N processes computes the loss and gradients of
    one process holding the whole global batch; the ITM loss stays per rank on local pairs (the official code's
    choice; DDP averages it).
    """

    def __init__(
        self,
        model_fn: Callable[[], TFoodModel],
        train_set: RecipeImageDataset,
        eval_sets: dict[str, Dataset] | None,
        loss: LossConfig,
        steps_per_epoch: int,
        freeze_image_steps: int = 0,
        image_lr_scale: float = 0.1,
        batch_size: int = 0,
        background_fraction: float = 0.5,
        protocols: Sequence[tuple[str, int, int]] = (("bag100", 100, 2),),
        eval_seed: int = 0,
        select_key: tuple[str, str] | None = None,
    ) -> None:
        loss.validate()
        self.model_fn = model_fn
        self.train_set = train_set
        self.eval_sets = eval_sets or {}
        self.loss = loss
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.freeze_image_steps = freeze_image_steps
        self.image_lr_scale = image_lr_scale
        self.batch_size = batch_size
        self.background_fraction = background_fraction
        self.protocols = tuple(protocols)
        self.eval_seed = eval_seed
        self.select_key = select_key
        self.best_score = float("-inf")
        self.best_step = -1
        self.best_metrics: dict[str, dict[str, float]] = {}
        self.best_weights: dict[str, Tensor] = {}
        self._optimizer: torch.optim.Optimizer | None = None
        self._image_params: list[nn.Parameter] = []

    def build_model(self) -> nn.Module:
        """Fresh model (the image encoder is kept out of the gradient by ``training_step`` while frozen)."""
        model = self.model_fn()
        if self.loss.itm_weight > 0 and model.mmr is None:
            raise ConfigError("loss.itm_weight > 0 needs the MMR; set mmr_width > 0 or itm_weight = 0")
        return model

    def build_optimizer(self, model: nn.Module, loop: LoopConfig) -> torch.optim.Optimizer:
        """Adam without weight decay; the image encoder at ``image_lr_scale`` x the learning rate."""
        image = {id(p) for p in model.image_encoder.parameters()}
        groups = [
            {"params": [p for p in model.parameters() if id(p) not in image], "lr_scale": 1.0},
            {"params": [p for p in model.parameters() if id(p) in image], "lr_scale": self.image_lr_scale},
        ]
        self._optimizer = torch.optim.Adam(groups, lr=loop.lr, weight_decay=0.0)
        self._image_params = [p for p in model.parameters() if id(p) in image]
        return self._optimizer

    def train_dataset(self) -> Dataset:
        """Training pairs."""
        return self.train_set

    def batch_order(self):
        """Class-pair global batches (half background, half same-class pairs) when ``batch_size`` > 0.

        ``batch_size`` is per process; the order is built for the global batch (``batch_size x world size``), which
        the engine's sampler deals out to the ranks, so its composition does not depend on the number of processes.
        """
        if self.batch_size <= 0:
            return None
        _, world = rank_and_world_size()
        return class_pair_order(self.train_set.labels, self.batch_size * world, self.background_fraction)

    def collate(self):
        """Pad the tokenised recipes."""
        return collate_pairs

    def margin_at(self, step: int) -> float:
        """Margin of the step (incremental: per epoch, closed form)."""
        if self.loss.margin_mode == "incremental":
            epoch = step // self.steps_per_epoch
            return incremental_margin(epoch, self.loss.margin_start, self.loss.margin_delta, self.loss.margin_max)
        return self.loss.margin

    def training_step(self, model: nn.Module, batch: tuple[Tensor, ...], step: int):
        """``L = L_tri + w_itm L_ITM``; the image encoder gets no gradient before ``freeze_image_steps``.

        Freezing never toggles ``requires_grad`` (DDP only synchronises the parameters that required gradients when
        it was set up); at the first trained step the image encoder's Adam state is dropped, so it starts fresh as
        if the parameters had been excluded until then.
        """
        images, title, ingredients, instructions, labels, _ = batch
        frozen = step < self.freeze_image_steps
        if step == self.freeze_image_steps > 0 and self._optimizer is not None:
            for p in self._image_params:
                self._optimizer.state.pop(p, None)
        use_itm = self.loss.itm_weight > 0
        out = model(
            images,
            title,
            ingredients,
            instructions,
            itm=use_itm,
            itm_temperature=self.loss.itm_temperature,
            image_frozen=frozen,
        )
        weights = TripletWeights(sirr=self.loss.semantic_weight, srii=self.loss.semantic_weight)
        margin = self.margin_at(step)
        image_emb, recipe_emb, classes = gather_global_batch(out["image_emb"], out["recipe_emb"], labels)
        loss, logs = triplet_loss(
            image_emb,
            recipe_emb,
            classes,
            margin,
            weights,
            adaptive=self.loss.margin_mode == "adaptive",
            adaptive_bounds=(self.loss.adaptive_min, self.loss.adaptive_max),
        )
        logs["loss_tri"] = float(loss.detach())
        logs["margin"] = margin
        if use_itm:
            l_itm = itm_loss(out["itm_logits"], out["itm_labels"])
            logs["loss_itm"] = float(l_itm.detach())
            loss = loss + self.loss.itm_weight * l_itm
        return loss, logs

    def on_evaluate(self, model: nn.Module, step: int, metrics: dict[str, dict[str, float]]) -> None:
        """Keep a copy of the weights with the best ``select_key`` value (ties keep the earlier weights)."""
        if self.select_key is None:
            return
        name, key = self.select_key
        score = metrics[name][key]
        if score > self.best_score:
            self.best_score, self.best_step = float(score), int(step)
            self.best_metrics = {k: dict(v) for k, v in metrics.items()}
            self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        """The best weights so far, their step, score and metrics (saved in checkpoints: resume stays exact)."""
        return {
            "best_score": self.best_score,
            "best_step": self.best_step,
            "best_metrics": self.best_metrics,
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.best_score = float(state.get("best_score", float("-inf")))
        self.best_step = int(state.get("best_step", -1))
        self.best_metrics = {k: dict(v) for k, v in state.get("best_metrics", {}).items()}
        self.best_weights = dict(state.get("best_weights", {}))

    def eval_datasets(self) -> dict[str, Dataset]:
        """Named evaluation pairs."""
        return self.eval_sets

    @torch.no_grad()
    def eval_step(self, model: nn.Module, batch: tuple[Tensor, ...]) -> dict[str, Tensor]:
        """Dual-encoder embeddings only (the MMR is not used at test time)."""
        images, title, ingredients, instructions, labels, _ = batch
        out = model(images, title, ingredients, instructions)
        return {"image_emb": out["image_emb"].float(), "recipe_emb": out["recipe_emb"].float(), "labels": labels}

    def eval_metrics(self, outputs: dict[str, Tensor]) -> dict[str, float]:
        """R@1/5/10 and medR in both directions for every protocol (and the mean R@1 of the two directions)."""
        return retrieval_protocol(outputs["image_emb"], outputs["recipe_emb"], self.protocols, self.eval_seed)


def retrieval_protocol(
    image_emb: Tensor, recipe_emb: Tensor, protocols: Sequence[tuple[str, int, int]], seed: int = 0
) -> dict[str, float]:
    """Flat ``{"<protocol>/<direction>/<metric>": mean over bags}`` and each metric's ``..._std`` over the bags.

    The bags are those of ``frugalvision.metrics.bagged_retrieval`` (:func:`bag_indices`), scored with
    ``bidirectional_retrieval`` on cosine similarities. ``<protocol>/R@1`` is the mean R@1 of the two directions and
    ``<protocol>/R@1_std`` its standard deviation over the bags (ddof 1).
    """
    image_emb, recipe_emb = F.normalize(image_emb.float(), dim=1), F.normalize(recipe_emb.float(), dim=1)
    metrics: dict[str, float] = {}
    for name, bag_size, n_bags in protocols:
        size = min(bag_size, image_emb.shape[0])
        per_bag: dict[str, list[float]] = {}
        for idx in bag_indices(image_emb.shape[0], size, n_bags, seed):
            res = bidirectional_retrieval(image_emb[idx] @ recipe_emb[idx].T, names=DIRECTIONS)
            for direction, values in res.items():
                for key, value in values.items():
                    per_bag.setdefault(f"{name}/{direction}/{key}", []).append(value)
            per_bag.setdefault(f"{name}/R@1", []).append((res[DIRECTIONS[0]]["R@1"] + res[DIRECTIONS[1]]["R@1"]) / 2)
        for key, values in per_bag.items():
            metrics[key] = float(np.mean(values))
            metrics[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return metrics


def bag_indices(n: int, bag_size: int, n_bags: int, seed: int = 0) -> list[Tensor]:
    """The bags :func:`frugalvision.metrics.bagged_retrieval` draws for the same arguments."""
    gen = torch.Generator().manual_seed(int(seed))
    return [torch.randperm(n, generator=gen)[:bag_size] for _ in range(n_bags)]


def rerank_similarity(sim: Tensor, score_fn: Callable[[Tensor, Tensor], Tensor], k: int) -> Tensor:
    """Re-rank each row's top-``k`` candidates by ``score_fn(rows, cols)`` (the ITM match probability).

    The top-k candidates get ``2 + score`` (above every cosine), the others keep their cosine, so ranks beyond k are
    unchanged and the positive's rank inside the top-k follows the ITM score.
    """
    k = min(k, sim.shape[1])
    top = sim.topk(k, dim=1).indices
    rows = torch.arange(sim.shape[0]).repeat_interleave(k)
    scores = score_fn(rows, top.flatten()).view(sim.shape[0], k).to(sim.dtype)
    return sim.clone().scatter_(1, top, 2.0 + scores)


@torch.no_grad()
def embed_dataset(model: TFoodModel, dataset: RecipeImageDataset, batch_size: int = 256) -> dict[str, Tensor]:
    """Embeddings and the tokens the ITM head needs, for a whole evaluation set (CPU)."""
    was = model.training
    model.eval()
    parts: dict[str, list[Tensor]] = {}
    device = next(model.parameters()).device
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_pairs):
        images, title, ingredients, instructions, _, _ = (t.to(device) for t in batch)
        image_emb, image_tokens = model.embed_images(images)
        recipe_emb, recipe = model.embed_recipes(RecipeTokens(title, ingredients, instructions))
        for key, value in (("image_emb", image_emb), ("recipe_emb", recipe_emb), ("image_tokens", image_tokens)):
            parts.setdefault(key, []).append(value)
        parts.setdefault("recipe_tokens", []).append(recipe.tokens)
        parts.setdefault("recipe_valid", []).append(recipe.valid)
    model.train(was)
    out = {key: torch.cat(parts[key]) for key in ("image_emb", "recipe_emb", "image_tokens")}
    width = max(v.shape[1] for v in parts["recipe_valid"])
    for key in ("recipe_tokens", "recipe_valid"):
        padded = []
        for v in parts[key]:
            full = v.new_zeros((v.shape[0], width, *v.shape[2:]))
            full[:, : v.shape[1]] = v
            padded.append(full)
        out[key] = torch.cat(padded)
    return out


@torch.no_grad()
def reranked_retrieval(
    model: TFoodModel, emb: dict[str, Tensor], bag_size: int, n_bags: int, k: int = 10, seed: int = 0
) -> dict[str, float]:
    """Bagged R@K / medR after re-ranking each query's top-k by the ITM head (both directions, mean over bags)."""
    model.eval()
    totals: dict[str, float] = {}
    bag_size = min(bag_size, emb["image_emb"].shape[0])
    for idx in bag_indices(emb["image_emb"].shape[0], bag_size, n_bags, seed):
        img, rec = emb["image_emb"][idx], emb["recipe_emb"][idx]
        tokens, rtok, rvalid = emb["image_tokens"][idx], emb["recipe_tokens"][idx], emb["recipe_valid"][idx]
        sim = nn.functional.normalize(img, dim=1) @ nn.functional.normalize(rec, dim=1).T

        def itm(image_rows: Tensor, recipe_cols: Tensor, rec=rec, rtok=rtok, rvalid=rvalid, tokens=tokens) -> Tensor:
            recipe = RecipeOutput(rec[recipe_cols], rtok[recipe_cols], rvalid[recipe_cols])
            return model.itm_logits(tokens[image_rows], recipe).softmax(-1)[:, 1]

        i2r = retrieval_metrics(rerank_similarity(sim, itm, k))
        r2i = retrieval_metrics(rerank_similarity(sim.T, lambda r, c: itm(c, r), k))
        for direction, res in zip(DIRECTIONS, (i2r, r2i), strict=True):
            for key, value in res.items():
                totals[f"{direction}/{key}"] = totals.get(f"{direction}/{key}", 0.0) + value / n_bags
    totals["R@1"] = (totals[f"{DIRECTIONS[0]}/R@1"] + totals[f"{DIRECTIONS[1]}/R@1"]) / 2
    return totals
