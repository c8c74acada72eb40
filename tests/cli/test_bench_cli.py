"""`frugal bench` on the command line: bad names are one line, the README table can be rebuilt from the files."""

from frugalvision.cli import main
from frugalvision.harness.bench import run_benchmark
from frugalvision.report.bench_table import BENCH_BEGIN, BENCH_END, bench_table


def test_an_unknown_benchmark_or_a_readme_without_archive_is_one_line(capsys):
    assert main(["bench", "--methods", "nosuch"]) == 2
    assert "unknown benchmark nosuch" in capsys.readouterr().err
    assert main(["bench", "--readme", "README.md"]) == 2
    assert "--readme needs --archive" in capsys.readouterr().err


def test_table_only_rebuilds_the_readme_block_from_the_archive(tmp_path):
    row = {"name": "n", "arm": "a", "peer": "p", "ratio": 1.0, "ratio_q25": 0.9, "ratio_q75": 1.1, "rounds": 6}
    row.update(arm_ms=1.0, peer_ms=1.0)
    run_benchmark("engine", "framework", lambda folder: {"ratios": [{**row, "threads": 1}]}, tmp_path / "results")
    readme = tmp_path / "README.md"
    readme.write_text(f"{BENCH_BEGIN}\n{BENCH_END}\n")
    assert main(["bench", "--table-only", "--archive", str(tmp_path / "results"), "--readme", str(readme)]) == 0
    assert readme.read_text() == f"{BENCH_BEGIN}\n{bench_table(tmp_path / 'results')}\n{BENCH_END}\n"
