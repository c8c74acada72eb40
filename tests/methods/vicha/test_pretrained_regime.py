"""The pieces of the pre-trained regime: the caption-world ViT stand-in, the pruned MiniLM vocabulary, mean pooling."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from frugalvision.data.caption_world import (
    GRID,
    caption_world,
    render_scene,
    scene_cell_labels,
    vocabulary,
)
from frugalvision.methods.vicha.backbone import (
    CELL_CLASSES,
    VisionPretrainConfig,
    cell_attribute_loss,
    patch_cells,
    pretrain_vision,
)
from frugalvision.methods.vicha.model import ConceptViT, ModelConfig, ViCHAModel


def test_patch_cells_map_each_patch_to_the_grid_cell_it_lies_in():
    assert patch_cells(3).tolist() == list(range(9))
    six = patch_cells(6).view(6, 6)
    assert six[0, 0] == six[1, 1] == 0 and six[0, 2] == 1 and six[5, 5] == 8 and six[2, 0] == 3


def test_cell_attribute_loss_equals_the_mean_of_per_cell_cross_entropies():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 9 * sum(CELL_CLASSES), generator=g)
    labels = torch.stack([torch.randint(c, (2, 9), generator=g) for c in CELL_CLASSES], -1)
    brute = []
    for attribute, classes in enumerate(CELL_CLASSES):
        start = sum(CELL_CLASSES[:attribute])
        per = [
            F.cross_entropy(logits[n].view(9, -1)[cell, start : start + classes], labels[n, cell, attribute])
            for n in range(2)
            for cell in range(9)
        ]
        brute.append(torch.stack(per).mean())
    assert torch.allclose(cell_attribute_loss(logits, labels), torch.stack(brute).mean(), atol=1e-6)


def test_cell_labels_and_boxes_follow_the_scene_graph():
    world = caption_world(20, seed=3, image_size=48)
    for scene, boxes in zip(world.scenes, world.boxes, strict=True):
        labels = scene_cell_labels(scene)
        assert (labels[:, 0] > 0).sum() == len(scene.objects)
        cell = 48 / GRID
        for obj, (x, y, w, h) in zip(scene.objects, boxes, strict=True):
            assert labels[obj.row * GRID + obj.col, 0] > 0
            assert int((x + w / 2) // cell) == obj.col and int((y + h / 2) // cell) == obj.row
            assert 0 <= x and x + w <= 48 and 0 <= y and y + h <= 48
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    assert np.array_equal(render_scene(world.scenes[0], 48, rng_a), render_scene(world.scenes[0], 48, rng_b))


def test_the_vision_stand_in_learns_the_cell_attributes():
    torch.manual_seed(0)
    world = caption_world(64, seed=0, image_size=48)
    images = torch.from_numpy(world.images).permute(0, 3, 1, 2).float() / 255
    labels = torch.from_numpy(np.stack([scene_cell_labels(s) for s in world.scenes]))
    vit = ConceptViT(ModelConfig(vocab_size=8, image_size=48, patch_size=16, vision_width=32, vision_depth=2)).vit
    first = pretrain_vision(vit, images, labels, VisionPretrainConfig(steps=1, batch_size=32, lr=3e-3))
    report = pretrain_vision(vit, images, labels, VisionPretrainConfig(steps=60, batch_size=32, lr=3e-3))
    assert report.final_loss < 0.5 * first.final_loss


@pytest.fixture(scope="module")
def subset():
    from frugalvision.methods.vicha.text import SubsetTokenizer
    from frugalvision.nn.minilm import WordPieceTokenizer

    base = WordPieceTokenizer()
    return base, SubsetTokenizer.fit(base, [" ".join(vocabulary())])


def test_the_pruned_vocabulary_gives_the_same_text_states_as_the_full_one(subset):
    from frugalvision.nn.xbert import TextFusionEncoder

    base, tokenizer = subset
    assert tokenizer.kept[0] == 0 and len(tokenizer) < 100
    caption = "a large red circle left of a small blue square"
    full_ids, small_ids = torch.tensor([base.encode(caption)]), torch.tensor([tokenizer.encode(caption)])
    assert [tokenizer.kept[i] for i in small_ids[0]] == full_ids[0].tolist()
    assert tokenizer.encode("a zebra")[2] == tokenizer.unk
    torch.manual_seed(0)
    full = TextFusionEncoder.from_minilm(16, 3, dropout=0.0, num_layers=4).eval()
    torch.manual_seed(0)
    small = TextFusionEncoder.from_minilm(16, 3, dropout=0.0, num_layers=4, vocab_ids=tokenizer.kept).eval()
    assert small.cfg.vocab_size == len(tokenizer) and len(small.fusion_layers) == 1
    with torch.no_grad():
        assert torch.allclose(full.encode_text(full_ids)[0], small.encode_text(small_ids)[0], atol=1e-5)


def test_mean_pooling_averages_the_valid_tokens_only():
    torch.manual_seed(0)
    model = ViCHAModel(ModelConfig(vocab_size=20, vision_width=32, text_width=32, text_intermediate=64, embed_dim=8,
                                   text_pool="mean")).eval()  # fmt: skip
    states, valid = torch.randn(2, 5, 32), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool()
    pooled = model.pool_text(states, valid)
    assert torch.allclose(pooled[0], states[0, :3].mean(0)) and torch.allclose(pooled[1], states[1].mean(0))
    ids = torch.tensor([[2, 7, 8, 3]])
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)
    with torch.no_grad():
        a, b = model.text_feature(model.encode_text(ids)), model.text_feature(model.encode_text(padded))
    assert torch.allclose(a, b, atol=1e-5)
