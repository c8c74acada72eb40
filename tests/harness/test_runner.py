import json
from dataclasses import dataclass, field

import pytest

from frugalvision.engine.config import FabricConfig, LoopConfig
from frugalvision.errors import ConfigError, OutputError
from frugalvision.harness import (
    Experiment,
    RunConfig,
    Study,
    UnitResult,
    claim_verdict,
    compare,
    run_experiment,
)
from frugalvision.report import load_results
from tests.engine.toy import ToyTask


@dataclass
class ToyConfig(RunConfig):
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(max_steps=6, batch_size=16, lr=0.05, log_every=1))


CALLS: list[str] = []
FAIL_ON: list[str] = []


def _run_unit(ctx, unit):
    CALLS.append(unit.id)
    result = ctx.fit(ToyTask(), ctx.config.loop)
    if unit.id in FAIL_ON:
        raise RuntimeError("killed")
    bonus = 0.1 if unit.name == "ours" else 0.0
    return UnitResult.one_row(unit, {"top1": result.metrics["val"]["top1"] + bonus}, dataset="toy", steps=result.steps)


def _verdict(config, rows):
    return claim_verdict([compare(rows, "top1", "ours", "base")])


def _preset():
    return ToyConfig(preset="smoke", seeds=(0, 1, 2), progress=False, fabric=FabricConfig(accelerator="cpu"))


TOY = Experiment(
    name="toy",
    config_class=ToyConfig,
    presets={p: _preset for p in ("smoke", "standard", "extended", "paper")},
    main=Study(
        claim="ours beats base",
        primary_metric="top1",
        run_unit=_run_unit,
        verdict=_verdict,
        arms=lambda config: ("base", "ours"),
    ),
)


def _config(tmp_path, **changes):
    config = _preset()
    config.out = str(tmp_path)
    for key, value in changes.items():
        setattr(config, key, value)
    return config


def test_a_run_writes_config_unit_records_results_and_a_computed_verdict(tmp_path):
    CALLS.clear()
    document = run_experiment(TOY, _config(tmp_path))
    folder = tmp_path / "toy"
    assert (folder / "config.yaml").is_file() and (folder / "top1.png").is_file()
    assert load_results(folder)["verdict"] == document["verdict"] == "supported"  # +0.1 on every seed, same data
    assert CALLS == ["base-seed0", "ours-seed0", "base-seed1", "ours-seed1", "base-seed2", "ours-seed2"]
    unit = json.loads((folder / "runs" / "ours-seed1" / "unit.json").read_text())
    assert unit["rows"][0]["seed"] == 1 and unit["extras"]["steps"] == 6 and unit["dataset"] == "toy"
    assert document["dataset"] == "toy" and document["comparisons"][0]["outcome"] == "better"
    assert (folder / "runs" / "ours-seed1" / "checkpoints" / "latest").is_file()


def test_resume_skips_finished_units_and_continues_an_interrupted_one(tmp_path):
    CALLS.clear()
    FAIL_ON[:] = ["base-seed1"]
    with pytest.raises(RuntimeError, match="killed"):
        run_experiment(TOY, _config(tmp_path))
    FAIL_ON.clear()
    assert CALLS == ["base-seed0", "ours-seed0", "base-seed1"]
    assert not (tmp_path / "toy" / "runs" / "base-seed1" / "unit.json").exists()
    CALLS.clear()
    document = run_experiment(TOY, _config(tmp_path, resume=True))
    assert CALLS == ["base-seed1", "ours-seed1", "base-seed2", "ours-seed2"]
    again = run_experiment(TOY, _config(tmp_path, resume=True))
    assert CALLS == ["base-seed1", "ours-seed1", "base-seed2", "ours-seed2"]  # nothing trained
    strip = lambda d: {k: v for k, v in d.items() if k not in ("wall_s", "env")}  # noqa: E731
    assert strip(again) == strip(document)
    fresh = run_experiment(TOY, _config(tmp_path / "fresh"))
    assert strip(fresh)["rows"] == strip(document)["rows"]  # the interrupted unit finished from its checkpoint


def test_resume_with_a_changed_config_names_the_field(tmp_path):
    run_experiment(TOY, _config(tmp_path, seeds=(0,)))
    changed = _config(tmp_path, seeds=(0,), resume=True)
    changed.loop.lr = 0.1
    with pytest.raises(ConfigError, match=r"loop.lr=0.05 \(now 0.1\)"):
        run_experiment(TOY, changed)


def test_adding_seeds_on_resume_reuses_the_finished_ones(tmp_path):
    run_experiment(TOY, _config(tmp_path, seeds=(0,)))
    CALLS.clear()
    run_experiment(TOY, _config(tmp_path, seeds=(0, 1), resume=True))
    assert CALLS == ["base-seed1", "ours-seed1"]


def test_a_fresh_run_clears_a_unit_folder(tmp_path):
    stale = tmp_path / "toy" / "runs" / "base-seed0" / "stale.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    run_experiment(TOY, _config(tmp_path, seeds=(0,)))
    assert not stale.exists()


def test_unknown_study_and_unwritable_output_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="study='nope' is not offered by toy"):
        run_experiment(TOY, _config(tmp_path, study="nope"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="cannot write"):
        run_experiment(TOY, _config(blocker))
