"""Torch-Pruning plumbing, MAC targets, the entwined schedule and the pruned-model round trip (spec §7.8-11)."""

from __future__ import annotations

import json

import pytest
import torch
import torch_pruning as tp
from torch import nn
from torch.utils.data import TensorDataset

from frugalvision.engine import Engine, FabricConfig
from frugalvision.methods.singe import pruning as P
from frugalvision.methods.singe import task as T
from frugalvision.nn import cifar_resnet

torch.set_num_threads(1)


def _model(width: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return cifar_resnet(8, width, 1, 10).eval()


def _data(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    return torch.randn(n, 1, 16, 16, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def test_importance_returns_one_score_per_channel_and_pruner_shrinks_layers() -> None:
    model = _model()
    x, y = _data()
    importance = P.SInGEImportance("ig_norm", P.CriterionSettings(steps=2))
    importance.precompute(model, x[:2], [(x, y)])
    graph = P.build_graph(model, x[:2])
    for group in P.graph_groups(graph, P.default_ignored(model)):
        scores = importance(group)
        assert scores is not None and scores.shape == (len(group[0].idxs),)
    pruner = tp.pruner.BasePruner(
        model, x[:2], importance=importance, pruning_ratio=0.5, ignored_layers=P.default_ignored(model)
    )
    pruner.step()
    assert model.layers[2].conv1.out_channels == 16 and model.stem[0].out_channels == 4
    assert model(x).shape == (16, 10)


def test_local_pruning_hits_mac_target_and_gives_same_shapes_for_all_criteria() -> None:
    model = _model(width=16)
    x, y = _data()
    cache = T.RatioCache(model, x[:1])
    shapes = []
    for criterion in ("l1", "random", "taylor_path"):
        run = T.prune_and_finetune(
            None,
            model,
            x[:1],
            criterion,
            [(x, y)],
            0.5,
            1,
            None,
            T.FinetuneSettings(steps=0),
            P.CriterionSettings(steps=1),
            ratios=cache,
        )
        macs, _ = P.count_macs_params(run.model, x[:1])
        assert macs <= 0.5 * cache.dense_macs
        assert macs >= 0.49 * cache.dense_macs
        shapes.append({k: tuple(v.shape) for k, v in run.model.state_dict().items()})
    assert shapes[0] == shapes[1] == shapes[2]


def test_entwined_and_oneshot_share_budget_lr_and_save_reload(tmp_path) -> None:  # noqa: ANN001
    model = _model()
    x, y = _data(64)
    train = TensorDataset(x, y)
    engine = Engine(FabricConfig(accelerator="cpu", devices="1"), progress=False)
    settings = T.FinetuneSettings(steps=6, batch_size=8, lr=0.05)
    cache = T.RatioCache(model, x[:1])
    runs = {}
    for rounds in (1, 2):
        runs[rounds] = T.prune_and_finetune(
            engine,
            model,
            x[:1],
            "taylor_path",
            [(x[:16], y[:16])],
            0.5,
            rounds,
            train,
            settings,
            P.CriterionSettings(steps=1),
            ratios=cache,
        )
    assert len(runs[1].lrs) == len(runs[2].lrs) == 6
    assert runs[1].lrs == pytest.approx(runs[2].lrs)
    assert runs[1].lrs[0] == pytest.approx(0.05) and runs[1].lrs[-1] < runs[1].lrs[1]
    assert len(runs[2].rounds) == 2 and runs[2].rounds[0]["macs_frac"] > runs[2].rounds[1]["macs_frac"]
    shapes = {k: v.shape for k, v in runs[1].model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in runs[2].model.state_dict().items()}

    pruned = runs[2].model.eval()
    plan = P.PruningPlan(
        "cifar_resnet", {"depth": 8, "width": 8, "in_chans": 1, "num_classes": 10}, [1, 1, 16, 16], runs[2].history
    )
    folder = P.save_pruned(pruned, plan, tmp_path / "pruned")
    assert json.loads((folder / P.PLAN_NAME).read_text())["history"]
    reloaded = P.load_pruned(folder)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), pruned(x), rtol=0, atol=0)


def test_stream_order_continues_across_slices() -> None:
    whole = T.stream_order(10, 3, seed=4, offset_steps=0)
    full = torch.cat([whole(e, 0) for e in range(4)])
    sliced = T.stream_order(10, 3, seed=4, offset_steps=5)
    assert torch.equal(torch.cat([sliced(e, 0) for e in range(2)]), full[15 : 15 + 18])


def test_speed_ratio_needs_a_physically_pruned_model() -> None:
    from frugalvision.methods.singe.bench import speed_ratio

    dense = _model()
    x, _ = _data(4)
    with pytest.raises(ValueError):
        speed_ratio(dense, dense, x, rounds=1, number=1)
    pruned = T.prune_and_finetune(None, dense, x[:1], "l1", [], 0.5, 1, None, T.FinetuneSettings(steps=0)).model
    measured = speed_ratio(dense, pruned, x, rounds=3, number=1, warmup=0)
    assert measured["latency_ratio"] > 0 and measured["dense_ms"] > 0
    assert measured["latency_ratio_q25"] <= measured["latency_ratio"] <= measured["latency_ratio_q75"]


def test_lr_restarts_keep_the_data_stream_and_restart_the_cosine() -> None:
    model = _model()
    x, y = _data(64)
    engine = Engine(FabricConfig(accelerator="cpu", devices="1"), progress=False)
    settings = T.FinetuneSettings(steps=6, batch_size=8, lr=0.05, restart=True)
    run = T.prune_and_finetune(engine, model, x[:1], "l1", [], 0.5, 2, TensorDataset(x, y), settings)
    assert run.lrs[0] == pytest.approx(0.05) and run.lrs[3] == pytest.approx(0.05)
    assert run.lrs[:3] == pytest.approx(run.lrs[3:])


def test_group_sparse_baseline_uses_group_norm_pruner_within_the_same_budget(monkeypatch) -> None:  # noqa: ANN001
    model = _model()
    x, y = _data(64)
    train = TensorDataset(x, y)
    engine = Engine(FabricConfig(accelerator="cpu", devices="1"), progress=False)
    settings = T.FinetuneSettings(steps=6, batch_size=8, lr=0.05)
    cache = T.RatioCache(model, x[:1])
    calls = []
    original = tp.pruner.GroupNormPruner.regularize

    def counting(self, module, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(module)
        return original(self, module, *args, **kwargs)

    monkeypatch.setattr(tp.pruner.GroupNormPruner, "regularize", counting)
    runs = {
        reg: T.sparse_then_prune(engine, model, x[:1], 0.5, train, settings, 2, reg, ratios=cache) for reg in (0.0, 0.5)
    }
    assert len(calls) == 4  # once per sparse step, before the optimiser step
    oneshot = T.prune_and_finetune(engine, model, x[:1], "l2", [], 0.5, 1, train, settings, ratios=cache)
    for run in runs.values():
        assert run.lrs == pytest.approx(oneshot.lrs)  # same steps, same LR trajectory
        assert {k: v.shape for k, v in run.model.state_dict().items()} == {
            k: v.shape for k, v in oneshot.model.state_dict().items()
        }
    weights = [run.model.layers[0].conv1.weight for run in runs.values()]
    assert not torch.allclose(weights[0], weights[1])  # the regulariser changed the training


def test_rounded_counts_are_multiples_under_the_mac_target_and_close_to_it() -> None:
    model = _model(width=16)
    x, _ = _data()
    dense_macs, _ = P.count_macs_params(model, x[:1])
    sizes = P.group_sizes(model, x[:1])
    for target in (0.5, 0.3):
        keep = T.RatioCache(model, x[:1], multiple=8).keep(target)
        assert all(count % 8 == 0 for count in keep.values())
        macs = P.macs_with_counts(model, x[:1], keep)
        assert macs <= target * dense_macs
        # no group can take one more multiple without passing the target
        for root, count in keep.items():
            if count + 8 <= sizes[root]:
                assert P.macs_with_counts(model, x[:1], {**keep, root: count + 8}) > target * dense_macs
    assert P.round_counts({"a": 11, "b": 23, "c": 3}, {"a": 16, "b": 32, "c": 4}, 8) == {"a": 8, "b": 24, "c": 3}
    with pytest.raises(ValueError, match="multiples of 16"):
        P.rounded_keep_counts(model, x[:1], 0.5, 16)


def test_global_ranking_removes_the_globally_lowest_scores_down_to_the_macs() -> None:
    model = _model(width=8)
    x, y = _data()
    scores = P.compute_scores(model, x[:1], "lamp_tp", []).scores
    dense_macs, _ = P.count_macs_params(model, x[:1])
    keep = P.global_keep_counts(model, x[:1], scores, 0.5 * dense_macs)
    sizes = P.group_sizes(model, x[:1])
    removed = sum(sizes[r] - keep[r] for r in sizes)
    # brute force: every channel below the removal threshold is gone, every channel above it stays
    ranked = sorted((float(v), root, i) for root in sizes for i, v in enumerate(scores[root].tolist()))
    for _, root, _ in ranked[:removed]:
        assert keep[root] < sizes[root]
    expected = {root: sizes[root] - sum(1 for _, r, _ in ranked[:removed] if r == root) for root in sizes}
    assert keep == {root: max(1, count) for root, count in expected.items()}
    assert P.macs_with_counts(model, x[:1], keep) <= 0.5 * dense_macs
    fewer = {root: max(1, sizes[root] - sum(1 for _, r, _ in ranked[: removed - 1] if r == root)) for root in sizes}
    assert P.macs_with_counts(model, x[:1], fewer) > 0.5 * dense_macs  # the fewest removals that reach the target
    run = T.prune_and_finetune(
        None, model, x[:1], "lamp_tp", [(x, y)], 0.5, 1, None, T.FinetuneSettings(steps=0), global_ranking=True
    )
    assert P.group_sizes(run.model, x[:1]) == keep


def test_tensor_images_read_a_batch_at_once_and_equal_the_per_item_path() -> None:
    from torch.utils.data import DataLoader

    from frugalvision.data.arrays import ArrayDataset, ImageArrays
    from frugalvision.methods.singe.data import TensorImages, collate_batches

    images = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8)
    arrays = ImageArrays(images, torch.arange(10) % 3, ["a", "b", "c"], "fixture")
    fast, slow = TensorImages(arrays), ArrayDataset(arrays)
    order = [[3, 1, 7], [0, 9, 2]]
    batches = list(DataLoader(fast, batch_sampler=order, collate_fn=collate_batches))
    reference = list(DataLoader(slow, batch_sampler=order))
    for (xa, ya), (xb, yb) in zip(batches, reference, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert fast[4][1] == slow[4][1] and torch.equal(fast[4][0], slow[4][0])


def test_speed_ratios_time_every_pruned_model_against_the_dense_one() -> None:
    from frugalvision.methods.singe.bench import speed_ratios

    dense = _model(width=16)
    x, _ = _data(4)
    exact = T.prune_and_finetune(None, dense, x[:1], "l1", [], 0.5, 1, None, T.FinetuneSettings(steps=0)).model
    cache = T.RatioCache(dense, x[:1], multiple=8)
    rounded = T.prune_and_finetune(
        None, dense, x[:1], "l1", [], 0.5, 1, None, T.FinetuneSettings(steps=0), ratios=cache
    ).model
    measured = speed_ratios(dense, {"exact": exact, "round8": rounded}, x, rounds=3, number=1, warmup=0)
    assert set(measured) == {"exact", "round8"}
    for values in measured.values():
        assert values["latency_ratio_q25"] <= values["latency_ratio"] <= values["latency_ratio_q75"]
