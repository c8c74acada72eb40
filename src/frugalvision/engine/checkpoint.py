"""Safe, atomic checkpoints: weights as safetensors, training state loaded with ``weights_only=True``.

Layout of a checkpoint folder::

    <root>/step_00000100/model.safetensors   model weights (no pickle)
    <root>/step_00000100/ema.safetensors     EMA weights, when EMA is on
    <root>/step_00000100/state.pt            optimiser, step, RNG, sampler position (tensors and plain types only)
    <root>/step_00000100/manifest.json       size and sha256 of each file above, and the fingerprint of the config
    <root>/latest                            name of the newest complete checkpoint folder

Each folder is written under a temporary name and renamed when complete, and ``latest`` is replaced atomically
afterwards, so a process killed at any instant leaves the previous checkpoint intact and loadable. Loading checks
every file against the manifest, so a flipped or truncated byte is caught (:func:`checkpoint_candidates` lists the
older checkpoints to fall back to).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from frugalvision.errors import CheckpointError, writing

WEIGHTS_NAME = "model.safetensors"
EMA_NAME = "ema.safetensors"
STATE_NAME = "state.pt"
MANIFEST_NAME = "manifest.json"
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


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tensors = _plain_tensors(state_dict)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            save_file(tensors, str(tmp), metadata=metadata)
            os.chmod(tmp, 0o666 & ~_umask())  # safetensors creates 0600 files: colleagues could not read them
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    _fsync_dir(path.parent)
    return path


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    fingerprint: Mapping[str, Any] | None = None,
) -> Path:
    """Write one complete checkpoint folder atomically and point ``latest`` at it.

    Args:
        root: checkpoint root folder.
        step: optimiser step the checkpoint was taken after.
        model_state: model weights.
        train_state: optimiser state, step, RNG states, ... (tensors and plain python types only).
        ema_state: EMA weights, if any.
        keep: number of newest step folders to keep; older ones are deleted.
        fingerprint: JSON-able ``{field: value}`` of what the run depends on (config, data), stored in the manifest
            and compared on resume.

    Returns:
        The checkpoint folder.

    Raises:
        OutputError: the folder cannot be written (read-only, full disk): one line naming it.
    """
    root = Path(root)
    name = f"step_{step:08d}"
    final = root / name
    tmp = root / f".{name}.tmp-{os.getpid()}"
    with writing(root):
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            _write_folder(tmp, step, model_state, train_state, ema_state, fingerprint)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
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
    for stale in root.glob(".step_*.tmp-*"):  # left behind by killed writers (never another live writer's)
        if not _writer_alive(stale):
            shutil.rmtree(stale, ignore_errors=True)
    steps = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in steps[:-keep]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _write_folder(
    folder: Path,
    step: int,
    model_state: Mapping[str, torch.Tensor],
    train_state: dict[str, Any],
    ema_state: Mapping[str, torch.Tensor] | None,
    fingerprint: Mapping[str, Any] | None,
) -> None:
    """The files of one checkpoint, then the manifest of their sizes and hashes."""
    save_weights(model_state, folder / WEIGHTS_NAME, metadata={"step": str(step)})
    if ema_state is not None:
        save_weights(ema_state, folder / EMA_NAME, metadata={"step": str(step)})
    buffer = io.BytesIO()
    torch.save(train_state, buffer)  # in memory: torch's zip writer reports a full disk as a bare RuntimeError
    with open(folder / STATE_NAME, "wb") as handle:
        handle.write(buffer.getbuffer())
        handle.flush()
        os.fsync(handle.fileno())
    files = {
        path.name: {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
        for path in sorted(folder.iterdir())
        if path.name in (WEIGHTS_NAME, EMA_NAME, STATE_NAME)
    }
    manifest = {"format": 1, "step": step, "files": files, "fingerprint": dict(fingerprint or {})}
    with open(folder / MANIFEST_NAME, "w") as handle:
        handle.write(json.dumps(manifest, indent=1, sort_keys=True, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    _fsync_dir(folder)


def _writer_alive(tmp: Path) -> bool:
    """Whether the process that names a temporary folder (``....tmp-<pid>``) still runs on this host."""
    pid = tmp.name.rsplit("-", 1)[-1]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_complete(folder: Path) -> bool:
    return (folder / STATE_NAME).is_file() and (folder / WEIGHTS_NAME).is_file()


def latest_checkpoint(root: str | Path) -> Path | None:
    """Return the newest complete checkpoint folder under ``root`` (the ``latest`` pointer, else a scan), or None."""
    return next(checkpoint_candidates(root), None)


def checkpoint_candidates(root: str | Path) -> Iterator[Path]:
    """Complete checkpoint folders under ``root``, newest first: the ``latest`` pointer's, then the others by step."""
    root = Path(root)
    seen: set[Path] = set()
    pointer = root / LATEST_NAME
    if pointer.is_file():
        try:
            folder = root / pointer.read_text().strip()
        except OSError:
            folder = root
        if folder != root and _is_complete(folder):
            seen.add(folder)
            yield folder
    for folder in sorted((p for p in root.glob("step_*") if p.is_dir()), reverse=True):
        if folder not in seen and _is_complete(folder):
            yield folder


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The manifest of a checkpoint folder, None for checkpoints written before manifests existed.

    Raises:
        CheckpointError: the manifest is unreadable.
    """
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"checkpoint manifest {path} is corrupt ({error}); the checkpoint cannot be trusted"
        ) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise CheckpointError(f"checkpoint manifest {path} has no file list; the checkpoint cannot be trusted")
    return manifest


def verify_checkpoint(folder: str | Path) -> dict[str, Any] | None:
    """Check every file of a checkpoint folder against its manifest's size and sha256; return the manifest.

    Raises:
        CheckpointError: a file is missing, truncated or altered (names it).
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        return None
    for name, expected in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"checkpoint {folder} lacks {name}; it is incomplete")
        size = path.stat().st_size
        if size != expected.get("bytes"):
            raise CheckpointError(f"checkpoint {folder}: {name} has {size} bytes, {expected.get('bytes')} were written")
        if file_sha256(path) != expected.get("sha256"):
            raise CheckpointError(f"checkpoint {folder}: {name} does not match the sha256 recorded when it was written")
    return manifest


def load_checkpoint(
    folder: str | Path,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, torch.Tensor] | None]:
    """Load a checkpoint folder written by :func:`save_checkpoint`, after checking its files against the manifest.

    Returns:
        (model weights, training state, EMA weights or None).

    Raises:
        CheckpointError: missing, corrupt, truncated or unsafe files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist; check --resume or the run directory")
    verify_checkpoint(folder)
    model_state = load_weights(folder / WEIGHTS_NAME)
    train_state = safe_torch_load(folder / STATE_NAME)
    if not isinstance(train_state, dict) or "step" not in train_state:
        raise CheckpointError(f"{folder / STATE_NAME} has no 'step' entry; it was not written by frugalvision")
    ema_path = folder / EMA_NAME
    ema_state = load_weights(ema_path) if ema_path.is_file() else None
    return model_state, train_state, ema_state
