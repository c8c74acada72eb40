import json
import subprocess
import sys

import pytest

from frugalvision.cli import build_config, main
from frugalvision.config_io import config_from_dict, config_to_dict
from frugalvision.errors import ConfigError
from frugalvision.registry import METHODS

PAPERS = {"deit3", "perceiver", "mimo", "scimix", "singe", "diwa", "muhdi", "tfood", "vicha", "lara"}


def test_list_shows_the_ten_papers_with_status(capsys):
    assert main(["list"]) == 0
    printed = capsys.readouterr().out
    for name in PAPERS:
        assert name in printed
    assert {info.name for info in METHODS.values() if info.kind == "paper"} == PAPERS
    for info in METHODS.values():
        assert info.status in {"planned", "available"}
        assert f"{info.name}  " in printed


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["run", "nosuchmethod"], "unknown method 'nosuchmethod'"),
        (["run", "baseline", "--preset", "smoke", "--loop.lr", "-1"], "loop.lr=-1.0 is invalid"),
        (["run", "baseline", "--preset", "smoke", "--data-root", "/no/such/dir"], "data_root='/no/such/dir'"),
        (["run", "baseline", "--preset", "huge"], "unknown preset 'huge'"),
        (["run", "baseline", "--config", "/no/such.yaml"], "config file /no/such.yaml does not exist"),
        (["run", "baseline", "--preset", "smoke", "--models", "mlp"], "models=('mlp',) is invalid"),
        (["frobnicate"], "unknown command 'frobnicate'"),
        (["run", "baseline", "--preset", "smoke", "--loop.lrr", "0.1"], "did you mean --loop.lr?"),
        (["run", "baseline", "--preset", "smoke", "--loop.lr", "abc"], "Error parsing --loop.lr"),
        (["run", "baseline", "--preset", "smoke", "--fabric.strategy", "ddp_spawn"], "fabric.strategy='ddp_spawn'"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and err.startswith("error: ") and "\n" not in err


def test_planned_method_says_so(capsys):
    planned = [name for name, info in METHODS.items() if info.status == "planned"]
    if not planned:
        pytest.skip("every method is available")
    assert main(["run", planned[0]]) == 2
    assert "planned but not implemented" in capsys.readouterr().err


def test_reproduce_with_a_preset_no_method_defines_is_one_line(capsys):
    assert main(["reproduce", "--preset", "gigantic", "--out", "/tmp/unused"]) == 2
    assert "no experiment defines preset 'gigantic'" in capsys.readouterr().err


def test_overrides_reach_nested_fields():
    config = build_config("baseline", ["--preset", "smoke", "--loop.lr", "0.01", "--seeds", "3", "4"])
    assert config.loop.lr == 0.01 and config.seeds == (3, 4) and config.preset == "smoke"


def test_yaml_with_unknown_or_mistyped_field_is_rejected(tmp_path):
    config = build_config("baseline", ["--preset", "smoke"])
    data = config_to_dict(config)
    with pytest.raises(ConfigError, match="unknown config field 'bogus'"):
        config_from_dict(type(config), {**data, "bogus": 1})
    with pytest.raises(ConfigError, match="loop.max_steps"):
        config_from_dict(type(config), {**data, "loop": {**data["loop"], "max_steps": "many"}})


def test_console_script_runs_the_smoke_baseline_and_reports(tmp_path):
    out = tmp_path / "runs"
    command = [sys.executable, "-m", "frugalvision.cli"]
    run = subprocess.run(
        [
            *command,
            "run",
            "baseline",
            "--preset",
            "smoke",
            "--out",
            str(out),
            "--no-progress",
            "--loop.max-steps",
            "20",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "verdict" in run.stdout
    assert (out / "baseline" / "config.yaml").is_file()
    document = json.loads((out / "baseline" / "results.json").read_text())
    assert document["preset"] == "smoke"
    report = subprocess.run([*command, "report", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    markdown = (out / "REPORT.md").read_text()
    assert "baseline" in markdown and document["verdict"] in markdown
    assert (out / "report.html").is_file()
