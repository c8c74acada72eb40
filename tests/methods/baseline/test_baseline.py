import pytest

from frugalvision.methods.baseline import experiment


def _rows(vit, resnet, spread=0.01):
    rows = []
    for seed, noise in enumerate((-spread, 0.0, spread)):
        rows.append({"name": "vit-small", "seed": seed, "metrics": {"test_top1": vit + noise}})
        rows.append({"name": "resnet-8", "seed": seed, "metrics": {"test_top1": resnet + noise}})
    return rows


@pytest.mark.parametrize(
    "means, expected",
    [((0.9, 0.8), "supported"), ((0.9, 0.15), "not supported"), ((0.9, 0.5), "inconclusive")],
)
def test_the_verdict_compares_every_model_with_five_times_chance(means, expected):
    config = experiment.smoke()
    config.resnet_depth = 8
    assert experiment.verdict(config, _rows(*means)).verdict == expected


def test_standard_units_pair_both_models_on_every_seed():
    config = experiment.standard()
    units = experiment.units(config)
    assert [(u.name, u.seed) for u in units] == [(config.arm_name(k), s) for s in config.seeds for k in config.models]
    assert len(config.seeds) >= 3
