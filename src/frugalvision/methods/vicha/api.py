"""ViCHA on your own data: pre-train on caption JSON, save and load the result, score pairs, extract concepts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from frugalvision.errors import DataError
from frugalvision.methods.vicha.concepts import ConceptScorer, assign_concepts
from frugalvision.methods.vicha.config import ViCHAConfig
from frugalvision.methods.vicha.data import CaptionEntry, eval_transform, load_caption_json
from frugalvision.methods.vicha.model import ModelConfig, ViCHAModel, interpolate_positions, momentum_copy
from frugalvision.methods.vicha.text import SubsetTokenizer, TextTokenizer, WordTokenizer, pre_caption

__all__ = ["Pretrained", "extract_concepts", "load_pretrained", "pretrain", "save_pretrained", "score_pairs"]


@dataclass
class Pretrained:
    """A pre-trained ViCHA: the online model, its momentum copy, the tokenizer, the final evaluation metrics."""

    model: ViCHAModel
    momentum: ViCHAModel
    tokenizer: TextTokenizer
    metrics: dict[str, dict[str, float]]


def pretrain(
    train_json: str | Path | Sequence[str | Path],
    image_root: str | Path | None = None,
    *,
    test_json: str | Path | None = None,
    strip_prefix: int = 0,
    config: ViCHAConfig | None = None,
    arm: str = "vicha",
    run_dir: str | Path | None = None,
) -> Pretrained:
    """Pre-train ViCHA (or an ablation ``arm``) on ALBEF-format caption JSON files with ``kwords``.

    Args:
        train_json: one or more pre-training JSON files.
        image_root: folder the image paths are relative to.
        test_json: optional retrieval JSON evaluated (zero-shot ITC R@K) at the end.
        strip_prefix: leading path components to drop (the authors' released files: 4).
        config: sizes, losses and loop (default: the standard preset's); its data fields are ignored.
        arm: "vicha" or an ablation arm (``ARMS``).
        run_dir: folder for checkpoints and logs (None: none written).
    """
    from frugalvision.engine import Engine
    from frugalvision.methods.vicha.experiment import PretrainData, _tokenizer, arm_task, standard

    config = config or standard()
    files = [train_json] if isinstance(train_json, str | Path) else list(train_json)
    train = [e for f in files for e in load_caption_json(f, image_root, strip_prefix)]
    test = load_caption_json(test_json, image_root, strip_prefix) if test_json is not None else []
    tokenizer = _tokenizer(config, train)
    data = PretrainData(train, test, None, None, tokenizer, Path(image_root or "."), {})
    engine = Engine(config.fabric, progress=config.progress)
    task = arm_task(config, arm, data, engine.world_size)
    result = engine.fit(task, config.loop, run_dir=run_dir)
    assert task.momentum is not None
    return Pretrained(result.model, task.momentum, tokenizer, result.metrics)


def save_pretrained(path: str | Path, pretrained: Pretrained) -> Path:
    """One safetensors file: online weights, momentum weights (``momentum.`` keys), model config and vocabulary.

    A word tokenizer's vocabulary is stored in the metadata; a WordPiece tokenizer is stored by reference
    (``text_dir`` of the config, and the kept ids of a :class:`~.text.SubsetTokenizer` as ``text_vocab``).
    """
    from frugalvision.engine import save_weights

    state = dict(pretrained.model.state_dict())
    state.update({f"momentum.{k}": v for k, v in pretrained.momentum.state_dict().items()})
    state = {k: v for k, v in state.items() if "mlm.word_embeddings" not in k}  # tied to the word embeddings
    tokenizer = pretrained.tokenizer
    metadata = {"model": json.dumps(asdict(pretrained.model.cfg))}
    if isinstance(tokenizer, WordTokenizer):
        metadata["vocabulary"] = json.dumps(tokenizer.itos[len(WordTokenizer.SPECIALS) :])
    return save_weights(state, path, metadata=metadata)


def load_pretrained(path: str | Path, image_size: int | None = None) -> Pretrained:
    """Rebuild a :func:`save_pretrained` file (no pickle is read).

    Args:
        path: the file.
        image_size: another input side (fine-tuning at a higher resolution, as the paper's 384 px): the ViT position
            table is resized (bicubic), None keeps the pre-training side.
    """
    from safetensors import safe_open

    from frugalvision.engine import load_weights

    if not Path(path).is_file():
        raise DataError(f"{path} not found; pass a file written by save_pretrained")
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata() or {}
    if "model" not in metadata:
        raise DataError(f"{path} has no ViCHA model config in its metadata; save it with save_pretrained")
    fields = json.loads(metadata["model"])
    fields["text_vocab"] = tuple(fields.get("text_vocab", ()))
    state = load_weights(path)
    if image_size is not None and image_size != fields["image_size"]:
        grid = image_size // fields["patch_size"]
        for key in ("visual.vit.pos_embed", "momentum.visual.vit.pos_embed"):
            state[key] = interpolate_positions(state[key], grid)
        fields["image_size"] = image_size
    model = ViCHAModel(ModelConfig(**fields))
    online = {k: v for k, v in state.items() if not k.startswith("momentum.")}
    _check_keys(path, model.load_state_dict(online, strict=False))
    momentum = momentum_copy(model)
    momentum_state = {k.removeprefix("momentum."): v for k, v in state.items() if k.startswith("momentum.")}
    _check_keys(path, momentum.load_state_dict(momentum_state, strict=False))
    if "vocabulary" in metadata:
        tokenizer: TextTokenizer = WordTokenizer(json.loads(metadata["vocabulary"]))
    else:
        from frugalvision.nn.minilm import WordPieceTokenizer

        tokenizer = WordPieceTokenizer(model.cfg.text_dir)
        if model.cfg.text_vocab:
            tokenizer = SubsetTokenizer(tokenizer, model.cfg.text_vocab)
    return Pretrained(model, momentum, tokenizer, {})


def _check_keys(path: str | Path, result: Any) -> None:
    """Refuse a file whose weights do not fit the model (only the tied MLM decoder is absent from the file)."""
    missing = [k for k in result.missing_keys if "mlm.word_embeddings" not in k]
    if missing or result.unexpected_keys:
        raise DataError(f"{path} does not fit its model config: missing {missing[:3]}, unexpected "
                        f"{result.unexpected_keys[:3]}; save it with save_pretrained")  # fmt: skip


def _ids(tokenizer: TextTokenizer, texts: Sequence[str], max_tokens: int) -> Tensor:
    from frugalvision.methods.vicha.data import pad_ids

    return pad_ids([tokenizer.encode(pre_caption(t), max_tokens) for t in texts])


@torch.no_grad()
def score_pairs(
    model: ViCHAModel,
    tokenizer: TextTokenizer,
    images: Tensor,
    captions: Sequence[str],
    concepts: Sequence[Sequence[str]] | None = None,
) -> dict[str, Tensor]:
    """Score image ``i`` against caption ``i``: ITC cosine and ITM match probability.

    Args:
        model: a (pre-trained) model.
        tokenizer: its tokenizer.
        images: ``[N, 3, H, W]`` CLIP-normalised images (:func:`~.data.eval_transform`).
        captions: ``N`` captions.
        concepts: ``N`` concept lists (needed when the model uses visual concepts).

    Returns:
        ``{"itc": [N] cosine similarities, "itm": [N] match probabilities}``.
    """
    if len(images) != len(captions) or (concepts is not None and len(concepts) != len(captions)):
        raise DataError(f"{len(images)} images, {len(captions)} captions: pass one caption (and concepts) per image")
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    concept_ids = None
    if model.uses_concepts:
        if concepts is None:
            raise DataError("this model uses visual concepts; pass concepts=[[...], ...] (see extract_concepts)")
        concept_ids = _ids(tokenizer, [" ".join(c) for c in concepts], 55).to(device)
    image = model.encode_image(images.to(device), concept_ids)
    text = model.encode_text(_ids(tokenizer, captions, 25).to(device))
    itc = (model.image_feature(image) * model.text_feature(text)).sum(-1)
    fused = model.fuse(text.states, text.valid, image.tokens, image.valid)
    itm = model.itm_logits(fused, text.valid).softmax(-1)[:, 1]
    model.train(was)
    return {"itc": itc.float().cpu(), "itm": itm.float().cpu()}


def extract_concepts(
    folder: str | Path,
    vocabulary: Sequence[str],
    scorer: ConceptScorer,
    k: int = 15,
    transform: Any = None,
    image_size: int = 224,
) -> dict[str, list[str]]:
    """The top-``k`` visual concepts of every image under ``folder`` (recursively), keyed by relative path.

    Args:
        folder: images (any of the usual extensions).
        vocabulary: candidate concepts (:func:`~.concepts.mine_vocabulary` on your captions).
        scorer: a CLIP-like dual encoder (:func:`~.concepts.open_clip_scorer` or the offline one).
        k: concepts per image [15].
        transform: PIL image -> tensor for the scorer (default: resize + CLIP normalisation at ``image_size``).
        image_size: side of the default transform.
    """
    from PIL import Image

    from frugalvision.data import IMG_EXTENSIONS

    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"image folder {root} not found; pass a folder of images")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS)
    if not paths:
        raise DataError(f"no images under {root}; supported extensions: {', '.join(sorted(IMG_EXTENSIONS))}")
    transform = transform or eval_transform(image_size)
    images = []
    for path in paths:
        with Image.open(path) as handle:
            images.append(transform(handle.convert("RGB")))
    concepts = assign_concepts(scorer, torch.stack(images), list(vocabulary), k)
    return {str(p.relative_to(root)): c for p, c in zip(paths, concepts, strict=True)}


def with_concepts(entries: Sequence[CaptionEntry], concepts: dict[str, list[str]], root: Path) -> list[CaptionEntry]:
    """Entries with their ``kwords`` from :func:`extract_concepts` (keyed by the path relative to ``root``)."""
    from dataclasses import replace

    return [replace(e, kwords=tuple(concepts[str(e.image.relative_to(root))])) for e in entries]
