from html.parser import HTMLParser

import numpy as np
import pytest

from frugalvision.errors import DataError
from frugalvision.report import (
    Row,
    bar_plot,
    collect_results,
    format_mean_std,
    image_grid,
    line_plot,
    make_results,
    render_html,
    render_markdown,
    write_report,
    write_results,
)

ENV = {"torch": "2.x", "device": "cpu", "threads": 2}


def _write_fixtures(root):
    rows_a = [Row("magnitude", s, {"top1": 0.80 + 0.01 * s, "params_m": 0.41}) for s in range(3)]
    rows_a += [Row("singe", s, {"top1": 0.85 + 0.01 * s, "params_m": 0.41}) for s in range(3)]
    doc_a = make_results(
        "singe",
        "arXiv:2207.04089",
        "standard",
        "fashion-mnist",
        "SInGE prunes better than magnitude.",
        rows_a,
        "supported",
        "singe top1 > magnitude top1 on every seed",
        95.23,
        figures=["top1.png"],
        primary_metric="top1",
        env=ENV,
    )
    bar_plot(root / "singe" / "top1.png", doc_a["summary"], "top1", "top-1 <by> row")
    write_results(doc_a, root / "singe")
    rows_b = [Row("ensemble", 0, {"ece": 0.031, "nll": 0.4}), Row("mimo", 0, {"ece": 0.02, "nll": 0.38})]
    doc_b = make_results(
        "mimo",
        "arXiv:2010.06610",
        "smoke",
        "mnist-5k",
        "MIMO matches an ensemble & costs one pass.",
        rows_b,
        "inconclusive",
        "1 seed only",
        3.0,
        notes="<b>few seeds</b>",
        env=ENV,
    )
    write_results(doc_b, root / "mimo")
    line_plot(root / "mimo" / "extra.png", [1, 2, 3], {"mimo": ([0.1, 0.2, 0.3], [0.01, 0.02, 0.01])}, "M", "acc", "t")


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.imgs = [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])
        elif tag not in {"meta", "br"}:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>"
        self.stack.pop()


def test_report_from_two_results(tmp_path):
    _write_fixtures(tmp_path)
    docs = collect_results(tmp_path)
    assert [d["method"] for d in docs] == ["mimo", "singe"]
    md_path, html_path = write_report(tmp_path)
    md = md_path.read_text()
    assert md_path.name == "REPORT.md" and html_path.name == "report.html"
    assert "## singe — arXiv:2207.04089" in md and "## mimo — arXiv:2010.06610" in md
    assert "| mimo | main | smoke | inconclusive (smoke: proves nothing) | 3.0 |" in md
    assert md.count("Smoke run: seconds of training") == 2  # under the summary and in the smoke section
    assert "| singe | main | standard | **supported** | 95.2 |" in md
    assert "| magnitude | 0.810 ± 0.010 | 0.410 ± 0.000 |" in md  # primary metric first
    assert "| ensemble | 0.031 ± 0.000 | 0.400 ± 0.000 |" in md
    assert "**Verdict: supported** — singe top1 > magnitude top1 on every seed" in md
    assert "SInGE prunes better than magnitude." in md
    assert "![top1.png](singe/top1.png)" in md
    assert "![extra.png](mimo/extra.png)" in md  # unlisted PNG picked up
    assert md.index("## mimo") < md.index("## singe")
    assert "&lt;b>few seeds&lt;/b>" in md  # no raw HTML passes into the markdown

    page = html_path.read_text()
    parser = _Collector()
    parser.feed(page)
    parser.close()
    assert parser.stack == []
    assert sorted(parser.imgs) == ["mimo/extra.png", "singe/top1.png"]
    assert "&lt;b&gt;few seeds&lt;/b&gt;" in page and "<b>few seeds</b>" not in page
    assert "ensemble &amp; costs" in page
    assert "0.860 ± 0.010" in page


def test_missing_figure_and_empty_root(tmp_path):
    doc = make_results(
        "x", "p", "smoke", "d", "c", [Row("a", 0, {"m": 1.0})], "not supported", "r", 1.0, figures=["gone.png"], env=ENV
    )
    write_results(doc, tmp_path / "x")
    assert "missing figure: <code>x/gone.png</code>" in render_html(collect_results(tmp_path), tmp_path)
    with pytest.raises(DataError, match="no \\*/results.json"):
        write_report(tmp_path / "x")
    with pytest.raises(DataError, match="not a folder"):
        collect_results(tmp_path / "nope")


@pytest.mark.parametrize(
    ("mean", "std", "text"),
    [
        (0.871, 0.0043, "0.871 ± 0.004"),
        (0.031, 0.002, "0.031 ± 0.002"),
        (95.24, 1.26, "95.2 ± 1.3"),
        (3.2, 0.0, "3.20 ± 0.00"),
        (1234.7, 10.2, "1235 ± 10"),
        (0.00012, 0.00001, "0.000120 ± 0.000010"),
        (float("nan"), 0.0, "nan ± 0.000"),
    ],
)
def test_number_format(mean, std, text):
    assert format_mean_std(mean, std) == text


def test_image_grid_and_bad_figure_args(tmp_path):
    import torch

    imgs = [np.zeros((8, 8)), np.random.default_rng(0).random((8, 8, 3)) * 4 - 2, torch.rand(3, 8, 8)]
    path = image_grid(tmp_path / "g" / "grid.png", imgs, ["a", "b", "c"], ncols=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(DataError, match="images\\[0\\]"):
        image_grid(tmp_path / "bad.png", [np.zeros((2, 2, 2, 2))])
    with pytest.raises(DataError, match="one per x"):
        line_plot(tmp_path / "l.png", [1, 2], {"s": ([1.0], None)}, "x", "y", "t")
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []  # every helper closes its figure, also on errors


def test_studies_get_their_own_section_after_the_main_study_with_their_evidence(tmp_path):
    _write_fixtures(tmp_path)
    study = make_results(
        "singe",
        "arXiv:2207.04089",
        "smoke",
        "d",
        "c",
        [Row("a", 0, {"m": 1.0})],
        "inconclusive",
        "r",
        2.0,
        env=ENV,
        study="ablation",
        evidence=["a - b on m: +0.010 (95 % lower bound -0.2)"],
    )
    write_results(study, tmp_path / "singe" / "ablation")
    docs = collect_results(tmp_path)
    assert [(d["method"], d.get("study"), d["_folder"]) for d in docs] == [
        ("mimo", None, "mimo"),
        ("singe", None, "singe"),
        ("singe", "ablation", "singe/ablation"),
    ]
    md = render_markdown(docs, tmp_path)
    assert "| singe | ablation | smoke | inconclusive (smoke: proves nothing) | 2.0 |" in md
    assert "## singe · study ablation — arXiv:2207.04089" in md
    assert "- a - b on m: +0.010 (95 % lower bound -0.2)" in md
    assert md.index("## singe — ") < md.index("## singe · study ablation")
    assert "<li>a - b on m: +0.010 (95 % lower bound -0.2)</li>" in render_html(docs, tmp_path)


def test_wide_tables_show_the_headline_metrics_first_and_fold_the_rest(tmp_path):
    metrics = {f"m{i:02d}": 0.5 for i in range(20)}
    doc = make_results(
        "perceiver",
        "arXiv:1",
        "standard",
        "d",
        "c",
        [Row("a", 0, metrics), Row("b", 0, {**metrics, "m19": 0.9})],
        "inconclusive",
        "r",
        1.0,
        primary_metric="m07",
        comparisons=[{"metric": "m13", "better": "a", "reference": "b"}],
    )
    md = render_markdown([{**doc, "_folder": "perceiver"}], tmp_path)
    tables = [line for line in md.splitlines() if line.startswith("| row |")]
    assert tables[0] == "| row | m07 | m13 | m00 | m01 | m02 | m03 |"  # primary, then compared, then the rest
    assert len(tables) == 4 and all(line.count("|") <= 8 for line in tables)
    assert md.index("<details><summary>14 more metrics</summary>") < md.index(tables[1])
    page = render_html([{**doc, "_folder": "perceiver"}], tmp_path)
    parser = _Collector()
    parser.feed(page)
    parser.close()
    assert parser.stack == [] and page.count("<table>") == 5 and "<details>" in page  # summary + 4
