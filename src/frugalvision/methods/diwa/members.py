"""Building the members: linear probing of the shared initialisation and the diverse fine-tunings from it.

Each run is one ``fit(task, loop)`` call: by default a single-process :class:`frugalvision.engine.Engine`; the
experiment passes the harness's ``ctx.fit`` instead (run folders, checkpoints, resume). :func:`train_members` is the
public builder for a user's own network and data; :func:`save_member` / :func:`load_members` keep finished members
on disk for a sweep the user runs by hand (``best.safetensors`` with the init fingerprint, ``member.json``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from frugalvision.errors import CheckpointError, ConfigError
from frugalvision.methods.diwa.averaging import init_fingerprint
from frugalvision.methods.diwa.hparams import MildSpace, sample_hparams
from frugalvision.methods.diwa.task import DiwaTask
from frugalvision.seeding import derive_seed

if TYPE_CHECKING:
    from torch import nn

    from frugalvision.engine import FitResult, LoopConfig

__all__ = [
    "Fit",
    "MemberRecord",
    "cpu_state",
    "linear_probe",
    "load_member",
    "load_members",
    "save_member",
    "train_member",
    "train_members",
]

Fit = Callable[[DiwaTask, "LoopConfig"], "FitResult"]
BEST_FILE = "best.safetensors"
MA_FILE = "ma.safetensors"
RECORD_FILE = "member.json"


@dataclass
class MemberRecord:
    """One finished fine-tuning run.

    Attributes:
        name: run name.
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


def _default_fit() -> Fit:
    from frugalvision.engine import Engine, FabricConfig

    engine = Engine(FabricConfig(), progress=False)
    return lambda task, loop: engine.fit(task, loop)


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a model's state dict."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def linear_probe(task: DiwaTask, steps: int, seed: int = 0, fit: Fit | None = None) -> dict[str, torch.Tensor]:
    """Linear probing: train only the head of ``task``'s network for exactly ``steps`` steps; return the final state.

    ``steps=0`` returns the initial state unchanged (the official code's "0 means 5001" quirk is not reproduced).
    """
    task.train_featurizer = False
    task.select_every = 0
    task.max_steps = max(steps, 1)
    if steps == 0:
        return cpu_state(task.build_model())
    result = (fit or _default_fit())(task, task.loop(seed))
    return cpu_state(result.model)


def train_member(
    task: DiwaTask,
    seed: int,
    *,
    fit: Fit | None = None,
    name: str = "member",
    hparams: dict[str, Any] | None = None,
) -> MemberRecord:
    """Fine-tune one member from ``task.init_state``; keep its best checkpoint by training-domain validation.

    Args:
        task: the run (shared init, data, hyperparameters).
        seed: seed of its data order and randomness.
        fit: ``(task, loop) -> FitResult`` (default: a single-process engine without checkpoints).
        name: run name.
        hparams: hyperparameters to record with it.

    Returns:
        The member: best weights, their validation score, the MA weights when tracked.
    """
    if task.init_state is None:
        raise CheckpointError(f"member {name} has no shared initialisation; pass init_state to its DiwaTask")
    result = (fit or _default_fit())(task, task.loop(seed))
    record = MemberRecord(
        name=name,
        state=cpu_state(task.best_model(result.model)),
        val=task.best_score,
        fingerprint=init_fingerprint(task.init_state),
        hparams={**(hparams or {}), "seed": seed},
        best_step=task.best_step,
    )
    if task.moving_average is not None and task.moving_average.count:
        record.ma_state = task.moving_average.state_dict()
        result.model.load_state_dict(record.ma_state)
        record.ma_val = task.validate(result.model)[0]
    return record


def train_members(
    build_net: Callable[[], nn.Module],
    init_state: dict[str, torch.Tensor],
    train_sets: Sequence[Dataset],
    val_sets: Sequence[Dataset],
    *,
    count: int,
    steps: int,
    per_domain: int,
    space: MildSpace | None = None,
    seed: int = 0,
    select_every: int = 0,
    ma_start: int | None = None,
    fit: Fit | None = None,
) -> list[MemberRecord]:
    """Fine-tune ``count`` diverse members from one shared initialisation (the DiWA sweep of one data split).

    Member ``i`` draws its hyperparameters with :func:`sample_hparams` (index 0 = the defaults) and its own data
    order; average the results with :func:`frugalvision.methods.diwa.average`.

    Args:
        build_net: returns a fresh network (a :class:`~frugalvision.methods.diwa.model.DiwaNet` for dropout draws).
        init_state: the shared initialisation theta_0 (e.g. pre-trained featurizer with a linear-probed head).
        train_sets: training data of each training domain (one batch of ``per_domain`` from each per step).
        val_sets: validation data of each training domain (best-checkpoint selection; may be empty).
        count: number of members M.
        steps: fine-tuning steps of each member.
        per_domain: batch size per training domain.
        space: the mild hyperparameter choices (the paper's by default; see :meth:`MildSpace.scaled`).
        seed: sweep seed (hyperparameter draws and data orders).
        select_every: validation interval of the best-checkpoint selection (0: keep the final weights).
        ma_start: track a moving average along each run from this step (None: off).
        fit: ``(task, loop) -> FitResult`` (default: a single-process engine).

    Returns:
        The members, in index order.
    """
    if count < 1:
        raise ConfigError(f"count={count} is invalid; train at least one member")
    fit = fit or _default_fit()
    members = []
    for index in range(count):
        hp = sample_hparams(index, seed=seed, space=space)
        task = DiwaTask(
            build_net,
            train_sets,
            val_sets,
            per_domain=per_domain,
            max_steps=steps,
            init_state=init_state,
            lr=hp.lr,
            weight_decay=hp.weight_decay,
            dropout=hp.dropout,
            select_every=select_every,
            ma_start=ma_start,
        )
        members.append(
            train_member(
                task, derive_seed(seed, "member", index), fit=fit, name=f"member_{index:02d}", hparams=hp.to_dict()
            )
        )
    return members


def save_member(record: MemberRecord, run_dir: str | Path) -> Path:
    """Write ``best.safetensors`` (init fingerprint in its metadata), ``ma.safetensors`` and ``member.json``."""
    from frugalvision.engine import save_weights
    from frugalvision.report.schema import atomic_write_text

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
    """Load a member folder written by :func:`save_member`.

    Raises:
        CheckpointError: naming the member folder, when the record or weights are missing or corrupt.
    """
    from frugalvision.engine import load_weights

    path = Path(run_dir)
    try:
        doc = json.loads((path / RECORD_FILE).read_text())
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
