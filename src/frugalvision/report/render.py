"""Render every ``<root>/<method>[/<study>]/results.json`` into one ``REPORT.md`` and one ``report.html``.

Layout: a summary table (method | study | preset | verdict | wall s), then one section per method and study with the
paper id, the claim, the run facts, a table of ``mean ± std`` per row name and metric, the verdict with its rule and
the evidence that decided it, any notes, and the figures (those listed in ``figures`` first, then any other ``*.png``
in the folder). Image paths are relative to ``root``, so the report works wherever the folder is moved. A table
shows the headline metrics first (the primary metric and those the verdict compares, at most
:data:`MAX_COLUMNS`); the other metrics are folded below it in tables of the same width. Smoke runs are marked as
such: seconds of training that check the code runs, whose verdict proves nothing.
"""

from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from frugalvision.errors import DataError
from frugalvision.report.schema import RESULTS_FILE, atomic_write_text, load_results

__all__ = ["collect_results", "format_mean_std", "format_number", "render_html", "render_markdown", "write_report"]

REPORT_MD = "REPORT.md"
REPORT_HTML = "report.html"
_FOLDER_KEY = "_folder"
#: metric columns per table; wider documents fold the rest into further tables
MAX_COLUMNS = 6
SMOKE_NOTE = (
    "Smoke run: seconds of training on tiny data, to check that the code runs end to end; its numbers and verdict "
    "prove nothing about the claim (see the standard and extended presets)."
)


def collect_results(root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Load and validate every ``root/<method>/results.json`` and ``root/<method>/<study>/results.json``.

    Sorted by method, the main study first. Each returned dict gets an extra in-memory key ``"_folder"``: its folder
    relative to ``root`` in POSIX form (used to resolve figure paths;
    :func:`~frugalvision.report.schema.write_results` never writes ``_``-keys).

    Args:
        root: Output folder holding one sub-folder per method.

    Returns:
        The documents.

    Raises:
        DataError: if ``root`` is not a folder or a results.json is malformed (naming the file and key).

    """
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"{base}: not a folder; pass the output folder of `frugal reproduce`")
    docs = []
    for path in [*base.glob(f"*/{RESULTS_FILE}"), *base.glob(f"*/*/{RESULTS_FILE}")]:
        if path.relative_to(base).parts[0] == "bench":
            continue  # `frugal bench` results: the performance table, not the report
        doc = load_results(path)
        doc[_FOLDER_KEY] = path.parent.relative_to(base).as_posix()
        docs.append(doc)
    docs.sort(key=lambda d: (d["method"], d.get("study") is not None, d.get("study") or "", d[_FOLDER_KEY]))
    return docs


def _decimals(x: float) -> int:
    """Decimals for a value: 3 significant digits from 1 up, 3 decimals in [0.01, 1), 3 significant digits below."""
    if not math.isfinite(x) or x == 0:
        return 3
    exponent = math.floor(math.log10(abs(x)))
    if abs(x) >= 1:
        return max(0, 2 - exponent)
    return 3 if abs(x) >= 0.01 else min(8, 2 - exponent)


def format_number(x: float, decimals: int | None = None) -> str:
    """Format a metric value: ``0.871``, ``0.031``, ``95.2``, ``3.20``, ``1234``, ``0.000120``.

    Args:
        x: The value (NaN and infinities print as ``nan``, ``inf``, ``-inf``).
        decimals: Fixed number of decimals instead of the automatic choice.

    Returns:
        The formatted string.

    """
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{_decimals(x) if decimals is None else decimals}f}"


def format_mean_std(mean: float, std: float) -> str:
    """Format ``"mean ± std"`` with both numbers at the decimals chosen for the mean (or the std when mean is 0)."""
    ref = mean if (math.isfinite(mean) and mean != 0) else std
    decimals = _decimals(float(ref))
    return f"{format_number(mean, decimals)} ± {format_number(std, decimals)}"


def _folder(doc: Mapping[str, Any]) -> str:
    return str(doc.get(_FOLDER_KEY) or doc["method"])


def _title(doc: Mapping[str, Any]) -> str:
    study = f" · study {doc['study']}" if doc.get("study") else ""
    return f"{doc['method']}{study} — {doc['paper']}"


def _is_smoke(doc: Mapping[str, Any]) -> bool:
    return doc.get("preset") == "smoke"


def _verdict_text(doc: Mapping[str, Any]) -> str:
    return f"{doc['verdict']} (smoke: proves nothing)" if _is_smoke(doc) else str(doc["verdict"])


def _summary_cells(doc: Mapping[str, Any]) -> list[str]:
    wall = format_number(doc["wall_s"], 1)
    return [doc["method"], doc.get("study") or "main", doc["preset"], _verdict_text(doc), wall]


SUMMARY_HEADER = ["method", "study", "preset", "verdict", "wall s"]


def _metric_columns(doc: Mapping[str, Any]) -> list[str]:
    """Every metric, headline first: the primary metric, then those the verdict compares, then the others."""
    metrics = list(doc["summary"])
    headline = [doc.get("primary_metric")] + [c.get("metric") for c in doc.get("comparisons", [])]
    first = [m for m in dict.fromkeys(headline) if m in metrics]
    return first + [m for m in metrics if m not in first]


def _row_names(doc: Mapping[str, Any]) -> list[str]:
    names: dict[str, None] = {}
    for row in doc["rows"]:
        names.setdefault(row["name"], None)
    for by_name in doc["summary"].values():
        for name in by_name:
            names.setdefault(name, None)
    return list(names)


def _tables(doc: Mapping[str, Any], max_columns: int = MAX_COLUMNS) -> list[tuple[list[str], list[list[str]]]]:
    """Header and body cells (plain text) of a document's mean ± std tables: headline metrics first, then the rest.

    Each table has the row names and at most ``max_columns`` metrics; rows without any value in a table are left out.
    """
    metrics = _metric_columns(doc)
    tables = []
    for start in range(0, len(metrics), max_columns):
        chunk = metrics[start : start + max_columns]
        body = []
        for name in _row_names(doc):
            stats = [doc["summary"][metric].get(name) for metric in chunk]
            if any(stats) or start == 0:
                body.append([name] + [format_mean_std(s["mean"], s["std"]) if s else "–" for s in stats])
        tables.append((["row", *chunk], body))
    return tables


def _table(doc: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and body cells of the headline table (see :func:`_tables`)."""
    return _tables(doc)[0]


def _figures(doc: Mapping[str, Any], root: Path) -> list[tuple[str, bool]]:
    """Figure paths relative to ``root`` (POSIX) with an exists flag: listed figures first, then unlisted PNGs."""
    folder = _folder(doc)
    base = root / folder
    out: list[tuple[str, bool]] = []
    seen: set[Path] = set()
    for fig in doc.get("figures", []):
        path = base / fig
        seen.add(path.resolve())
        out.append(((PurePosixPath(folder) / PurePosixPath(fig)).as_posix(), path.is_file()))
    for path in sorted(base.glob("*.png")):
        if path.resolve() not in seen:
            out.append(((PurePosixPath(folder) / path.name).as_posix(), True))
    return out


def _facts(doc: Mapping[str, Any]) -> str:
    env = doc.get("env", {})
    facts = (
        f"preset {doc['preset']} · dataset {doc['dataset']} · seeds {doc['seeds']} · "
        f"wall {format_number(doc['wall_s'], 1)} s"
    )
    if env.get("torch") or env.get("device"):
        facts += f" · torch {env.get('torch', '?')} on {env.get('device', '?')}"
    return facts


def _md_text(text: object) -> str:
    """Free text for Markdown: ``<`` escaped so that no raw HTML gets through, newlines kept on one line."""
    return str(text).replace("<", "&lt;").replace("\n", " ")


def _md_cell(text: object) -> str:
    return _md_text(text).replace("\\", "\\\\").replace("|", "\\|")


def _md_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in body]
    return lines


def render_markdown(docs: Sequence[Mapping[str, Any]], root: str | os.PathLike[str]) -> str:
    """Render the report as GitHub-flavoured Markdown.

    Args:
        docs: Results documents (as from :func:`collect_results`).
        root: The folder the report is written to; image links are relative to it.

    Returns:
        The Markdown text.

    """
    base = Path(root)
    lines = ["# frugalvision report", "", f"{len(docs)} experiment(s) under `{base}`.", ""]
    summary_rows = []
    for doc in docs:
        cells = _summary_cells(doc)
        cells[3] = cells[3] if _is_smoke(doc) else f"**{cells[3]}**"
        summary_rows.append(cells)
    lines += _md_table(SUMMARY_HEADER, summary_rows)
    if any(_is_smoke(doc) for doc in docs):
        lines += ["", f"*{SMOKE_NOTE}*"]
    for doc in docs:
        tables = _tables(doc)
        lines += [
            "",
            f"## {_md_text(_title(doc))}",
            "",
            f"**Claim.** {_md_text(doc['claim'])}",
            "",
            _md_text(_facts(doc)),
            "",
        ]
        if _is_smoke(doc):
            lines += [f"*{SMOKE_NOTE}*", ""]
        lines += _md_table(*tables[0])
        if len(tables) > 1:
            folded = sum(len(header) - 1 for header, _ in tables[1:])
            lines += ["", f"<details><summary>{folded} more metrics</summary>", ""]
            for header, body in tables[1:]:
                lines += _md_table(header, body) + [""]
            lines += ["</details>"]
        lines += ["", f"**Verdict: {_verdict_text(doc)}** — {_md_text(doc['verdict_rule'])}"]
        if doc.get("evidence"):
            lines += [""] + [f"- {_md_text(sentence)}" for sentence in doc["evidence"]]
        if doc.get("notes"):
            lines += ["", f"*Notes.* {_md_text(doc['notes'])}"]
        for rel, exists in _figures(doc, base):
            if exists:
                lines += ["", f"![{PurePosixPath(rel).name}]({quote(rel, safe='/')})"]
            else:
                lines += ["", f"*(missing figure: `{rel}`)*"]
    return "\n".join(lines) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{border-bottom:2px solid #ddd;padding-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #eee}
table{border-collapse:collapse;margin:.8em 0}th,td{border:1px solid #ccc;padding:.3em .7em;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}
.meta{color:#555;font-size:.9em}.claim{font-style:italic}
.v-supported{color:#17702e}.v-not-supported{color:#b00020}.v-inconclusive{color:#8a6d00}.v-smoke{color:#666}
.smoke{background:#f4f4f4;padding:.4em .7em;border-left:3px solid #999}details{margin:.5em 0}
figure{display:inline-block;margin:.5em 1em .5em 0}img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.8em;color:#666}
""".strip()


def _section_id(doc: Mapping[str, Any]) -> str:
    return "m-" + re.sub(r"[^A-Za-z0-9_-]", "-", _folder(doc))


def _verdict_class(doc: Mapping[str, Any]) -> str:
    return "v-smoke" if _is_smoke(doc) else "v-" + str(doc["verdict"]).replace(" ", "-")


def _html_table(header: Sequence[str], body: Sequence[Sequence[str]], raw_cols: Sequence[int] = ()) -> list[str]:
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for row in body:
        cells = [c if i in raw_cols else html.escape(c) for i, c in enumerate(row)]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return out


def render_html(docs: Sequence[Mapping[str, Any]], root: str | os.PathLike[str]) -> str:
    """Render the report as one self-contained HTML page (inline CSS; images referenced by relative path).

    Args:
        docs: Results documents (as from :func:`collect_results`).
        root: The folder the report is written to; ``<img src>`` paths are relative to it.

    Returns:
        The HTML text.

    """
    base = Path(root)
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>frugalvision report</title><style>{_CSS}</style></head>",
        "<body>",
        "<h1>frugalvision report</h1>",
        f'<p class="meta">{len(docs)} experiment(s) under <code>{esc(str(base))}</code>.</p>',
    ]
    summary_rows = []
    for doc in docs:
        cells = [esc(c) for c in _summary_cells(doc)]
        cells[0] = f'<a href="#{esc(_section_id(doc))}">{cells[0]}</a>'
        cells[3] = f'<strong class="{_verdict_class(doc)}">{cells[3]}</strong>'
        summary_rows.append(cells)
    parts += _html_table(SUMMARY_HEADER, summary_rows, raw_cols=tuple(range(len(SUMMARY_HEADER))))
    if any(_is_smoke(doc) for doc in docs):
        parts.append(f'<p class="smoke">{esc(SMOKE_NOTE)}</p>')
    for doc in docs:
        tables = _tables(doc)
        parts += [
            f'<section id="{esc(_section_id(doc))}">',
            f"<h2>{esc(_title(doc))}</h2>",
            f'<p class="claim"><strong>Claim.</strong> {esc(doc["claim"])}</p>',
            f'<p class="meta">{esc(_facts(doc))}</p>',
        ]
        if _is_smoke(doc):
            parts.append(f'<p class="smoke">{esc(SMOKE_NOTE)}</p>')
        parts += _html_table(*tables[0])
        if len(tables) > 1:
            folded = sum(len(header) - 1 for header, _ in tables[1:])
            parts.append(f"<details><summary>{folded} more metrics</summary>")
            for header, body in tables[1:]:
                parts += _html_table(header, body)
            parts.append("</details>")
        parts.append(
            f'<p><strong class="{_verdict_class(doc)}">Verdict: {esc(_verdict_text(doc))}</strong> — '
            f"{esc(doc['verdict_rule'])}</p>"
        )
        if doc.get("evidence"):
            parts.append("<ul>" + "".join(f"<li>{esc(e)}</li>" for e in doc["evidence"]) + "</ul>")
        if doc.get("notes"):
            parts.append(f"<p><em>Notes.</em> {esc(doc['notes'])}</p>")
        for rel, exists in _figures(doc, base):
            name = esc(PurePosixPath(rel).name)
            if exists:
                src = esc(quote(rel, safe="/"), quote=True)
                parts.append(f'<figure><img src="{src}" alt="{name}"><figcaption>{name}</figcaption></figure>')
            else:
                parts.append(f"<p><em>(missing figure: <code>{esc(rel)}</code>)</em></p>")
        parts.append("</section>")
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


def write_report(root: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Collect every results.json under ``root`` and write ``root/REPORT.md`` and ``root/report.html`` atomically.

    Args:
        root: Output folder holding one sub-folder per method.

    Returns:
        ``(markdown path, html path)``.

    Raises:
        DataError: if no results.json is found or one is malformed.

    """
    base = Path(root)
    docs = collect_results(base)
    if not docs:
        raise DataError(f"{base}: no */{RESULTS_FILE} found; run `frugal reproduce` (or `frugal run <method>`) first")
    md_path, html_path = base / REPORT_MD, base / REPORT_HTML
    atomic_write_text(md_path, render_markdown(docs, base))
    atomic_write_text(html_path, render_html(docs, base))
    return md_path, html_path
