"""Subprocess entry for the kill-and-resume test: python train_script.py RUN_DIR [--resume]."""

import sys

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from toy import ToyTask  # noqa: E402

from frugalvision.engine import Engine, FabricConfig, LoopConfig  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(1)
    run_dir, resume = sys.argv[1], "--resume" in sys.argv
    sleep_s = 0.08 if "--slow" in sys.argv else 0.0
    loop = LoopConfig(
        max_steps=24,
        batch_size=8,
        grad_accum=2,
        lr=0.05,
        warmup_steps=4,
        clip_grad_norm=1.0,
        ema_decay=0.9,
        ckpt_every=3,
        seed=7,
        log_every=1,
    )
    engine = Engine(FabricConfig(accelerator="cpu"), progress=False)
    engine.fit(ToyTask(sleep_s=sleep_s), loop, run_dir=run_dir, resume=resume)
    print("done", flush=True)
