"""Speed of MuHDi vs its peers, measured in one process with the interleaved timer.

* Training: one optimisation step (forward, every loss term, backward, optimiser step) of MuHDi vs sequential
  ADVENT on the same batch and backbone. MuHDi adds a teacher forward, a second pair of heads and the distillation
  terms; the ratio is its training overhead.
* Inference: the exported test model (backbone + agnostic main head) vs the full training model's forward (every
  branch and aux head): what dropping the specialist and aux heads saves at test time.

Both arms of a pair alternate in shuffled rounds (:mod:`frugalvision.harness.timing`); each ratio is the median of
the per-round ratios with its interquartile range.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from frugalvision.harness.bench import MIN_ROUNDS
from frugalvision.harness.timing import interleaved_timings, latency_ratio, ratio_entry
from frugalvision.methods.muhdi.model import ModelSettings, build_segmenter, export_agnostic
from frugalvision.methods.muhdi.task import StepSettings, UdaStep

__all__ = ["benchmark", "inference_ratio", "training_step_ratio"]


def _toy_settings() -> tuple[ModelSettings, tuple[int, int], int]:
    return (
        ModelSettings(backbone="tiny", maxpool=False, aspp_dilations=(1, 2, 3, 4), discriminator_width=16),
        (32, 64),
        4,
    )


def _paper_settings() -> tuple[ModelSettings, tuple[int, int], int]:
    return ModelSettings(backbone="resnet101"), (320, 640), 1


def _step_closure(task: UdaStep, batch: dict[str, torch.Tensor], lr: float, device: torch.device):  # noqa: ANN202
    from frugalvision.engine import LoopConfig

    model = task.build_model().to(device).train()
    optimizer = task.build_optimizer(model, LoopConfig(lr=lr))

    def step() -> None:
        loss, _ = task.training_step(model, batch, 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def training_step_ratio(paper_scale: bool = False, rounds: int = 15, device: str | None = None) -> dict[str, Any]:
    """Median per-round ratio of a MuHDi training step to an ADVENT step (same batch, backbone, discriminators)."""
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    settings, (height, width), batch_size = _paper_settings() if paper_scale else _toy_settings()
    torch.manual_seed(0)
    previous = build_segmenter(settings, 7).to(target)
    images = torch.rand(2 * batch_size, 3, height, width, device=target)
    labels = torch.randint(0, 7, (batch_size, height, width), device=target)
    batch = {"source": images[:batch_size], "source_labels": labels, "target": images[batch_size:]}
    width_d = settings.discriminator_width
    steps = {
        arm: _step_closure(
            UdaStep(
                StepSettings(method=arm),
                [(images[0].cpu(), labels[0].cpu())],
                [images[0].cpu()],
                previous,  # type: ignore[arg-type]
                discriminator_width=width_d,
            ),  # fmt: skip
            batch,
            2.5e-4,
            target,
        )
        for arm in ("advent", "muhdi")
    }
    timings = interleaved_timings(steps, rounds=rounds, warmup=3, device=target)
    scale = "paper" if paper_scale else "toy"
    details = {"scale": scale, "image": f"{height}x{width}", "batch": batch_size}
    entry = ratio_entry(timings, "muhdi", "advent", name=f"training step MuHDi vs ADVENT ({scale})",
                        arm_label="MuHDi step (teacher, 2 head pairs, POD + KD + KT)",
                        peer_label="sequential ADVENT step", **details)  # fmt: skip
    return {**details, **latency_ratio(timings, "muhdi", "advent"), "entry": entry}


@torch.no_grad()
def inference_ratio(paper_scale: bool = False, rounds: int = 30, device: str | None = None) -> dict[str, Any]:
    """Median per-round ratio of the full two-branch forward to the exported agnostic-only model's forward."""
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    settings, (height, width), batch_size = _paper_settings() if paper_scale else _toy_settings()
    torch.manual_seed(0)
    full = build_segmenter(settings, 7, ("agnostic", "specialist")).to(target).eval()
    exported = export_agnostic(full).to(target).eval()
    images = torch.rand(batch_size, 3, height, width, device=target)
    arms = {"full": lambda: full.forward_all(images), "exported": lambda: exported(images)}
    timings = interleaved_timings(arms, rounds=rounds, warmup=3, device=target)
    parameters = {name: sum(p.numel() for p in m.parameters()) for name, m in (("full", full), ("exported", exported))}
    scale = "paper" if paper_scale else "toy"
    details = {"scale": scale, "image": f"{height}x{width}", "batch": batch_size,
               "params_full": parameters["full"], "params_exported": parameters["exported"]}  # fmt: skip
    entry = ratio_entry(timings, "exported", "full", name=f"inference exported vs full model ({scale})",
                        arm_label="exported test model (backbone + agnostic main head)",
                        peer_label="full training model (both head pairs, aux heads)", **details)  # fmt: skip
    return {**details, **latency_ratio(timings, "full", "exported"), "entry": entry}


def benchmark(out_dir: Path, quick: bool = False) -> dict[str, Any]:
    """Both ratios at toy scale (and at paper scale on a GPU); writes ``muhdi_benchmark.json``.

    Args:
        out_dir: folder of the JSON file.
        quick: few rounds (tests).
    """
    rounds = MIN_ROUNDS if quick else 15
    summary: dict[str, Any] = {
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(),
        "training_step": [training_step_ratio(False, rounds)],
        "inference": [inference_ratio(False, 2 * rounds)],
    }
    if torch.cuda.is_available() and not quick:
        summary["training_step"].append(training_step_ratio(True, rounds))
        summary["inference"].append(inference_ratio(True, 2 * rounds))
    summary = {"ratios": [row.pop("entry") for key in ("training_step", "inference") for row in summary[key]],
               **summary}  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "muhdi_benchmark.json").write_text(json.dumps(summary, indent=1))
    return summary
