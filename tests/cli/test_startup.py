"""Start-up: which commands import what, the help cache, and the thread policy set before torch is imported."""

import os
import subprocess
import sys

import pytest

import frugalvision.cli as cli
from frugalvision.cli import main


def _python(code, env=None):
    environment = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    environment.update(env or {})
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


LOADED = "import sys; print(sorted(m for m in ('torch', 'lightning', 'tyro') if m in sys.modules))"


@pytest.mark.parametrize("argv", [["list"], ["--help"], ["run", "--help"]])
def test_list_and_help_import_neither_torch_nor_lightning(argv):
    code = f"from frugalvision.cli import main; main({argv!r}); {LOADED}"
    assert _python(code).strip().splitlines()[-1] == "[]"


def test_run_help_is_served_from_the_cache_without_importing_torch(tmp_path):
    env = {"FRUGALVISION_CACHE": str(tmp_path)}
    code = (
        "import contextlib, io, sys\nfrom frugalvision.cli import main\nout = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n    try:\n        main(['run', 'baseline', '--help'])\n"
        "    except SystemExit as e:\n        assert e.code == 0\n"
        f"print(repr(out.getvalue())); {LOADED}"
    )
    first, second = _python(code, env).splitlines(), _python(code, env).splitlines()
    assert first[0] == second[0] and "--loop.lr" in first[0]
    assert "torch" in first[1] and second[1] == "[]"
    assert len(list((tmp_path / "help").glob("baseline-*.txt"))) == 1


def test_a_changed_source_renders_the_page_again(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FRUGALVISION_CACHE", str(tmp_path))
    rendered = []

    def render():
        rendered.append(1)
        print("page", len(rendered))
        raise SystemExit(0)

    for stamp in ("a", "a", "b"):
        monkeypatch.setattr(cli, "_sources_stamp", lambda stamp=stamp: stamp)
        with pytest.raises(SystemExit):
            cli.print_help("baseline", ["--help"], render)
    assert capsys.readouterr().out == "page 1\npage 1\npage 2\n"
    assert len(list((tmp_path / "help").glob("baseline-*.txt"))) == 1  # the stale page was replaced


def test_a_config_file_is_never_answered_from_the_cache():
    assert cli._help_key("baseline", ["--config", "run.yaml", "--help"]) is None


def test_help_of_an_unknown_method_is_one_line(capsys):
    assert main(["run", "nosuchmethod", "--help"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown method 'nosuchmethod'")


def test_the_cli_sets_the_passive_wait_policy_before_torch_and_keeps_a_user_value():
    code = (
        "import os; from frugalvision.cli import main; main(['list'])\n"
        "from frugalvision.threads import thread_policy; print(thread_policy())"
    )
    assert _python(code).strip().endswith("{'omp_wait_policy': 'PASSIVE', 'omp_wait_policy_source': 'frugalvision'}")
    assert (
        _python(code, {"OMP_WAIT_POLICY": "ACTIVE"})
        .strip()
        .endswith("{'omp_wait_policy': 'ACTIVE', 'omp_wait_policy_source': 'user'}")
    )
    late = "import torch; from frugalvision.threads import apply_thread_policy; import os\n"
    late += "print(apply_thread_policy(), os.environ.get('OMP_WAIT_POLICY'))"
    assert _python(late).strip().endswith("too late None")
