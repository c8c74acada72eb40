"""The engine adapter: one :class:`Deit3Task` per training stage of a recipe."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision import transforms as T

from frugalvision.data.arrays import ImageArrays
from frugalvision.data.folders import ImageFolderDataset
from frugalvision.engine import LoopConfig, Task
from frugalvision.engine.sampler import EpochOrder
from frugalvision.methods.deit3.augment import (
    color_jitter,
    eval_resize,
    primary_crop,
    rand_augment_lite,
    random_erasing,
    three_augment,
)
from frugalvision.methods.deit3.config import ModelConfig, RecipeConfig, StageConfig
from frugalvision.methods.deit3.losses import mix_batch, mixed_bce_loss, soft_target_cross_entropy
from frugalvision.methods.deit3.model import build_vit, resize_vit, set_drop_path
from frugalvision.methods.deit3.optim import build_optimizer, scale_lr
from frugalvision.methods.deit3.sampler import repeated_aug_order

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _Tagged(Dataset):
    """Serve ``(float image, label, is_train)`` so that one collate function knows which transform to run."""

    def __init__(self, arrays: ImageArrays, is_train: bool) -> None:
        self.arrays = arrays
        self.flag = int(is_train)

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        return self.arrays.images[index], int(self.arrays.labels[index]), self.flag


class _FolderTagged(Dataset):
    """An image-folder dataset whose PIL transform already cropped to the stage size, tagged train/eval."""

    def __init__(self, dataset: ImageFolderDataset, is_train: bool) -> None:
        self.dataset = dataset
        self.flag = int(is_train)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image, label = self.dataset[index]
        return image, int(label), self.flag


def folder_transform(stage: StageConfig, train: bool, size: int, crop_ratio: float) -> T.Compose:
    """Per-image PIL part of the pipeline for real image folders (uint8 output at the stage size).

    Train: the primary crop (RRC bicubic, or SRC: resize + reflect-padded random crop) and the flip; the rest of
    3-Augment / RandAugment runs batched in the collate function. Eval: resize ``int(size / ratio)``, centre crop.
    """
    if not train:
        return T.Compose(
            [
                T.Resize(int(size / crop_ratio), interpolation=T.InterpolationMode.BICUBIC),
                T.CenterCrop(size),
                T.PILToTensor(),
            ]
        )
    if stage.crop == "src":
        crop = [
            T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
            T.RandomCrop(size, padding=stage.src_padding, padding_mode="reflect"),
        ]
    elif stage.crop == "rrc":
        crop = [T.RandomResizedCrop(size, scale=stage.rrc_scale, interpolation=T.InterpolationMode.BICUBIC)]
    else:
        crop = [T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)]
    flip = [T.RandomHorizontalFlip()] if stage.crop != "none" else []
    return T.Compose([*crop, *flip, T.PILToTensor()])


class Deit3Collate:
    """Collate + batched augmentation (runs in the DataLoader workers): train batches get the stage's policy.

    Train: primary crop (+ flip) -> 3-Augment ops + jitter, or RandAugment-lite -> normalise -> random erasing.
    Eval: resize to ``int(size / crop_ratio)``, centre crop, normalise.
    """

    def __init__(self, stage: StageConfig, eval_size: int, eval_crop_ratio: float, in_chans: int) -> None:
        self.stage = stage
        self.eval_size = eval_size
        self.eval_crop_ratio = eval_crop_ratio
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if in_chans == 3 else ((0.5,) * in_chans, (0.5,) * in_chans)
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def train_transform(self, x: torch.Tensor) -> torch.Tensor:
        """Augment a float batch in [0, 1] and normalise it."""
        s = self.stage
        if s.augment == "three_augment":
            x = three_augment(x, s.img_size, s.crop, s.src_padding, s.blur_sigma, s.color_jitter, rrc_scale=s.rrc_scale)
        else:
            x = primary_crop(x, s.img_size, s.crop, s.src_padding, rrc_scale=s.rrc_scale)
            if s.augment == "randaugment":
                x = rand_augment_lite(x)
            if s.color_jitter > 0:
                x = color_jitter(x, s.color_jitter, s.color_jitter, s.color_jitter)
        x = (x - self.mean) / self.std
        if s.random_erasing > 0:
            x = random_erasing(x, s.random_erasing)
        return x

    def eval_transform(self, x: torch.Tensor) -> torch.Tensor:
        """Resize/centre-crop a float batch in [0, 1] and normalise it."""
        return (eval_resize(x, self.eval_size, self.eval_crop_ratio) - self.mean) / self.std

    def __call__(self, items: list[tuple[torch.Tensor, int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack ``(uint8 image, label, is_train)`` items into a transformed float batch and labels."""
        images = torch.stack([item[0] for item in items]).float().div_(255.0)
        labels = torch.tensor([item[1] for item in items], dtype=torch.long)
        is_train = bool(items[0][2])
        return (self.train_transform(images) if is_train else self.eval_transform(images)), labels


def build_model(
    model: ModelConfig, recipe: RecipeConfig, stage: StageConfig, num_classes: int, in_chans: int
) -> nn.Module:
    """The ViT of a recipe at a stage's resolution."""
    preset = None if model.preset == "custom" else model.preset
    sizes = (
        {}
        if preset
        else dict(patch_size=model.patch_size, embed_dim=model.embed_dim, depth=model.depth, num_heads=model.num_heads)
    )
    return build_vit(
        preset,
        img_size=stage.img_size,
        num_classes=num_classes,
        in_chans=in_chans,
        layer_scale_init=recipe.layer_scale_init if recipe.layer_scale else None,
        drop_path=stage.drop_path,
        drop_path_schedule=recipe.drop_path_schedule,
        class_pos_embed=recipe.class_pos_embed,
        **sizes,
    )


def forward_flops(model: nn.Module, img_size: int, in_chans: int) -> float:
    """Forward FLOPs of one image at ``img_size`` (PyTorch's FLOP counter)."""
    was = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, in_chans, img_size, img_size, device=next(model.parameters()).device))
    model.train(was)
    return float(counter.get_total_flops())


class Deit3Task(Task):
    """One stage of a DeiT (III) recipe as an engine task.

    Args:
        model_cfg: ViT size.
        recipe: the recipe (model switches).
        stage: this stage's settings.
        train: training images (uint8 arrays), or a class-folder path (real data).
        eval_sets: named evaluation images or class-folder paths (empty: no evaluation in this stage).
        num_classes: number of classes.
        eval_size: evaluation resolution.
        init_model: weights to start from (fine-tuning: resized to this stage's resolution); None: fresh model.
        classes: class folder names of the training folder (folder mode: labels of the evaluation folders).
        skip_bad_files: folder mode: skip corrupt images.
        list_root: file-list mode (paths ending in ``.csv``): folder that relative paths resolve against
            (None: each CSV's folder).
    """

    def __init__(
        self,
        model_cfg: ModelConfig,
        recipe: RecipeConfig,
        stage: StageConfig,
        train: ImageArrays | Path,
        eval_sets: dict[str, ImageArrays | Path],
        num_classes: int,
        eval_size: int,
        init_model: nn.Module | None = None,
        classes: list[str] | None = None,
        skip_bad_files: bool = False,
        list_root: Path | None = None,
    ) -> None:
        self.model_cfg, self.recipe, self.stage = model_cfg, recipe, stage
        self.train, self.eval_sets, self.num_classes = train, eval_sets, num_classes
        self.folder_mode = not isinstance(train, ImageArrays)
        self.in_chans = 3 if self.folder_mode else train.image_shape[0]
        self.init_model = init_model
        self.eval_size = eval_size
        self.classes, self.skip_bad_files, self.list_root = classes, skip_bad_files, list_root
        self._train_set: Dataset | None = None
        if self.folder_mode:  # crops and the eval resize already happened per image (PIL)
            self._collate = Deit3Collate(dataclasses.replace(stage, crop="none"), eval_size, 1.0, 3)
        else:
            self._collate = Deit3Collate(stage, eval_size, recipe.eval_crop_ratio, self.in_chans)

    def _wrap(self, data: ImageArrays | Path, train: bool) -> Dataset:
        if isinstance(data, ImageArrays):
            return _Tagged(data, train)
        root = Path(data)
        size = self.stage.img_size if train else self.eval_size
        transform = folder_transform(self.stage, train, size, self.recipe.eval_crop_ratio)
        if root.suffix.lower() == ".csv":  # file-list mode: labels are class names or indices of ``classes``
            listed = ImageFolderDataset.from_csv(
                root, self.list_root, transform, skip_bad_files=self.skip_bad_files, classes=self.classes
            )
            return _FolderTagged(listed, train)
        names = [d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
        integer_folders = bool(names) and all(n.isdigit() for n in names)  # ImageNet-V2: label = int(folder)
        dataset = ImageFolderDataset(
            root,
            transform,
            classes=None if integer_folders else self.classes,
            skip_bad_files=self.skip_bad_files,
        )
        return _FolderTagged(dataset, train)

    def loop_config(self, steps: int, batch_size: int, seed: int, world_size: int = 1, **extra: Any) -> LoopConfig:
        """The engine loop of this stage: schedule, LR (after scaling), warm-up, clipping."""
        s = self.stage
        return LoopConfig(
            max_steps=steps,
            batch_size=batch_size,
            lr=scale_lr(s.lr, batch_size * world_size, s.lr_scaling),
            weight_decay=s.weight_decay,
            warmup_steps=min(steps, round(s.warmup_fraction * steps)),
            warmup_start_lr=s.warmup_start_lr,
            min_lr=s.min_lr,
            schedule="cosine",
            clip_grad_norm=s.clip_grad_norm,
            seed=seed,
            **extra,
        )

    def build_model(self) -> nn.Module:
        """Fresh ViT, or the given model resized to this stage (position embeddings interpolated)."""
        if self.init_model is None:
            return build_model(self.model_cfg, self.recipe, self.stage, self.num_classes, self.in_chans)
        model = resize_vit(self.init_model.cpu(), self.stage.img_size)
        return set_drop_path(model, self.stage.drop_path, self.recipe.drop_path_schedule)

    def build_optimizer(self, model: nn.Module, loop: LoopConfig) -> torch.optim.Optimizer:
        """LAMB or AdamW from timm (no decay on biases, norms, tokens, LayerScale)."""
        return build_optimizer(model, self.stage.optimizer, lr=loop.lr, weight_decay=loop.weight_decay)

    def train_dataset(self) -> Dataset:
        """The training images, tagged for the training transform."""
        if self._train_set is None:
            self._train_set = self._wrap(self.train, True)
        return self._train_set

    def batch_order(self) -> EpochOrder | None:
        """Repeated augmentation at every world size (None: plain shuffle)."""
        if self.stage.repeated_aug <= 1:
            return None
        return repeated_aug_order(len(self.train_dataset()), self.stage.repeated_aug)

    def collate(self) -> Callable[[list[Any]], Any]:
        """Batched augmentation in the DataLoader workers."""
        return self._collate

    def training_step(self, model: nn.Module, batch: Any, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Mixup/CutMix (flipped pairing), then BCE on binarised targets or soft-target CE."""
        images, labels = batch
        s = self.stage
        mixed = mix_batch(
            images, labels, self.num_classes, s.mixup_alpha, s.cutmix_alpha, s.mix_switch_prob, smoothing=s.smoothing
        )
        logits = model(mixed.inputs)
        if s.loss == "bce":
            loss = mixed_bce_loss(logits, mixed.targets, binarize=True)
        else:
            loss = soft_target_cross_entropy(logits, mixed.targets)
        return loss, {"lam": mixed.lam}

    def eval_datasets(self) -> dict[str, Dataset]:
        """The named evaluation sets (tagged for the evaluation transform)."""
        return {name: self._wrap(data, False) for name, data in self.eval_sets.items()}
