"""Safe, atomic checkpoints: weights as safetensors, training state loaded with ``weights_only=True``.

Layout of a checkpoint folder::

    <root>/step_00000100/model.safetensors   model weights (no pickle)
    <root>/step_00000100/ema.safetensors     EMA weights, when EMA is on
    <root>/step_00000100/state.pt            optimiser, step, RNG, sampler position (tensors and plain types only)
    <root>/latest                            name of the newest complete checkpoint folder

Each folder is written under a temporary name and renamed when complete, and ``latest`` is replaced atomically
afterwards, so a process killed at any instant leaves the previous checkpoint intact and loadable.
"""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from frugalvision.errors import CheckpointError

WEIGHTS_NAME = "model.safetensors"
EMA_NAME = "ema.safetensors"
STATE_NAME = "state.pt"
LATEST_NAME = "latest"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _plain_tensors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.detach().to("cpu").contiguous().clone() for key, value in state_dict.items()}


def save_weights(
    state_dict: Mapping[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> Path:
    """Write a state dict as a safetensors file, atomically (temporary file, then rename).

    Args:
        state_dict: tensors to save (copied to CPU, tied tensors saved once per key).
        path: destination file.
        metadata: optional string metadata stored in the safetensors header.

    Returns:
        The written path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file(_plain_tensors(state_dict), str(tmp), metadata=metadata)
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Load model weights without ever executing pickled code.

    safetensors files are read directly. A ``.pt``/``.pth``/``.bin`` file is accepted only if it holds nothing but
    tensors and plain containers (``torch.load(weights_only=True)``); any other pickled object is refused.

    Raises:
        CheckpointError: the file is missing, corrupt, or contains pickled objects.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist; pass the path of a .safetensors file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        safetensors_error = error
    state = safe_torch_load(path)
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path} is neither a safetensors file ({safetensors_error}) nor a plain tensor dict; "
            "re-save it with frugalvision.engine.save_weights"
        )
    return dict(state)


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load`` restricted to tensors and plain types; a pickled object is refused, never executed.

    Raises:
        CheckpointError: the file is missing, truncated, or contains objects other than tensors and plain types.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist; check the path or start without --resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"refusing to load {path}: it contains pickled objects that are not plain tensors ({first_line}); "
            "only load files you trust, converted to safetensors"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, SafetensorError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path} ({first_line}); the file is corrupt or truncated"
        ) from None


def save_checkpoint(
    root: str | Path,
    step: int,
    model_state: Mapping[str, torch.Tensor],
    train_state: dict[str, Any],
    ema_state: Mapping[str, torch.Tensor] | None = None,
    keep: int = 2,
) -> Path:
    """Write one complete checkpoint folder atomically and point ``latest`` at it.

    Args:
        root: checkpoint root folder.
        step: optimiser step the checkpoint was taken after.
        model_state: model weights.
        train_state: optimiser state, step, RNG states, ... (tensors and plain python types only).
        ema_state: EMA weights, if any.
        keep: number of newest step folders to keep; older ones are deleted.

    Returns:
        The checkpoint folder.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    final = root / name
    tmp = root / f".{name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_weights(model_state, tmp / WEIGHTS_NAME, metadata={"step": str(step)})
    if ema_state is not None:
        save_weights(ema_state, tmp / EMA_NAME, metadata={"step": str(step)})
    with open(tmp / STATE_NAME, "wb") as handle:
        torch.save(train_state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    latest_tmp = root / f".{LATEST_NAME}.tmp-{os.getpid()}"
    with open(latest_tmp, "w") as handle:
        handle.write(name)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(latest_tmp, root / LATEST_NAME)
    _fsync_dir(root)
    for stale in root.glob(".step_*.tmp-*"):  # left behind by killed writers
        shutil.rmtree(stale, ignore_errors=True)
    steps = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in steps[:-keep]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _is_complete(folder: Path) -> bool:
    return (folder / STATE_NAME).is_file() and (folder / WEIGHTS_NAME).is_file()


def latest_checkpoint(root: str | Path) -> Path | None:
    """Return the newest complete checkpoint folder under ``root`` (the ``latest`` pointer, else a scan), or None."""
    root = Path(root)
    pointer = root / LATEST_NAME
    if pointer.is_file():
        folder = root / pointer.read_text().strip()
        if _is_complete(folder):
            return folder
    complete = sorted(p for p in root.glob("step_*") if p.is_dir() and _is_complete(p))
    return complete[-1] if complete else None


def load_checkpoint(
    folder: str | Path,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, torch.Tensor] | None]:
    """Load a checkpoint folder written by :func:`save_checkpoint`.

    Returns:
        (model weights, training state, EMA weights or None).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist; check --resume or the run directory")
    model_state = load_weights(folder / WEIGHTS_NAME)
    train_state = safe_torch_load(folder / STATE_NAME)
    if not isinstance(train_state, dict) or "step" not in train_state:
        raise CheckpointError(f"{folder / STATE_NAME} has no 'step' entry; it was not written by frugalvision")
    ema_path = folder / EMA_NAME
    ema_state = load_weights(ema_path) if ema_path.is_file() else None
    return model_state, train_state, ema_state
