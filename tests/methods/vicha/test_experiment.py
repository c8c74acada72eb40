import dataclasses

import pytest

from frugalvision.errors import ConfigError
from frugalvision.methods.vicha.data import CaptionEntry
from frugalvision.methods.vicha.experiment import PRESETS, shuffled_concepts, vicha_verdict


def _rows(gain, spread=0.002, arms=("albef", "vicha")):
    rows = []
    for seed in range(3):
        for arm in arms:
            value = 0.10 + (gain if arm == "vicha" else 0.0) + spread * seed * (1 if arm == "vicha" else -1)
            rows.append({"name": arm, "seed": seed, "metrics": {"r1_mean": value, "test_pairs": 500.0}})
    return rows


def test_verdict_is_computed_from_the_paired_rows():
    assert vicha_verdict(_rows(0.05), 1 / 500).verdict == "supported"
    assert vicha_verdict(_rows(-0.05), 1 / 500).verdict == "not supported"
    assert vicha_verdict(_rows(0.0, spread=0.02), 1 / 500).verdict == "inconclusive"
    low = [{**r, "metrics": {**r["metrics"], "r1_mean": 0.001}} for r in _rows(0.05)]
    assert vicha_verdict(low, 1 / 500).verdict == "inconclusive"  # nothing learned: the claim cannot be judged
    secondary = vicha_verdict(_rows(0.05, arms=("albef", "albef_hitc", "vicha")), 1 / 500)
    assert any("secondary" in line and "albef_hitc" in line for line in secondary.evidence)


def test_shuffled_concepts_is_a_derangement():
    entries = [CaptionEntry(None, ("c",), (f"w{i}",)) for i in range(9)]
    shuffled = shuffled_concepts(entries)
    assert all(a.kwords != b.kwords for a, b in zip(entries, shuffled, strict=True))
    assert sorted(e.kwords for e in shuffled) == sorted(e.kwords for e in entries)


def test_every_preset_validates_and_the_paper_preset_has_the_paper_values(tmp_path):
    for name, make in PRESETS.items():
        config = make()
        if name == "paper":
            (tmp_path / "annotations").mkdir(exist_ok=True)
            config = dataclasses.replace(config, data_root=str(tmp_path))
        config.validate()
    paper = PRESETS["paper"]()
    assert (paper.vision_width, paper.vision_depth, paper.text_layers, paper.hitc_levels) == (768, 12, 6, 5)
    assert paper.fusion_layers == 6 and paper.text_pool == "cls" and (paper.finetune_steps, paper.finetune_lr) == (0, 0)
    assert (paper.queue_size, paper.concept_k, paper.concept_fraction, paper.loop.lr) == (65536, 15, 0.3, 1e-4)
    assert paper.fabric.precision == "bf16-mixed" and paper.grad_checkpointing and paper.official_schedule
    with pytest.raises(ConfigError, match="needs --data-root"):
        paper.validate()
    with pytest.raises(ConfigError, match="arms="):
        dataclasses.replace(PRESETS["smoke"](), arms=("clip",)).validate()
    with pytest.raises(ConfigError, match="finetune_rows="):
        dataclasses.replace(PRESETS["smoke"](), finetune_rows=("bert",)).validate()
    standard = PRESETS["standard"]()
    assert standard.text == "pretrained" and standard.vision_init == "caption-world" and standard.text_pool == "mean"
