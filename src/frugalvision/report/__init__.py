"""Results format (results.json), Markdown/HTML report rendering and matplotlib figure helpers."""

from frugalvision.report.archive import archive_results, load_archive, results_table, update_readme
from frugalvision.report.bench_table import archive_bench, bench_table, load_bench, update_readme_bench
from frugalvision.report.figures import bar_plot, image_grid, line_plot
from frugalvision.report.render import (
    collect_results,
    format_mean_std,
    format_number,
    render_html,
    render_markdown,
    write_report,
)
from frugalvision.report.schema import (
    RESULTS_FILE,
    VERDICTS,
    ResultsDoc,
    Row,
    environment,
    load_results,
    make_results,
    summarize,
    validate_results,
    write_results,
)

__all__ = [
    "RESULTS_FILE",
    "VERDICTS",
    "ResultsDoc",
    "Row",
    "archive_bench",
    "archive_results",
    "bar_plot",
    "bench_table",
    "collect_results",
    "environment",
    "format_mean_std",
    "format_number",
    "image_grid",
    "line_plot",
    "load_archive",
    "load_bench",
    "load_results",
    "make_results",
    "render_html",
    "render_markdown",
    "results_table",
    "summarize",
    "update_readme",
    "update_readme_bench",
    "validate_results",
    "write_report",
    "write_results",
]
