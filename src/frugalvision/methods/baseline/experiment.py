"""The baseline experiment: ERM with a small timm ViT and a small CIFAR-style ResNet on the embedded data.

It proves the pipeline end to end (data -> engine -> harness -> results.json -> report) and gives every method its
reference numbers on the same data, preset and machine.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from frugalvision.data.arrays import ArrayDataset, ImageArrays
from frugalvision.data.sources import available_default_source, load_source
from frugalvision.data.splits import stratified_subset, train_val_indices
from frugalvision.engine.config import FabricConfig, LoopConfig
from frugalvision.errors import ConfigError
from frugalvision.harness import (
    Context,
    Experiment,
    FigureInput,
    RunConfig,
    Study,
    Unit,
    UnitResult,
    Verdict,
    benchmark_result,
    claim_verdict,
    interleaved_timings,
    ratio_entry,
    threshold,
)

METHOD = "baseline"
CLAIM = (
    "Plain ERM with a small ViT and a small ResNet learns the embedded data far above chance; these are the "
    "reference numbers every method is compared with."
)
MODELS = ("vit", "resnet")
#: every offline source of the baseline (Fashion-MNIST, MNIST-5k, digits) has ten classes
CHANCE = 0.1
FLOOR = 5 * CHANCE


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

    def arm_name(self, kind: str) -> str:
        """Row name of a model kind."""
        return {"vit": "vit-small", "resnet": f"resnet-{self.resnet_depth}"}[kind]


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
    """Under 3 minutes on 2 CPU cores: Fashion-MNIST 12k/2k/5k, 3 seeds, 400 steps per model, ResNet-8.

    A ResNet-20 step at 28 px costs 0.33 s on one core (2 minutes per seed), so the standard preset trains the
    8-layer ResNet; the extended preset trains the ResNet-20 on the whole training set.
    """
    return BaselineConfig(preset="standard", threads=2, resnet_depth=8)


def extended() -> BaselineConfig:
    """About ten minutes on 2 CPU cores: the whole 54k/6k/10k Fashion-MNIST split, ResNet-20, 800 steps per model."""
    config = BaselineConfig(preset="extended", threads=2, train_size=54000, val_size=6000, test_size=10000)
    config.loop = dataclasses.replace(config.loop, max_steps=800, warmup_steps=80, log_every=40)
    return config


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


def load_data(config: BaselineConfig) -> tuple[str, ImageArrays, ImageArrays, ImageArrays]:
    """Return (source name, train, val, test) image sets for the config (deterministic subsets, seed 0)."""
    source = available_default_source(config.data_root) if config.dataset == "auto" else config.dataset
    train_full = load_source(source, root=config.data_root, train=True)
    test_full = load_source(source, root=config.data_root, train=False)
    train_idx, val_idx = train_val_indices(train_full.labels, config.train_size, config.val_size, seed=0)
    test_idx = stratified_subset(test_full.labels, total=min(config.test_size, len(test_full)), seed=0)
    return source, train_full.subset(train_idx), train_full.subset(val_idx), test_full.subset(test_idx)


def build_model(kind: str, config: BaselineConfig, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The ViT or ResNet of the experiment, sized for the images."""
    from frugalvision.nn import cifar_resnet, small_vit

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


def run_unit(ctx: Context[BaselineConfig], unit: Unit) -> UnitResult:
    """Train one model for one seed; evaluate it on validation and test."""
    from frugalvision.tasks import SupervisedClassification

    config = ctx.config
    source, train, val, test = ctx.memo("data", lambda: load_data(config))
    kind = unit.params["kind"]
    task = SupervisedClassification(
        lambda: build_model(kind, config, train.image_shape, train.num_classes),
        ArrayDataset(train),
        {"val": ArrayDataset(val), "test": ArrayDataset(test)},
    )
    result = ctx.fit(task, config.loop)
    metrics = {
        "test_top1": result.metrics["test"]["top1"],
        "test_nll": result.metrics["test"]["nll"],
        "test_ece": result.metrics["test"]["ece"],
        "val_top1": result.metrics["val"]["top1"],
        "params_m": sum(p.numel() for p in result.model.parameters()) / 1e6,
        "train_s": result.wall_s,
    }
    curve = [[h["step"], h["loss"]] for h in result.history if "loss" in h]
    return UnitResult.one_row(unit, metrics, dataset=source, loss_curve=curve, sizes=[len(train), len(val), len(test)])


def units(config: BaselineConfig) -> list[Unit]:
    """Every model once per seed."""
    return [Unit(config.arm_name(kind), seed, {"kind": kind}) for seed in config.seeds for kind in config.models]


def verdict(config: BaselineConfig, rows: list[dict[str, Any]]) -> Verdict:
    """Sanity claim: every model's test top-1 is above 5 x chance beyond the seed noise."""
    names = [config.arm_name(kind) for kind in config.models]
    checks = [threshold(rows, "test_top1", name, FLOOR, label=f"5 x chance ({FLOOR:g})") for name in names]
    return claim_verdict(checks, claim="every model learns far above chance")


def figures(fig: FigureInput[BaselineConfig]) -> list[str]:
    """Mean training-loss curve per model (band: std over seeds)."""
    from frugalvision.report import line_plot

    series = {}
    steps: list[float] = []
    for kind in fig.config.models:
        curves = [e["loss_curve"] for e in fig.extras(fig.config.arm_name(kind))]
        if curves and all(len(c) == len(curves[0]) for c in curves):
            stacked = torch.tensor(curves, dtype=torch.float64)
            steps = stacked[0, :, 0].tolist()
            losses = stacked[..., 1]
            series[fig.config.arm_name(kind)] = (losses.mean(0).tolist(), losses.std(0, unbiased=False).tolist())
    if not series:
        return []
    path = line_plot(fig.out_dir / "train_loss.png", steps, series, "step", "training loss", "ERM training")
    return [path.name]


def notes(config: BaselineConfig, records: list[Any]) -> str:
    """Data sizes and the loop."""
    sizes = records[0].extras.get("sizes", [0, 0, 0])
    return (
        f"train/val/test = {sizes[0]}/{sizes[1]}/{sizes[2]} images, {config.loop.max_steps} steps, batch "
        f"{config.loop.batch_size} per process"
    )


def _plain_pytorch_step(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor):
    loss = nn.functional.cross_entropy(model(images), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def benchmark(out_dir: Path) -> dict[str, Any]:
    """Engine overhead: seconds per training step through ``Engine.fit`` vs a plain PyTorch loop, same model/data.

    Interleaved rounds (:mod:`frugalvision.harness.timing`): each round times one ``Engine.fit`` of 20 steps (model
    build, Fabric setup and data loading included) and 20 steps of a hand-written loop on in-memory tensors; the
    ratio is the median of the per-round ratios.

    Returns:
        Per model: both step times and their ratio (engine / plain); 1.0 means no overhead.
    """
    from frugalvision.engine import Engine
    from frugalvision.tasks import SupervisedClassification

    config = standard()
    source, train, _, _ = load_data(config)
    images, labels = train.to_float()[:4096], train.labels[:4096]
    rows: list[dict[str, Any]] = []
    steps = 20
    for kind in MODELS:
        torch.manual_seed(0)
        model = build_model(kind, config, train.image_shape, train.num_classes)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        batch = 64

        def plain(model: nn.Module = model, optimizer: torch.optim.Optimizer = optimizer, batch: int = batch) -> None:
            for step in range(steps):
                index = (step * batch) % (len(images) - batch)
                _plain_pytorch_step(model, optimizer, images[index : index + batch], labels[index : index + batch])

        task = SupervisedClassification(
            lambda kind=kind: build_model(kind, config, train.image_shape, train.num_classes),
            torch.utils.data.TensorDataset(images, labels),
        )
        engine = Engine(FabricConfig(accelerator="cpu"), progress=False)
        loop = LoopConfig(max_steps=steps, batch_size=batch, lr=1e-3, log_every=0, ckpt_every_s=0)

        def through_engine(
            task: SupervisedClassification = task, engine: Engine = engine, loop: LoopConfig = loop
        ) -> None:
            engine.fit(task, loop)

        timings = interleaved_timings({"engine": through_engine, "plain": plain}, rounds=7, warmup=1)
        row = ratio_entry(
            timings,
            "engine",
            "plain",
            name=f"Engine.fit vs plain loop, {kind} ({steps} steps of {batch}, Fabric setup included)",
            arm_label="Engine.fit",
            peer_label="hand-written PyTorch loop",
            model=kind,
        )
        row["engine_s_per_step"] = row["arm_ms"] / 1e3 / steps
        row["plain_s_per_step"] = row["peer_ms"] / 1e3 / steps
        rows.append(row)
    return benchmark_result(rows, dataset=source, device="cpu")


MAIN = Study(
    claim=CLAIM,
    primary_metric="test_top1",
    run_unit=run_unit,
    verdict=verdict,
    units=units,
    figures=figures,
    notes=notes,
    null_levels=lambda config: {"test_top1": FLOOR},
)

EXPERIMENT = Experiment(
    name=METHOD,
    config_class=BaselineConfig,
    presets={"smoke": smoke, "standard": standard, "extended": extended, "paper": paper},
    main=MAIN,
    benchmark=benchmark,
)
