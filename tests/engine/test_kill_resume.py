import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from frugalvision.engine import latest_checkpoint, load_weights

SCRIPT = Path(__file__).with_name("train_script.py")


def _run(run_dir: Path, *flags: str) -> None:
    subprocess.run([sys.executable, str(SCRIPT), str(run_dir), *flags], check=True, timeout=300)


def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    _run(reference)

    process = subprocess.Popen([sys.executable, str(SCRIPT), str(interrupted), "--slow"])
    deadline = time.time() + 240
    killed_at = None
    while time.time() < deadline:
        folder = latest_checkpoint(interrupted / "checkpoints")
        if folder is not None and int(folder.name.split("_")[1]) >= 9:
            os.kill(process.pid, signal.SIGKILL)
            killed_at = int(folder.name.split("_")[1])
            break
        if process.poll() is not None:
            break
        time.sleep(0.02)
    process.wait()
    assert killed_at is not None and killed_at < 24, "the run was not killed mid-way"
    assert process.returncode == -signal.SIGKILL

    _run(interrupted, "--resume")
    final_ref = latest_checkpoint(reference / "checkpoints")
    final_res = latest_checkpoint(interrupted / "checkpoints")
    assert final_ref.name == final_res.name == "step_00000024"
    for name in ("model.safetensors", "ema.safetensors"):
        expected, actual = load_weights(final_ref / name), load_weights(final_res / name)
        assert expected.keys() == actual.keys()
        for key in expected:
            assert expected[key].dtype == actual[key].dtype
            assert expected[key].numpy().tobytes() == actual[key].numpy().tobytes(), key
    assert (reference / "metrics.csv").read_text() == (interrupted / "metrics.csv").read_text()
