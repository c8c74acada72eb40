import statistics

import pytest
import torch
from torchmetrics.retrieval import RetrievalRecall

from frugalvision.errors import ConfigError, DataError
from frugalvision.metrics import bagged_retrieval, bidirectional_retrieval, retrieval_metrics, retrieval_ranks


def _brute(sim, ks):
    rows = sim.tolist()
    ranks = []
    for i, row in enumerate(rows):
        ranks.append(1 + sum(1 for j, v in enumerate(row) if v > row[i]))
    out = {f"R@{k}": sum(r <= k for r in ranks) / len(ranks) for k in ks}
    out["medR"] = statistics.median(ranks)
    return ranks, out


@pytest.mark.parametrize("n", [7, 20])
def test_ranks_and_metrics_match_brute_force(n):
    sim = torch.randn(n, n, generator=torch.Generator().manual_seed(n))
    ranks, expected = _brute(sim, (1, 5, 10))
    assert retrieval_ranks(sim).tolist() == ranks
    got = retrieval_metrics(sim)
    assert got == pytest.approx(expected)
    _, expected_t = _brute(sim.T, (1, 5, 10))
    both = bidirectional_retrieval(sim)
    assert both["a2b"] == pytest.approx(expected) and both["b2a"] == pytest.approx(expected_t)


@pytest.mark.parametrize("k", [1, 5, 10])
def test_recall_matches_torchmetrics(k):
    n = 20
    sim = torch.randn(n, n, generator=torch.Generator().manual_seed(1))
    indexes = torch.arange(n)[:, None].expand(n, n)
    target = torch.eye(n, dtype=torch.bool)
    ref = RetrievalRecall(top_k=k)(sim.reshape(-1), target.reshape(-1), indexes=indexes.reshape(-1))
    assert retrieval_metrics(sim, ks=(k,))[f"R@{k}"] == pytest.approx(float(ref))


def test_ties_are_optimistic_and_median_averages_middle_ranks():
    sim = torch.zeros(4, 4)  # all tied: every positive ranks first
    assert retrieval_ranks(sim).tolist() == [1, 1, 1, 1]
    sim = torch.tensor([[1.0, 2.0], [0.0, 1.0]])  # ranks [2, 1] -> numpy median 1.5
    assert retrieval_metrics(sim, ks=(1,)) == {"R@1": 0.5, "medR": 1.5}


def test_directions_on_asymmetric_example():
    # sim[image, recipe]; image 0 prefers recipe 1, but recipe 0 still prefers image 0.
    sim = torch.tensor([[0.5, 0.9, 0.0], [0.1, 0.8, 0.0], [0.0, 0.0, 1.0]])
    out = bidirectional_retrieval(sim, ks=(1,), names=("image_to_recipe", "recipe_to_image"))
    # rows: image 0 -> rank 2, image 1 -> 1, image 2 -> 1
    assert out["image_to_recipe"] == {"R@1": pytest.approx(2 / 3), "medR": 1.0}
    # columns: recipe 0 -> 1, recipe 1 -> rank 2 (0.9 from image 0 beats 0.8), recipe 2 -> 1
    assert out["recipe_to_image"] == {"R@1": pytest.approx(2 / 3), "medR": 1.0}
    assert retrieval_ranks(sim).tolist() == [2, 1, 1]
    assert retrieval_ranks(sim.T).tolist() == [1, 2, 1]
    sim2 = torch.tensor([[1.0, 0.0, 0.0], [2.0, 1.0, 0.0], [2.0, 0.0, 1.0]])
    both = bidirectional_retrieval(sim2, ks=(1,))
    # rows rank [1, 2, 2]; columns rank [3, 1, 1]
    assert both["a2b"] == {"R@1": pytest.approx(1 / 3), "medR": 2.0}
    assert both["b2a"] == {"R@1": pytest.approx(2 / 3), "medR": 1.0}


def test_bagged_retrieval_averages_bags():
    g = torch.Generator().manual_seed(0)
    img = torch.randn(50, 8, generator=g)
    txt = img + 0.8 * torch.randn(50, 8, generator=g)
    out = bagged_retrieval(img, txt, bag_size=20, n_bags=3, seed=7, names=("i2t", "t2i"))
    gen = torch.Generator().manual_seed(7)
    acc = {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0, "medR": 0.0}
    imgn, txtn = torch.nn.functional.normalize(img, dim=1), torch.nn.functional.normalize(txt, dim=1)
    for _ in range(3):
        idx = torch.randperm(50, generator=gen)[:20]
        assert len(set(idx.tolist())) == 20
        _, m = _brute(imgn[idx] @ txtn[idx].T, (1, 5, 10))
        for key in acc:
            acc[key] += m[key] / 3
    assert out["i2t"] == pytest.approx(acc)
    full = bagged_retrieval(img, txt, bag_size=50, n_bags=2)
    assert full["image_to_text"] == pytest.approx(retrieval_metrics(imgn @ txtn.T))
    with pytest.raises(ConfigError, match="bag_size=100"):
        bagged_retrieval(img, txt, bag_size=100)


def test_bad_inputs():
    with pytest.raises(DataError, match="square"):
        retrieval_ranks(torch.zeros(3, 4))
    with pytest.raises(DataError, match="NaN"):
        retrieval_ranks(torch.tensor([[float("nan"), 0.0], [0.0, 1.0]]))
    with pytest.raises(ConfigError, match="ks"):
        retrieval_metrics(torch.zeros(2, 2), ks=(0,))
    with pytest.raises(DataError, match="same shape"):
        bagged_retrieval(torch.zeros(5, 3), torch.zeros(4, 3), bag_size=2)


def test_column_queries_without_transpose_equal_the_transposed_matrix_and_std_over_bags():
    from frugalvision.metrics.retrieval import _check_sim, _column_ranks, _row_ranks

    gen = torch.Generator().manual_seed(0)
    sim = torch.randn(40, 40, generator=gen).round(decimals=1)  # ties included
    assert torch.equal(_column_ranks(_check_sim(sim)), _row_ranks(_check_sim(sim.T.contiguous())))
    img, txt = torch.randn(50, 8, generator=gen), torch.randn(50, 8, generator=gen)
    plain = bagged_retrieval(img, txt, bag_size=20, n_bags=4, seed=3)
    spread = bagged_retrieval(img, txt, bag_size=20, n_bags=4, seed=3, with_std=True)
    gen_bags = torch.Generator().manual_seed(3)
    r1 = []
    for _ in range(4):  # brute force: the same bags, metrics per bag, then mean and sample std
        idx = torch.randperm(50, generator=gen_bags)[:20]
        a = torch.nn.functional.normalize(img[idx], dim=1)
        b = torch.nn.functional.normalize(txt[idx], dim=1)
        r1.append(retrieval_metrics(a @ b.T)["R@1"])
    direction = spread["image_to_text"]
    assert direction["R@1"] == pytest.approx(sum(r1) / 4) and direction["R@1_std"] == pytest.approx(
        float(torch.tensor(r1).std())
    )
    assert {k: v for k, v in direction.items() if not k.endswith("_std")} == plain["image_to_text"]


@pytest.mark.parametrize("block_elements", [1, 40, 7 * 33, 10_000])
def test_blocked_ranks_equal_brute_force_in_both_directions(block_elements):
    from frugalvision.metrics.retrieval import _ranks_both_ways

    sim = torch.randn(33, 33, generator=torch.Generator().manual_seed(5)).round(decimals=1)  # ties included
    rows, columns = _ranks_both_ways(sim, block_elements=block_elements)
    assert rows.tolist() == _brute(sim, (1,))[0] and columns.tolist() == _brute(sim.T, (1,))[0]
    assert rows.dtype == columns.dtype == torch.long


def test_finiteness_is_checked_by_one_reduction_without_false_alarms():
    huge = torch.full((3, 3), 3e38)  # finite entries whose sum overflows: checked entry by entry, accepted
    huge.fill_diagonal_(3.3e38)
    assert retrieval_metrics(huge)["R@1"] == 1.0
    for bad in (float("nan"), float("inf"), -float("inf")):
        sim = torch.eye(4)
        sim[1, 2] = bad
        with pytest.raises(DataError, match="NaN or inf"):
            bidirectional_retrieval(sim)
