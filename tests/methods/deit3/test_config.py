"""Presets: YAML round trip, the official commands field by field, the claims' arms, validation."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from frugalvision.config_io import config_from_dict, config_to_dict
from frugalvision.errors import ConfigError
from frugalvision.methods.deit3 import config as config_module
from frugalvision.methods.deit3.config import (
    ARMS,
    CLAIMS,
    OFFICIAL_BLUR_SIGMA,
    Deit3Config,
    StageConfig,
    arm_name,
    arm_recipe,
    claim_pair,
    experiment_arms,
    extended,
    paper,
    paper_in1k,
    paper_in21k,
    paper_in21k_to_1k,
    smoke,
    standard,
    toy_src_padding,
)

IN1K = 1281167
PRESET_MAKERS = [
    smoke,
    standard,
    extended,
    paper,
    lambda: paper_in1k("huge", 224),
    lambda: paper_in21k("large"),
    lambda: paper_in21k("huge"),
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
    pre, ft = c.base.pretrain, c.base.finetune
    assert c.model.preset == "small" and pre.global_batch == 2048
    assert (pre.optimizer, pre.lr, pre.lr_scaling, pre.weight_decay) == ("lamb", 4e-3, "none", 0.05)
    assert (pre.loss, pre.smoothing, pre.mixup_alpha, pre.cutmix_alpha) == ("bce", 0.0, 0.8, 1.0)
    assert (pre.augment, pre.crop, pre.color_jitter, pre.random_erasing) == ("three_augment", "rrc", 0.3, 0.0)
    assert (pre.repeated_aug, pre.drop_path, pre.img_size, pre.warmup_start_lr) == (3, 0.05, 224, 1e-6)
    assert pre.blur_sigma == OFFICIAL_BLUR_SIGMA == (0.1, 2.0)
    assert pre.warmup_fraction * 800 == pytest.approx(5)
    assert c.base.layer_scale and c.base.layer_scale_init == 1e-4 and c.base.drop_path_schedule == "uniform"
    assert not c.base.class_pos_embed and c.base.eval_crop_ratio == 1.0
    # the fine-tune stage switches loss, smoothing, augmentation, optimiser, RA, resolution and batch (512)
    assert ft is not None
    assert (ft.loss, ft.smoothing, ft.augment, ft.optimizer, ft.lr, ft.weight_decay) == (
        "ce",
        0.1,
        "randaugment",
        "adamw",
        1e-5,
        0.1,
    )
    assert (ft.repeated_aug, ft.img_size, ft.drop_path, ft.global_batch) == (1, 384, 0.0, 512)
    assert ft.warmup_fraction * 20 == pytest.approx(5)
    # steps: 800 epochs at 2048 images per step, then 20 epochs at 512
    pre_steps, ft_steps = 800 * (IN1K // 2048), 20 * (IN1K // 512)
    assert c.steps == pre_steps + ft_steps and pre.steps_fraction * c.steps == pytest.approx(pre_steps)


@pytest.mark.parametrize(
    ("size", "lr", "dp", "res", "ft_batch_per_gpu"),
    [("base", 3e-3, 0.2, 192, 64), ("large", 3e-3, 0.45, 192, 64), ("huge", 3e-3, 0.6, 160, 32)],
)
def test_paper_sizes_and_the_fine_tune_batch_of_512(
    size: str, lr: float, dp: float, res: int, ft_batch_per_gpu
) -> None:
    c = paper_in1k(size, 224)
    pre, ft = c.base.pretrain, c.base.finetune
    assert (pre.lr, pre.drop_path, pre.img_size, pre.global_batch) == (lr, dp, res, 2048)
    assert c.batch_size * 8 * (4 if size in ("large", "huge") else 1) == 2048  # the official per-GPU batch
    assert ft is not None and ft.img_size == 224
    # official fine-tune commands: --batch 64 on 8 GPUs (B, L), 32 on 16 (H): 512 every time
    assert ft.global_batch == 512 == ft_batch_per_gpu * (16 if size == "huge" else 8)


def test_in21k_presets_including_vit_h_at_128_px_for_90_epochs() -> None:
    c = paper_in21k("base")
    pre = c.base.pretrain
    assert (pre.lr, pre.weight_decay, pre.loss, pre.smoothing, pre.mixup_alpha, pre.cutmix_alpha) == (
        1e-3,
        0.02,
        "ce",
        0.1,
        0.0,
        1.0,
    )
    assert (pre.crop, pre.repeated_aug, pre.drop_path, pre.augment, pre.global_batch) == (
        "src",
        1,
        0.1,
        "three_augment",
        2048,
    )
    assert (pre.img_size, c.steps, c.batch_size * 32) == (224, 240 * (13_000_000 // 2048), 2048)
    assert paper_in21k("small").batch_size * 16 == 2048
    huge = paper_in21k("huge")
    assert (huge.base.pretrain.img_size, huge.steps) == (128, 90 * (13_000_000 // 2048))
    assert huge.base.pretrain.warmup_fraction * 90 == pytest.approx(5)
    # the 21k claim is the paper's ImageNet-21k crop row: SRC (the recipe) expected to beat RRC
    assert (c.claims, claim_pair(c, "crop")) == (("crop",), ("base", "rrc"))


def test_toy_arms_change_one_ingredient_of_the_fast_base() -> None:
    c = extended()
    base = c.base.pretrain
    assert (base.optimizer, base.lr, base.loss, base.augment, base.crop, base.mixup_alpha) == (
        "adamw",
        2e-3,
        "ce",
        "none",
        "none",
        0.0,
    )
    assert c.base.finetune is None and base.img_size == 28 and c.steps == 400
    assert experiment_arms(c) == ("bce", "ce", "three_augment", "randaugment", "src", "rrc", "lowres", "base")

    def differing(arm: str) -> dict[str, tuple]:
        changed = arm_recipe(c, arm).pretrain
        return {
            f.name: (getattr(base, f.name), getattr(changed, f.name))
            for f in dataclasses.fields(base)
            if getattr(base, f.name) != getattr(changed, f.name)
        }

    # the loss arms share Mixup/CutMix and differ in the loss only
    assert differing("ce") == {"mixup_alpha": (0.0, 0.8), "cutmix_alpha": (0.0, 1.0)}
    assert differing("bce") == {**differing("ce"), "loss": ("ce", "bce")}
    assert differing("three_augment") == {"augment": ("none", "three_augment"), "color_jitter": (0.0, 0.3)}
    assert differing("randaugment") == {"augment": ("none", "randaugment")}
    assert differing("src") == {"crop": ("none", "src")} and differing("rrc") == {"crop": ("none", "rrc")}
    assert base.src_padding == toy_src_padding(28) == 1 and toy_src_padding(224) == 4
    assert base.blur_sigma == OFFICIAL_BLUR_SIGMA  # not scaled by size / 224 (see test_augment)
    # lowres: 21 px, then a full-res fine-tune at a tenth of the LR; fullres is the base itself
    low = arm_recipe(c, "lowres")
    assert low.pretrain == dataclasses.replace(base, img_size=21, steps_fraction=0.9)
    assert low.finetune is not None and low.finetune.img_size == 28 and low.finetune.lr == pytest.approx(2e-4)
    assert arm_recipe(c, "fullres") is c.base and arm_name(c, "fullres") == "base"
    assert claim_pair(c, "crop") == ("src", "rrc") and claim_pair(c, "resolution") == ("lowres", "base")
    with pytest.raises(ConfigError, match="unknown"):
        arm_recipe(c, "nope")


def test_paper_arms_swap_one_ingredient_of_the_deit3_recipe() -> None:
    c = paper()
    assert experiment_arms(c) == ("base", "deit", "ce", "randaugment", "src", "fullres")
    assert [claim_pair(c, claim) for claim in CLAIMS] == [
        ("base", "deit"),
        ("base", "ce"),
        ("base", "randaugment"),
        ("base", "src"),  # RRC (the recipe) expected to win on ImageNet-1k
        ("base", "fullres"),
    ]
    assert arm_recipe(c, "ce").pretrain == dataclasses.replace(c.base.pretrain, loss="ce")
    assert arm_recipe(c, "ce").finetune == c.base.finetune
    full = arm_recipe(c, "fullres")
    assert full.finetune is None and full.pretrain.img_size == 384 and full.pretrain.global_batch == 2048
    deit = c.deit.pretrain
    assert not c.deit.layer_scale and c.deit.class_pos_embed and c.deit.drop_path_schedule == "linear"
    assert (deit.random_erasing, deit.augment, deit.loss, deit.global_batch) == (0.25, "randaugment", "ce", 1024)
    assert c.deit_steps == 300 * (IN1K // 1024) and c.seeds == (0, 1, 2)
    assert set(experiment_arms(c)) <= set(ARMS)


def test_validation_messages() -> None:
    with pytest.raises(ConfigError, match="smoothing"):
        StageConfig(loss="bce", smoothing=0.1).validate("s")
    with pytest.raises(ConfigError, match="claims"):
        dataclasses.replace(standard(), claims=("bogus",)).validate()
    with pytest.raises(ConfigError, match="claims"):
        dataclasses.replace(standard(), claims=("loss", "loss")).validate()
    bad = paper()
    bad.base.finetune = dataclasses.replace(bad.base.finetune, steps_fraction=0.5)
    with pytest.raises(ConfigError, match="sum to 1"):
        bad.validate()
    with pytest.raises(ConfigError, match="repeated_aug"):
        StageConfig(repeated_aug=0).validate("s")
    with pytest.raises(ConfigError, match="global_batch"):
        StageConfig(global_batch=-1).validate("s")
    with pytest.raises(ConfigError, match="eval_splits"):
        dataclasses.replace(extended(), eval_splits=("val",)).validate()
    low = extended()
    low.lowres.img_size = 28
    with pytest.raises(ConfigError, match="lowres.img_size"):
        low.validate()


@pytest.mark.parametrize("size,dp", [("small", 0.05), ("base", 0.15), ("large", 0.4), ("huge", 0.45)])
def test_in21k_to_1k_finetune_preset_matches_official_settings(size: str, dp: float) -> None:
    c = paper_in21k_to_1k(size, init_weights="w.safetensors")
    s = c.base.pretrain
    assert c.dataset == "imagenet" and c.claims == () and experiment_arms(c) == ("base",) and c.base.finetune is None
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
    assert s.repeated_aug == 1 and s.img_size == 224 and s.random_erasing == 0 and c.base.eval_crop_ratio == 1.0
    # verified in the official commands: --batch 128 x 16 GPUs (S) or 64 x 32 (B/L/H) = 2048, 5 warm-up epochs
    assert s.global_batch == 2048 == c.batch_size * (16 if size == "small" else 32)
    assert s.warmup_fraction * 50 == pytest.approx(5)
    assert c.steps == 50 * (IN1K // 2048)


def test_21k_ft_preset_needs_init_weights() -> None:
    c = config_module.paper_21k_ft()
    assert c.preset == "paper_21k_ft" and c.base.pretrain.lr == 3e-4
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


def test_presets_are_independent_objects() -> None:
    a, b = standard(), extended()
    a.base.pretrain.lr = 1.0
    assert b.base.pretrain.lr == 2e-3 and standard().base.pretrain.lr == 2e-3
