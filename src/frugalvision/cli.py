"""The ``frugal`` command line: list | run | reproduce | report | bench.

Examples::

    frugal list
    frugal run baseline --preset smoke --out runs
    frugal run baseline --config runs/baseline/config.yaml      # replay a saved run
    frugal reproduce --preset standard --out runs
    frugal report --out runs
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import tyro

from frugalvision.config_io import config_from_dict, config_to_dict, read_config_file
from frugalvision.errors import ConfigError, FrugalError, output_error
from frugalvision.registry import CORE_PRESETS, METHODS, available_methods, get_method

T = TypeVar("T")

USAGE = """usage: frugal <command> [options]

commands:
  list                         show the registered methods and their status
  run METHOD [options]         run one method's experiment:
                                 --preset smoke|standard|extended|paper   the starting values (default: standard)
                                 --config run.yaml               replay a saved config (a partial one starts from
                                                                 the preset it names)
                                 --study variants                a method's study instead of its main experiment
                                 --resume                        skip finished runs, continue interrupted ones
                                 --out DIR, --seeds 0 1 2, any config field (--loop.lr 0.01 ...)
  reproduce [options]          run every available experiment (--preset, --resume, --methods), then the report
  report [--out DIR]           render <out>/REPORT.md and report.html from the results.json files
                                 (--archive results: copy them under results/<method>/<preset>/;
                                  --readme README.md: regenerate the README's results table from the archive)
  bench [options]              run the speed benchmarks of the available methods

`frugal run METHOD --help` lists every field of that method's config."""


@dataclass
class ReproduceArgs:
    """Run every available experiment and render the report.

    Attributes:
        preset: preset of every experiment (an extra preset runs only the methods that define it).
        methods: methods to run (default: all available).
        out: output root.
        seeds: override the seeds of every experiment (default: each preset's own).
        resume: skip the experiments and runs that finished, continue the interrupted one.
        progress: show progress bars.
    """

    preset: str = "standard"
    methods: tuple[str, ...] = ()
    out: str = "runs"
    seeds: tuple[int, ...] = ()
    resume: bool = False
    progress: bool = True


@dataclass
class ReportArgs:
    """Render the report of an output root.

    Attributes:
        out: output root holding ``<method>/results.json`` files.
        archive: copy the results.json files and figures into this folder as ``<method>/<preset>/`` (e.g.
            ``results``, the committed results the README quotes).
        readme: regenerate the results table of this README from the ``archive`` folder.
    """

    out: str = "runs"
    archive: str = ""
    readme: str = ""


@dataclass
class BenchArgs:
    """Run speed benchmarks.

    Attributes:
        methods: methods to benchmark (default: all with a benchmark).
        out: output root; results go to ``<out>/bench/<method>.json``.
    """

    methods: tuple[str, ...] = ()
    out: str = "runs"


def _is_main_process() -> bool:
    """True unless this process is a non-zero rank of torchrun or SLURM."""
    return os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) == "0"


def parse_args(cls: type[T], args: Sequence[str], prog: str, default: T | None = None) -> T:
    """``tyro.cli`` whose parse errors become one-line ConfigErrors (``--help`` still prints the full help).

    Raises:
        ConfigError: an unknown option or a value of the wrong type (names the option and, if any, a suggestion).
    """
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return tyro.cli(cls, default=default, args=list(args), prog=prog)
    except SystemExit as exit_:
        if exit_.code in (0, None):
            raise
        raise ConfigError(f"{parse_error_message(captured.getvalue())}; see `{prog} --help`") from None


_BOX = " │╭╮╰╯|+"


def _is_rule(line: str) -> bool:
    return bool(line) and set(line) <= set("─-=+ ")


def parse_error_message(text: str) -> str:
    """The whole message of a tyro/argparse error box on one line (wrapped lines joined), with its suggestion.

    The box is: a title, the message (possibly wrapped over several lines), a rule, then help or "Perhaps you meant:"
    with the closest options; without a terminal it is drawn without borders, the title above a rule. Only the
    message and the first suggested option are kept.
    """
    lines = [line.strip(_BOX).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if lines and lines[0].startswith("─"):
        lines = lines[1:]  # the box title
    blocks: list[list[str]] = [[]]
    for line in lines:
        if _is_rule(line):
            blocks.append([])
        else:
            blocks[-1].append(line)
    if len(blocks) > 1 and len(blocks[0]) == 1 and not any(c in blocks[0][0] for c in ":'-"):
        blocks = blocks[1:]  # the title of a box drawn without borders (no terminal): "Value error", then a rule
    message = " ".join(blocks[0]).replace("usage:", "").strip().rstrip(".") or "invalid arguments"
    for block in blocks[1:]:
        if block and block[0] == "Perhaps you meant:" and len(block) > 1:
            message += f" (did you mean {block[1].split()[0]}?)"
            break
    return message


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def cmd_list() -> int:
    """Print the registered methods as a table."""
    rows = [(info.name, info.status, info.paper if info.arxiv else "-", info.title) for info in METHODS.values()]
    widths = [max(len(row[i]) for row in rows + [("method", "status", "paper", "title")]) for i in range(3)]
    header = f"{'method':<{widths[0]}}  {'status':<{widths[1]}}  {'paper':<{widths[2]}}  title"
    print(header)
    print("-" * len(header))
    for name, status, paper, title in rows:
        print(f"{name:<{widths[0]}}  {status:<{widths[1]}}  {paper:<{widths[2]}}  {title}")
    return 0


def _pop_option(args: list[str], name: str) -> str | None:
    """Remove ``--name VALUE`` or ``--name=VALUE`` from args and return VALUE."""
    for index, arg in enumerate(args):
        if arg == name:
            if index + 1 >= len(args):
                raise ConfigError(f"{name} needs a value")
            value = args[index + 1]
            del args[index : index + 2]
            return value
        if arg.startswith(name + "="):
            del args[index]
            return arg.split("=", 1)[1]
    return None


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_config(method: str, args: Sequence[str]) -> Any:
    """Resolve a method's config from ``--config``/``--preset`` and field overrides (tyro syntax).

    A config file may be partial: the fields it lacks take the values of the preset it names (default standard).

    Raises:
        ConfigError: unknown method/preset/study, invalid file or value.
    """
    experiment = get_method(method).load()
    rest = list(args)
    config_file = _pop_option(rest, "--config")
    preset = _pop_option(rest, "--preset")
    if config_file is not None:
        data = read_config_file(config_file)
        named = data.get("preset", "standard")
        if preset is not None and preset != named:
            raise ConfigError(f"--preset {preset} conflicts with the preset in {config_file}; drop one of them")
        if not isinstance(named, str) or named not in experiment.presets:
            choices = ", ".join(experiment.presets)
            raise ConfigError(f"{config_file} names preset {named!r}, which {method} lacks; use one of: {choices}")
        base = config_to_dict(experiment.preset(named))
        default = config_from_dict(experiment.config_class, _merge(base, data))
    else:
        default = experiment.preset(preset or "standard")
    config = parse_args(experiment.config_class, rest, f"frugal run {method}", default=default)
    experiment.study(getattr(config, "study", None))
    config.validate()
    return config


def run_method(method: str, config: Any) -> dict[str, Any]:
    """Run a method's experiment (or study) on the harness; return the results document (``{}`` off rank 0)."""
    from frugalvision.harness import run_experiment

    return run_experiment(get_method(method).load(), config)


def cmd_run(args: list[str]) -> int:
    """``frugal run METHOD ...``."""
    if args and args[0] in {"-h", "--help"}:
        print(USAGE)
        return 0
    if not args or args[0].startswith("-"):
        return _fail("frugal run needs a method name; see `frugal list`")
    method, rest = args[0], args[1:]
    run_method(method, build_config(method, rest))
    return 0


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def cmd_reproduce(args: list[str]) -> int:
    """``frugal reproduce``: every available experiment, then the report."""
    options = parse_args(ReproduceArgs, args, "frugal reproduce")
    methods = list(options.methods) or available_methods()
    experiments = {method: get_method(method).load() for method in methods}
    methods = [method for method in methods if options.preset in experiments[method].presets]
    if not methods:
        raise ConfigError(f"no experiment defines preset '{options.preset}'; use one of {', '.join(CORE_PRESETS)}")
    start = time.perf_counter()
    for index, method in enumerate(methods, start=1):
        extra = ["--preset", options.preset, "--out", options.out]
        extra += ["--seeds", *map(str, options.seeds)] if options.seeds else []
        extra += ["--resume"] if options.resume else []
        extra += [] if options.progress else ["--no-progress"]
        config = build_config(method, extra)
        if _is_main_process():
            elapsed = time.perf_counter() - start
            eta = f", ETA {_duration(elapsed / (index - 1) * (len(methods) - index + 1))}" if index > 1 else ""
            print(
                f"== [{index}/{len(methods)}] {method} ({options.preset}), {_duration(elapsed)} so far{eta}", flush=True
            )
        run_method(method, config)
    if not _is_main_process():
        return 0
    from frugalvision.report import write_report

    markdown, html = write_report(Path(options.out))
    print(
        f"reproduced {len(methods)} experiment(s) in {_duration(time.perf_counter() - start)}; wrote {markdown} and "
        f"{html}"
    )
    return 0


def cmd_report(args: list[str]) -> int:
    """``frugal report``."""
    options = parse_args(ReportArgs, args, "frugal report")
    from frugalvision.report import archive_results, update_readme, write_report

    if options.readme and not options.archive:
        raise ConfigError("--readme needs --archive (the folder the table is built from), e.g. --archive results")
    root = Path(options.out)
    if root.is_dir():
        markdown, html = write_report(root)
        print(f"wrote {markdown} and {html}")
        if options.archive:
            print(f"archived {len(archive_results(root, options.archive))} results file(s) under {options.archive}")
    elif not options.readme:
        raise ConfigError(f"output folder {root} does not exist; run `frugal reproduce --out {root}` first")
    if options.readme:
        print(f"updated the results table of {update_readme(options.readme, options.archive)}")
    return 0


def cmd_bench(args: list[str]) -> int:
    """``frugal bench``: each available method's ``benchmark(out_dir)``."""
    options = parse_args(BenchArgs, args, "frugal bench")
    methods = list(options.methods) or available_methods()
    out = Path(options.out) / "bench"
    out.mkdir(parents=True, exist_ok=True)
    ran = 0
    for method in methods:
        experiment = get_method(method).load()
        if experiment.benchmark is None:
            continue
        print(f"== bench {method}", flush=True)
        result = experiment.benchmark(out)
        (out / f"{method}.json").write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        ran += 1
    if ran == 0:
        return _fail("no benchmark found for the selected methods")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``frugal`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(USAGE)
        return 0
    command, rest = args[0], args[1:]
    commands = {
        "list": lambda: cmd_list(),
        "run": lambda: cmd_run(rest),
        "reproduce": lambda: cmd_reproduce(rest),
        "report": lambda: cmd_report(rest),
        "bench": lambda: cmd_bench(rest),
    }
    if command not in commands:
        return _fail(f"unknown command '{command}'; use one of: {', '.join(commands)}")
    try:
        return commands[command]()
    except FrugalError as error:
        return _fail(str(error))
    except OSError as error:  # an output the library did not wrap: still one line naming the path and the fix
        return _fail(str(output_error(error)))


if __name__ == "__main__":
    sys.exit(main())
