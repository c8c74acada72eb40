"""The CLIP stand-in: InfoNCE against a brute-force loop, the bag of ingredient words, and sharing through the cache."""

from __future__ import annotations

import math

import torch

from frugalvision.methods.tfood.config import TFoodConfig, build_model
from frugalvision.methods.tfood.experiment import with_image_weights
from frugalvision.methods.tfood.model import ImageEncoderConfig
from frugalvision.methods.tfood.pretrain import ContrastivePretrainer, info_nce, ingredient_bags
from frugalvision.methods.tfood.text import END, PAD, START


def test_info_nce_equals_a_brute_force_sum_over_both_directions():
    gen = torch.Generator().manual_seed(0)
    image, text = torch.randn(5, 4, generator=gen), torch.randn(5, 4, generator=gen)
    a = [v / v.norm() for v in image]
    b = [v / v.norm() for v in text]
    tau, total = 0.07, 0.0
    for i in range(5):
        row = [float(a[i] @ b[j]) / tau for j in range(5)]
        col = [float(a[j] @ b[i]) / tau for j in range(5)]
        total += -row[i] + math.log(sum(math.exp(x) for x in row))
        total += -col[i] + math.log(sum(math.exp(x) for x in col))
    assert abs(float(info_nce(image, text, tau)) - total / 10) < 1e-4


def test_bag_of_ingredient_words_ignores_padding_and_sentence_marks():
    ingredients = torch.tensor([[[START, 7, 8, END], [START, 9, END, PAD]], [[START, 5, END, PAD], [PAD] * 4]])
    ids, mask = ingredient_bags(ingredients)
    assert ids[mask].tolist() == [7, 8, 9, 5]
    model = ContrastivePretrainer(ImageEncoderConfig(patch_size=8, width=16, depth=1, heads=2), vocab_size=10, dim=8)
    out = model.embed_ingredients(ingredients)
    words = model.words.weight
    assert torch.allclose(out[1], model.text_proj(words[5]), atol=1e-6)
    assert torch.allclose(out[0], model.text_proj((words[7] + words[8] + words[9]) / 3), atol=1e-6)
    assert model.embed_images(torch.rand(2, 3, 32, 32)).shape == (2, 8)


def test_every_arm_starts_from_the_same_pretrained_encoder():
    image = ImageEncoderConfig(patch_size=8, width=16, depth=1, heads=2)
    pretrained = ContrastivePretrainer(image, vocab_size=20, dim=8).image_encoder.state_dict()
    config = TFoodConfig(image=image)
    arms = [
        with_image_weights(build_model(config, 20, htd=h, mmr=m), pretrained) for h, m in ((False, False), (True, True))
    ]
    for arm in arms:
        for key, value in arm.image_encoder.state_dict().items():
            assert torch.equal(value, pretrained[key])
    assert with_image_weights(build_model(config, 20, False, False), None).image_encoder is not None
