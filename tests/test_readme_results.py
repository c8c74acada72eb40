"""The README's results table is exactly the table generated from the committed files under ``results/``."""

from pathlib import Path

from frugalvision.report import results_table
from frugalvision.report.archive import TABLE_BEGIN, TABLE_END

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_results_table_matches_the_committed_results():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert TABLE_BEGIN in text and TABLE_END in text, "README.md lacks the results-table markers"
    table = text.split(TABLE_BEGIN, 1)[1].split(TABLE_END, 1)[0].strip()
    assert table == results_table(ROOT / "results"), (
        "README.md's results table disagrees with results/; run `frugal report --archive results --readme README.md`"
    )
