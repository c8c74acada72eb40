"""DeiT III benchmark: our training step vs timm's ``deit3_*`` model doing the same recipe work, and the data pipeline.

Run: ``python benchmarks/deit3_step.py [out_dir]`` (writes ``deit3_benchmark.json``) or ``frugal bench --methods
deit3``. Arms run in one process, interleaved in shuffled rounds (``frugalvision.harness.interleaved_timings``); each
ratio is the median of the per-round ratios, with its interquartile range.

1. Train step, at two sizes: the toy presets' ViT (28 px, patch 7, width 64, depth 6, batch 64) and ViT-S/16 at
   224 px (batch 8). Peer: ``timm.create_model("deit3_small_patch16_224", ...)`` at the same size, LayerScale init
   1e-4 and our weights loaded into it (the logits are checked equal), with uniform drop-path 0.05 set on its timm
   ``DropPath`` modules. Both arms do the same recipe work per step: Mixup/CutMix (flipped pairing), the model, BCE on
   binarised targets, backward, timm LAMB. The only difference is our blocks (LayerScale folded into the branch's
   last Linear, stochastic depth that skips dropped samples). ``time_ratio`` = our step time / timm's (< 1: faster).
2. Data pipeline: our batched 3-Augment (RRC + flip, one of grayscale/solarize/blur, colour jitter, normalise) on a
   uint8 batch, against the official-style per-image pipeline of torchvision's PIL transforms (timm has no 3-Augment
   policy), single process, at 28 and 224 px.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm
import torch
from PIL import Image
from torchvision import transforms as T

from frugalvision.harness import benchmark_result, interleaved_timings, ratio_entry
from frugalvision.methods.deit3.config import OFFICIAL_BLUR_SIGMA, StageConfig
from frugalvision.methods.deit3.losses import mix_batch, mixed_bce_loss
from frugalvision.methods.deit3.model import build_vit, set_drop_path
from frugalvision.methods.deit3.optim import build_optimizer
from frugalvision.methods.deit3.task import IMAGENET_MEAN, IMAGENET_STD, Deit3Collate

#: size name -> (image size, patch, width, depth, heads, batch, rounds)
SIZES = {"toy_28px": (28, 7, 64, 6, 4, 64, 15), "vit_s_224px": (224, 16, 384, 12, 6, 8, 5)}
DROP_PATH, LAYER_SCALE, CLASSES = 0.05, 1e-4, 10


def peer_models(size: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Our DeiT III ViT and timm's ``deit3_small_patch16_224`` built at the same size with the same weights."""
    img, patch, width, depth, heads, _, _ = SIZES[size]
    dims = dict(img_size=img, patch_size=patch, embed_dim=width, depth=depth, num_heads=heads, num_classes=CLASSES)
    ours = build_vit(None, **dims, layer_scale_init=LAYER_SCALE, drop_path=DROP_PATH)
    peer = timm.create_model("deit3_small_patch16_224", pretrained=False, init_values=LAYER_SCALE, **dims)
    peer.load_state_dict(ours.state_dict())
    set_drop_path(peer, DROP_PATH, "uniform")
    x = torch.rand(2, 3, img, img)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), peer.eval()(x), rtol=1e-4, atol=1e-5)
    return ours.train(), peer.train()


def recipe_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One DeiT III pre-training step: Mixup/CutMix, BCE on binarised targets, backward, LAMB."""
    optimizer = build_optimizer(model, "lamb", lr=4e-3, weight_decay=0.05)

    def step() -> None:
        mixed = mix_batch(x, y, CLASSES)
        mixed_bce_loss(model(mixed.inputs), mixed.targets).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def with_throughput(row: dict[str, Any], batch: int) -> dict[str, Any]:
    """``row`` with the images/s of both arms (``arm_img_s``, ``peer_img_s``) from their times per batch."""
    return {**row, "arm_img_s": batch / (row["arm_ms"] / 1e3), "peer_img_s": batch / (row["peer_ms"] / 1e3)}


def train_step_ratio(size: str) -> dict[str, Any]:
    """One performance-table row: our recipe step over timm's deit3 step (median of per-round ratios, IQR)."""
    img, *_, batch, rounds = SIZES[size]
    ours, peer = peer_models(size)
    x, y = torch.rand(batch, 3, img, img), torch.randint(0, CLASSES, (batch,))
    timings = interleaved_timings({"ours": recipe_step(ours, x, y), "timm": recipe_step(peer, x, y)}, rounds, 1)
    row = ratio_entry(
        timings,
        "ours",
        "timm",
        name=f"DeiT III train step, {size} (batch {batch}, Mixup/CutMix + BCE + LAMB)",
        arm_label="frugalvision ViT (LayerScale, drop-path)",
        peer_label="timm deit3 model of the same shape",
        batch=batch,
    )
    return with_throughput(row, batch)


def pipeline_throughput(batch: int = 64, rounds: int = 5) -> list[dict[str, Any]]:
    """Rows: our batched 3-Augment collate vs the per-image torchvision/PIL 3-Augment, at 28 and 224 px."""
    out: list[dict[str, Any]] = []
    for size in (28, 224):
        stage = StageConfig(img_size=size, augment="three_augment", crop="rrc", color_jitter=0.3)
        collate = Deit3Collate(stage, size, 1.0, 3)
        images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
        items = [(images[i], 0, 1) for i in range(batch)]
        pil = [Image.fromarray(images[i].permute(1, 2, 0).numpy()) for i in range(batch)]
        per_image = T.Compose(
            [
                T.RandomResizedCrop(size, interpolation=T.InterpolationMode.BICUBIC),
                T.RandomHorizontalFlip(),
                T.RandomChoice([T.Grayscale(3), T.RandomSolarize(128, p=1.0), T.GaussianBlur(13, OFFICIAL_BLUR_SIGMA)]),
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
        row = ratio_entry(
            timings,
            "ours",
            "pil",
            name=f"3-Augment pipeline, {size} px (batch {batch})",
            arm_label="batched tensor 3-Augment collate",
            peer_label="per-image torchvision/PIL 3-Augment",
            batch=batch,
        )
        out.append(with_throughput(row, batch))
    return out


def main(out_dir: Path | str | None = None) -> dict[str, Any]:
    """Both measurements (and ``<out_dir>/deit3_benchmark.json`` when ``out_dir`` is given)."""
    torch.manual_seed(0)
    rows = [train_step_ratio(size) for size in SIZES] + pipeline_throughput()
    result = benchmark_result(
        rows, peer="timm deit3_small_patch16_224 (same size, weights, LayerScale, uniform drop-path, recipe step)"
    )
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "deit3_benchmark.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1] if len(sys.argv) > 1 else "runs/bench"), indent=2))
