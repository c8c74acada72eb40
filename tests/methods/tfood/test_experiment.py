from dataclasses import replace

import pytest
import torch

from frugalvision.errors import ConfigError
from frugalvision.harness import run_experiment
from frugalvision.methods.tfood import experiment
from frugalvision.methods.tfood.config import ABLATION_ARMS, DEFAULT_ARMS, arm_losses
from frugalvision.report import load_results

METRIC = experiment.METRIC


def _tiny(tmp_path, **changes):
    config = experiment.smoke()
    config.out = str(tmp_path)
    config.progress = False
    config.num_recipes = 120
    config.loop = replace(config.loop, max_steps=3)
    for key, value in changes.items():
        setattr(config, key, value)
    return config


@pytest.mark.slow
def test_smoke_preset_runs(tmp_path):
    config = experiment.smoke()
    config.out = str(tmp_path)
    config.progress = False
    document = run_experiment(experiment.EXPERIMENT, config)
    assert document["verdict"] in ("supported", "not supported", "inconclusive")
    assert {row["name"] for row in document["rows"]} == set(DEFAULT_ARMS)


def test_tiny_experiment_writes_complete_results_with_a_computed_verdict_and_resumes(tmp_path):
    config = _tiny(tmp_path)
    document = run_experiment(experiment.EXPERIMENT, config)
    loaded = load_results(tmp_path / "tfood" / "results.json")
    assert loaded["verdict"] == document["verdict"]
    names = [row["name"] for row in loaded["rows"]]
    assert names == ["ht_fixed", "dynamic_margin", "semantic", "tfood", "tfood_rerank"]
    assert experiment.verdict(config, loaded["rows"]).verdict == loaded["verdict"]
    assert experiment.chance_r1(config, loaded["rows"]) == pytest.approx(1 / 15)  # 15 test pairs < bag of 20
    for row in loaded["rows"]:
        for direction in ("image_to_recipe", "recipe_to_image"):
            assert 0.0 <= row["metrics"][f"test/bag20/{direction}/R@1"] <= 1.0
            assert row["metrics"][f"test/bag20/{direction}/medR"] >= 1.0
            assert 0.0 <= row["metrics"][f"test/bag30/{direction}/R@10"] <= 1.0
        assert row["metrics"][METRIC] == row["metrics"]["test/bag20/R@1"]
        if row["name"] != "tfood_rerank":  # weights selected on validation R@1 (evaluated every 10 steps + at the end)
            assert row["metrics"]["selected_step"] == 3.0 and 0.0 <= row["metrics"]["val_r1"] <= 1.0
    tfood = next(r for r in loaded["rows"] if r["name"] == "tfood")["metrics"]
    base = next(r for r in loaded["rows"] if r["name"] == "ht_fixed")["metrics"]
    assert tfood["params_test_m"] > base["params_test_m"]  # HTD adds test-time parameters, the MMR does not count
    assert list((tmp_path / "tfood" / "cache").glob("mini-recipe1m-*/recipe1m/layer1.json"))
    config.resume = True
    again = run_experiment(experiment.EXPERIMENT, config)
    assert again["rows"] == document["rows"] and again["verdict"] == document["verdict"]


def _rows(pairs, a="tfood", b="ht_fixed"):
    rows = []
    for seed, (t, r) in enumerate(pairs):
        rows.append({"name": a, "seed": seed, "metrics": {METRIC: t}})
        rows.append({"name": b, "seed": seed, "metrics": {METRIC: r}})
    return rows


@pytest.mark.parametrize(
    "pairs, expected",
    [
        ([(0.5, 0.4), (0.6, 0.5), (0.3, 0.21)], "supported"),
        ([(0.3, 0.4), (0.4, 0.5), (0.1, 0.21)], "not supported"),
        ([(0.5, 0.4), (0.4, 0.5), (0.3, 0.2)], "inconclusive"),
        ([(0.015, 0.01), (0.016, 0.011), (0.017, 0.01)], "inconclusive"),  # above the baseline but at chance
    ],
)
def test_verdict_rule(pairs, expected):
    assert experiment.tfood_verdict(_rows(pairs), chance=0.01).verdict == expected


@pytest.mark.parametrize(
    "tfood, others, expected",
    [
        (
            (0.5, 0.6, 0.55),
            {"tfood_no_dynamic": (0.4, 0.5, 0.46), "tfood_no_semantic": (0.4, 0.49, 0.45), "tfood_no_mmr": (0.1,) * 3},
            "supported",
        ),
        (
            (0.5, 0.6, 0.55),
            {"tfood_no_dynamic": (0.4, 0.5, 0.46), "tfood_no_semantic": (0.6, 0.7, 0.66), "tfood_no_mmr": (0.1,) * 3},
            "not supported",
        ),
        (
            (0.5, 0.6, 0.55),
            {"tfood_no_dynamic": (0.6, 0.5, 0.4), "tfood_no_semantic": (0.4, 0.49, 0.45), "tfood_no_mmr": (0.1,) * 3},
            "inconclusive",
        ),
        (
            (0.015, 0.016, 0.017),
            {"tfood_no_dynamic": (0.01,) * 3, "tfood_no_semantic": (0.011,) * 3, "tfood_no_mmr": (0.012,) * 3},
            "inconclusive",
        ),
    ],
)
def test_ablation_verdict_rule(tfood, others, expected):
    rows = [{"name": "tfood", "seed": s, "metrics": {METRIC: v}} for s, v in enumerate(tfood)]
    for arm, values in others.items():
        rows += [{"name": arm, "seed": s, "metrics": {METRIC: v}} for s, v in enumerate(values)]
    verdict = experiment.ablation_verdict(rows, chance=0.01)
    assert verdict.verdict == expected and "tfood_no_mmr" in verdict.rule


def test_config_validation_names_the_field():
    config = experiment.smoke()
    config.arms = ("tfood_rerank",)
    with pytest.raises(ConfigError, match="tfood_rerank"):
        config.validate()
    config = experiment.smoke()
    config.dataset = "recipe1m"
    with pytest.raises(ConfigError, match="data-root"):
        config.validate()
    assert set(experiment.EXPERIMENT.presets) == {"smoke", "standard", "extended", "paper"}
    assert set(experiment.EXPERIMENT.studies) == {"ablations", "itm_weight"}
    config = experiment.smoke()
    config.itm_grid = (0.1, 0.3)
    with pytest.raises(ConfigError, match="itm_grid"):
        config.validate()
    paper = experiment.paper()
    assert paper.loop.batch_size == 100 and paper.freeze_image_epochs == 20
    # an ImageNet backbone pairs the 0.05 starting margin with the full learning rate (CLIP: 0.18 with 0.1 x)
    assert paper.image.backbone == "efficientnet_lite0" and paper.image_lr_scale == 1.0 and paper.margin_start == 0.05
    standard = experiment.standard()
    assert len(standard.seeds) >= 3 and experiment.main_arms(standard) == ("ht_fixed", "tfood")


def test_minilm_text_option_runs_end_to_end(tmp_path):
    config = _tiny(tmp_path, text="minilm", text_layers=2, arms=("ht_fixed",))
    document = run_experiment(experiment.EXPERIMENT, config)
    assert [row["name"] for row in document["rows"]] == ["ht_fixed"]


def test_benchmark_reports_the_ratio(tmp_path):
    from frugalvision.harness.bench import contract_gaps

    result = experiment.benchmark(tmp_path, n=300, pair_sample=200, rounds=5, chunk=128)
    (entry,) = result["ratios"]
    assert entry["arm"].startswith("dual encoder") and "cross-attention" in entry["peer"]
    assert entry["rounds"] == 5 and entry["ratio"] < 1.0 and entry["n"] == 300 and entry["chunk"] == 128
    assert contract_gaps(result) == []
    phases = sum(result[k] for k in ("embed_images_s", "embed_recipes_s", "similarity_s", "metrics_s"))
    assert 0 < phases <= 1.5 * result["dual_total_s"] and result["dual_goal_s"] == 10.0


def test_cls_path_equals_the_full_image_encoder():
    torch.manual_seed(0)
    model = experiment.build_model(experiment.standard(), 50, htd=True, mmr=False).eval()
    images = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        full, tokens = model.embed_images(images)
        fast = model.image_embedding(images)
    assert torch.allclose(fast, full, atol=1e-6) and tokens.shape[1] == 65
    model.train()  # training takes the full path (every token's output feeds the ITM decoders)
    with torch.no_grad():
        assert torch.allclose(model.image_encoder.cls_token(images), model.image_encoder(images)[:, 0])


def test_one_component_removed_arms():
    config = experiment.standard()
    full, htd, mmr = arm_losses("tfood", config, 10)
    assert (full.margin_mode, htd, mmr) == ("incremental", True, True) and full.semantic_weight > 0 < full.itm_weight
    expected = {
        "tfood_no_dynamic": ({"margin_mode": "fixed", "margin": config.fixed_margin}, True, True),
        "tfood_no_semantic": ({"semantic_weight": 0.0}, True, True),
        "tfood_no_mmr": ({"itm_weight": 0.0}, True, False),
    }
    for arm, (changes, want_htd, want_mmr) in expected.items():
        loss, htd, mmr = arm_losses(arm, config, 10)
        assert (htd, mmr) == (want_htd, want_mmr)
        assert loss == replace(full, **changes), arm


def test_ablations_study_writes_its_own_results(tmp_path):
    config = _tiny(tmp_path, study="ablations")
    document = run_experiment(experiment.EXPERIMENT, config)
    loaded = load_results(tmp_path / "tfood" / "ablations" / "results.json")
    assert [r["name"] for r in loaded["rows"]] == list(ABLATION_ARMS)
    assert experiment.study_verdict(config, loaded["rows"]).verdict == document["verdict"]
    assert not (tmp_path / "tfood" / "results.json").exists()
    config.study = "variants"
    with pytest.raises(ConfigError, match="study"):
        run_experiment(experiment.EXPERIMENT, config)


def _itm_rows(values):
    return [
        {"name": experiment.itm_name(w), "seed": s, "metrics": {"val_r1": v}}
        for w, vs in values.items()
        for s, v in enumerate(vs)
    ]


@pytest.mark.parametrize(
    "values, chosen, expected",
    [
        ({0.1: (0.30, 0.31, 0.32), 0.3: (0.22, 0.24, 0.2), 1.0: (0.20, 0.21, 0.19)}, 0.1, "supported"),
        ({0.1: (0.10, 0.11, 0.12), 0.3: (0.14, 0.15, 0.13), 1.0: (0.20, 0.21, 0.19)}, 1.0, "not supported"),
        ({0.1: (0.20, 0.25, 0.15), 0.3: (0.14, 0.15, 0.13), 1.0: (0.20, 0.21, 0.19)}, 1.0, "inconclusive"),
        ({0.1: (0.2, 0.2, 0.2), 0.3: (0.2, 0.2, 0.2), 1.0: (0.2, 0.2, 0.2)}, 1.0, "inconclusive"),  # ties: paper
    ],
)
def test_itm_weight_choice_and_verdict(values, chosen, expected):
    config = experiment.extended()
    rows = _itm_rows(values)
    assert experiment.chosen_itm_weight(config, rows) == chosen
    verdict = experiment.itm_verdict(config, rows)
    assert verdict.verdict == expected and "alpha / 2" in verdict.rule


def test_itm_weight_study_uses_validation_only(tmp_path):
    config = _tiny(tmp_path, study="itm_weight", itm_grid=(0.5, 1.0))
    document = run_experiment(experiment.EXPERIMENT, config)
    loaded = load_results(tmp_path / "tfood" / "itm_weight" / "results.json")
    assert [r["name"] for r in loaded["rows"]] == ["tfood_itm0.5", "tfood_itm1"]
    for row in loaded["rows"]:
        assert not any(key.startswith("test") for key in row["metrics"]) and 0 <= row["metrics"]["val_r1"] <= 1
        assert row["metrics"]["val_r1"] == row["metrics"]["val/bag20/R@1"]
    assert experiment.itm_verdict(config, loaded["rows"]).verdict == document["verdict"]
    assert "Chosen ITM weight" in loaded["notes"]


def test_global_batch_is_the_config_value_and_titles_are_kept_whole(tmp_path):
    loop = experiment.paper().loop
    assert experiment.per_process_loop(loop, 4).batch_size == 25 and experiment.per_process_loop(loop, 1) == loop
    with pytest.raises(ConfigError, match="global batch"):
        experiment.per_process_loop(loop, 3)
    from PIL import Image

    from frugalvision.methods.tfood.config import TFoodConfig, build_model
    from frugalvision.methods.tfood.data import Recipe, RecipeImageDataset
    from frugalvision.methods.tfood.text import WordTokenizer

    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "a.png")
    long_title = " ".join(f"word{i}" for i in range(50))
    recipe = Recipe("r0", long_title, ["salt"], ["stir"], "train", [tmp_path / "a.png"], 0)
    tokenizer = WordTokenizer.fit([long_title, "salt", "stir"])
    dataset = RecipeImageDataset([recipe], tokenizer, img_size=8)
    assert dataset.longest_title == 52  # START + 50 words + END: nothing cut
    model = build_model(TFoodConfig(), len(tokenizer), htd=True, mmr=False, max_title=dataset.longest_title)
    assert model.recipe_encoder.title_pos.shape[0] == 52


def test_protocol_reports_the_spread_over_bags():
    from frugalvision.methods.tfood.task import retrieval_protocol

    gen = torch.Generator().manual_seed(0)
    img, rec = torch.randn(60, 8, generator=gen), torch.randn(60, 8, generator=gen)
    metrics = retrieval_protocol(img, rec, (("bag20", 20, 5),))
    per_bag = []
    from frugalvision.methods.tfood.task import bag_indices
    from frugalvision.metrics import bidirectional_retrieval

    a, b = torch.nn.functional.normalize(img, dim=1), torch.nn.functional.normalize(rec, dim=1)
    for idx in bag_indices(60, 20, 5):
        res = bidirectional_retrieval(a[idx] @ b[idx].T)
        per_bag.append((res["a2b"]["R@1"] + res["b2a"]["R@1"]) / 2)
    assert metrics["bag20/R@1"] == pytest.approx(sum(per_bag) / 5)
    assert metrics["bag20/R@1_std"] == pytest.approx(float(torch.tensor(per_bag).std()))
    assert "bag20/image_to_recipe/medR_std" in metrics
