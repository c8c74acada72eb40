from dataclasses import replace

import pytest

from frugalvision.errors import ConfigError
from frugalvision.methods.tfood import experiment
from frugalvision.report import load_results


@pytest.mark.slow
def test_smoke_preset_runs(tmp_path):
    config = experiment.smoke()
    config.out = str(tmp_path)
    config.progress = False
    document = experiment.run(config)
    assert document["verdict"] in ("supported", "not supported", "inconclusive")
    assert {row["name"] for row in document["rows"]} == set(experiment.DEFAULT_ARMS)


def test_tiny_experiment_writes_complete_results_with_a_computed_verdict(tmp_path):
    config = experiment.smoke()
    config.out = str(tmp_path)
    config.progress = False
    config.num_recipes = 120
    config.loop.max_steps = 3
    document = experiment.run(config)
    loaded = load_results(tmp_path / "tfood" / "results.json")
    assert loaded["verdict"] == document["verdict"]
    names = [row["name"] for row in loaded["rows"]]
    assert names == ["ht_fixed", "dynamic_margin", "semantic", "tfood", "tfood_rerank"]
    metric = loaded["primary_metric"]
    chance = 1 / 15  # 15 test pairs < bag of 20
    assert experiment.verdict_for(loaded["rows"], metric, chance)[0] == loaded["verdict"]
    for row in loaded["rows"]:
        for direction in ("image_to_recipe", "recipe_to_image"):
            assert 0.0 <= row["metrics"][f"test/bag20/{direction}/R@1"] <= 1.0
            assert row["metrics"][f"test/bag20/{direction}/medR"] >= 1.0
            assert 0.0 <= row["metrics"][f"test/bag30/{direction}/R@10"] <= 1.0
    for row in loaded["rows"]:
        if row["name"] != "tfood_rerank":  # weights selected on validation R@1 (evaluated every 10 steps + at the end)
            assert row["metrics"]["selected_step"] == 3.0 and 0.0 <= row["metrics"]["val/R@1"] <= 1.0
    tfood = next(r for r in loaded["rows"] if r["name"] == "tfood")["metrics"]
    base = next(r for r in loaded["rows"] if r["name"] == "ht_fixed")["metrics"]
    assert tfood["params_test_m"] > base["params_test_m"]  # HTD adds test-time parameters, the MMR does not count
    for figure in loaded["figures"]:
        assert (tmp_path / "tfood" / figure).is_file()
    assert (tmp_path / "tfood" / "data" / "recipe1m" / "layer1.json").is_file()


def _rows(pairs):
    rows = []
    for seed, (t, b) in enumerate(pairs):
        rows.append({"name": "tfood", "seed": seed, "metrics": {"m": t}})
        rows.append({"name": "ht_fixed", "seed": seed, "metrics": {"m": b}})
    return rows


@pytest.mark.parametrize(
    "pairs, expected",
    [
        ([(0.5, 0.4), (0.6, 0.5), (0.3, 0.2)], "supported"),
        ([(0.3, 0.4), (0.5, 0.5), (0.1, 0.2)], "not supported"),
        ([(0.5, 0.4), (0.4, 0.5), (0.3, 0.2)], "inconclusive"),
        ([(0.015, 0.01), (0.016, 0.01), (0.017, 0.01)], "inconclusive"),  # above the baseline but at chance
    ],
)
def test_verdict_rule(pairs, expected):
    assert experiment.verdict_for(_rows(pairs), "m", chance=0.01)[0] == expected


def test_config_validation_names_the_field():
    config = experiment.smoke()
    config.arms = ("tfood_rerank",)
    with pytest.raises(ConfigError, match="tfood_rerank"):
        config.validate()
    config = experiment.smoke()
    config.dataset = "recipe1m"
    with pytest.raises(ConfigError, match="data-root"):
        config.validate()
    assert set(experiment.PRESETS) == {"smoke", "standard", "paper"}
    paper = experiment.paper()
    assert paper.loop.batch_size == 100 and paper.image_lr_scale == 0.1 and paper.freeze_image_epochs == 20


def test_minilm_text_option_runs_end_to_end(tmp_path):
    config = experiment.smoke()
    config.out = str(tmp_path)
    config.progress = False
    config.num_recipes = 120
    config.text = "minilm"
    config.text_layers = 2
    config.arms = ("ht_fixed",)
    config.loop.max_steps = 3
    document = experiment.run(config)
    assert document["rows"][0]["name"] == "ht_fixed"
    assert not (tmp_path / "tfood" / "vocab.json").exists()


def test_benchmark_reports_the_ratio(tmp_path):
    result = experiment.benchmark(tmp_path, n=300, pair_sample=200)
    assert result["n"] == 300 and result["ratio_cross_over_dual"] > 1.0


def test_one_component_removed_arms():
    config = experiment.standard()
    full, htd, mmr = experiment.arm_losses("tfood", config, 10)
    assert (full.margin_mode, htd, mmr) == ("incremental", True, True) and full.semantic_weight > 0 < full.itm_weight
    expected = {
        "tfood_no_dynamic": ({"margin_mode": "fixed", "margin": config.fixed_margin}, True, True),
        "tfood_no_semantic": ({"semantic_weight": 0.0}, True, True),
        "tfood_no_mmr": ({"itm_weight": 0.0}, True, False),
    }
    for arm, (changes, want_htd, want_mmr) in expected.items():
        loss, htd, mmr = experiment.arm_losses(arm, config, 10)
        assert (htd, mmr) == (want_htd, want_mmr)
        assert loss == replace(full, **changes), arm


@pytest.mark.parametrize(
    "tfood, others, expected",
    [
        (
            (0.5, 0.6),
            {"tfood_no_dynamic": (0.4, 0.5), "tfood_no_semantic": (0.4, 0.5), "tfood_no_mmr": (0.1, 0.1)},
            "supported",
        ),
        (
            (0.5, 0.6),
            {"tfood_no_dynamic": (0.4, 0.5), "tfood_no_semantic": (0.6, 0.7), "tfood_no_mmr": (0.1, 0.1)},
            "not supported",
        ),
        (
            (0.5, 0.6),
            {"tfood_no_dynamic": (0.6, 0.5), "tfood_no_semantic": (0.4, 0.5), "tfood_no_mmr": (0.1, 0.1)},
            "inconclusive",
        ),
        (
            (0.015, 0.016),
            {"tfood_no_dynamic": (0.01, 0.01), "tfood_no_semantic": (0.01, 0.01), "tfood_no_mmr": (0.01, 0.01)},
            "inconclusive",
        ),
    ],
)
def test_ablation_verdict_rule(tfood, others, expected):
    rows = [{"name": "tfood", "seed": s, "metrics": {"m": v}} for s, v in enumerate(tfood)]
    for arm, values in others.items():
        rows += [{"name": arm, "seed": s, "metrics": {"m": v}} for s, v in enumerate(values)]
    verdict, rule, words = experiment.ablation_verdict(rows, "m", chance=0.01)
    assert verdict == expected and "every seed" in rule and "mmr" in words


def test_ablations_study_writes_its_own_results(tmp_path):
    config = experiment.smoke()
    config.out = str(tmp_path)
    config.progress = False
    config.num_recipes = 120
    config.loop.max_steps = 3
    config.study = "ablations"
    config.validate()
    document = experiment.run(config)
    loaded = load_results(tmp_path / "tfood" / "ablations" / "results.json")
    assert [r["name"] for r in loaded["rows"]] == list(experiment.ABLATION_ARMS)
    chance = 1 / 15
    assert experiment.ablation_verdict(loaded["rows"], loaded["primary_metric"], chance)[0] == document["verdict"]
    assert not (tmp_path / "tfood" / "results.json").exists()
    config.study = "variants"
    with pytest.raises(ConfigError, match="study"):
        config.validate()
