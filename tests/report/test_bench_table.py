"""The README performance table is generated from `frugal bench` results files, and kept out of the report."""

import json

import pytest

from frugalvision.errors import DataError
from frugalvision.harness.bench import run_benchmark
from frugalvision.report import (
    archive_bench,
    archive_results,
    bench_table,
    collect_results,
    load_archive,
    update_readme_bench,
)
from frugalvision.report.bench_table import BENCH_BEGIN, BENCH_END
from tests.report.test_archive import _run


def _row(name, ratio, **extra):
    row = {"name": name, "arm": "ours", "peer": "the peer", "ratio": ratio, "ratio_q25": ratio - 0.1}
    return {**row, "ratio_q75": ratio + 0.1, "arm_ms": 2.0, "peer_ms": 4.0, "rounds": 9, "threads": 2, **extra}


def _bench(out):
    run_benchmark("engine", "framework", lambda folder: {"ratios": [_row("loop", 1.1, goal=1.2, meets_goal=True)]}, out)
    run_benchmark("zeta", "method", lambda folder: {"ratios": [_row("step", 0.5)]}, out)
    run_benchmark("alpha", "method", lambda folder: {"M5": {"ratio": 0.9}}, out)


def test_the_table_has_one_line_per_ratio_and_lists_what_the_others_lack(tmp_path):
    _bench(tmp_path / "runs")
    table = bench_table(tmp_path / "runs")
    lines = table.splitlines()
    assert lines[2].startswith(
        "| engine | loop | ours | the peer | 1.10 [1.00, 1.20] (goal <= 1.20: met) | 2.00 / 4.00 | 9 | 2 |"
    )
    assert lines[3].startswith("| zeta | step | ours | the peer | 0.500 [0.400, 0.600] | 2.00 / 4.00 | 9 | 2 |")
    assert " x " in lines[2] and "load " in lines[2]
    assert "- `alpha`: returns its timing ratios outside a 'ratios' list" in table and "alpha |" not in table
    assert "ran 3 benchmarks" in table


def test_archive_and_readme_round_trip(tmp_path):
    _bench(tmp_path / "runs")
    written = archive_bench(tmp_path / "runs", tmp_path / "results")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        "results/bench/alpha/results.json",
        "results/bench/engine/results.json",
        "results/bench/zeta/results.json",
    ]
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{BENCH_BEGIN}\nold\n{BENCH_END}\n\nafter\n")
    update_readme_bench(readme, tmp_path / "results")
    text = readme.read_text()
    assert text.split(BENCH_BEGIN)[1].split(BENCH_END)[0].strip() == bench_table(tmp_path / "results")
    assert text.startswith("# x\n") and text.endswith("\n\nafter\n")
    readme.write_text("no markers")
    with pytest.raises(DataError, match="bench-table markers"):
        update_readme_bench(readme, tmp_path / "results")


def test_bench_files_stay_out_of_the_results_report_and_table(tmp_path):
    _run(tmp_path / "runs", "alpha", "standard")
    _bench(tmp_path / "runs")
    assert [d["method"] for d in collect_results(tmp_path / "runs")] == ["alpha"]
    archive_results(tmp_path / "runs", tmp_path / "results")
    archive_bench(tmp_path / "runs", tmp_path / "results")
    assert [d["method"] for d in load_archive(tmp_path / "results")] == ["alpha"]


def test_a_file_that_is_not_a_bench_document_is_named(tmp_path):
    folder = tmp_path / "bench" / "x"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"method": "x"}))
    with pytest.raises(DataError, match="not a `frugal bench` results file"):
        bench_table(tmp_path)
