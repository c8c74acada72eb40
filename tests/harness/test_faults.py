"""Fault injection: concurrent runs, changed configs on resume, corrupt checkpoints, unwritable outputs, interrupted
``frugal reproduce``, file permissions. Fast: toy experiments through the real CLI, harness and engine code."""

import dataclasses
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from frugalvision.cli import main
from frugalvision.engine import Engine, FabricConfig, LoopConfig, load_weights
from frugalvision.engine import checkpoint as checkpoint_module
from frugalvision.engine.checkpoint import load_checkpoint, save_checkpoint
from frugalvision.errors import CheckpointError, ConfigError, OutputError, RunFolderBusyError
from tests.engine.toy import ToyTask
from tests.harness import toys

LOOP = LoopConfig(max_steps=8, batch_size=16, lr=0.05, ckpt_every=2, seed=3, log_every=1)
HOLD = (
    "import sys, time\nfrom frugalvision.engine.runlock import RunLock\n"
    "RunLock(sys.argv[1]).acquire()\nprint('held', flush=True)\ntime.sleep(120)\n"
)


def _engine() -> Engine:
    return Engine(FabricConfig(accelerator="cpu"), progress=False)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.fixture
def toy_cli(monkeypatch):
    toys.install_toys(monkeypatch)
    return toys


@pytest.fixture
def lock_holder():
    """Start a process that holds a run folder's lock; it is killed at the end."""
    processes = []

    def hold(folder: Path) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield hold
    for process in processes:
        process.kill()
        process.wait()


# ------------------------------------------------------------------------------------------------ concurrent runs
def test_a_run_into_a_folder_another_process_writes_is_refused_naming_it(tmp_path, toy_cli, lock_holder, capsys):
    holder = lock_holder(tmp_path / "toy")
    assert main(["run", "toy", "--out", str(tmp_path)]) == 2
    err = _one_line_error(capsys)
    assert f"pid {holder.pid}" in err and "being written by another run" in err and "another --out" in err
    assert toy_cli.STEP_CALLS == [] and not (tmp_path / "toy" / "config.yaml").exists()
    with pytest.raises(RunFolderBusyError):  # the engine locks its run folder too (library use)
        _engine().fit(ToyTask(), LOOP, run_dir=lock_holder(tmp_path / "engine-run").args[-1])
    holder.kill()
    holder.wait()  # a killed holder leaves no stale lock: the operating system released it
    assert main(["run", "toy", "--out", str(tmp_path), "--seeds", "0"]) == 0


def test_checkpoint_cleanup_never_deletes_a_live_writers_temporary_folder(tmp_path, lock_holder):
    live = lock_holder(tmp_path / "other")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live_tmp, dead_tmp = tmp_path / f".step_00000001.tmp-{live.pid}", tmp_path / f".step_00000001.tmp-{dead.stdout}"
    live_tmp.mkdir()
    dead_tmp.mkdir()
    save_checkpoint(tmp_path, 2, {"w": torch.zeros(2)}, {"step": 2})
    assert live_tmp.is_dir() and not dead_tmp.exists()


# ------------------------------------------------------------------------------------------------ changed configs
def test_resuming_a_checkpoint_with_another_loop_data_or_config_is_refused_naming_the_fields(tmp_path):
    _engine().fit(ToyTask(), LOOP, run_dir=tmp_path, fingerprint={"dataset": "a"})
    changes = [
        (dataclasses.replace(LOOP, lr=0.1), ToyTask(), {"dataset": "a"}, "engine.loop.lr=0.05 (now 0.1)"),
        (LOOP, ToyTask(n=64), {"dataset": "a"}, "data.train_size=96 (now 64)"),
        (LOOP, ToyTask(), {"dataset": "b"}, "dataset='a' (now 'b')"),
    ]
    for loop, task, fingerprint, needle in changes:
        with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")) as error:
            _engine().fit(task, loop, run_dir=tmp_path, resume=True, fingerprint=fingerprint)
        assert "\n" not in str(error.value) and "run without --resume" in str(error.value)
    extended = dataclasses.replace(LOOP, max_steps=10, schedule="constant")  # max_steps is neutral for constant
    _engine().fit(ToyTask(), dataclasses.replace(extended, max_steps=8), run_dir=tmp_path / "c")
    assert _engine().fit(ToyTask(), extended, run_dir=tmp_path / "c", resume=True).steps == 10


def test_resume_of_an_interrupted_unit_with_another_lr_is_refused_and_keeps_the_config(tmp_path, toy_cli, capsys):
    toy_cli.FAIL_ON.add("toy:base-seed0")  # the first unit trains, checkpoints, then dies
    with pytest.raises(RuntimeError, match="killed"):
        main(["run", "toy", "--out", str(tmp_path)])
    config = (tmp_path / "toy" / "config.yaml").read_text()
    toy_cli.FAIL_ON.clear()
    assert main(["run", "toy", "--out", str(tmp_path), "--resume", "--loop.lr", "0.1"]) == 2
    err = _one_line_error(capsys)
    assert "base-seed0/checkpoints/step_00000006 was made with loop.lr=0.05 (now 0.1)" in err
    assert (tmp_path / "toy" / "config.yaml").read_text() == config  # the refused run wrote nothing


def test_a_run_that_fails_before_training_leaves_the_good_runs_config(tmp_path, toy_cli, capsys):
    assert main(["run", "toy", "--out", str(tmp_path), "--seeds", "0"]) == 0
    config = (tmp_path / "toy" / "config.yaml").read_text()
    results = (tmp_path / "toy" / "results.json").read_text()
    assert main(["run", "toy", "--out", str(tmp_path), "--seeds", "0", "--loop.batch-size", "1000"]) == 2
    assert "exceeds the training set" in _one_line_error(capsys)
    assert (tmp_path / "toy" / "config.yaml").read_text() == config
    assert (tmp_path / "toy" / "results.json").read_text() == results


def test_loop_seed_is_an_offset_of_every_units_seed(tmp_path, toy_cli):
    def weights(out: Path, *flags: str) -> list[float]:
        assert main(["run", "toy", "--out", str(out), "--seeds", "0", *flags]) == 0
        return [row["metrics"]["weight_sum"] for row in json.loads((out / "toy" / "results.json").read_text())["rows"]]

    seed0, again, offset = weights(tmp_path / "a"), weights(tmp_path / "b"), weights(tmp_path / "c", "--loop.seed", "5")
    assert seed0 == again and all(a != b for a, b in zip(seed0, offset))
    assert "seed: 5" in (tmp_path / "c" / "toy" / "config.yaml").read_text()


# ------------------------------------------------------------------------------------------------ corrupt checkpoints
def _flip(path: Path, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    for i in range(count):
        data[-1 - 3 * i] ^= 0xFF  # tensor bytes at the end of the file, not the header
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip weights", "truncate state"])
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_intact_one(tmp_path, damage, capsys):
    reference = _engine().fit(ToyTask(), LOOP, run_dir=tmp_path / "reference")
    _engine().fit(ToyTask(), LOOP, run_dir=tmp_path / "run")
    latest = tmp_path / "run" / "checkpoints" / "step_00000008"
    if damage == "flip weights":
        _flip(latest / "model.safetensors")
    else:
        state = latest / "state.pt"
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="sha256" if damage == "flip weights" else "bytes"):
        load_checkpoint(latest)
    capsys.readouterr()
    resumed = _engine().fit(ToyTask(), LOOP, run_dir=tmp_path / "run", resume=True)
    warning = capsys.readouterr().err.strip()
    assert warning.count("\n") == 0 and "step_00000008" in warning and warning.endswith("step_00000006")
    for key, value in reference.model.state_dict().items():  # steps 7-8 trained again, exactly
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    final = load_weights(latest / "model.safetensors")
    assert all(torch.equal(final[k], v) for k, v in reference.model.state_dict().items())


def test_every_checkpoint_corrupt_is_one_line(tmp_path):
    _engine().fit(ToyTask(), LOOP, run_dir=tmp_path)
    for folder in (tmp_path / "checkpoints").glob("step_*"):
        _flip(folder / "model.safetensors", 1)
    with pytest.raises(CheckpointError, match="no intact checkpoint under .*start without --resume"):
        _engine().fit(ToyTask(), LOOP, run_dir=tmp_path, resume=True)


# ------------------------------------------------------------------------------------------------ unwritable outputs
def test_a_file_where_the_checkpoints_go_fails_before_any_training(tmp_path):
    toys.STEP_CALLS.clear()
    (tmp_path / "checkpoints").write_text("in the way")
    with pytest.raises(OutputError, match=f"cannot write {tmp_path / 'checkpoints'}.*remove it or pass another --out"):
        _engine().fit(toys.CountingTask(), LOOP, run_dir=tmp_path)
    assert toys.STEP_CALLS == []


@pytest.mark.parametrize(
    "code, reason, fix",
    [
        (errno.ENOSPC, "No space left on device", "free disk space"),
        (errno.EROFS, "Read-only file system", "make it writable"),
        (errno.EACCES, "Permission denied", "make it writable"),
    ],
)
def test_a_full_or_read_only_disk_mid_run_is_one_line_with_exit_2(
    tmp_path, toy_cli, monkeypatch, capsys, code, reason, fix
):
    def failing_save(*args, **kwargs):
        raise OSError(code, reason, args[1])

    monkeypatch.setattr(checkpoint_module, "save_file", failing_save)
    assert main(["run", "toy", "--out", str(tmp_path), "--seeds", "0"]) == 2
    err = _one_line_error(capsys)
    assert f"({reason})" in err and fix in err and str(tmp_path / "toy" / "runs" / "base-seed0") in err
    assert not list(tmp_path.rglob(".*.tmp-*")), "a failed write left temporary files"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_fails_before_training(tmp_path, toy_cli, capsys):
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy").chmod(0o500)
    try:
        assert main(["run", "toy", "--out", str(tmp_path)]) == 2
    finally:
        (tmp_path / "toy").chmod(0o700)
    assert "make it writable" in _one_line_error(capsys) and toy_cli.STEP_CALLS == []


# ------------------------------------------------------------------------------------------------ reproduce --resume
def test_reproduce_resume_skips_finished_experiments_and_continues_the_interrupted_one(tmp_path, toy_cli, capsys):
    reference = tmp_path / "reference"
    assert main(["reproduce", "--preset", "smoke", "--out", str(reference)]) == 0
    out = tmp_path / "out"
    assert main(["reproduce", "--preset", "smoke", "--out", str(out), "--methods", "toy"]) == 0  # killed between
    toy_cli.CALLS.clear()
    toy_cli.FAIL_ON.add("toy2:ours-seed0")  # then killed inside the second experiment, after a unit trained
    with pytest.raises(RuntimeError, match="killed"):
        main(["reproduce", "--preset", "smoke", "--out", str(out), "--resume"])
    assert toy_cli.CALLS == ["toy2:base-seed0", "toy2:ours-seed0"]  # the finished experiment was skipped
    toy_cli.FAIL_ON.clear()
    toy_cli.CALLS.clear()
    toy_cli.STEP_CALLS.clear()
    capsys.readouterr()
    assert main(["reproduce", "--preset", "smoke", "--out", str(out), "--resume"]) == 0
    assert toy_cli.CALLS == ["toy2:ours-seed0", "toy2:base-seed1", "toy2:ours-seed1"]
    assert len(toy_cli.STEP_CALLS) == 2 * 6  # the interrupted unit had finished training: only seed 1 trains
    assert "toy 4/4] ours seed 1: finished earlier (resumed)" in capsys.readouterr().out
    for name in ("toy", "toy2"):
        strip = lambda d: {k: v for k, v in d.items() if k not in ("wall_s", "env", "time_profile")}  # noqa: E731
        expected = json.loads((reference / name / "results.json").read_text())
        assert strip(json.loads((out / name / "results.json").read_text())) == strip(expected)
    assert (out / "REPORT.md").is_file()


# ------------------------------------------------------------------------------------------------ permissions
def test_everything_a_run_writes_is_readable_by_colleagues_under_the_usual_umask(tmp_path, toy_cli):
    previous = os.umask(0o022)
    try:
        assert main(["reproduce", "--preset", "smoke", "--out", str(tmp_path), "--methods", "toy"]) == 0
    finally:
        os.umask(previous)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {
        "results.json",
        "config.yaml",
        "unit.json",
        "model.safetensors",
        "state.pt",
        "manifest.json",
        "REPORT.md",
        "report.html",
        "top1.png",
        "metrics.csv",
    }
    assert [p for p in files if p.stat().st_mode & 0o044 != 0o044] == []
