"""The fields every experiment config shares (method configs subclass :class:`RunConfig`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from frugalvision.engine.config import FabricConfig
from frugalvision.errors import ConfigError


@dataclass
class RunConfig:
    """Fields every experiment config has (method configs subclass this).

    Attributes:
        preset: which preset these values came from: "smoke", "standard", "extended", "paper" or an extra preset.
        out: root folder of the outputs; the harness writes ``<out>/<method>/results.json``.
        seeds: seeds to repeat the experiment with (every arm runs once per seed).
        dataset: dataset source name, or "auto" for the best one found offline.
        data_root: folder holding the real dataset (None: the embedded/default location).
        skip_bad_files: skip (and count) corrupt image files instead of stopping at the first one.
        study: optional study to run instead of the main experiment (e.g. "variants").
        resume: skip the arm x seed runs that finished, continue interrupted ones from their newest checkpoint.
        progress: show progress bars.
        threads: torch CPU threads (0: torch's default, or OMP_NUM_THREADS when set).
        fabric: where to run.
    """

    preset: str = "standard"
    out: str = "runs"
    seeds: tuple[int, ...] = (0, 1, 2)
    dataset: str = "auto"
    data_root: str | None = None
    skip_bad_files: bool = False
    study: str | None = None
    resume: bool = False
    progress: bool = True
    threads: int = 0
    fabric: FabricConfig = field(default_factory=FabricConfig)

    def validate(self) -> None:
        """Raise ConfigError on an invalid value (subclasses extend this)."""
        if not self.preset:
            raise ConfigError("preset is empty; use smoke, standard, paper or an extra preset of the method")
        if not self.seeds:
            raise ConfigError("seeds is empty; pass at least one seed, e.g. --seeds 0 1 2")
        if self.data_root is not None:
            root = Path(self.data_root).expanduser()
            if not root.exists():
                raise ConfigError(
                    f"data_root={self.data_root!r} does not exist; pass an existing folder or omit --data-root"
                )
            if not root.is_dir():
                raise ConfigError(
                    f"data_root={self.data_root!r} is a file; pass the folder holding the dataset or omit --data-root"
                )
            if not any(root.iterdir()):
                raise ConfigError(
                    f"data_root={self.data_root!r} is an empty folder; pass the folder that holds the dataset or omit "
                    "--data-root"
                )
        if self.threads < 0:
            raise ConfigError(f"threads={self.threads} is invalid; use 0 (default) or a positive count")
        self.fabric.validate()
        if self.fabric.strategy == "ddp_spawn":
            raise ConfigError(
                "fabric.strategy='ddp_spawn' cannot run an experiment from the CLI; use 'ddp' (one process per device)"
            )

    def method_dir(self, method: str) -> Path:
        """Folder of this method's outputs: ``<out>/<method>``."""
        return Path(self.out) / method


def apply_threads(threads: int) -> int:
    """Set torch's intra-op threads when ``threads`` > 0; return the count in use."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def thread_environment() -> dict[str, object]:
    """Threads, OpenMP policy (and who set it: :mod:`frugalvision.threads`) and peak memory of this process.

    Returns:
        ``{"threads", "omp_wait_policy", "omp_wait_policy_source", "omp_num_threads", "peak_rss_mib"}`` for
        results.json (the peak resident memory of the process so far, in MiB, where the platform reports it).
    """
    import torch

    from frugalvision.threads import thread_policy

    environment: dict[str, object] = {
        "threads": torch.get_num_threads(),
        **thread_policy(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
    }
    try:
        import resource

        environment["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    except (ImportError, OSError):  # pragma: no cover - not on Windows
        pass
    return environment
