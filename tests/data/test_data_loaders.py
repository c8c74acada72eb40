import torch
from torch.utils.data import Dataset, TensorDataset

from frugalvision.data import default_num_workers, make_loader


class _Noisy(Dataset):
    """Items carry torch randomness, as a random augmentation would."""

    def __len__(self):
        return 12

    def __getitem__(self, i):
        return i, torch.rand(())


def _order(loader):
    return [b[0].tolist() for b in loader]


def test_same_seed_same_order_every_epoch():
    ds = TensorDataset(torch.arange(50))
    a, b = make_loader(ds, 8, shuffle=True, seed=3), make_loader(ds, 8, shuffle=True, seed=3)
    assert _order(a) == _order(b) and _order(a) == _order(b)  # epoch 1 and epoch 2 both match
    assert _order(make_loader(ds, 8, shuffle=True, seed=4)) != _order(make_loader(ds, 8, shuffle=True, seed=3))
    first = _order(make_loader(ds, 8, shuffle=True, seed=3))
    assert sorted(sum(first, [])) == list(range(50))


def test_no_shuffle_and_drop_last():
    ds = TensorDataset(torch.arange(10))
    batches = _order(make_loader(ds, 4, shuffle=False, seed=0, drop_last=True))
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_worker_randomness_is_reproducible():
    run = [[(i.tolist(), r.tolist()) for i, r in make_loader(_Noisy(), 4, shuffle=True, seed=7, num_workers=1)]
           for _ in range(2)]  # fmt: skip
    assert run[0] == run[1]


def test_default_num_workers(monkeypatch):
    monkeypatch.setenv("FRUGALVISION_NUM_WORKERS", "3")
    assert default_num_workers() == 3
    monkeypatch.delenv("FRUGALVISION_NUM_WORKERS")
    assert 0 <= default_num_workers() <= 8


def _plain_loader(dataset, batch_size, shuffle, seed, drop_last=False, num_workers=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, generator=generator,
        num_workers=num_workers,
    )  # fmt: skip


def test_in_memory_sets_are_fetched_a_batch_at_a_time_with_the_same_batches(monkeypatch):
    from frugalvision.data import ArrayDataset, ImageArrays

    images = torch.randint(0, 256, (37, 1, 3, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    arrays = ArrayDataset(ImageArrays(images, torch.arange(37) % 4, list("abcd"), "toy"))
    calls = []
    monkeypatch.setattr(ArrayDataset, "__getitem__", lambda self, i: calls.append(i) or (images[i].float() / 255, 0))
    for shuffle, drop_last, workers in [(True, False, 0), (False, True, 0), (True, True, 1)]:
        batched = list(make_loader(arrays, 8, shuffle=shuffle, seed=5, drop_last=drop_last, num_workers=workers))
        monkeypatch.undo()
        plain = list(_plain_loader(arrays, 8, shuffle, 5, drop_last, workers))
        assert len(batched) == len(plain) and calls == []  # no per-sample reads on the batched path
        for (x, y), (u, v) in zip(batched, plain):
            assert torch.equal(x, u) and torch.equal(y, v) and y.dtype == v.dtype
        monkeypatch.setattr(ArrayDataset, "__getitem__", lambda self, i: calls.append(i) or (images[i], 0))
    tensors = TensorDataset(torch.arange(23))
    assert [b[0].tolist() for b in make_loader(tensors, 5, shuffle=True, seed=1)] == [
        b[0].tolist() for b in _plain_loader(tensors, 5, True, 1)
    ]
