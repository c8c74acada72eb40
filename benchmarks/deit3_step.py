"""DeiT III benchmark: our training step vs timm's plain ViT, and batched 3-Augment vs a per-image PIL pipeline.

Run: ``python benchmarks/deit3_step.py [out_dir]`` (writes ``deit3_benchmark.json``). Both comparisons run in one
process, interleaved, and report medians, so that the ratios are robust to a shared, noisy machine.

1. Train step (standard preset size: 28 px, patch 7, width 64, depth 6, batch 64): our DeiT III ViT (LayerScale,
   uniform drop-path 0.05, class token without position, LAMB, BCE on binarised Mixup/CutMix targets) against timm's
   ``VisionTransformer`` of the same size (no LayerScale, no drop-path, AdamW, cross-entropy). Ratio = our
   images/s over timm's; the goal is >= 1.0 (the recipe adds no overhead per step).
   A third timing runs our model with timm's optimiser and loss (AdamW, CE) to separate the model's cost from the
   recipe's (LAMB, Mixup/CutMix, BCE).
2. Data pipeline: our batched 3-Augment (RRC + flip, one of grayscale/solarize/blur, colour jitter, normalise) on a
   uint8 batch, against the official-style per-image pipeline built from torchvision's PIL transforms (timm has no
   3-Augment policy), single process. Images/s of each.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from timm.models.vision_transformer import VisionTransformer
from torchvision import transforms as T

from frugalvision.methods.deit3.config import standard
from frugalvision.methods.deit3.losses import mix_batch, mixed_bce_loss
from frugalvision.methods.deit3.optim import build_optimizer
from frugalvision.methods.deit3.task import IMAGENET_MEAN, IMAGENET_STD, Deit3Collate, build_model


def _time(fn, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def train_step_ratio(batch: int = 64, rounds: int = 5, steps: int = 10) -> dict[str, Any]:
    """Images/s of our DeiT III step and of timm's plain ViT step, interleaved rounds, medians."""
    config = standard()
    stage = config.deit3.finetune  # full resolution (28 px), the size timm's model is built at
    assert stage is not None
    stage = type(stage)(**{**stage.__dict__, "drop_path": 0.05})
    ours = build_model(config.model, config.deit3, stage, 10, 3)
    m = config.model
    ref = VisionTransformer(img_size=stage.img_size, patch_size=m.patch_size, in_chans=3, num_classes=10,
                            embed_dim=m.embed_dim, depth=m.depth, num_heads=m.num_heads)
    opt_ours = build_optimizer(ours, "lamb", lr=1e-3, weight_decay=0.05)
    opt_ref = torch.optim.AdamW(ref.parameters(), lr=1e-3, weight_decay=0.05)
    arch = build_model(config.model, config.deit3, stage, 10, 3)
    opt_arch = torch.optim.AdamW(arch.parameters(), lr=1e-3, weight_decay=0.05)
    x = torch.rand(batch, 3, stage.img_size, stage.img_size)
    y = torch.randint(0, 10, (batch,))

    def step_ours() -> None:
        mixed = mix_batch(x, y, 10)
        loss = mixed_bce_loss(ours(mixed.inputs), mixed.targets)
        loss.backward()
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)

    def step_ref() -> None:
        loss = F.cross_entropy(ref(x), y)
        loss.backward()
        opt_ref.step()
        opt_ref.zero_grad(set_to_none=True)

    def step_arch() -> None:  # our model only: same optimiser and loss as the timm step
        loss = F.cross_entropy(arch(x), y)
        loss.backward()
        opt_arch.step()
        opt_arch.zero_grad(set_to_none=True)

    for fn in (step_ours, step_ref, step_arch):
        _time(fn, 2)
    t_ours, t_ref, t_arch = [], [], []
    for _ in range(rounds):
        t_ours.append(_time(step_ours, steps))
        t_ref.append(_time(step_ref, steps))
        t_arch.append(_time(step_arch, steps))
    ours_ips, ref_ips = batch / statistics.median(t_ours), batch / statistics.median(t_ref)
    arch_ips = batch / statistics.median(t_arch)
    return {"batch": batch, "ours_img_s": ours_ips, "timm_img_s": ref_ips, "ratio": ours_ips / ref_ips,
            "ours_model_only_img_s": arch_ips, "model_only_ratio": arch_ips / ref_ips}


def pipeline_throughput(batch: int = 64, rounds: int = 3) -> dict[str, Any]:
    """Images/s of our batched 3-Augment collate vs the per-image torchvision/PIL 3-Augment, at 28 and 224 px."""
    config = standard()
    out: dict[str, Any] = {}
    for size in (28, 224):
        stage = type(config.deit3.pretrain)(**{**config.deit3.pretrain.__dict__, "img_size": size,
                                               "blur_sigma": (0.1 * size / 224, 2.0 * size / 224)})
        collate = Deit3Collate(stage, size, 1.0, 3)
        images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
        items = [(images[i], 0, 1) for i in range(batch)]
        pil = [Image.fromarray(images[i].permute(1, 2, 0).numpy()) for i in range(batch)]
        sigma = (0.1 * size / 224, 2.0 * size / 224)
        per_image = T.Compose([
            T.RandomResizedCrop(size, interpolation=T.InterpolationMode.BICUBIC), T.RandomHorizontalFlip(),
            T.RandomChoice([T.Grayscale(3), T.RandomSolarize(128, p=1.0), T.GaussianBlur(7, sigma)]),
            T.ColorJitter(0.3, 0.3, 0.3), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ])
        t_ours = [_time(lambda c=collate, i=items: c(i), 3) for _ in range(rounds)]
        t_ref = [_time(lambda f=per_image, ps=pil: torch.stack([f(p) for p in ps]), 3) for _ in range(rounds)]
        out[f"{size}px"] = {"ours_img_s": batch / statistics.median(t_ours),
                            "torchvision_pil_img_s": batch / statistics.median(t_ref)}
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
