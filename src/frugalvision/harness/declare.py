"""How a method declares its experiment: one :class:`Experiment` holding a main :class:`Study` and optional studies.

A study is a list of units (by default every arm once per seed), a function that runs one unit and returns its
rows, a verdict computed from the rows, and optional figures and notes. The harness (:mod:`.runner`) owns everything
around it: run folders, seeding, resume, rank-0 writing, results.json, config.yaml, figures and the summary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from frugalvision.errors import ConfigError
from frugalvision.harness.config import RunConfig
from frugalvision.harness.stats import Verdict

if TYPE_CHECKING:
    import torch

    from frugalvision.harness.context import Context

__all__ = ["REQUIRED_PRESETS", "Experiment", "FigureInput", "Study", "Unit", "UnitRecord", "UnitResult"]

C = TypeVar("C", bound=RunConfig)
REQUIRED_PRESETS = ("smoke", "standard", "extended", "paper")


@dataclass(frozen=True)
class Unit:
    """One piece of work of a study: an arm (or job) for one seed; finished units are skipped on ``--resume``.

    Attributes:
        name: arm or job name; rows it returns usually carry this name.
        seed: the seed of this repetition.
        params: extra settings of the unit (JSON-able values), e.g. a pruning target.
    """

    name: str
    seed: int
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """Folder name of the unit under ``runs/``: ``<name>-seed<seed>``."""
        return f"{self.name}-seed{self.seed}"


@dataclass
class UnitResult:
    """What a unit returns: its rows and anything its figures or notes need later.

    Attributes:
        rows: ``{"name", "seed", "metrics"}`` dicts (or :class:`~frugalvision.report.Row`).
        extras: JSON-able values kept with the unit (curves, selected steps, ...), saved in ``unit.json``.
        arrays: tensors kept with the unit (e.g. predictions for a figure), saved as safetensors.
        dataset: the data source actually used.
        skipped_files: unreadable files the unit's own data code skipped, beyond those the loaders of
            ``frugalvision.data`` record by themselves (the harness writes both into results.json).
    """

    rows: list[Any]
    extras: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, torch.Tensor] = field(default_factory=dict)
    dataset: str | None = None
    skipped_files: list[str] = field(default_factory=list)

    @classmethod
    def one_row(
        cls,
        unit: Unit,
        metrics: Mapping[str, float],
        dataset: str | None = None,
        arrays: dict[str, torch.Tensor] | None = None,
        **extras: Any,
    ) -> UnitResult:
        """A result holding one row named after the unit."""
        row = {"name": unit.name, "seed": unit.seed, "metrics": dict(metrics)}
        return cls([row], dict(extras), dict(arrays or {}), dataset)


@dataclass(frozen=True)
class UnitRecord:
    """A finished unit as the harness keeps it (loaded back from ``unit.json`` on resume).

    Attributes:
        unit: the unit.
        rows: its rows (plain dicts).
        extras: its extras.
        arrays: its arrays.
        dataset: its data source.
        wall_s: seconds it took.
        data_sources: the datasets its loaders read (``{"name", "path", "split"}``), as recorded by
            ``frugalvision.data.provenance``.
        skipped_files: the unreadable files it skipped.
        time_profile: seconds by phase (``train_s``, ``eval_s``, ``checkpoint_s`` of its training runs and any
            ``Context.timed`` blocks); the rest of ``wall_s`` is the unit's other work.
    """

    unit: Unit
    rows: list[dict[str, Any]]
    extras: dict[str, Any]
    arrays: dict[str, Any]
    dataset: str | None
    wall_s: float
    data_sources: tuple[dict[str, Any], ...] = ()
    skipped_files: tuple[str, ...] = ()
    time_profile: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FigureInput(Generic[C]):
    """What a study's figure function receives.

    Attributes:
        config: the run's config.
        out_dir: folder of results.json; figures are written here.
        rows: every row.
        records: every unit record, in unit order.
        summary: ``{metric: {row name: {"mean", "std"}}}``.
    """

    config: C
    out_dir: Path
    rows: list[dict[str, Any]]
    records: list[UnitRecord]
    summary: dict[str, dict[str, dict[str, float]]]

    def extras(self, unit_name: str) -> list[dict[str, Any]]:
        """The extras of every seed of one unit name, in seed order."""
        return [r.extras for r in sorted(self.records, key=lambda r: r.unit.seed) if r.unit.name == unit_name]


@dataclass(frozen=True)
class Study(Generic[C]):
    """What runs: the units, how one runs, and the claim and verdict judged on their rows.

    Attributes:
        claim: one sentence: what the paper says should happen.
        primary_metric: the metric the verdict is about (shown first).
        run_unit: ``(context, unit) -> UnitResult``; runs on every rank (distributed training inside).
        verdict: ``(config, rows) -> Verdict``, a pure function of the rows built on :mod:`.stats`.
        arms: ``config -> arm names``; the default units are every arm once per seed, seeds outermost.
        units: ``config -> units`` instead of ``arms`` (e.g. one unit per seed).
        finish: ``(context, records) -> extra rows`` computed from all units (runs on every rank).
        figures: ``FigureInput -> file names`` written under ``out_dir`` (rank 0 only).
        notes: ``(config, records) -> str`` for results.json.
        null_levels: ``config -> {metric: value the metric takes when the claim is false}``, for claims against a
            constant (chance accuracy); the no-effect simulation otherwise centres every arm on the pooled mean.
    """

    claim: str
    primary_metric: str
    run_unit: Callable[[Context[C], Unit], UnitResult]
    verdict: Callable[[C, list[dict[str, Any]]], Verdict]
    arms: Callable[[C], Sequence[str]] | None = None
    units: Callable[[C], Sequence[Unit]] | None = None
    finish: Callable[[Context[C], list[UnitRecord]], list[dict[str, Any]]] | None = None
    figures: Callable[[FigureInput[C]], Sequence[str | Path]] | None = None
    notes: Callable[[C, list[UnitRecord]], str] | None = None
    null_levels: Callable[[C], Mapping[str, float]] | None = None

    def plan(self, config: C) -> list[Unit]:
        """The units of a run, checked for unique ids."""
        if self.units is not None:
            units = list(self.units(config))
        elif self.arms is not None:
            units = [Unit(arm, seed) for seed in config.seeds for arm in self.arms(config)]
        else:
            raise ConfigError("a study needs arms or units; declare one of them")
        ids = [u.id for u in units]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ConfigError(f"units {duplicates} appear twice; give every arm x seed its own name")
        if not units:
            raise ConfigError("the study has no units to run; check the arms and seeds")
        return units


@dataclass(frozen=True)
class Experiment(Generic[C]):
    """A method's whole experiment, as the registry, the CLI and the contract test see it.

    Attributes:
        name: the method's registered name (output folder ``<out>/<name>``).
        config_class: its config dataclass (a :class:`RunConfig`).
        presets: preset name -> config factory; must hold smoke, standard, extended and paper.
        main: the main study (``frugal run <name>``).
        studies: named extra studies (``frugal run <name> --study <study>``), written to ``<out>/<name>/<study>``.
        benchmark: optional ``out_dir -> measurements`` for ``frugal bench``.
    """

    name: str
    config_class: type[C]
    presets: Mapping[str, Callable[[], C]]
    main: Study[C]
    studies: Mapping[str, Study[C]] = field(default_factory=dict)
    benchmark: Callable[[Path], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        missing = [p for p in REQUIRED_PRESETS if p not in self.presets]
        if missing:
            raise ConfigError(f"experiment {self.name!r} lacks the presets {missing}; define {REQUIRED_PRESETS}")

    def study(self, name: str | None) -> Study[C]:
        """The main study (``None``) or a named one.

        Raises:
            ConfigError: the study is not offered.
        """
        if name is None:
            return self.main
        if name not in self.studies:
            offered = ", ".join(self.studies) or "none"
            raise ConfigError(f"study={name!r} is not offered by {self.name}; available studies: {offered}")
        return self.studies[name]

    def preset(self, name: str) -> C:
        """A fresh config of one preset.

        Raises:
            ConfigError: unknown preset.
        """
        if name not in self.presets:
            raise ConfigError(f"unknown preset '{name}' for {self.name}; choose one of: {', '.join(self.presets)}")
        return self.presets[name]()
