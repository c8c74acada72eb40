"""DeiT III ("Revenge of the ViT", arXiv:2204.07118): the supervised ViT training recipe as composable pieces.

Public API for your own data: :func:`build_vit` (the DeiT III ViT: LayerScale, CLS without position, uniform
drop-path), :func:`build_optimizer` (timm LAMB), :func:`deit3_step` (one recipe step: 3-Augment, Mixup/CutMix, BCE
on binarised targets), and the pieces behind it (:func:`three_augment`, :func:`mix_batch`, :func:`mixed_bce_loss`,
:func:`load_pretrained`). The experiment is ``frugalvision.methods.deit3.experiment.EXPERIMENT``.
"""

from frugalvision.methods.deit3.augment import (
    color_jitter,
    equalize,
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
    SkipDropPathBlock,
    build_vit,
    drop_path_rates,
    fold_layer_scale,
    interpolate_pos_embed,
    load_pretrained,
    official_to_timm,
    resize_vit,
    set_drop_path,
    skip_dropped_samples,
    timm_to_official,
)
from frugalvision.methods.deit3.optim import build_optimizer, scale_lr
from frugalvision.methods.deit3.recipe import deit3_step
from frugalvision.methods.deit3.sampler import repeated_aug_order

__all__ = [
    "VIT_PRESETS",
    "MixedBatch",
    "SkipDropPathBlock",
    "binarize_targets",
    "build_optimizer",
    "build_vit",
    "color_jitter",
    "deit3_step",
    "drop_path_rates",
    "equalize",
    "fold_layer_scale",
    "gaussian_blur",
    "grayscale",
    "interpolate_pos_embed",
    "load_pretrained",
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
    "skip_dropped_samples",
    "soft_target_cross_entropy",
    "solarize",
    "three_augment",
    "timm_to_official",
]
