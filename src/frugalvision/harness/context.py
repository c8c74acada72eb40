"""What a running unit sees: its config, seed and folder, the engine, and rank-0-safe ways to train and save."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from frugalvision.errors import ConfigError
from frugalvision.harness.config import RunConfig
from frugalvision.harness.declare import Unit

if TYPE_CHECKING:
    import torch

    from frugalvision.engine import Engine, FitResult, LoopConfig, Task

__all__ = ["Context", "loop_seed_offsets"]

C = TypeVar("C", bound=RunConfig)
T = TypeVar("T")


def loop_seed_offsets(config: RunConfig) -> tuple[int, ...]:
    """The non-zero ``seed`` of every loop of a config (its top-level ``LoopConfig`` fields), in field order.

    The harness seeds every training run from its unit's seed (``--seeds``); ``--loop.seed K`` with K != 0 is then an
    offset that changes the training randomness (initialisation, data order, dropout and augmentation) of every unit
    while the data splits, which follow the unit's seed, stay the same.
    """
    from frugalvision.engine.config import LoopConfig

    values = (getattr(config, f.name, None) for f in dataclasses.fields(config))
    return tuple(value.seed for value in values if isinstance(value, LoopConfig) and value.seed != 0)


class Context(Generic[C]):
    """The harness's handle for a method's unit function (one per study run, re-pointed at each unit).

    Args:
        config: the run's config.
        engine: the engine every training run goes through.
        method: the method's name.
        out_dir: the study's output folder (``<out>/<method>`` or ``<out>/<method>/<study>``).
        fingerprint: the config's fields that a result depends on, stored in every checkpoint of :meth:`fit`.
        on_start: called when a training run is about to take its first step (the harness writes config.yaml once
            the run is known to start).
    """

    def __init__(
        self,
        config: C,
        engine: Engine,
        method: str,
        out_dir: Path,
        *,
        fingerprint: Mapping[str, Any] | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.method = method
        self.out_dir = out_dir
        self._unit: Unit | None = None
        self._fit_names: set[str] = set()
        self._memo: dict[Hashable, Any] = {}
        self._fingerprint = dict(fingerprint or {})
        self._on_start = on_start
        self.seed_offsets = loop_seed_offsets(config)
        self._profile: dict[str, float] = {}

    # ----------------------------------------------------------------- where we are
    @property
    def unit(self) -> Unit:
        """The unit being run."""
        if self._unit is None:
            raise RuntimeError("no unit is running; Context.unit is only valid inside run_unit")
        return self._unit

    @property
    def seed(self) -> int:
        """The current unit's seed."""
        return self.unit.seed

    @property
    def unit_dir(self) -> Path:
        """``<out_dir>/runs/<unit id>``: the current unit's folder (logs, checkpoints, saved weights)."""
        return self.out_dir / "runs" / self.unit.id

    @property
    def is_main(self) -> bool:
        """True on global rank 0 (the only rank that writes)."""
        return self.engine.is_main

    def begin(self, unit: Unit) -> None:
        """Point the context at a new unit (the harness calls this)."""
        self._unit = unit
        self._fit_names = set()
        self._profile = {}

    # ----------------------------------------------------------------- training
    def fit(
        self,
        task: Task,
        loop: LoopConfig,
        name: str = "",
        desc: str | None = None,
        seed: int | None = None,
    ) -> FitResult:
        """Train through the engine in ``unit_dir/name`` with checkpoints, continuing from one when it exists.

        The loop's seed becomes the unit's seed unless ``seed`` is given: every arm of one seed then sees the same
        data order (a paired design); a non-zero ``loop.seed`` in the config is an offset mixed into it
        (:meth:`loop_seed`). A checkpoint in the folder can only come from an interrupted attempt of this unit (the
        harness clears the unit's folder before a fresh run), so training continues from it; the checkpoint records
        the config's fingerprint, and continuing with other values is refused with one line naming the fields.

        Args:
            task: the method's task.
            loop: optimisation settings.
            name: sub-folder of this run inside the unit (several runs per unit need distinct names).
            desc: progress-bar label (default: unit id and name).
            seed: loop seed (default: the unit's seed).

        Returns:
            The engine's fit result.
        """
        from frugalvision.engine import latest_checkpoint

        if name in self._fit_names:
            raise ConfigError(f"two training runs of unit {self.unit.id} are both named {name!r}; name them apart")
        self._fit_names.add(name)
        run_dir = self.unit_dir / name if name else self.unit_dir
        loop = dataclasses.replace(loop, seed=self.loop_seed(self.seed if seed is None else seed))
        resume = latest_checkpoint(run_dir / "checkpoints") is not None
        label = desc or " ".join(part for part in (self.unit.name, name, f"seed {self.seed}") if part)
        fingerprint = {**self._fingerprint, "harness.unit": self.unit.id, "harness.run": name}
        result = self.engine.fit(
            task, loop, run_dir=run_dir, resume=resume, desc=label, fingerprint=fingerprint, on_start=self._on_start
        )
        for phase, seconds in result.phases.items():
            self._profile[phase] = self._profile.get(phase, 0.0) + seconds
        return result

    # ----------------------------------------------------------------- where the time goes
    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        """Count the seconds of a block as ``<phase>_s`` in the unit's time profile (e.g. "latency", "ranking").

        Training and evaluation through :meth:`fit` are counted by themselves (``train_s``, ``eval_s``,
        ``checkpoint_s``); results.json sums every unit's profile under ``time_profile``, with the rest of the
        units' time as ``other_s``, so a compute-bound preset shows what to cut first.
        """
        start = time.perf_counter()
        try:
            yield
        finally:
            key = f"{phase}_s"
            self._profile[key] = self._profile.get(key, 0.0) + time.perf_counter() - start

    def time_profile(self) -> dict[str, float]:
        """Seconds of the current unit so far, by phase (what :meth:`fit` and :meth:`timed` counted)."""
        return dict(self._profile)

    def loop_seed(self, seed: int) -> int:
        """The seed a training run uses: ``seed`` itself, or mixed with the config's non-zero ``loop.seed`` offsets."""
        from frugalvision.seeding import derive_seed

        return derive_seed(seed, "loop.seed", *self.seed_offsets) if self.seed_offsets else seed

    # ----------------------------------------------------------------- shared state
    def memo(self, key: Hashable, build: Callable[[], T]) -> T:
        """Build a value once per study run and process (data splits, a tokenizer, a pretrained model...)."""
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]

    def cached_tensors(
        self, name: str, build: Callable[[], Mapping[str, torch.Tensor]], depends_on: object = None
    ) -> dict[str, torch.Tensor]:
        """Tensors built once and kept on disk across units, runs and studies (e.g. a frozen backbone's features).

        The file is ``<out>/<method>/cache/<name>-<hash of depends_on>.safetensors``: pass in ``depends_on`` every
        value the tensors depend on (data sizes, the backbone, the seed), so that another setting gets another file.
        Rank 0 builds and writes it when missing; every rank then reads it (once per process).

        Args:
            name: a file-name stem.
            build: returns ``{key: tensor}`` (CPU tensors).
            depends_on: JSON-able values the tensors depend on.
        """
        from frugalvision.engine import load_weights, save_weights

        digest = hashlib.sha256(json.dumps(depends_on, sort_keys=True, default=str).encode()).hexdigest()[:16]
        path = self.cache_path(f"{name}-{digest}.safetensors")

        def load() -> dict[str, torch.Tensor]:
            if self.is_main and not path.is_file():
                save_weights({key: value.contiguous() for key, value in build().items()}, path)
            self.engine.barrier()
            return load_weights(path)

        return self.memo(("cached_tensors", str(path)), load)

    def cache_path(self, name: str) -> Path:
        """A file path under ``<out>/<method>/cache`` (shared by the main run and the studies, kept across runs).

        Write it with :meth:`save_weights` or under :meth:`main_first`; name it by a hash of what it depends on.
        """
        return Path(self.config.out) / self.method / "cache" / name

    def save_weights(self, state: Mapping[str, torch.Tensor], path: str | Path) -> Path:
        """Write safetensors weights on rank 0 only (atomically), then wait for every rank."""
        from frugalvision.engine import save_weights

        path = Path(path)
        if self.is_main:
            save_weights(state, path)
        self.engine.barrier()
        return path

    def main_first(self, build: Callable[[], T]) -> T:
        """Run ``build`` on rank 0 first (e.g. to write a cache file), then on the other ranks."""
        if self.is_main:
            value = build()
            self.engine.barrier()
            return value
        self.engine.barrier()
        return build()

    def clear_unit(self, unit: Unit) -> None:
        """Delete a unit's folder (rank 0), before a fresh run of it."""
        folder = self.out_dir / "runs" / unit.id
        if self.is_main and folder.exists():
            shutil.rmtree(folder)
        self.engine.barrier()
