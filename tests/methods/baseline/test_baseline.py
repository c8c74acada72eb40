import pytest

from frugalvision.methods.baseline import experiment
from frugalvision.report import load_results


def test_smoke_experiment_writes_valid_results_with_a_computed_verdict(tmp_path):
    config = experiment.smoke()
    config.out = str(tmp_path)
    config.progress = False
    document = experiment.run(config)
    loaded = load_results(tmp_path / "baseline" / "results.json")
    assert loaded["verdict"] == document["verdict"]
    names = {row["name"] for row in loaded["rows"]}
    assert names == {"vit-small", "resnet-8"}
    for row in loaded["rows"]:
        assert 0.0 <= row["metrics"]["test_top1"] <= 1.0
    summary = loaded["summary"]["test_top1"]
    verdict, _ = experiment.verdict_for(summary, 0.1)
    assert verdict == loaded["verdict"]
    for figure in loaded["figures"]:
        assert (tmp_path / "baseline" / figure).is_file()


@pytest.mark.parametrize(
    "means, expected",
    [((0.9, 0.8), "supported"), ((0.9, 0.15), "not supported"), ((0.9, 0.45), "inconclusive")],
)
def test_verdict_rule(means, expected):
    summary = {f"m{i}": {"mean": m, "std": 0.01} for i, m in enumerate(means)}
    assert experiment.verdict_for(summary, 0.1)[0] == expected
