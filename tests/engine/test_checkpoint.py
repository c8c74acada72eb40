import os
from pathlib import Path

import pytest
import torch

from frugalvision.engine import (
    latest_checkpoint,
    load_checkpoint,
    load_weights,
    safe_torch_load,
    save_checkpoint,
    save_weights,
)
from frugalvision.errors import CheckpointError


class _Exploit:
    """A pickle payload that would create a file when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_weights_round_trip_is_exact(tmp_path):
    state = {"w": torch.randn(3, 4), "b": torch.arange(5), "half": torch.randn(2).half()}
    path = save_weights(state, tmp_path / "m.safetensors")
    loaded = load_weights(path)
    assert loaded.keys() == state.keys()
    for key in state:
        assert torch.equal(loaded[key], state[key])
    assert not list(tmp_path.glob(".*tmp*"))


def test_tied_weights_are_saved(tmp_path):
    shared = torch.randn(4, 4)
    loaded = load_weights(save_weights({"a": shared, "b": shared}, tmp_path / "t.safetensors"))
    assert torch.equal(loaded["a"], loaded["b"])


@pytest.mark.parametrize("loader", [safe_torch_load, load_weights])
def test_malicious_pickle_is_refused_and_never_executed(tmp_path, loader):
    marker = tmp_path / "pwned"
    payload = tmp_path / "evil.pt"
    torch.save({"weights": torch.ones(2), "x": _Exploit(marker)}, payload)
    with pytest.raises(CheckpointError, match="refusing to load"):
        loader(payload)
    assert not marker.exists()


def test_plain_tensor_pickle_is_accepted(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"w": torch.ones(3)}, path)
    assert torch.equal(load_weights(path)["w"], torch.ones(3))


def test_corrupt_and_missing_files_give_one_line_errors(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError) as info:
        load_weights(bad)
    assert "\n" not in str(info.value) and str(bad) in str(info.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_weights(tmp_path / "missing.safetensors")


def test_checkpoint_folder_latest_and_retention(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, {"w": torch.full((2,), float(step))}, {"step": step}, keep=2)
    folders = sorted(p.name for p in tmp_path.glob("step_*"))
    assert folders == ["step_00000002", "step_00000003"]
    latest = latest_checkpoint(tmp_path)
    model, state, ema = load_checkpoint(latest)
    assert state["step"] == 3 and torch.equal(model["w"], torch.full((2,), 3.0)) and ema is None


def test_incomplete_checkpoint_is_ignored(tmp_path):
    save_checkpoint(tmp_path, 1, {"w": torch.zeros(1)}, {"step": 1})
    partial = tmp_path / ".step_00000002.tmp-123"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half-written")
    assert latest_checkpoint(tmp_path).name == "step_00000001"


def test_dangling_latest_pointer_falls_back_to_newest_complete_folder(tmp_path):
    for step in (1, 2):
        save_checkpoint(tmp_path, step, {"w": torch.zeros(1)}, {"step": step}, keep=3)
    (tmp_path / "latest").write_text("step_00000009")
    assert latest_checkpoint(tmp_path).name == "step_00000002"


def test_the_manifest_records_size_and_sha256_and_old_checkpoints_without_one_still_load(tmp_path):
    import hashlib
    import json

    folder = save_checkpoint(tmp_path, 4, {"w": torch.arange(3.0)}, {"step": 4}, fingerprint={"loop.lr": 0.1})
    manifest = json.loads((folder / "manifest.json").read_text())
    weights = folder / "model.safetensors"
    assert manifest["fingerprint"] == {"loop.lr": 0.1} and set(manifest["files"]) == {"model.safetensors", "state.pt"}
    assert manifest["files"]["model.safetensors"] == {
        "bytes": weights.stat().st_size,
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one flipped bit
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors does not match the sha256"):
        load_checkpoint(folder)
    (folder / "manifest.json").unlink()  # a checkpoint from before manifests: loaded unchecked
    assert load_checkpoint(folder)[1]["step"] == 4
