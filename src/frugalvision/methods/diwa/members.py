"""Runs as independent jobs: shared initialisation, fine-tuning members and their on-disk records.

The shared initialisation is pre-training + linear probing; a member's record is ``best.safetensors`` (with the init
fingerprint in its metadata), ``ma.safetensors`` and ``member.json``.

Each member is one call of :meth:`frugalvision.engine.Engine.fit`, so it runs unchanged on a CPU, a GPU, or several
GPUs through Fabric; a sweep launcher may run the members of a sweep in parallel, one directory per member.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from frugalvision.engine import Engine, load_weights, save_weights
from frugalvision.errors import CheckpointError
from frugalvision.methods.diwa.averaging import init_fingerprint
from frugalvision.methods.diwa.task import DiwaTask
from frugalvision.report.schema import atomic_write_text

__all__ = ["MemberRecord", "linear_probe", "load_member", "load_members", "train_member"]

BEST_FILE = "best.safetensors"
MA_FILE = "ma.safetensors"
RECORD_FILE = "member.json"


@dataclass
class MemberRecord:
    """One finished fine-tuning run.

    Attributes:
        name: run name (its folder name).
        state: best-by-validation weights.
        val: training-domain validation score of ``state`` (mean of per-domain accuracies).
        fingerprint: fingerprint of the shared initialisation it started from.
        hparams: the run's hyperparameters and seed.
        best_step: step of the kept checkpoint.
        ma_state: moving average along the run (None when not tracked).
        ma_val: validation score of ``ma_state``.
    """

    name: str
    state: dict[str, torch.Tensor]
    val: float
    fingerprint: str
    hparams: dict[str, Any] = field(default_factory=dict)
    best_step: int = -1
    ma_state: dict[str, torch.Tensor] | None = None
    ma_val: float = float("nan")


def linear_probe(
    engine: Engine, task: DiwaTask, steps: int, seed: int = 0, desc: str = "lp"
) -> dict[str, torch.Tensor]:
    """Linear probing: train only the head of ``task``'s network for exactly ``steps`` steps; return the final state.

    ``steps=0`` returns the initial state unchanged (the official code's "0 means 5001" quirk is not reproduced).
    """
    task.train_featurizer = False
    task.select_every = 0
    task.max_steps = max(steps, 1)
    if steps == 0:
        model = task.build_model()
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    result = engine.fit(task, task.loop(seed), desc=desc)
    return {k: v.detach().cpu().clone() for k, v in result.model.state_dict().items()}


def train_member(
    engine: Engine,
    task: DiwaTask,
    name: str,
    seed: int,
    run_dir: str | Path | None,
    hparams: dict[str, Any] | None = None,
    resume: bool = False,
) -> MemberRecord:
    """Fine-tune one member from ``task.init_state`` and keep its best checkpoint by training-domain validation.

    With ``resume``, a complete record in ``run_dir`` from the same initialisation is loaded instead of training
    (sweep restart), and an interrupted run continues from its newest engine checkpoint (written every
    ``task.ckpt_every`` steps; with ``ckpt_every=0`` the engine writes none and the record is the only output).
    """
    if task.init_state is None:
        raise CheckpointError(f"member {name} has no shared initialisation; pass init_state to its DiwaTask")
    fingerprint = init_fingerprint(task.init_state)
    path = Path(run_dir) if run_dir is not None else None
    if resume and path is not None and (path / RECORD_FILE).is_file():
        try:
            record = load_member(path)
            if record.fingerprint == fingerprint:
                return record
        except CheckpointError:
            pass  # incomplete or corrupt: train again
    engine_dir = path if (path is not None and task.ckpt_every > 0) else None
    task.run_dir = engine_dir
    task.resume = resume and engine_dir is not None and (engine_dir / "checkpoints" / "latest").is_file()
    result = engine.fit(task, task.loop(seed), run_dir=engine_dir, resume=task.resume, desc=name)
    model: nn.Module = task.best_model(result.model)
    record = MemberRecord(
        name=name,
        state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        val=task.best_score,
        fingerprint=fingerprint,
        hparams={**(hparams or {}), "seed": seed},
        best_step=task.best_step,
    )
    if task.moving_average is not None and task.moving_average.count:
        record.ma_state = task.moving_average.state_dict()
        ma_model = result.model
        ma_model.load_state_dict(record.ma_state)
        record.ma_val = task.validate(ma_model)[0]
    if path is not None:
        save_member(record, path)
    return record


def save_member(record: MemberRecord, run_dir: str | Path) -> Path:
    """Write ``best.safetensors`` (init fingerprint in its metadata), ``ma.safetensors`` and ``member.json``."""
    path = Path(run_dir)
    meta = {"fingerprint": record.fingerprint, "val": repr(record.val), "best_step": str(record.best_step)}
    save_weights(record.state, path / BEST_FILE, metadata=meta)
    if record.ma_state is not None:
        save_weights(record.ma_state, path / MA_FILE, metadata={"fingerprint": record.fingerprint})
    doc = {
        "name": record.name,
        "val": record.val,
        "fingerprint": record.fingerprint,
        "hparams": record.hparams,
        "best_step": record.best_step,
        "ma_val": record.ma_val,
        "complete": True,
    }
    atomic_write_text(path / RECORD_FILE, json.dumps(doc, indent=2))
    return path


def load_member(run_dir: str | Path) -> MemberRecord:
    """Load a member folder written by :func:`train_member`.

    Raises:
        CheckpointError: naming the member folder, when the record or weights are missing or corrupt.
    """
    path = Path(run_dir)
    record_path = path / RECORD_FILE
    try:
        doc = json.loads(record_path.read_text())
        if not doc.get("complete"):
            raise ValueError("run not complete")
        state = load_weights(path / BEST_FILE)
    except (OSError, ValueError, CheckpointError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(
            f"member {path.name} ({path}) cannot be loaded: {first}; retrain it or leave it out"
        ) from None
    ma_state = load_weights(path / MA_FILE) if (path / MA_FILE).is_file() else None
    return MemberRecord(
        name=str(doc["name"]),
        state=state,
        val=float(doc["val"]),
        fingerprint=str(doc["fingerprint"]),
        hparams=dict(doc.get("hparams", {})),
        best_step=int(doc.get("best_step", -1)),
        ma_state=ma_state,
        ma_val=float(doc.get("ma_val", float("nan"))),
    )


def load_members(run_dirs: list[str | Path]) -> tuple[list[MemberRecord], dict[str, str]]:
    """Load every loadable member; a missing or corrupt one is reported by name and skipped.

    Returns:
        (loaded records in the given order, {member folder name: reason} for the ones that failed).
    """
    records: list[MemberRecord] = []
    failures: dict[str, str] = {}
    for run_dir in run_dirs:
        try:
            records.append(load_member(run_dir))
        except CheckpointError as error:
            failures[Path(run_dir).name] = str(error)
    return records, failures
