"""One contract over the registry: every available method (and each of its studies) must pass these tests.

A new method is covered the moment its ``experiment.py`` exists. The smoke run of each (method, study) happens once
per session and is shared by the tests below.
"""

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from frugalvision.cli import build_config, main
from frugalvision.config_io import config_from_dict, read_config_file, save_config
from frugalvision.harness import REQUIRED_PRESETS, supported_rate
from frugalvision.registry import available_methods, get_method
from frugalvision.report import load_results

ROOT = Path(__file__).resolve().parents[1]
METHODS = [m for m in available_methods() if m in os.environ.get("CONTRACT_ONLY", m)]
CASES = [(m, None) for m in METHODS] + [(m, s) for m in METHODS for s in get_method(m).load().studies]
CASE_IDS = [m if s is None else f"{m}-{s}" for m, s in CASES]
_RUNS: dict[tuple[str, str | None], Path] = {}


def _argv(method, study, out, *extra):
    argv = ["run", method, "--preset", "smoke", "--out", str(out), "--no-progress", *extra]
    return argv + (["--study", study] if study else [])


def _folder(out, method, study):
    return out / method / study if study else out / method


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    def get(method, study):
        if (method, study) not in _RUNS:
            out = tmp_path_factory.mktemp(f"{method}-{study or 'main'}")
            assert main(_argv(method, study, out)) == 0
            _RUNS[(method, study)] = out
        return _RUNS[(method, study)]

    return get


@pytest.mark.parametrize("method, study", CASES, ids=CASE_IDS)
def test_smoke_run_writes_one_valid_results_file_with_a_recomputed_verdict(smoke_runs, method, study):
    out = smoke_runs(method, study)
    folder = _folder(out, method, study)
    document = load_results(folder)
    assert document["method"] == method and document["preset"] == "smoke" and document.get("study") == study
    assert (folder / "config.yaml").is_file()
    experiment = get_method(method).load()
    config = build_config(method, ["--config", str(folder / "config.yaml")])
    verdict = experiment.study(study).verdict(config, document["rows"])
    assert (verdict.verdict, verdict.rule) == (document["verdict"], document["verdict_rule"])
    for figure in document.get("figures", []):
        assert (folder / figure).is_file()
    results_files = list(out.rglob("results.json"))
    assert results_files == [folder / "results.json"]


@pytest.mark.parametrize("method, study", CASES, ids=CASE_IDS)
def test_resume_after_completion_trains_nothing_and_reproduces_the_results(smoke_runs, method, study, capsys):
    out = smoke_runs(method, study)
    before = load_results(_folder(out, method, study))
    capsys.readouterr()
    assert main(_argv(method, study, out, "--resume")) == 0
    printed = capsys.readouterr().out
    unit_lines = [line for line in printed.splitlines() if re.match(r"\s+\[\S+ \d+/\d+\] ", line)]
    assert unit_lines and all("finished earlier (resumed)" in line for line in unit_lines), printed
    after = load_results(_folder(out, method, study))
    strip = lambda d: {k: v for k, v in d.items() if k not in ("wall_s", "env")}  # noqa: E731
    assert json.dumps(strip(after), sort_keys=True) == json.dumps(strip(before), sort_keys=True)


@pytest.mark.parametrize("method, study", CASES, ids=CASE_IDS)
def test_the_rule_says_supported_at_most_five_percent_of_the_time_under_no_effect(smoke_runs, method, study):
    """Null simulation on rows shaped like the committed standard run (else the smoke rows on three seeds)."""
    experiment = get_method(method).load()
    target = experiment.study(study)
    committed = ROOT / "results" / method / "standard" / (f"{study}/" if study else "") / "results.json"
    if committed.is_file():
        rows = load_results(committed)["rows"]
        config = experiment.preset("standard")
    else:
        smoke = load_results(_folder(smoke_runs(method, study), method, study))["rows"]
        rows = [{**row, "seed": seed} for seed in (0, 1, 2) for row in smoke if row["seed"] == smoke[0]["seed"]]
        config = dataclasses.replace(experiment.preset("smoke"), seeds=(0, 1, 2))
    config = dataclasses.replace(config, study=study)
    levels = target.null_levels(config) if target.null_levels else None
    for noise in (1.0, 3.0):
        rate = supported_rate(lambda r: target.verdict(config, r), rows, trials=1000, levels=levels, noise_scale=noise)
        assert rate <= 0.07, f"{method}/{study}: 'supported' in {rate:.1%} of no-effect simulations"


@pytest.mark.parametrize("method", METHODS)
def test_presets_round_trip_through_yaml_and_replay(tmp_path, method):
    experiment = get_method(method).load()
    assert set(REQUIRED_PRESETS) <= set(experiment.presets)
    for preset, make in experiment.presets.items():
        config = make()
        assert isinstance(config, experiment.config_class) and config.preset == preset
        path = save_config(config, tmp_path / f"{preset}.yaml")
        assert config_from_dict(type(config), read_config_file(path)) == config
        if preset == "smoke":  # smoke presets need no dataset root, so they also replay through the CLI parser
            assert build_config(method, ["--config", str(path)]) == config


@pytest.mark.parametrize("method", METHODS)
def test_a_partial_config_file_starts_from_the_preset_it_names(tmp_path, method):
    path = tmp_path / "partial.yaml"
    path.write_text("preset: smoke\nseeds: [7]\n")
    config = build_config(method, ["--config", str(path)])
    assert config == dataclasses.replace(get_method(method).load().preset("smoke"), seeds=(7,))


@pytest.mark.parametrize("method", METHODS)
def test_help_lists_every_field(method, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", method, "--help"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    for spec in dataclasses.fields(get_method(method).load().config_class):
        assert f"--{spec.name.replace('_', '-')}" in printed or f"--{spec.name}" in printed, spec.name


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "argv, needle",
    [(["--threads", "-1"], "threads=-1 is invalid"), (["--seeds"], "seeds"), (["--study", "nope"], "study='nope'")],
)
def test_an_invalid_value_exits_2_with_one_line(method, argv, needle, capsys):
    assert main(["run", method, "--preset", "smoke", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err


def _torchrun(method, out):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "frugalvision.cli",
        *_argv(method, None, out, "--fabric.accelerator", "cpu", "--fabric.strategy", "ddp"),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)


def _check_two_processes(method, tmp_path):
    run = _torchrun(method, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("verdict:") == 1, run.stdout
    assert list(tmp_path.rglob("results.json")) == [tmp_path / method / "results.json"]
    assert load_results(tmp_path / method)["env"]["world_size"] == 2


@pytest.mark.distributed
def test_two_process_torchrun_smoke_writes_one_results_file_baseline(tmp_path):
    _check_two_processes("baseline", tmp_path)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("method", [m for m in METHODS if m != "baseline"])
def test_two_process_torchrun_smoke_writes_one_results_file(tmp_path, method):
    _check_two_processes(method, tmp_path)
