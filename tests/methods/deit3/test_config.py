"""Presets: YAML round trip, the paper's hyperparameter table, stage and arm differences, validation."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from frugalvision.config_io import config_from_dict, config_to_dict
from frugalvision.errors import ConfigError
from frugalvision.methods.deit3 import config as config_module
from frugalvision.methods.deit3.config import (
    ARMS,
    Deit3Config,
    StageConfig,
    arm_recipe,
    paper,
    paper_in1k,
    paper_in21k,
    paper_in21k_to_1k,
    smoke,
    standard,
)

PRESET_MAKERS = [
    smoke,
    standard,
    paper,
    lambda: paper_in1k("huge", 224),
    lambda: paper_in21k("large"),
    lambda: paper_in21k_to_1k("base", init_weights="in21k.safetensors"),
]


@pytest.mark.parametrize("make", PRESET_MAKERS)
def test_preset_yaml_round_trip(make) -> None:
    config = make()
    config.validate()
    back = config_from_dict(Deit3Config, yaml.safe_load(yaml.safe_dump(config_to_dict(config))))
    assert back == config


def test_paper_preset_matches_official_command_for_vit_s() -> None:
    c = paper()
    pre, ft = c.deit3.pretrain, c.deit3.finetune
    assert c.model.preset == "small" and c.batch_size * 8 == 2048
    assert (pre.optimizer, pre.lr, pre.lr_scaling, pre.weight_decay) == ("lamb", 4e-3, "none", 0.05)
    assert (pre.loss, pre.smoothing, pre.mixup_alpha, pre.cutmix_alpha) == ("bce", 0.0, 0.8, 1.0)
    assert (pre.augment, pre.crop, pre.color_jitter, pre.random_erasing) == ("three_augment", "rrc", 0.3, 0.0)
    assert (pre.repeated_aug, pre.drop_path, pre.img_size, pre.warmup_start_lr) == (3, 0.05, 224, 1e-6)
    assert pre.warmup_fraction * 800 == pytest.approx(5)
    assert c.deit3.layer_scale and c.deit3.layer_scale_init == 1e-4 and c.deit3.drop_path_schedule == "uniform"
    assert not c.deit3.class_pos_embed and c.deit3.eval_crop_ratio == 1.0
    # the fine-tune stage switches loss, smoothing, augmentation, optimiser, RA and resolution
    assert ft is not None
    assert (ft.loss, ft.smoothing, ft.augment, ft.optimizer, ft.lr, ft.weight_decay) == (
        "ce",
        0.1,
        "randaugment",
        "adamw",
        1e-5,
        0.1,
    )
    assert (ft.repeated_aug, ft.img_size, ft.drop_path) == (1, 384, 0.0)
    assert pre.steps_fraction * 820 == pytest.approx(800)


@pytest.mark.parametrize(
    ("size", "lr", "dp", "res"), [("base", 3e-3, 0.2, 192), ("large", 3e-3, 0.45, 192), ("huge", 3e-3, 0.6, 160)]
)
def test_paper_sizes(size: str, lr: float, dp: float, res: int) -> None:
    c = paper_in1k(size, 224)
    assert (c.deit3.pretrain.lr, c.deit3.pretrain.drop_path, c.deit3.pretrain.img_size) == (lr, dp, res)
    assert c.deit3.finetune is not None and c.deit3.finetune.img_size == 224
    assert c.batch_size * 8 * (4 if size in ("large", "huge") else 1) == 2048


def test_in21k_preset() -> None:
    pre = paper_in21k("base").deit3.pretrain
    assert (pre.lr, pre.weight_decay, pre.loss, pre.smoothing, pre.mixup_alpha, pre.cutmix_alpha) == (
        1e-3,
        0.02,
        "ce",
        0.1,
        0.0,
        1.0,
    )
    assert (pre.crop, pre.repeated_aug, pre.drop_path, pre.augment) == ("src", 1, 0.1, "three_augment")


def test_arms_change_one_ingredient() -> None:
    c = standard()
    base = c.deit3
    assert arm_recipe(c, "deit3") is base and arm_recipe(c, "deit") is c.deit
    assert arm_recipe(c, "deit3_no_layerscale") == dataclasses.replace(base, layer_scale=False)
    assert arm_recipe(c, "deit3_ce").pretrain == dataclasses.replace(base.pretrain, loss="ce")
    assert arm_recipe(c, "deit3_randaug").pretrain.augment == "randaugment"
    full = arm_recipe(c, "deit3_fullres")
    assert full.finetune is None and full.pretrain.img_size == base.finetune.img_size
    deit = c.deit
    assert not deit.layer_scale and deit.class_pos_embed and deit.drop_path_schedule == "linear"
    assert deit.pretrain.random_erasing > 0 and deit.pretrain.augment == "randaugment" and deit.pretrain.loss == "ce"
    assert set(ARMS) == set(c.arms)
    with pytest.raises(ConfigError):
        arm_recipe(c, "nope")


def test_validation_messages() -> None:
    with pytest.raises(ConfigError, match="smoothing"):
        StageConfig(loss="bce", smoothing=0.1).validate("s")
    with pytest.raises(ConfigError, match="arms"):
        dataclasses.replace(standard(), arms=("bogus",)).validate()
    bad = standard()
    bad.deit3.finetune = dataclasses.replace(bad.deit3.finetune, steps_fraction=0.5)
    with pytest.raises(ConfigError, match="sum to 1"):
        bad.validate()
    with pytest.raises(ConfigError, match="repeated_aug"):
        StageConfig(repeated_aug=0).validate("s")


@pytest.mark.parametrize("size,dp", [("small", 0.05), ("base", 0.15), ("large", 0.4), ("huge", 0.45)])
def test_in21k_to_1k_finetune_preset_matches_official_settings(size: str, dp: float) -> None:
    c = paper_in21k_to_1k(size, init_weights="w.safetensors")
    s = c.deit3.pretrain
    assert c.dataset == "imagenet" and c.arms == ("deit3",) and c.deit3.finetune is None
    assert c.init_weights == "w.safetensors" and c.reset_head
    assert (s.optimizer, s.lr, s.lr_scaling, s.weight_decay, s.drop_path) == ("lamb", 3e-4, "none", 0.02, dp)
    assert (s.loss, s.smoothing, s.mixup_alpha, s.cutmix_alpha, s.crop, s.augment) == (
        "ce",
        0.1,
        0.0,
        1.0,
        "src",
        "three_augment",
    )
    assert s.repeated_aug == 1 and s.img_size == 224 and s.random_erasing == 0 and c.deit3.eval_crop_ratio == 1.0
    assert c.steps == 50 * (1281167 // 2048)


def test_21k_ft_preset_needs_init_weights() -> None:
    c = config_module.paper_21k_ft()
    assert c.preset == "paper_21k_ft" and c.deit3.pretrain.lr == 3e-4
    with pytest.raises(ConfigError, match="init-weights"):
        c.validate()
    c.init_weights = "w.safetensors"
    c.validate()


def test_file_list_validation() -> None:
    c = paper()
    c.file_list.train = "train.csv"
    with pytest.raises(ConfigError, match="file_list.val"):
        c.validate()
    c.file_list.val = "val.csv"
    c.validate()
    c.dataset = "fashion-mnist"
    with pytest.raises(ConfigError, match="imagenet"):
        c.validate()
