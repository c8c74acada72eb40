"""DeiT III benchmark: our training step vs timm's plain ViT, and batched 3-Augment vs a per-image PIL pipeline.

Run: ``python benchmarks/deit3_step.py [out_dir]`` (writes ``deit3_benchmark.json``). Both comparisons run in one
process, interleaved, and report medians, so that the ratios are robust to a shared, noisy machine.

1. Train step (standard preset size: 28 px, patch 7, width 64, depth 6, batch 64): our DeiT III ViT (LayerScale,
   uniform drop-path 0.05, class token without position, LAMB, BCE on binarised Mixup/CutMix targets) against timm's
   ``VisionTransformer`` of the same size (no LayerScale, no drop-path, AdamW, cross-entropy). Ratio = our
   images/s over timm's; the goal is >= 1.0 (the recipe adds no overhead per step).
   Breakdown: the same recipe step with AdamW instead of LAMB, our model alone (AdamW + CE), and timm's plain ViT
   with LAMB + CE, to separate the model's cost from the recipe's (LAMB, Mixup/CutMix, BCE).
2. Data pipeline: our batched 3-Augment (RRC + flip, one of grayscale/solarize/blur, colour jitter, normalise) on a
   uint8 batch, against the official-style per-image pipeline built from torchvision's PIL transforms (timm has no
   3-Augment policy), single process. Images/s of each.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from timm.models.vision_transformer import VisionTransformer
from torchvision import transforms as T

from frugalvision.harness import interleaved_timings, latency_ratio
from frugalvision.methods.deit3.config import standard
from frugalvision.methods.deit3.losses import mix_batch, mixed_bce_loss
from frugalvision.methods.deit3.optim import build_optimizer
from frugalvision.methods.deit3.task import IMAGENET_MEAN, IMAGENET_STD, Deit3Collate, build_model


def _repeat(fn: Callable[[], Any], repeats: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(repeats):
            fn()

    return run


def train_step_ratio(batch: int = 64, rounds: int = 7, steps: int = 8) -> dict[str, Any]:
    """Images/s of our DeiT III step and of timm's plain ViT step (interleaved rounds, medians), with a breakdown.

    Steps timed: ``ours`` (LAMB, Mixup/CutMix, BCE, LayerScale, uniform drop-path 0.05), ``ours_adamw`` (the same
    step with timm's AdamW instead of LAMB), ``ours_model_only`` (our model with torch AdamW + CE), ``timm_lamb``
    (timm's plain ViT with LAMB + CE) and the reference ``timm`` (plain ViT, torch AdamW, CE).
    """
    config = standard()
    stage = config.deit3.finetune  # full resolution (28 px), the size timm's model is built at
    assert stage is not None
    stage = type(stage)(**{**stage.__dict__, "drop_path": 0.05})
    m = config.model

    def ref_vit() -> VisionTransformer:
        return VisionTransformer(
            img_size=stage.img_size,
            patch_size=m.patch_size,
            in_chans=3,
            num_classes=10,
            embed_dim=m.embed_dim,
            depth=m.depth,
            num_heads=m.num_heads,
        )

    x = torch.rand(batch, 3, stage.img_size, stage.img_size)
    y = torch.randint(0, 10, (batch,))

    def recipe_step(model: torch.nn.Module, opt: torch.optim.Optimizer) -> Callable[[], None]:
        def step() -> None:
            mixed = mix_batch(x, y, 10)
            loss = mixed_bce_loss(model(mixed.inputs), mixed.targets)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    def ce_step(model: torch.nn.Module, opt: torch.optim.Optimizer) -> Callable[[], None]:
        def step() -> None:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    steps_fns: dict[str, Callable[[], None]] = {}
    ours = build_model(config.model, config.deit3, stage, 10, 3)
    steps_fns["ours"] = recipe_step(ours, build_optimizer(ours, "lamb", lr=1e-3, weight_decay=0.05))
    ref = ref_vit()
    steps_fns["timm"] = ce_step(ref, torch.optim.AdamW(ref.parameters(), lr=1e-3, weight_decay=0.05))
    ours_adamw = build_model(config.model, config.deit3, stage, 10, 3)
    steps_fns["ours_adamw"] = recipe_step(ours_adamw, build_optimizer(ours_adamw, "adamw", lr=1e-3, weight_decay=0.05))
    arch = build_model(config.model, config.deit3, stage, 10, 3)
    steps_fns["ours_model_only"] = ce_step(arch, torch.optim.AdamW(arch.parameters(), lr=1e-3, weight_decay=0.05))
    ref_lamb = ref_vit()
    steps_fns["timm_lamb"] = ce_step(ref_lamb, build_optimizer(ref_lamb, "lamb", lr=1e-3, weight_decay=0.05))
    timings = interleaved_timings({n: _repeat(fn, steps) for n, fn in steps_fns.items()}, rounds=rounds, warmup=1)
    out: dict[str, Any] = {"batch": batch}
    for name in steps_fns:
        out[f"{name}_img_s"] = batch * steps / (timings[name].median_ms / 1e3)
    for name in ("ours", "ours_adamw", "ours_model_only", "timm_lamb"):
        # images/s ratio to timm = timm's time / this step's time, median of the per-round ratios
        key = "ratio" if name == "ours" else f"{name}_ratio"
        out[key] = latency_ratio(timings, "timm", name)["ratio"]
    return out


def pipeline_throughput(batch: int = 64, rounds: int = 3) -> dict[str, Any]:
    """Images/s of our batched 3-Augment collate vs the per-image torchvision/PIL 3-Augment, at 28 and 224 px."""
    config = standard()
    out: dict[str, Any] = {}
    for size in (28, 224):
        stage = type(config.deit3.pretrain)(
            **{**config.deit3.pretrain.__dict__, "img_size": size, "blur_sigma": (0.1 * size / 224, 2.0 * size / 224)}
        )
        collate = Deit3Collate(stage, size, 1.0, 3)
        images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
        items = [(images[i], 0, 1) for i in range(batch)]
        pil = [Image.fromarray(images[i].permute(1, 2, 0).numpy()) for i in range(batch)]
        sigma = (0.1 * size / 224, 2.0 * size / 224)
        per_image = T.Compose(
            [
                T.RandomResizedCrop(size, interpolation=T.InterpolationMode.BICUBIC),
                T.RandomHorizontalFlip(),
                T.RandomChoice([T.Grayscale(3), T.RandomSolarize(128, p=1.0), T.GaussianBlur(7, sigma)]),
                T.ColorJitter(0.3, 0.3, 0.3),
                T.ToTensor(),
                T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )
        arms = {
            "ours": lambda c=collate, i=items: c(i),
            "pil": lambda f=per_image, ps=pil: torch.stack([f(p) for p in ps]),
        }
        timings = interleaved_timings(arms, rounds=rounds, warmup=1)
        out[f"{size}px"] = {
            "ours_img_s": batch / (timings["ours"].median_ms / 1e3),
            "torchvision_pil_img_s": batch / (timings["pil"].median_ms / 1e3),
            "speedup": latency_ratio(timings, "pil", "ours")["ratio"],
        }
    return out


def main(out_dir: Path | str = "runs/bench") -> dict[str, Any]:
    """Run both measurements and write ``<out_dir>/deit3_benchmark.json``."""
    torch.manual_seed(0)
    result = {
        "threads": torch.get_num_threads(),
        "train_step": train_step_ratio(),
        "pipeline": pipeline_throughput(),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "deit3_benchmark.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(json.dumps(main(sys.argv[1] if len(sys.argv) > 1 else "runs/bench"), indent=2))
