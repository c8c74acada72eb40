"""Batched fetching and cheap per-step seeding change no number: the same batches, weights and metrics."""

import pytest
import torch
from torch import nn
from torch.utils.data import Subset, TensorDataset, default_collate

import frugalvision.engine.loop as loop_module
from frugalvision.data import ArrayDataset, ImageArrays
from frugalvision.engine import Engine, FabricConfig, GlobalBatchSampler, LoopConfig, seed_everything
from frugalvision.engine.batching import batch_fetcher
from frugalvision.engine.seeding import seed_step
from tests.engine.toy import ToyTask


def _arrays(n=40):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 4, 4), generator=generator, dtype=torch.uint8)
    return ImageArrays(images, torch.arange(n) % 3, ["a", "b", "c"], "toy")


def _flip(image):
    return image.flip(-1) if torch.rand(()) < 0.5 else image


def _same(a, b):
    assert type(a) is type(b) and len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and torch.equal(x, y)


@pytest.mark.parametrize(
    "dataset",
    [
        TensorDataset(torch.randn(30, 5), torch.arange(30)),
        TensorDataset(torch.arange(30)),
        Subset(TensorDataset(torch.randn(30, 5), torch.arange(30)), list(range(29, 0, -2))),
        ArrayDataset(_arrays()),
        Subset(ArrayDataset(_arrays()), [5, 3, 9, 1, 0, 7]),
    ],
    ids=["tensors", "one-tensor", "subset", "arrays", "subset-of-arrays"],
)
def test_a_fetched_batch_is_the_default_collate_of_its_samples(dataset):
    fetch = batch_fetcher(dataset)
    assert fetch is not None
    indices = [4, 0, 2, 2, 5]
    _same(fetch(indices), default_collate([dataset[i] for i in indices]))
    _same(fetch(torch.tensor(indices)), default_collate([dataset[i] for i in indices]))


def test_a_transform_is_applied_per_image_in_order_with_the_same_randomness():
    dataset = ArrayDataset(_arrays(), transform=_flip)
    torch.manual_seed(3)
    expected = default_collate([dataset[i] for i in range(12)])
    torch.manual_seed(3)
    _same(batch_fetcher(dataset)(list(range(12))), expected)


def test_other_datasets_keep_the_dataloader():
    class PerSample(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return index

    assert batch_fetcher(PerSample()) is None and batch_fetcher(Subset(PerSample(), [0, 1])) is None


def test_index_batches_are_the_sampler_batches_as_tensors():
    sampler = GlobalBatchSampler(50, 4, seed=2, rank=1, world_size=2)
    sampler.set_epoch(3, start_batch=2)
    assert [b.tolist() for b in sampler.index_batches()] == list(sampler)


def test_seed_step_gives_the_generators_the_states_seed_everything_gives():
    seed_everything(11)
    expected = (torch.rand(3), torch.get_rng_state())
    seed_step(11)
    _same((torch.rand(3), torch.get_rng_state()), expected)


def _fit(task, monkeypatch, reference: bool, **loop_values):
    """Train once; ``reference`` forces the DataLoader path and the full ``seed_everything`` of every step."""
    if reference:
        monkeypatch.setattr(loop_module, "batch_fetcher", lambda dataset: None)
        monkeypatch.setattr(loop_module, "seed_step", lambda seed, device: seed_everything(seed))
    try:
        engine = Engine(FabricConfig(accelerator="cpu"), progress=False)
        loop = LoopConfig(**{"max_steps": 14, "batch_size": 8, "lr": 0.05, "seed": 4, "eval_every": 5, **loop_values})
        return engine.fit(task, loop)
    finally:
        monkeypatch.undo()


class ArrayTask(ToyTask):
    """The toy MLP (with dropout) on an in-memory image set with a random transform, evaluated on a Subset."""

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))

    def train_dataset(self):
        return ArrayDataset(_arrays(), transform=_flip)

    def eval_datasets(self):
        return {"val": Subset(ArrayDataset(_arrays()), list(range(0, 40, 3)))}


@pytest.mark.parametrize("task", [ToyTask(), ArrayTask()], ids=["tensor-dataset", "array-dataset"])
def test_fast_path_trains_bitwise_like_the_dataloader_path_with_full_reseeding(task, monkeypatch):
    fast = _fit(task, monkeypatch, reference=False, grad_accum=2)
    slow = _fit(task, monkeypatch, reference=True, grad_accum=2)
    assert fast.metrics == slow.metrics and fast.history == slow.history
    for (name, a), b in zip(fast.model.state_dict().items(), slow.model.state_dict().values()):
        assert torch.equal(a, b), name
