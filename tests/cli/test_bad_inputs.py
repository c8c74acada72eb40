"""The bad-input catalogue of issue 20: each case exits 2 with one line that names the problem and the fix.

(Concurrent runs, resume with a changed config, corrupt checkpoints and full or read-only disks are in
tests/harness/test_faults.py; the same one-line contract holds there.)
"""

import pytest

from frugalvision.cli import build_config, main

SMOKE = ["run", "baseline", "--preset", "smoke"]

CATALOGUE = [
    (["--loop.max-steps", "ten"], ["--loop.max-steps", "'ten'"]),
    (["--fabric.precision", "fp8"], ["'fp8'", "Expected one of ('32-true', 'bf16-mixed', '16-mixed', 'bf16-true')"]),
    (["--fabric.sync-batchnorm", "maybe"], ["Unrecognized options: maybe"]),  # a flag takes no value
    (["--loop.lrr", "0.1"], ["Unrecognized options: --loop.lrr", "did you mean --loop.lr?"]),
    (["--fabric.devices", "0"], ["fabric.devices='0' is invalid", "positive integer"]),
    (["--loop.lr", "-1"], ["loop.lr=-1.0 is invalid", ">= 0"]),
    (["--data-root", "{missing}"], ["does not exist", "omit --data-root"]),
    (["--data-root", "{file}"], ["is a file", "pass the folder holding the dataset"]),
    (["--data-root", "{empty}"], ["is an empty folder", "omit --data-root"]),
    (["--data-root", "{other}"], ["--data-root {other} holds no Fashion-MNIST", "train-images-idx3-ubyte"]),
    (["--out", "{file}"], ["cannot write {file}/baseline", "a file stands where a folder is needed"]),
    (["--config", "{bad_yaml}"], ["is not valid YAML", "fix or regenerate it"]),
    (["--config", "{unknown_field}"], ["unknown config field 'loop.speed'", "valid fields:"]),
]


@pytest.fixture
def paths(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("no dataset here")
    (tmp_path / "bad.yaml").write_text("preset: smoke\nloop: [unclosed\n")
    (tmp_path / "unknown.yaml").write_text("preset: smoke\nloop:\n  speed: 3\n")
    names = {
        "file": "file",
        "empty": "empty",
        "other": "other",
        "bad_yaml": "bad.yaml",
        "unknown_field": "unknown.yaml",
    }
    return {"missing": str(tmp_path / "missing"), **{key: str(tmp_path / name) for key, name in names.items()}}


@pytest.mark.parametrize("argv, needles", CATALOGUE, ids=[" ".join(argv) for argv, _ in CATALOGUE])
def test_each_bad_input_is_one_line_naming_problem_and_fix_with_exit_2(argv, needles, paths, tmp_path, capsys):
    argv = [part.format(**paths) for part in argv]
    out = [] if "--out" in argv else ["--out", str(tmp_path / "runs")]
    assert main([*SMOKE, *out, *argv, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for needle in needles:
        assert needle.format(**paths) in err, err
    assert not (tmp_path / "runs" / "baseline" / "config.yaml").exists()  # a failed start writes no config


def test_a_partial_yaml_starts_from_the_preset_it_names(tmp_path):
    path = tmp_path / "partial.yaml"
    path.write_text("preset: smoke\n")
    config = build_config("baseline", ["--config", str(path)])
    smoke = build_config("baseline", ["--preset", "smoke"])
    assert config == smoke and config.loop.max_steps == smoke.loop.max_steps
