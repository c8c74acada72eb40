import pytest
import torch
from torchmetrics.functional.retrieval import retrieval_recall

from frugalvision.engine import Engine, FabricConfig, LoopConfig, load_weights
from frugalvision.methods.tfood.data import RecipeImageDataset, load_recipe1m, write_mini_recipe1m
from frugalvision.methods.tfood.model import ImageEncoderConfig, RecipeEncoderConfig, TFoodModel
from frugalvision.methods.tfood.task import (
    LossConfig,
    TFoodTask,
    bag_indices,
    embed_dataset,
    rerank_similarity,
    reranked_retrieval,
    retrieval_protocol,
)
from frugalvision.methods.tfood.text import WordTokenizer
from frugalvision.metrics import bagged_retrieval, retrieval_metrics


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("r1m")
    write_mini_recipe1m(root, num_recipes=120, seed=5)
    recipes, _ = load_recipe1m(root)
    tok = WordTokenizer.fit(t for r in recipes if r.partition == "train" for t in (r.title, *r.ingredients))
    train = RecipeImageDataset([r for r in recipes if r.partition == "train"], tok, 32, train=True)
    test = RecipeImageDataset([r for r in recipes if r.partition == "test"], tok, 32)
    return train, test, len(tok)


def _model_fn(vocab):
    def build():
        recipe = RecipeEncoderConfig(vocab_size=vocab, width=16, heads=2, layers=1, htd_layers=1, ffn=32)
        image = ImageEncoderConfig(img_size=32, patch_size=16, width=16, depth=1, heads=2)
        return TFoodModel(image, recipe, embed_dim=16, mmr_width=16, mmr_ffn=32, mmr_fusion_layers=1)

    return build


def _task(sets, **kw):
    train, test, vocab = sets
    args = dict(steps_per_epoch=2, batch_size=8, protocols=(("bag10", 10, 2),))
    args.update(kw)
    return TFoodTask(_model_fn(vocab), train, {"test": test}, LossConfig(), **args)


def test_backbone_frozen_then_trained_at_its_own_rate(sets):
    task = _task(sets, freeze_image_steps=2, image_lr_scale=0.1)
    engine = Engine(FabricConfig(accelerator="cpu"), progress=False)
    torch.manual_seed(0)
    initial = task.build_model()
    assert all(p.requires_grad for p in initial.image_encoder.parameters())  # frozen by the step, not the flag
    before = {k: v.clone() for k, v in initial.state_dict().items()}
    frozen = engine.fit(task, LoopConfig(max_steps=2, batch_size=8, lr=1e-3, weight_decay=0.0, log_every=0))
    state = frozen.model.state_dict()
    image_keys = [k for k in state if k.startswith("image_encoder.")]
    assert all(torch.equal(state[k], before[k]) for k in image_keys)
    assert any(not torch.equal(state[k], before[k]) for k in state if k.startswith("recipe_encoder."))
    trained = engine.fit(task, LoopConfig(max_steps=4, batch_size=8, lr=1e-3, weight_decay=0.0, log_every=0))
    assert any(not torch.equal(trained.model.state_dict()[k], before[k]) for k in image_keys)
    optimizer = task.build_optimizer(initial, LoopConfig())
    scales = [g["lr_scale"] for g in optimizer.param_groups]
    assert scales == [1.0, 0.1]
    assert {id(p) for p in optimizer.param_groups[1]["params"]} == {id(p) for p in initial.image_encoder.parameters()}


def test_unfreezing_starts_the_image_encoders_adam_state_afresh(sets):
    task = _task(sets, freeze_image_steps=3, image_lr_scale=0.1)
    torch.manual_seed(0)
    model = task.build_model()
    optimizer = task.build_optimizer(model, LoopConfig())
    image = list(model.image_encoder.parameters())
    for p in model.parameters():  # as after frozen DDP steps: zero moments, a step count
        optimizer.state[p] = {
            "step": torch.tensor(3.0),
            "exp_avg": torch.zeros_like(p),
            "exp_avg_sq": torch.zeros_like(p),
        }
    batch = next(iter(torch.utils.data.DataLoader(sets[0], batch_size=8, collate_fn=task.collate())))
    loss, _ = task.training_step(model, batch, step=2)  # still frozen: no gradient reaches the image encoder
    loss.backward()
    assert all(p.grad is None for p in image) and len(optimizer.state) == len(list(model.parameters()))
    task.training_step(model, batch, step=3)
    assert all(p not in optimizer.state for p in image)
    assert all(p in optimizer.state for p in model.recipe_encoder.parameters())


def test_margin_schedule_per_epoch_and_on_resume(sets):
    task = TFoodTask(
        _model_fn(sets[2]),
        sets[0],
        {},
        LossConfig(margin_start=0.18, margin_delta=0.005, margin_max=0.3),
        steps_per_epoch=10,
    )
    assert task.margin_at(0) == pytest.approx(0.18)
    assert task.margin_at(109) == pytest.approx(0.23)  # epoch 10
    assert task.margin_at(240) == pytest.approx(0.3)  # epoch 24
    assert task.margin_at(300) == pytest.approx(0.3)
    resumed = TFoodTask(_model_fn(sets[2]), sets[0], {}, task.loss, steps_per_epoch=10)
    assert [resumed.margin_at(s) for s in range(0, 400, 7)] == [task.margin_at(s) for s in range(0, 400, 7)]


def test_training_and_smoke_metrics_are_deterministic(sets):
    loop = LoopConfig(max_steps=3, batch_size=8, lr=1e-3, weight_decay=0.0, log_every=1)
    engine = Engine(FabricConfig(accelerator="cpu"), progress=False)
    first = engine.fit(_task(sets), loop)
    second = engine.fit(_task(sets), loop)
    assert first.metrics == second.metrics
    assert [h.get("loss") for h in first.history] == [h.get("loss") for h in second.history]
    assert any("loss_itm" in h for h in first.history)


def test_retrieval_identity_and_permutation():
    emb = torch.nn.functional.normalize(torch.randn(30, 8), dim=1)
    res = retrieval_protocol(emb, emb.clone(), (("b", 30, 1),))
    assert res["b/image_to_recipe/R@1"] == 1.0 and res["b/recipe_to_image/medR"] == 1.0
    # a known ranking: sim[i, j] with the positive placed at rank r_i in row i
    n = 6
    sim = torch.zeros(n, n)
    wanted = [1, 3, 2, 6, 1, 4]
    for i, r in enumerate(wanted):
        others = [j for j in range(n) if j != i]
        scores = torch.linspace(1.0, 0.1, n)
        sim[i, others[: r - 1]] = scores[: r - 1]
        sim[i, i] = scores[r - 1] if r - 1 < n else 0.0
        sim[i, others[r - 1 :]] = scores[r:] if r < n else torch.tensor([])
    m = retrieval_metrics(sim, ks=(1, 5))
    assert m["R@1"] == pytest.approx(2 / 6) and m["R@5"] == pytest.approx(5 / 6)
    assert m["medR"] == pytest.approx(2.5)


def test_direction_names_on_an_asymmetric_matrix():
    # unit vectors at angles: image 0 at 0, recipe 0 at 50, image 1 at 90, recipe 1 at 100 degrees.
    # every image finds its recipe first, but recipe 0 is closer to image 1 (40) than to image 0 (50)
    def unit(deg):
        rad = torch.tensor(deg * torch.pi / 180)
        return torch.stack([rad.cos(), rad.sin()])

    img = torch.stack([unit(0.0), unit(90.0)])
    rec = torch.stack([unit(50.0), unit(100.0)])
    res = retrieval_protocol(img, rec, (("b", 2, 1),))
    assert res["b/image_to_recipe/R@1"] == 1.0  # image queries rank recipes
    assert res["b/recipe_to_image/R@1"] == 0.5  # recipe 0 ranks image 1 first
    assert res["b/recipe_to_image/medR"] == 1.5


def test_recall_agrees_with_torchmetrics_and_random_is_chance():
    gen = torch.Generator().manual_seed(0)
    sim = torch.randn(25, 25, generator=gen)
    ours = retrieval_metrics(sim, ks=(1, 5, 10))
    for k in (1, 5, 10):
        ref = torch.stack([retrieval_recall(sim[i], torch.arange(25) == i, top_k=k) for i in range(25)]).mean()
        assert ours[f"R@{k}"] == pytest.approx(float(ref))
    r1 = [retrieval_metrics(torch.randn(50, 50, generator=gen))["R@1"] for _ in range(200)]
    assert sum(r1) / len(r1) == pytest.approx(1 / 50, abs=0.006)


def test_bag_indices_match_bagged_retrieval():
    gen = torch.Generator().manual_seed(1)
    img, rec = torch.randn(40, 6, generator=gen), torch.randn(40, 6, generator=gen)
    ref = bagged_retrieval(img, rec, 15, 3, seed=4, names=("image_to_recipe", "recipe_to_image"))
    i2r = [
        retrieval_metrics(
            torch.nn.functional.normalize(img[i], dim=1) @ torch.nn.functional.normalize(rec[i], dim=1).T
        )["R@1"]
        for i in bag_indices(40, 15, 3, seed=4)
    ]
    assert sum(i2r) / 3 == pytest.approx(ref["image_to_recipe"]["R@1"])


def test_rerank_reorders_only_the_top_k():
    sim = torch.tensor([[0.9, 0.8, 0.7, 0.1], [0.2, 0.5, 0.9, 0.8], [0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])

    def score(rows, cols):  # the ITM "knows" the positive
        return (rows == cols).float()

    out = rerank_similarity(sim, score, k=3)
    ranks = 1 + (out > out.diagonal().unsqueeze(1)).sum(1)
    # rows 0-2 have the positive in their top-3 -> rank 1; row 3's positive is outside -> unchanged rank 4
    assert ranks.tolist() == [1, 1, 1, 4]
    assert torch.equal(out[3].argsort(descending=True), sim[3].argsort(descending=True))


def test_reranked_retrieval_with_k1_equals_the_dual_encoder(sets):
    torch.manual_seed(0)
    model = _model_fn(sets[2])().eval()
    emb = embed_dataset(model, sets[1])
    dual = retrieval_protocol(emb["image_emb"], emb["recipe_emb"], (("b", 10, 2),), seed=3)
    rr = reranked_retrieval(model, emb, 10, 2, k=1, seed=3)
    for key in ("image_to_recipe/R@1", "recipe_to_image/R@5", "image_to_recipe/medR"):
        assert rr[key] == pytest.approx(dual[f"b/{key}"])


def test_protocol_matches_a_brute_force_ranking_loop():
    gen = torch.Generator().manual_seed(7)
    img, rec = torch.randn(12, 4, generator=gen), torch.randn(12, 4, generator=gen)
    res = retrieval_protocol(img, rec, (("b", 12, 1),), seed=0)
    sim = torch.nn.functional.normalize(img, dim=1) @ torch.nn.functional.normalize(rec, dim=1).T
    idx = bag_indices(12, 12, 1, seed=0)[0]
    sim = sim[idx][:, idx]
    i2r = [1 + sum(float(sim[q, c]) > float(sim[q, q]) for c in range(12)) for q in range(12)]
    r2i = [1 + sum(float(sim[c, q]) > float(sim[q, q]) for c in range(12)) for q in range(12)]
    for name, ranks in (("image_to_recipe", i2r), ("recipe_to_image", r2i)):
        for k in (1, 5, 10):
            assert res[f"b/{name}/R@{k}"] == pytest.approx(sum(r <= k for r in ranks) / 12)
        assert res[f"b/{name}/medR"] == pytest.approx((sorted(ranks)[5] + sorted(ranks)[6]) / 2)  # even N


def test_on_evaluate_keeps_a_copy_of_the_best_weights_and_round_trips_its_state():
    task = TFoodTask(lambda: None, None, {}, LossConfig(), steps_per_epoch=1, select_key=("val", "b/R@1"))
    layer = torch.nn.Linear(2, 2)
    scores = [0.2, 0.5, 0.5, 0.1]
    kept = None
    for step, score in enumerate(scores, start=1):
        with torch.no_grad():
            layer.weight.fill_(float(step))
        task.on_evaluate(layer, step, {"val": {"b/R@1": score}})
        if step == 2:
            kept = {k: v.clone() for k, v in layer.state_dict().items()}
    assert task.best_step == 2 and task.best_score == 0.5  # ties keep the earlier weights
    assert all(torch.equal(task.best_weights[k], kept[k]) for k in kept)  # a copy, not the live tensors
    other = TFoodTask(lambda: None, None, {}, LossConfig(), steps_per_epoch=1, select_key=("val", "b/R@1"))
    other.load_state_dict(task.state_dict())
    assert (other.best_step, other.best_score, other.best_metrics) == (2, 0.5, {"val": {"b/R@1": 0.5}})
    assert all(torch.equal(other.best_weights[k], kept[k]) for k in kept)


class _KilledError(RuntimeError):
    pass


class _KilledTask(TFoodTask):
    def training_step(self, model, batch, step):
        if step == 2:
            raise _KilledError
        return super().training_step(model, batch, step)


def test_best_validation_weights_are_those_of_the_best_evaluation_and_survive_a_resume(sets, tmp_path):
    train, test, vocab = sets
    loop = LoopConfig(
        max_steps=4,
        batch_size=8,
        lr=3e-3,
        weight_decay=0.0,
        schedule="constant",
        log_every=1,
        eval_every=1,
        ckpt_every=1,
        keep_checkpoints=10,
    )
    kwargs = dict(steps_per_epoch=2, batch_size=8, protocols=(("bag10", 10, 2),), select_key=("val", "bag10/R@1"))
    engine = Engine(FabricConfig(accelerator="cpu"), progress=False)
    task = TFoodTask(_model_fn(vocab), train, {"val": test}, LossConfig(), **kwargs)
    result = engine.fit(task, loop, run_dir=tmp_path / "full")
    evals = [(h["step"], h["val/bag10/R@1"]) for h in result.history if "val/bag10/R@1" in h]
    assert [s for s, _ in evals] == [1.0, 2.0, 3.0, 4.0]
    best_step = max(evals, key=lambda e: (e[1], -e[0]))[0]
    assert task.best_step == best_step and task.best_score == max(v for _, v in evals)
    saved = load_weights(tmp_path / "full" / "checkpoints" / f"step_{int(best_step):08d}" / "model.safetensors")
    assert all(torch.equal(task.best_weights[k], saved[k]) for k in saved)
    # killed after step 2, resumed: the same selection as the uninterrupted run
    killed = _KilledTask(_model_fn(vocab), train, {"val": test}, LossConfig(), **kwargs)
    with pytest.raises(_KilledError):
        engine.fit(killed, loop, run_dir=tmp_path / "killed")
    resumed = TFoodTask(_model_fn(vocab), train, {"val": test}, LossConfig(), **kwargs)
    engine.fit(resumed, loop, run_dir=tmp_path / "killed", resume=True)
    assert (resumed.best_step, resumed.best_score) == (task.best_step, task.best_score)
    assert all(torch.equal(resumed.best_weights[k], task.best_weights[k]) for k in task.best_weights)
