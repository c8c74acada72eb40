"""DeiT III ("Revenge of the ViT", arXiv:2204.07118): the supervised ViT training recipe as composable pieces."""

from frugalvision.methods.deit3.augment import (
    color_jitter,
    gaussian_blur,
    grayscale,
    rand_augment_lite,
    random_erasing,
    random_resized_crop,
    simple_random_crop,
    solarize,
    three_augment,
)
from frugalvision.methods.deit3.losses import (
    MixedBatch,
    binarize_targets,
    mix_batch,
    mixed_bce_loss,
    soft_target_cross_entropy,
)
from frugalvision.methods.deit3.model import (
    VIT_PRESETS,
    build_vit,
    drop_path_rates,
    interpolate_pos_embed,
    official_to_timm,
    resize_vit,
    set_drop_path,
    timm_to_official,
)
from frugalvision.methods.deit3.optim import build_optimizer, scale_lr
from frugalvision.methods.deit3.sampler import repeated_aug_order

__all__ = [
    "VIT_PRESETS",
    "MixedBatch",
    "binarize_targets",
    "build_optimizer",
    "build_vit",
    "color_jitter",
    "drop_path_rates",
    "gaussian_blur",
    "grayscale",
    "interpolate_pos_embed",
    "mix_batch",
    "mixed_bce_loss",
    "official_to_timm",
    "rand_augment_lite",
    "random_erasing",
    "random_resized_crop",
    "repeated_aug_order",
    "resize_vit",
    "scale_lr",
    "set_drop_path",
    "simple_random_crop",
    "soft_target_cross_entropy",
    "solarize",
    "three_augment",
    "timm_to_official",
]
