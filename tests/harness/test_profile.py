"""Where a study's time goes (results.json time_profile) and tensors cached across units and runs."""

import dataclasses
import time

import torch

from frugalvision.harness import Experiment, Study, UnitResult, claim_verdict, compare, run_experiment
from frugalvision.harness.runner import time_profile
from tests.harness.toys import CountingTask, ToyConfig, _preset

BUILDS: list[int] = []


def _run_unit(ctx, unit):
    features = ctx.cached_tensors("features", lambda: BUILDS.append(1) or {"x": torch.arange(4.0)}, depends_on=[4])
    with ctx.timed("latency"):
        time.sleep(0.05)
    result = ctx.fit(CountingTask(), ctx.config.loop)
    return UnitResult.one_row(unit, {"top1": result.metrics["val"]["top1"] + float(features["x"].sum()) * 0})


def _experiment():
    study = Study(
        claim="c",
        primary_metric="top1",
        run_unit=_run_unit,
        verdict=lambda config, rows: claim_verdict([compare(rows, "top1", "ours", "base")]),
        arms=lambda config: ("base", "ours"),
    )
    presets = {preset: _preset for preset in ("smoke", "standard", "extended", "paper")}
    return Experiment(name="profiled", config_class=ToyConfig, presets=presets, main=study)


def test_results_record_where_the_units_time_went_and_cached_tensors_are_built_once(tmp_path):
    BUILDS.clear()
    config = dataclasses.replace(_preset(), out=str(tmp_path))
    document = run_experiment(_experiment(), config)
    profile = document["time_profile"]
    assert set(profile) == {"units_s", "train_s", "eval_s", "checkpoint_s", "latency_s", "other_s"}
    assert profile["latency_s"] >= 4 * 0.05 and min(profile.values()) >= 0
    parts = sum(value for key, value in profile.items() if key != "units_s")
    assert abs(parts - profile["units_s"]) < 1e-6  # the phases and the rest add up to the units' time
    assert BUILDS == [1] and len(list((tmp_path / "profiled" / "cache").glob("features-*.safetensors"))) == 1
    run_experiment(_experiment(), config)  # another run (another process would read the file the same way)
    assert BUILDS == [1]


def test_time_profile_of_records_without_phases_is_all_other():
    from frugalvision.harness import Unit, UnitRecord

    record = UnitRecord(Unit("a", 0), [], {}, {}, None, 2.0)
    assert time_profile([record]) == {"units_s": 2.0, "other_s": 2.0}
