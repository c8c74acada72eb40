"""Fault injection with real processes on the smoke baseline (slow): two runs on one folder, SIGKILL inside
``frugal reproduce`` then ``--resume``, and a file-size limit that makes the checkpoint write fail like a full disk."""

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

FRUGAL = [sys.executable, "-m", "frugalvision.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def _start(*argv: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [*FRUGAL, *argv], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


def _rows(out: Path) -> list[dict]:
    """The rows without their timings (``*_s`` metrics)."""
    rows = json.loads((out / "baseline" / "results.json").read_text())["rows"]
    return [{**row, "metrics": {k: v for k, v in row["metrics"].items() if not k.endswith("_s")}} for row in rows]


@pytest.fixture(scope="module")
def concurrent(tmp_path_factory):
    """Two identical smoke runs started together on one --out: (out folder, [(returncode, stdout, stderr)] x 2)."""
    out = tmp_path_factory.mktemp("concurrent")
    processes = [_start("run", "baseline", "--preset", "smoke", "--out", str(out), "--no-progress") for _ in range(2)]
    return out, [(p.wait(timeout=600), *p.communicate()) for p in processes]


def test_two_runs_on_one_folder_one_trains_the_other_is_refused_in_one_line(concurrent):
    out, outcomes = concurrent
    codes = sorted(code for code, _, _ in outcomes)
    assert codes == [0, 2], outcomes
    refused = next(err for code, _, err in outcomes if code == 2).strip()
    assert refused.startswith("error: ") and "\n" not in refused and "being written by another run (pid " in refused
    assert len(_rows(out)) == 2 and not list(out.rglob(".*.tmp-*"))


def test_sigkill_inside_reproduce_then_resume_gives_the_uninterrupted_results(concurrent, tmp_path):
    reference, _ = concurrent
    argv = ["reproduce", "--preset", "smoke", "--methods", "baseline", "--out", str(tmp_path), "--no-progress"]
    process = _start(*argv)
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if list((tmp_path / "baseline" / "runs").glob("*/unit.json")):  # the first unit finished, the second runs
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    process.communicate()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "baseline" / "results.json").exists()
    resumed = subprocess.run([*FRUGAL, *argv, "--resume"], env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "finished earlier (resumed)" in resumed.stdout and (tmp_path / "REPORT.md").is_file()
    assert _rows(tmp_path) == _rows(reference)


def test_a_full_disk_while_checkpointing_is_one_line_with_exit_2(tmp_path):
    def limit_file_size():  # writes past 200 kB fail with EFBIG, as on a full disk (SIGXFSZ ignored)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    argv = [*FRUGAL, "run", "baseline", "--preset", "smoke", "--out", str(tmp_path), "--no-progress"]
    completed = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=600, preexec_fn=limit_file_size)
    err = completed.stderr.strip()
    assert completed.returncode == 2 and err.startswith("error: ") and "\n" not in err, err
    assert "cannot write" in err and "(File too large)" in err and "free disk space" in err
    assert not list(tmp_path.rglob(".*.tmp-*")) and not (tmp_path / "baseline" / "results.json").exists()
