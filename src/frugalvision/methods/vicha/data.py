"""ALBEF-format caption data: JSON readers, image path resolution, datasets with concept sampling, collate.

Readers cover the COCO, VG, SBU and CC3M pre-training files and the retrieval files; transforms are the official ones.

Pre-training JSON: a list of ``{"image": path, "caption": str | [str], "kwords": [str]}``; retrieval test JSON:
``{"image", "caption": [5 str], "kwords"}``. The official ViCHA pre-training reader rewrites the authors' absolute
paths as ``data_dir + "/".join(path.split("/")[4:])``; here that is ``strip_prefix=4`` with ``image_root=data_dir``
(0 keeps the path, relative to ``image_root`` or absolute as ALBEF's own files are).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from frugalvision.errors import DataError
from frugalvision.methods.vicha.model import Batch
from frugalvision.methods.vicha.text import TextTokenizer, pre_caption
from frugalvision.nn.minilm import PAD

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "PRETRAIN_SOURCES",
    "CaptionDataset",
    "CaptionEntry",
    "collate_batch",
    "eval_transform",
    "image_to_tensor",
    "load_caption_json",
    "pad_ids",
    "pretrain_files",
    "pretrain_transform",
    "resolve_image_path",
    "sample_concepts",
    "write_caption_json",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: pre-training sources: JSON name under ``<data_root>/annotations/`` and image folder under ``<data_root>/``
PRETRAIN_SOURCES = {
    "coco": ("coco_kw.json", "coco"),
    "vg": ("vg_kw.json", "visual_genome"),
    "sbu": ("sbu_kw.json", "sbu"),
    "cc3m": ("cc3m_kw.json", "cc3m"),
}


@dataclass(frozen=True)
class CaptionEntry:
    """One image with its captions and visual concepts.

    Attributes:
        image: resolved image path.
        captions: one or more captions.
        kwords: visual concepts (the official field name), best first.
        image_id: the entry's image id when the JSON has one.
    """

    image: Path
    captions: tuple[str, ...]
    kwords: tuple[str, ...] = ()
    image_id: int | str | None = None


def resolve_image_path(path: str, image_root: str | Path | None = None, strip_prefix: int = 0) -> Path:
    """Where an entry's image is: ``image_root`` / ``path`` without its first ``strip_prefix`` components.

    ViCHA's author paths need ``strip_prefix=4``; an absolute path stays absolute when ``strip_prefix`` is 0.
    """
    if strip_prefix:
        path = "/".join(path.split("/")[strip_prefix:])
    return Path(image_root) / path if image_root is not None else Path(path)


def load_caption_json(
    path: str | Path, image_root: str | Path | None = None, strip_prefix: int = 0, check_images: bool = True
) -> list[CaptionEntry]:
    """Read one ALBEF/ViCHA-format JSON file.

    Raises:
        DataError: missing or malformed file, an entry without ``image`` or ``caption``, a missing image.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"caption file {path} not found; pass the path of an ALBEF-format JSON list")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not valid JSON ({error}); re-download or regenerate it") from error
    if not isinstance(raw, list):
        raise DataError(f"{path} must hold a JSON list of entries, got {type(raw).__name__}")
    entries = []
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or "image" not in item or "caption" not in item:
            raise DataError(f"{path} entry {index} lacks 'image' or 'caption'; use the ALBEF format")
        captions = item["caption"] if isinstance(item["caption"], list) else [item["caption"]]
        image = resolve_image_path(item["image"], image_root, strip_prefix)
        if check_images and not image.is_file():
            raise DataError(
                f"{path} entry {index}: image {image} not found; check image_root / strip_prefix (author paths: 4)"
            )
        entries.append(CaptionEntry(image, tuple(captions), tuple(item.get("kwords", ())), item.get("image_id")))
    return entries


def write_caption_json(entries: Sequence[CaptionEntry], path: str | Path, image_root: str | Path | None = None) -> Path:
    """Write entries (with their ``kwords``) as ALBEF-format JSON, image paths relative to ``image_root`` if given."""
    rows = []
    for entry in entries:
        image = entry.image.relative_to(image_root) if image_root is not None else entry.image
        row: dict = {"image": str(image), "caption": list(entry.captions), "kwords": list(entry.kwords)}
        if entry.image_id is not None:
            row["image_id"] = entry.image_id
        rows.append(row)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows))
    return path


def pretrain_files(data_root: str | Path, sources: Sequence[str]) -> list[tuple[Path, Path]]:
    """``(JSON, image root)`` of each pre-training source under ``data_root`` (1M: coco, vg, sbu; 4M: + cc3m)."""
    unknown = [s for s in sources if s not in PRETRAIN_SOURCES]
    if unknown:
        raise DataError(f"unknown pre-training sources {unknown}; choose among {', '.join(PRETRAIN_SOURCES)}")
    root = Path(data_root)
    return [(root / "annotations" / PRETRAIN_SOURCES[s][0], root / PRETRAIN_SOURCES[s][1]) for s in sources]


def sample_concepts(kwords: Sequence[str], fraction: float, generator: torch.Generator | None = None) -> list[str]:
    """ViCHA's pre-training subsample: ``int(fraction * len(kwords))`` concepts drawn with replacement."""
    count = int(fraction * len(kwords))
    if count == 0:
        return []
    picks = torch.randint(len(kwords), (count,), generator=generator)
    return [kwords[int(i)] for i in picks]


def image_to_tensor(image: np.ndarray) -> Tensor:
    """``uint8 [H, W, 3]`` -> CLIP-normalised ``float [3, H, W]``."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
    return (x - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]


def pretrain_transform(size: int, min_scale: float = 0.2) -> Callable:
    """Pre-training augmentation: RandomResizedCrop (bicubic), h-flip, RandAugment(2, 7), CLIP normalisation.

    The crop scale is ``(min_scale, 1)``: 0.2 in pre-training, 0.5 in fine-tuning. torchvision's RandAugment op list
    stands in for ALBEF's own.
    """
    from torchvision import transforms as T  # noqa: N812

    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(min_scale, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.RandAugment(2, 7),
            T.ToTensor(),
            T.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )


def eval_transform(size: int) -> Callable:
    """Evaluation: Resize((size, size), bicubic), CLIP normalisation."""
    from torchvision import transforms as T  # noqa: N812

    return T.Compose(
        [
            T.Resize((size, size), interpolation=T.InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )


class CaptionDataset(Dataset):
    """Image-caption pairs with visual concepts, tokenised on the fly.

    Training draws one caption per image at random and subsamples the concepts (``concept_fraction``, with
    replacement); evaluation uses ``caption_index`` and every concept. Images are read from disk through
    ``transform`` or taken from ``images`` (``uint8 [N, H, W, 3]``, already in memory, no augmentation).

    Args:
        entries: the pairs.
        tokenizer: caption and concept tokenizer.
        train: training (random caption, concept subsample) or evaluation mode.
        images: preloaded images aligned with ``entries`` (None: read files).
        transform: PIL image -> tensor (for files).
        use_concepts: return concept ids.
        concept_fraction: pre-training subsample fraction [0.3].
        max_words: caption words kept by the cleaning [30].
        max_tokens: caption tokens [25].
        max_concept_tokens: concept-string tokens [55].
        caption_index: caption used in evaluation mode.
    """

    def __init__(
        self,
        entries: Sequence[CaptionEntry],
        tokenizer: TextTokenizer,
        train: bool,
        images: np.ndarray | None = None,
        transform: Callable | None = None,
        use_concepts: bool = True,
        concept_fraction: float = 0.3,
        max_words: int = 30,
        max_tokens: int = 25,
        max_concept_tokens: int = 55,
        caption_index: int = 0,
    ) -> None:
        if images is None and transform is None:
            raise DataError("CaptionDataset needs preloaded images or a transform to read image files")
        if images is not None and len(images) != len(entries):
            raise DataError(f"{len(images)} preloaded images for {len(entries)} entries; pass one image per entry")
        self.entries = list(entries)
        self.tokenizer = tokenizer
        self.train = train
        self.images = images
        self.transform = transform
        self.use_concepts = use_concepts
        self.concept_fraction = concept_fraction
        self.max_words = max_words
        self.max_tokens = max_tokens
        self.max_concept_tokens = max_concept_tokens
        self.caption_index = caption_index

    def __len__(self) -> int:
        return len(self.entries)

    def image(self, index: int) -> Tensor:
        """The (normalised) image of an entry."""
        if self.images is not None:
            return image_to_tensor(self.images[index])
        from PIL import Image, UnidentifiedImageError

        path = self.entries[index].image
        try:
            with Image.open(path) as handle:
                return self.transform(handle.convert("RGB"))
        except (OSError, UnidentifiedImageError) as error:
            raise DataError(f"cannot read image {path} ({error}); remove the entry or replace the file") from error

    def caption(self, index: int) -> str:
        """The caption of an entry for this mode (random in training)."""
        captions = self.entries[index].captions
        if self.train:
            return captions[int(torch.randint(len(captions), ()))]
        return captions[min(self.caption_index, len(captions) - 1)]

    def concepts(self, index: int) -> list[str]:
        """The concepts of an entry for this mode (subsampled with replacement in training)."""
        kwords = self.entries[index].kwords
        return sample_concepts(kwords, self.concept_fraction) if self.train else list(kwords)

    def __getitem__(self, index: int) -> tuple[Tensor, list[int], list[int] | None]:
        text = self.tokenizer.encode(pre_caption(self.caption(index), self.max_words), self.max_tokens)
        concepts = None
        if self.use_concepts:
            concepts = self.tokenizer.encode(" ".join(self.concepts(index)), self.max_concept_tokens)
        return self.image(index), text, concepts


def pad_ids(sequences: Sequence[Sequence[int]]) -> Tensor:
    """Right-pad id lists with PAD into one ``[N, longest]`` tensor."""
    out = torch.full((len(sequences), max(len(s) for s in sequences)), PAD, dtype=torch.long)
    for row, ids in enumerate(sequences):
        out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def collate_batch(items: Sequence[tuple[Tensor, list[int], list[int] | None]]) -> Batch:
    """Stack images; pad captions and concept strings to the longest in the batch.

    The same policy holds in training and evaluation; padded concept tokens are masked in the ViT and in the fusion
    cross-attention, so the padding length does not change any output.
    """
    images = torch.stack([item[0] for item in items])
    concepts = None if items[0][2] is None else pad_ids([item[2] for item in items])
    return Batch(images, pad_ids([item[1] for item in items]), concepts)
