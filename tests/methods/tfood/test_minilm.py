import math

import pytest
import torch

from frugalvision.errors import DataError
from frugalvision.methods.tfood.model import ImageEncoderConfig, RecipeEncoderConfig, TFoodModel
from frugalvision.methods.tfood.text import PAD, WordPieceTokenizer, minilm_dir, pad_recipes
from frugalvision.nn.minilm import hf_to_ours, load_minilm

LINES = ["2 cups sugar-free flour", "preheat the oven to 200 degrees and bake until golden", "salt", "Mix it!"]


def _ids(tok):
    from frugalvision.methods.tfood.text import _pad_2d

    return _pad_2d([tok.encode(line) for line in LINES])


def test_minilm_equals_the_transformers_bert_model():
    transformers = pytest.importorskip("transformers")
    tok = WordPieceTokenizer()
    ids = _ids(tok)
    valid = ids != PAD
    ours = load_minilm(dropout=0.0).eval()
    reference = transformers.BertModel.from_pretrained(
        str(minilm_dir()), add_pooling_layer=False, use_safetensors=True
    ).eval()
    with torch.no_grad():
        got = ours(ids)
        want = reference(input_ids=ids, attention_mask=valid.long()).last_hidden_state
    assert valid.sum() > 20 and not valid.all()  # the batch really is padded
    torch.testing.assert_close(got[valid], want[valid], rtol=1e-4, atol=1e-4)


def test_minilm_mean_pooling_equals_sentence_transformers():
    sentence_transformers = pytest.importorskip("sentence_transformers")
    tok = WordPieceTokenizer()
    ids = _ids(tok)
    ours = load_minilm(dropout=0.0).eval()
    with torch.no_grad():
        hidden = ours(ids)
    weights = (ids != PAD).unsqueeze(-1).float()
    pooled = torch.nn.functional.normalize((hidden * weights).sum(1) / weights.sum(1), dim=-1)
    reference = sentence_transformers.SentenceTransformer(str(minilm_dir()), device="cpu")
    want = torch.as_tensor(reference.encode(LINES, convert_to_numpy=True))
    torch.testing.assert_close(pooled, want, rtol=1e-4, atol=1e-4)


def _brute_force_bert_layer(w, x, valid, heads):
    """One BERT layer written with explicit loops over samples, heads and queries, from the raw HF tensors."""

    def linear(name, v):
        return v @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    def layer_norm(name, v):
        mean = v.mean(-1, keepdim=True)
        var = ((v - mean) ** 2).mean(-1, keepdim=True)
        return (v - mean) / torch.sqrt(var + 1e-12) * w[f"{name}.weight"] + w[f"{name}.bias"]

    n, length, width = x.shape
    d = width // heads
    out = torch.zeros_like(x)
    for b in range(n):
        q = linear("attention.self.query", x[b])
        k = linear("attention.self.key", x[b])
        v = linear("attention.self.value", x[b])
        context = torch.zeros(length, width, dtype=x.dtype)
        for h in range(heads):
            cols = slice(h * d, (h + 1) * d)
            for i in range(length):
                scores = [float(q[i, cols] @ k[j, cols]) / math.sqrt(d) for j in range(length)]
                scores = [s if valid[b, j] else -math.inf for j, s in enumerate(scores)]
                top = max(scores)
                e = [math.exp(s - top) for s in scores]
                p = torch.tensor([ej / sum(e) for ej in e], dtype=x.dtype)
                context[i, cols] = (p.unsqueeze(1) * v[:, cols]).sum(0)
        a = layer_norm("attention.output.LayerNorm", x[b] + linear("attention.output.dense", context))
        hidden = linear("intermediate.dense", a)
        hidden = 0.5 * hidden * (1.0 + torch.erf(hidden / math.sqrt(2.0)))
        out[b] = layer_norm("output.LayerNorm", a + linear("output.dense", hidden))
    return out


def test_one_minilm_layer_equals_a_brute_force_bert_layer_from_the_raw_weights():
    from safetensors.torch import load_file

    raw = load_file(str(minilm_dir() / "model.safetensors"))
    layer = {k.removeprefix("encoder.layer.3."): v.double() for k, v in raw.items() if k.startswith("encoder.layer.3.")}
    model = load_minilm(dropout=0.0).eval().double()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 384, generator=gen, dtype=torch.float64)
    valid = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    with torch.no_grad():
        got = model.layers[3](x, valid)
    want = _brute_force_bert_layer(layer, x, valid, heads=12)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_loader_uses_safetensors_only_and_maps_every_weight(tmp_path):
    (tmp_path / "config.json").write_text((minilm_dir() / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(DataError, match="safetensors"):
        load_minilm(tmp_path)
    from safetensors import safe_open

    with safe_open(str(minilm_dir() / "model.safetensors"), "pt") as handle:
        keys = list(handle.keys())
    mapped = {hf_to_ours(k) for k in keys} - {None}
    assert mapped == set(load_minilm(dropout=0.0).state_dict())
    short = load_minilm(num_layers=2)
    assert len(short.layers) == 2
    with safe_open(str(minilm_dir() / "model.safetensors"), "pt") as handle:
        assert torch.equal(
            short.layers[1].ffn_in.weight, handle.get_tensor("encoder.layer.1.intermediate.dense.weight")
        )


def _minilm_model(freeze=True):
    torch.manual_seed(0)
    recipe = RecipeEncoderConfig(
        vocab_size=30522,
        width=16,
        heads=2,
        layers=1,
        htd_layers=1,
        ffn=32,
        pretrained_text="minilm",
        pretrained_layers=2,
        freeze_pretrained=freeze,
    )
    image = ImageEncoderConfig(img_size=16, patch_size=8, width=16, depth=1, heads=2)
    return TFoodModel(image, recipe, embed_dim=8, mmr_width=0)


def _batch(tok, texts):
    recipes = [(tok.encode(t), [tok.encode(x) for x in i], [tok.encode(x) for x in s]) for t, i, s in texts]
    return pad_recipes(*zip(*recipes, strict=True))


TEXTS = [
    ("apple pie", ["3 apples", "1 cup flour"], ["bake it for 40 minutes"]),
    ("leek soup", ["2 leeks"], ["boil", "serve hot"]),
]


def test_recipe_encoder_runs_minilm_on_every_sentence_and_stays_batch_and_padding_invariant():
    tok = WordPieceTokenizer()
    model = _minilm_model().eval()
    text = model.recipe_encoder.text
    assert len(text.layers) == 2 and not any(p.requires_grad for p in text.parameters())
    both = model.embed_recipes(_batch(tok, TEXTS))[0]
    alone = model.embed_recipes(_batch(tok, TEXTS[1:]))[0]
    torch.testing.assert_close(both[1], alone[0], rtol=1e-5, atol=1e-5)
    batch = _batch(tok, TEXTS)
    pad = torch.nn.functional.pad
    padded = type(batch)(
        pad(batch.title, (0, 3)), pad(batch.ingredients, (0, 2, 0, 2)), pad(batch.instructions, (0, 4))
    )
    torch.testing.assert_close(model.embed_recipes(padded)[0], both, rtol=1e-5, atol=1e-5)
    # the title tokens are MiniLM's outputs projected to the width (the sentence encoder really is MiniLM)
    out = model.recipe_encoder(batch)
    with torch.no_grad():
        title = model.recipe_encoder.text_proj(text(batch.title))
    assert out.tokens.shape[1] == batch.title.shape[1] + batch.ingredients.shape[1] + batch.instructions.shape[1]
    assert title.shape == (2, batch.title.shape[1], 16)


@pytest.mark.parametrize("freeze", [True, False])
def test_frozen_minilm_gets_no_gradient_and_unfrozen_minilm_does(freeze):
    tok = WordPieceTokenizer()
    model = _minilm_model(freeze).train()
    emb = model.embed_recipes(_batch(tok, TEXTS))[0]
    (emb[0] @ emb[1]).backward()
    text = model.recipe_encoder.text
    grads = [p.grad for p in text.parameters()]
    assert model.recipe_encoder.text_proj.weight.grad is not None
    if freeze:
        assert all(g is None for g in grads)
    else:
        assert any(g is not None and g.abs().sum() > 0 for g in grads)
