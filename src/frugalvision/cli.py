"""The ``frugal`` command line: list | run | reproduce | report | bench.

Examples::

    frugal list
    frugal run baseline --preset smoke --out runs
    frugal run baseline --config runs/baseline/config.yaml      # replay a saved run
    frugal reproduce --preset standard --out runs
    frugal report --out runs

Start-up: :func:`main` first sets the thread policy (:mod:`frugalvision.threads`, before anything imports torch);
``list`` and ``--help`` import neither torch nor Lightning nor a method's modules, and ``run METHOD --help`` is
answered from a cache of the help text (keyed by the installed sources, the arguments and the terminal) once it has
been rendered; torch, Lightning and a method's modules are imported only when a command needs them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from frugalvision.errors import ConfigError, FrugalError, output_error
from frugalvision.registry import CORE_PRESETS, METHODS, available_methods, get_method
from frugalvision.threads import apply_thread_policy

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
  bench [options]              run every benchmark (engine, start-up, each method's): interleaved ratios
                                 against named peers, one results.json per benchmark under <out>/bench/
                                 (--archive results --readme README.md: the README's performance table)

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
    """Run the speed benchmarks: the framework's (engine, start-up) and every registered experiment's.

    Attributes:
        methods: benchmarks to run (method names, "engine", "startup"; default: all).
        out: output root; each benchmark writes ``<out>/bench/<name>/results.json``.
        archive: copy the results.json files under ``<archive>/bench/<name>/`` (e.g. ``results``).
        readme: regenerate the performance table of this README from the ``archive`` folder.
        table_only: run nothing; only regenerate the ``readme`` table from the ``archive`` folder.
    """

    methods: tuple[str, ...] = ()
    out: str = "runs"
    archive: str = ""
    readme: str = ""
    table_only: bool = False


def _is_main_process() -> bool:
    """True unless this process is a non-zero rank of torchrun or SLURM."""
    return os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) == "0"


def parse_args(cls: type[T], args: Sequence[str], prog: str, default: T | None = None) -> T:
    """``tyro.cli`` whose parse errors become one-line ConfigErrors (``--help`` still prints the full help).

    Raises:
        ConfigError: an unknown option or a value of the wrong type (names the option and, if any, a suggestion).
    """
    import tyro

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
    from frugalvision.config_io import config_from_dict, config_to_dict, read_config_file

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
    if {"-h", "--help"} & set(rest):
        get_method(method)  # an unknown name is a one-line error, never a cached page
        print_help(method, rest, lambda: build_config(method, rest))
    run_method(method, build_config(method, rest))
    return 0


# ---------------------------------------------------------------------------------------------------- help cache
def _help_cache_dir() -> Path:
    """``$FRUGALVISION_CACHE/help``, else ``$XDG_CACHE_HOME/frugalvision/help`` (``~/.cache`` by default)."""
    root = os.environ.get("FRUGALVISION_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "frugalvision"
    )
    return Path(root) / "help"


def _sources_stamp() -> str:
    """sha256 over the path, size and mtime of every source file of the installed package (about 1 ms)."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for folder, _, files in sorted(os.walk(package)):
        for name in sorted(files):
            if name.endswith((".py", ".yaml")):
                stat = os.stat(os.path.join(folder, name))
                digest.update(f"{os.path.relpath(folder, package)}/{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _help_key(method: str, args: Sequence[str]) -> tuple[str, str] | None:
    """(file prefix, key) of a cacheable help request, or None (a ``--config`` file makes it uncacheable)."""
    if any(arg == "--config" or arg.startswith("--config=") for arg in args):
        return None
    import importlib.metadata
    import shutil

    try:
        tyro_version = importlib.metadata.version("tyro")
    except importlib.metadata.PackageNotFoundError:
        return None
    terminal = (
        shutil.get_terminal_size().columns,
        sys.stdout.isatty() and os.environ.get("TERM") not in (None, "dumb"),
        getattr(sys.stdout, "encoding", ""),
    )
    environment = sorted((k, v) for k, v in os.environ.items() if k.startswith("FRUGALVISION_"))
    context = [method, list(args), terminal, tyro_version, sys.version_info[:2], _sources_stamp(), environment]
    prefix = f"{method}-" + hashlib.sha256(repr([method, list(args)]).encode()).hexdigest()[:12]
    return prefix, hashlib.sha256(repr(context).encode()).hexdigest()[:16]


class _Captured(io.StringIO):
    """Stands in for stdout while the help renders, answering ``isatty`` and ``encoding`` as the real one does."""

    def __init__(self, real: Any) -> None:
        super().__init__()
        self._real = real

    def isatty(self) -> bool:
        return bool(getattr(self._real, "isatty", lambda: False)())

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._real, "encoding", None) or "utf-8"


def print_help(method: str, args: Sequence[str], render: Callable[[], Any]) -> NoReturn:
    """Print ``frugal run METHOD ... --help`` from the help cache, or rendered by ``render`` (then cached).

    Rendering imports the method's experiment, and with it torch; the cached page is the same text, printed without
    importing either. A cache folder that cannot be read or written is ignored.

    Raises:
        SystemExit: with code 0 after printing, as the parser's own ``--help`` does.
    """
    key = _help_key(method, args)
    page = _help_cache_dir() / f"{key[0]}-{key[1]}.txt" if key is not None else None
    if page is not None and page.is_file():
        with contextlib.suppress(OSError, UnicodeDecodeError):
            sys.stdout.write(page.read_text(encoding="utf-8"))
            raise SystemExit(0)
    captured = _Captured(sys.stdout)
    try:
        with contextlib.redirect_stdout(captured):
            render()
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            sys.stdout.write(captured.getvalue())
            raise
    text = captured.getvalue()
    sys.stdout.write(text)
    if page is not None and key is not None and text:
        with contextlib.suppress(OSError):
            page.parent.mkdir(parents=True, exist_ok=True)
            for stale in page.parent.glob(f"{key[0]}-*.txt"):
                stale.unlink(missing_ok=True)
            temporary = page.with_name(f".{page.name}.{os.getpid()}.tmp")
            temporary.write_text(text, encoding="utf-8")
            os.replace(temporary, page)
    raise SystemExit(0)


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
    """``frugal bench``: the framework's benchmarks and every registered experiment's ``benchmark(out_dir)``.

    A failing benchmark is recorded in its results.json (and listed under the README table); the others still run,
    and the command exits 1 at the end.
    """
    options = parse_args(BenchArgs, args, "frugal bench")
    if options.readme and not options.archive:
        raise ConfigError("--readme needs --archive (the folder the table is built from), e.g. --archive results")
    failed: list[str] = []
    if not options.table_only:
        from frugalvision.harness.bench import run_benchmarks

        start = time.perf_counter()
        documents = run_benchmarks(options.methods, options.out, log=lambda line: print(line, flush=True))
        where = Path(options.out) / "bench"
        print(f"ran {len(documents)} benchmark(s) in {_duration(time.perf_counter() - start)}; wrote {where}/*/")
        failed = [document["benchmark"] for document in documents if document["error"]]
        if options.archive:
            from frugalvision.report import archive_bench

            archived = archive_bench(options.out, options.archive)
            print(f"archived {len(archived)} benchmark file(s) under {options.archive}")
    if options.readme:
        from frugalvision.report import update_readme_bench

        print(f"updated the performance table of {update_readme_bench(options.readme, options.archive)}")
    if failed:
        print(f"error: benchmark(s) {', '.join(failed)} failed; see the messages above", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``frugal`` console script (sets the thread policy before anything imports torch)."""
    apply_thread_policy()
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
