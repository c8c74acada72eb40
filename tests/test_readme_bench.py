"""The README's performance table is exactly the table generated from the committed `frugal bench` results."""

from pathlib import Path

from frugalvision.report import bench_table
from frugalvision.report.bench_table import BENCH_BEGIN, BENCH_END

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_performance_table_matches_the_committed_bench_results():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert BENCH_BEGIN in text and BENCH_END in text, "README.md lacks the bench-table markers"
    table = text.split(BENCH_BEGIN, 1)[1].split(BENCH_END, 1)[0].strip()
    assert (ROOT / "results" / "bench").is_dir(), "results/bench/ is missing; run `frugal bench --archive results`"
    assert table == bench_table(ROOT / "results"), (
        "README.md's performance table disagrees with results/bench/; run "
        "`frugal bench --archive results --readme README.md` (or --table-only to rebuild it from the files)"
    )
