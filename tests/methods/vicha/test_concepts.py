import pytest
import torch

from frugalvision.data.caption_world import caption_world, scene_concepts
from frugalvision.methods.vicha.concepts import (
    assign_concepts,
    extract_nouns,
    mine_vocabulary,
    open_clip_scorer,
    top_k_concepts,
    train_dual_encoder,
)
from frugalvision.methods.vicha.data import image_to_tensor, sample_concepts
from frugalvision.methods.vicha.text import WordTokenizer


def test_top_k_concepts_equals_brute_force_sorting():
    g = torch.Generator().manual_seed(0)
    images, concepts = torch.randn(7, 5, generator=g), torch.randn(11, 5, generator=g)
    top = top_k_concepts(images, concepts, 4)
    for i in range(7):
        cosines = [float(torch.cosine_similarity(images[i], c, dim=0)) for c in concepts]
        assert top[i].tolist() == sorted(range(11), key=lambda j: -cosines[j])[:4]


def test_noun_extraction_and_the_count_threshold_rule():
    assert extract_nouns("A small red circle left of a blue square.") == ["circle", "square"]
    assert extract_nouns("a small red circle", with_modifiers=True) == ["small", "red", "circle"]
    captions = ["a dog on a sofa", "a dog and a cat", "two dogs", "a cat", "a bird", "a dog"]
    assert mine_vocabulary(captions, threshold=0) == ["dog", "cat"]  # bird once: counted 0, not > 0
    assert mine_vocabulary(captions, threshold=1) == ["dog"]  # cat counted 1, not > 1
    assert mine_vocabulary(captions, threshold=5) == []


def test_concept_subsample_draws_int_fraction_k_with_replacement():
    torch.manual_seed(0)
    kwords = [f"w{i}" for i in range(15)]
    draws = [sample_concepts(kwords, 0.3) for _ in range(300)]
    assert all(len(d) == 4 and set(d) <= set(kwords) for d in draws)
    assert any(len(set(d)) < 4 for d in draws)  # replacement: repeats happen
    assert sample_concepts(kwords[:2], 0.3) == []


class _OracleScorer:
    """Embeds an image as its exact concept indicator and a word as its one-hot: top-k must find the truth."""

    def __init__(self, vocabulary, truth):
        self.vocabulary, self.truth = vocabulary, truth

    def embed_images(self, images):
        rows = [[float(w in self.truth[int(i)]) for w in self.vocabulary] for i in images[:, 0, 0, 0]]
        return torch.tensor(rows) + 1e-3 * torch.arange(len(self.vocabulary)).flip(0)

    def embed_texts(self, texts):
        return torch.eye(len(self.vocabulary))[[self.vocabulary.index(t) for t in texts]]


def test_assign_concepts_returns_the_top_k_words_of_the_scorer():
    world = caption_world(6, seed=0)
    vocabulary = mine_vocabulary((c for s in world.scenes for c in s.captions), 0, with_modifiers=True)
    truth = [scene_concepts(s) for s in world.scenes]
    images = torch.arange(6, dtype=torch.float32)[:, None, None, None].expand(6, 3, 2, 2)
    concepts = assign_concepts(_OracleScorer(vocabulary, truth), images, vocabulary, 2, batch_size=4)
    for kw, t in zip(concepts, truth, strict=True):
        assert set(kw) <= t


def test_the_offline_dual_encoder_learns_concepts_above_chance():
    world = caption_world(160, seed=0)
    captions = [s.captions for s in world.scenes]
    tokenizer = WordTokenizer.fit(c for cs in captions for c in cs)
    images = torch.stack([image_to_tensor(im) for im in world.images])
    scorer, report = train_dual_encoder(images, captions, tokenizer, steps=30, batch_size=48, seed=0)
    vocabulary = mine_vocabulary((c for cs in captions for c in cs), 0, with_modifiers=True)
    concepts = assign_concepts(scorer, images, vocabulary, 3)
    precision = sum(len(set(kw) & scene_concepts(s)) for kw, s in zip(concepts, world.scenes, strict=True)) / (3 * 160)
    base_rate = sum(len(scene_concepts(s)) for s in world.scenes) / (160 * len(vocabulary))
    assert precision > 1.5 * base_rate, (precision, base_rate, report)


def test_clip_scoring_without_open_clip_or_weights_fails_with_one_line(tmp_path):
    with pytest.raises(ValueError, match="open-clip-torch|not found"):
        open_clip_scorer(tmp_path / "missing.bin")
