import pytest

from frugalvision.errors import DataError
from frugalvision.report import Row, archive_results, load_archive, make_results, results_table, update_readme
from frugalvision.report.archive import TABLE_BEGIN, TABLE_END

ENV = {"torch": "2.x", "device": "cpu", "threads": 2}


def _run(root, method, preset, study=None, wall=3.0):
    rows = [Row("a", s, {"top1": 0.5 + 0.1 * s}) for s in range(3)] + [Row("b", s, {"top1": 0.4}) for s in range(3)]
    doc = make_results(
        method,
        "p",
        preset,
        "d",
        "c",
        rows,
        "inconclusive",
        "r",
        wall,
        env=ENV,
        study=study,
        figures=["top1.png"],
        primary_metric="top1",
    )
    from frugalvision.report import write_results

    folder = root / method / study if study else root / method
    write_results(doc, folder)
    (folder / "top1.png").write_bytes(b"png")


def test_archive_copies_documents_and_figures_into_method_preset_folders(tmp_path):
    _run(tmp_path / "runs", "zeta", "standard")
    _run(tmp_path / "runs", "zeta", "standard", study="ablation")
    _run(tmp_path / "runs", "alpha", "standard")
    written = archive_results(tmp_path / "runs", tmp_path / "results")
    rel = sorted(p.relative_to(tmp_path / "results").as_posix() for p in written)
    assert rel == ["alpha/standard/results.json", "zeta/standard/ablation/results.json", "zeta/standard/results.json"]
    assert (tmp_path / "results/zeta/standard/ablation/top1.png").read_bytes() == b"png"
    _run(tmp_path / "runs2", "zeta", "extended", wall=9.0)
    archive_results(tmp_path / "runs2", tmp_path / "results")
    docs = load_archive(tmp_path / "results")
    assert [(d["method"], d["preset"], d.get("study")) for d in docs] == [
        ("alpha", "standard", None),
        ("zeta", "standard", None),
        ("zeta", "standard", "ablation"),
        ("zeta", "extended", None),
    ]


def test_the_table_is_computed_from_the_files_and_replaced_between_markers(tmp_path):
    _run(tmp_path / "runs", "zeta", "standard")
    archive_results(tmp_path / "runs", tmp_path / "results")
    table = results_table(tmp_path / "results")
    assert (
        "| zeta | main | standard | 3 | **inconclusive** | top1: a 0.600 ± 0.100; b 0.400 ± 0.000 | 3.0 | 2 |" in table
    )
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{TABLE_BEGIN}\nold table\n{TABLE_END}\noutro\n")
    update_readme(readme, tmp_path / "results")
    text = readme.read_text()
    assert "old table" not in text and table in text and text.startswith("intro\n") and text.endswith("outro\n")
    readme.write_text("no markers")
    with pytest.raises(DataError, match="no results-table markers"):
        update_readme(readme, tmp_path / "results")
    with pytest.raises(DataError, match="not a folder"):
        load_archive(tmp_path / "nope")


def test_the_table_shows_the_rows_the_verdict_compares_and_caps_the_others(tmp_path):
    from frugalvision.report import write_results

    rows = [Row(f"r{i}", s, {"top1": 0.1 * i, "nll": 1.0}) for i in range(9) for s in range(3)]
    comparison = {"metric": "top1", "better": "r3", "reference": "r1", "n": 3, "mean": 0.2, "outcome": "better"}
    constant = {**comparison, "reference": "1.5x"}
    for name, comparisons in (("with", [comparison, constant]), ("without", [])):
        doc = make_results(
            name,
            "p",
            "standard",
            "d",
            "c",
            rows,
            "supported",
            "r",
            1.0,
            env=ENV,
            primary_metric="top1",
            comparisons=comparisons,
        )
        write_results(doc, tmp_path / "runs" / name)
    archive_results(tmp_path / "runs", tmp_path / "results")
    table = results_table(tmp_path / "results").splitlines()
    assert "| top1: r3 0.300 ± 0.000; r1 0.100 ± 0.000 |" in table[2]
    shown = "top1: " + "; ".join(f"r{i} {0.1 * i:.3f} ± 0.000" for i in range(6)) + " (+3 rows in the file)"
    assert f"| {shown} |" in table[3]
