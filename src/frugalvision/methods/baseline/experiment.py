"""The baseline experiment: ERM with a small timm ViT and a small CIFAR-style ResNet on the embedded data.

It proves the pipeline end to end (data -> engine -> results.json -> report) and gives every method its reference
numbers on the same data, preset and machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from frugalvision.data.arrays import ArrayDataset, ImageArrays
from frugalvision.data.sources import available_default_source, load_source
from frugalvision.data.splits import stratified_split, stratified_subset
from frugalvision.engine import Engine, FabricConfig, LoopConfig, latest_checkpoint
from frugalvision.errors import ConfigError
from frugalvision.experiment import RunConfig, apply_threads
from frugalvision.nn import cifar_resnet, small_vit
from frugalvision.registry import get_method
from frugalvision.report import bar_plot, line_plot, make_results, summarize, write_results
from frugalvision.tasks import SupervisedClassification

METHOD = "baseline"
CLAIM = (
    "Plain ERM with a small ViT and a small ResNet learns the embedded data far above chance; these are the "
    "reference numbers every method is compared with."
)
MODELS = ("vit", "resnet")


@dataclass
class BaselineConfig(RunConfig):
    """Baseline experiment settings.

    Attributes:
        models: which models to train ("vit", "resnet").
        train_size: training images (class-stratified subset of the source's training split).
        val_size: validation images (disjoint from the training images).
        test_size: test images (from the source's test split).
        vit_patch: ViT patch size (the image size must be a multiple).
        vit_dim: ViT width.
        vit_depth: ViT blocks.
        vit_heads: ViT attention heads.
        resnet_depth: CIFAR ResNet depth (6n+2).
        resnet_width: CIFAR ResNet first-stage width.
        loop: optimisation settings shared by both models.
    """

    models: tuple[str, ...] = MODELS
    train_size: int = 12000
    val_size: int = 2000
    test_size: int = 5000
    vit_patch: int = 7
    vit_dim: int = 64
    vit_depth: int = 4
    vit_heads: int = 4
    resnet_depth: int = 20
    resnet_width: int = 16
    loop: LoopConfig = field(
        default_factory=lambda: LoopConfig(max_steps=400, batch_size=64, lr=2e-3, warmup_steps=40, log_every=20)
    )

    def validate(self) -> None:
        """Check every field (one-line ConfigError naming the field and the fix)."""
        super().validate()
        self.loop.validate()
        unknown = [m for m in self.models if m not in MODELS]
        if unknown or not self.models:
            raise ConfigError(f"models={self.models!r} is invalid; choose among {', '.join(MODELS)}")
        for name in ("train_size", "val_size", "test_size", "vit_patch", "vit_dim", "vit_depth", "vit_heads"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} is invalid; it must be a positive integer")
        if self.vit_dim % self.vit_heads:
            raise ConfigError(f"vit_dim={self.vit_dim} is not divisible by vit_heads={self.vit_heads}; change one")
        if (self.resnet_depth - 2) % 6:
            raise ConfigError(f"resnet_depth={self.resnet_depth} is invalid; use 6n+2 (20, 32, 56)")


def smoke() -> BaselineConfig:
    """Seconds: 2,000 training images of the default offline source (Fashion-MNIST, else MNIST-5k), one seed.

    (A ViT on scikit-learn's 8x8 digits stayed at chance for 200 steps, so the smoke run uses 28 px images.)
    """
    return BaselineConfig(
        preset="smoke",
        threads=1,
        seeds=(0,),
        train_size=2000,
        val_size=200,
        test_size=500,
        vit_dim=32,
        vit_depth=2,
        vit_heads=2,
        resnet_depth=8,
        resnet_width=8,
        loop=LoopConfig(max_steps=150, batch_size=32, lr=3e-3, warmup_steps=15, log_every=10),
    )


def standard() -> BaselineConfig:
    """Minutes on 2 CPU cores: Fashion-MNIST 12k/2k/5k, 3 seeds, 400 steps per model.

    One torch thread: these models are too small to gain from more, and spinning OpenMP threads on a busy 2-core
    machine slow them down by an order of magnitude.
    """
    return BaselineConfig(preset="standard", threads=1)


def paper() -> BaselineConfig:
    """The full Fashion-MNIST training set, longer schedule (GPU scale for a reference run)."""
    return BaselineConfig(
        preset="paper",
        train_size=54000,
        val_size=6000,
        test_size=10000,
        vit_dim=192,
        vit_depth=6,
        vit_heads=3,
        resnet_depth=56,
        fabric=FabricConfig(precision="bf16-mixed"),
        loop=LoopConfig(max_steps=8000, batch_size=256, lr=1e-3, warmup_steps=400, ckpt_every=1000, eval_every=1000),
    )


CONFIG_CLASS = BaselineConfig
PRESETS = {"smoke": smoke, "standard": standard, "paper": paper}


def load_data(config: BaselineConfig) -> tuple[str, ImageArrays, ImageArrays, ImageArrays]:
    """Return (source name, train, val, test) image sets for the config (deterministic subsets, seed 0)."""
    source = available_default_source(config.data_root) if config.dataset == "auto" else config.dataset
    train_full = load_source(source, root=config.data_root, train=True)
    test_full = load_source(source, root=config.data_root, train=False)
    train_size = min(config.train_size, len(train_full) - min(config.val_size, len(train_full) // 5))
    val_size = min(config.val_size, len(train_full) - train_size)
    picked = stratified_subset(train_full.labels, total=train_size + val_size, seed=0)
    train_part, val_part = stratified_split(
        train_full.labels[picked], [train_size / len(picked), val_size / len(picked)], seed=0
    )
    train_idx, val_idx = picked[train_part], picked[val_part]
    test_idx = stratified_subset(test_full.labels, total=min(config.test_size, len(test_full)), seed=0)
    return source, train_full.subset(train_idx), train_full.subset(val_idx), test_full.subset(test_idx)


def build_model(kind: str, config: BaselineConfig, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The ViT or ResNet of the experiment, sized for the images."""
    channels, height, _ = image_shape
    if kind == "vit":
        if height % config.vit_patch:
            raise ConfigError(f"vit_patch={config.vit_patch} does not divide the image size {height}; pick a divisor")
        return small_vit(
            img_size=height,
            patch_size=config.vit_patch,
            in_chans=channels,
            num_classes=num_classes,
            embed_dim=config.vit_dim,
            depth=config.vit_depth,
            num_heads=config.vit_heads,
        )
    return cifar_resnet(config.resnet_depth, config.resnet_width, channels, num_classes)


def verdict_for(summary_top1: dict[str, dict[str, float]], chance: float) -> tuple[str, str]:
    """Computed verdict: every model well above chance (mean - std > 5 x chance) -> supported."""
    rule = (
        f"supported if every model's mean - std test top-1 exceeds 5 x chance ({5 * chance:.2f}); not supported if "
        f"any model's mean is below 2 x chance ({2 * chance:.2f}); otherwise inconclusive"
    )
    lows = [stats["mean"] - stats["std"] for stats in summary_top1.values()]
    means = [stats["mean"] for stats in summary_top1.values()]
    if min(means) < 2 * chance:
        return "not supported", rule
    if min(lows) > 5 * chance:
        return "supported", rule
    return "inconclusive", rule


def run(config: BaselineConfig) -> dict[str, Any]:
    """Train every model for every seed, evaluate on val and test, write results.json and figures."""
    config.validate()
    apply_threads(config.threads)
    start = time.perf_counter()
    out_dir = config.method_dir(METHOD)
    source, train, val, test = load_data(config)
    engine = Engine(config.fabric, log_dir=out_dir, progress=config.progress)
    rows: list[dict[str, Any]] = []
    curves: dict[str, list[list[float]]] = {}
    for kind in config.models:
        for seed in config.seeds:
            name = {"vit": "vit-small", "resnet": f"resnet-{config.resnet_depth}"}[kind]
            task = SupervisedClassification(
                lambda kind=kind: build_model(kind, config, train.image_shape, train.num_classes),
                ArrayDataset(train),
                {"val": ArrayDataset(val), "test": ArrayDataset(test)},
            )
            loop = LoopConfig(**{**config.loop.__dict__, "seed": seed})
            run_dir = out_dir / "runs" / f"{name}-seed{seed}"
            resume = config.resume and latest_checkpoint(run_dir / "checkpoints") is not None
            result = engine.fit(task, loop, run_dir=run_dir, resume=resume, desc=f"{name} seed {seed}")
            params = sum(p.numel() for p in result.model.parameters())
            rows.append(
                {
                    "name": name,
                    "seed": seed,
                    "metrics": {
                        "test_top1": result.metrics["test"]["top1"],
                        "test_nll": result.metrics["test"]["nll"],
                        "test_ece": result.metrics["test"]["ece"],
                        "val_top1": result.metrics["val"]["top1"],
                        "params_m": params / 1e6,
                        "train_s": result.wall_s,
                    },
                }
            )
            losses = [h["loss"] for h in result.history if "loss" in h]
            curves.setdefault(name, []).append(losses)
    figures = []
    document = None
    if engine.is_main:
        steps = [h["step"] for h in result.history if "loss" in h]
        series = {}
        for name, runs in curves.items():
            complete = [r for r in runs if len(r) == len(steps)]
            if complete:
                stacked = torch.tensor(complete)
                series[name] = (stacked.mean(0).tolist(), stacked.std(0, unbiased=False).tolist())
        figures.append(line_plot(out_dir / "train_loss.png", steps, series, "step", "training loss", "ERM training"))
        summary = summarize(rows)
        bar_plot(out_dir / "test_top1.png", summary, "test_top1", "test top-1 by model")
        figures.append(out_dir / "test_top1.png")
        verdict, rule = verdict_for(summary["test_top1"], 1.0 / train.num_classes)
        document = make_results(
            METHOD,
            get_method(METHOD).paper,
            config.preset,
            source,
            CLAIM,
            rows,
            verdict,
            rule,
            time.perf_counter() - start,
            figures=[Path(f).name for f in figures],
            primary_metric="test_top1",
            notes=f"train/val/test = {len(train)}/{len(val)}/{len(test)} images, {config.loop.max_steps} steps, "
            f"batch {config.loop.batch_size} x {engine.world_size} process(es)",
        )
        write_results(document, out_dir)
    engine.barrier()
    return document if document is not None else {}


def _plain_pytorch_steps(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, loop: LoopConfig) -> float:
    """Seconds per step of a hand-written PyTorch loop (the peer of the engine benchmark)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=loop.lr, weight_decay=loop.weight_decay)
    model.train()
    batch = loop.batch_size
    start = 0.0
    for step in range(loop.max_steps):
        if step == 5:
            start = time.perf_counter()
        index = (step * batch) % (len(images) - batch)
        loss = nn.functional.cross_entropy(model(images[index : index + batch]), labels[index : index + batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / (loop.max_steps - 5)


def benchmark(out_dir: Path) -> dict[str, Any]:
    """Engine overhead: seconds per training step through ``Engine.fit`` vs a plain PyTorch loop, same model/data.

    Returns:
        Per model: both step times and their ratio (engine / plain); 1.0 means no overhead.
    """
    config = standard()
    source, train, _, _ = load_data(config)
    images, labels = train.to_float()[:4096], train.labels[:4096]
    results: dict[str, Any] = {"dataset": source, "device": "cpu", "threads": torch.get_num_threads()}
    for kind in MODELS:
        loop = LoopConfig(max_steps=60, batch_size=64, lr=1e-3, log_every=0)
        torch.manual_seed(0)
        plain = _plain_pytorch_steps(
            build_model(kind, config, train.image_shape, train.num_classes), images, labels, loop
        )
        task = SupervisedClassification(
            lambda kind=kind: build_model(kind, config, train.image_shape, train.num_classes),
            torch.utils.data.TensorDataset(images, labels),
        )
        engine = Engine(FabricConfig(accelerator="cpu"), progress=False)
        short = engine.fit(task, LoopConfig(max_steps=5, batch_size=64, lr=1e-3, log_every=0)).wall_s
        full = engine.fit(task, loop).wall_s
        ours = (full - short) / (loop.max_steps - 5)
        results[kind] = {"engine_s_per_step": ours, "plain_s_per_step": plain, "ratio": ours / plain}
    return results
