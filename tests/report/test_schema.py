import json
import os

import numpy as np
import pytest

from frugalvision.errors import ConfigError, DataError
from frugalvision.report import (
    ResultsDoc,
    Row,
    environment,
    load_results,
    make_results,
    summarize,
    write_results,
)

ROWS = [
    Row("baseline", 0, {"top1": 0.80, "params_m": 1.0}),
    Row("baseline", 1, {"top1": 0.82, "params_m": 1.0}),
    {"name": "baseline", "seed": 2, "metrics": {"top1": 0.79, "params_m": 1.0}},
    Row("ours", 0, {"top1": 0.85, "params_m": 0.5}),
    Row("ours", 1, {"top1": 0.83, "params_m": 0.5}),
    Row("ours", 2, {"top1": np.float32(0.86), "params_m": 0.5}),
    Row("single", 0, {"top1": 0.5}),
]


def _doc(**kw):
    args = dict(
        method="demo",
        paper="arXiv:0000.00000",
        preset="smoke",
        dataset="toy",
        claim="Ours beats the baseline.",
        rows=ROWS,
        verdict="supported",
        verdict_rule="mean paired difference in top1 > 0",
        wall_s=1.5,
        env={"torch": "x", "device": "cpu", "threads": 1},
    )
    args.update(kw)
    return make_results(**args)


def test_summarize_matches_numpy():
    summary = summarize(ROWS)
    assert list(summary) == ["top1", "params_m"]
    assert list(summary["top1"]) == ["baseline", "ours", "single"]
    base = np.array([0.80, 0.82, 0.79])
    ours = np.array([0.85, 0.83, np.float32(0.86)], dtype=np.float64)
    assert summary["top1"]["baseline"]["mean"] == pytest.approx(base.mean())
    assert summary["top1"]["baseline"]["std"] == pytest.approx(base.std(ddof=1))
    assert summary["top1"]["ours"]["std"] == pytest.approx(ours.std(ddof=1))
    assert summary["top1"]["single"] == {"mean": 0.5, "std": 0.0}
    assert "single" not in summary["params_m"]
    assert summary["params_m"]["ours"] == {"mean": 0.5, "std": 0.0}


def test_make_results_fields_and_verdict_check():
    doc = _doc(figures=["fig.png"], notes="n", primary_metric="top1")
    assert doc["seeds"] == 3
    assert doc["summary"] == summarize(ROWS)
    assert doc["figures"] == ["fig.png"] and doc["notes"] == "n" and doc["primary_metric"] == "top1"
    assert all(isinstance(v, float) for r in doc["rows"] for v in r["metrics"].values())
    assert ResultsDoc.from_dict(doc).to_dict() == doc
    with pytest.raises(ConfigError, match="verdict='probably'"):
        _doc(verdict="probably")
    with pytest.raises(ConfigError, match="primary_metric"):
        _doc(primary_metric="nope")
    with pytest.raises(ConfigError, match=r"rows\[0\].metrics\['top1'\]"):
        _doc(rows=[Row("a", 0, {"top1": "high"})])


def test_environment_has_required_fields():
    env = environment()
    assert {"torch", "device", "threads", "python", "platform"} <= set(env)
    assert environment("cpu")["device"] == "cpu"
    assert "env" in _doc(env=None) and _doc(env=None)["env"]["torch"]


def test_write_load_round_trip_and_atomicity(tmp_path):
    doc = _doc()
    out = tmp_path / "demo"
    path = write_results({**doc, "_folder": "ignored"}, out)
    assert path == out / "results.json"
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]  # no temp file left behind
    assert load_results(path) == doc
    assert load_results(out) == doc
    doc2 = _doc(verdict="inconclusive")
    write_results(doc2, out)  # overwrite in place
    assert load_results(path)["verdict"] == "inconclusive"
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]


def test_failed_write_keeps_old_file_and_no_temp(tmp_path):
    doc = _doc()
    write_results(doc, tmp_path)
    bad = {**doc, "rows": [{"name": "a", "seed": 0, "metrics": {"top1": object()}}]}
    with pytest.raises((DataError, TypeError)):
        write_results(bad, tmp_path)
    assert load_results(tmp_path / "results.json") == doc
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_load_reports_missing_and_bad_keys(tmp_path):
    doc = _doc()
    path = tmp_path / "results.json"
    path.write_text(json.dumps({k: v for k, v in doc.items() if k != "verdict"}))
    with pytest.raises(DataError, match=r"results\.json.*'verdict' is missing"):
        load_results(path)
    path.write_text(json.dumps({**doc, "seeds": "three"}))
    with pytest.raises(DataError, match="'seeds' must be an integer"):
        load_results(path)
    path.write_text(json.dumps({**doc, "verdict": "yes"}))
    with pytest.raises(DataError, match="'verdict' must be one of"):
        load_results(path)
    path.write_text("{not json")
    with pytest.raises(DataError, match="invalid JSON"):
        load_results(path)
    with pytest.raises(DataError, match="no such results file"):
        load_results(tmp_path / "nope" / "results.json")


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_results_files_follow_the_users_umask_not_the_temporary_files_0600(tmp_path, umask):
    previous = os.umask(umask)
    try:
        path = write_results(_doc(), tmp_path)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
