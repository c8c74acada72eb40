"""Toy experiments on the harness for the fault-injection tests, and a fixture-free way to put them in the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field

from frugalvision.engine.config import FabricConfig, LoopConfig
from frugalvision.harness import Experiment, RunConfig, Study, UnitResult, claim_verdict, compare
from tests.engine.toy import ToyTask

CALLS: list[str] = []  # "<experiment>:<unit id>" of every unit that ran
FAIL_ON: set[str] = set()  # "<experiment>:<unit id>" of units that raise after training (an interrupted run)
STEP_CALLS: list[int] = []


@dataclass
class ToyConfig(RunConfig):
    """A toy experiment's config (tyro-parsable, so the CLI can run it)."""

    loop: LoopConfig = field(default_factory=lambda: LoopConfig(max_steps=6, batch_size=16, lr=0.05, log_every=1))


class CountingTask(ToyTask):
    """The engine's toy task, counting its training steps (to prove that a failure came before any training)."""

    def training_step(self, model, batch, step):
        STEP_CALLS.append(step)
        return super().training_step(model, batch, step)


def _run_unit(ctx, unit):
    CALLS.append(f"{ctx.method}:{unit.id}")
    result = ctx.fit(CountingTask(), ctx.config.loop)
    if f"{ctx.method}:{unit.id}" in FAIL_ON:
        raise RuntimeError(f"killed in {unit.id}")
    bonus = 0.1 if unit.name == "ours" else 0.0
    weight = float(result.model[0].weight.sum())
    return UnitResult.one_row(unit, {"top1": result.metrics["val"]["top1"] + bonus, "weight_sum": weight})


def _verdict(config, rows):
    return claim_verdict([compare(rows, "top1", "ours", "base")])


def _preset() -> ToyConfig:
    return ToyConfig(preset="smoke", seeds=(0, 1), progress=False, fabric=FabricConfig(accelerator="cpu"))


def make_toy(name: str = "toy") -> Experiment[ToyConfig]:
    """A two-arm toy experiment named ``name`` (2 seeds x 2 arms, 6 steps each)."""
    study = Study(
        claim="ours beats base",
        primary_metric="top1",
        run_unit=_run_unit,
        verdict=_verdict,
        arms=lambda config: ("base", "ours"),
    )
    presets = {preset: _preset for preset in ("smoke", "standard", "extended", "paper")}
    return Experiment(name=name, config_class=ToyConfig, presets=presets, main=study)


TOYS = {name: make_toy(name) for name in ("toy", "toy2")}


class _ToyInfo:
    def __init__(self, experiment: Experiment[ToyConfig]) -> None:
        self.experiment = experiment

    def load(self) -> Experiment[ToyConfig]:
        return self.experiment


def install_toys(monkeypatch) -> None:
    """Make ``frugal run toy|toy2`` and ``frugal reproduce`` (over the two toys) work through the real CLI code."""
    import frugalvision.cli as cli

    real = cli.get_method
    monkeypatch.setattr(cli, "get_method", lambda name: _ToyInfo(TOYS[name]) if name in TOYS else real(name))
    monkeypatch.setattr(cli, "available_methods", lambda: list(TOYS))
    CALLS.clear()
    FAIL_ON.clear()
    STEP_CALLS.clear()
