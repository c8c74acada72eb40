"""Two gloo processes on CPU: T-Food's losses on the gathered global batch equal one process's, gradients included."""

import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from frugalvision.engine import gather_global_batch, load_weights, save_weights
from frugalvision.methods.tfood.data import class_pair_order
from frugalvision.methods.tfood.model import ImageEncoderConfig, RecipeEncoderConfig, TFoodModel
from frugalvision.methods.tfood.task import LossConfig, TFoodTask

pytestmark = pytest.mark.distributed

WORLD = 2
VOCAB = 30


def _model():
    torch.manual_seed(0)
    recipe = RecipeEncoderConfig(vocab_size=VOCAB, width=16, heads=2, layers=1, htd_layers=1, ffn=32, dropout=0.0)
    image = ImageEncoderConfig(img_size=16, patch_size=8, width=16, depth=1, heads=2)
    return TFoodModel(image, recipe, embed_dim=12, mmr_width=0)


def _global_batch():
    """A class-pair global batch of 12 (half background, then same-class pairs that the sampler splits by rank)."""
    gen = torch.Generator().manual_seed(1)
    labels = torch.tensor([0] * 12 + [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6])
    idx = class_pair_order(labels, 12, 0.5)(0, 0)[:12]
    n = len(labels)
    images = torch.rand(n, 3, 16, 16, generator=gen)
    title = torch.randint(4, VOCAB, (n, 5), generator=gen)
    ingredients = torch.randint(4, VOCAB, (n, 3, 4), generator=gen)
    ingredients[:, 2, 2:] = 0
    instructions = torch.randint(4, VOCAB, (n, 2, 6), generator=gen)
    return tuple(t[idx] for t in (images, title, ingredients, instructions, labels, torch.arange(n)))


def _task(semantic_weight=0.1, margin_mode="incremental", freeze_image_steps=0):
    loss = LossConfig(margin_mode=margin_mode, semantic_weight=semantic_weight, itm_weight=0.0)
    return TFoodTask(_model, None, None, loss, steps_per_epoch=2, freeze_image_steps=freeze_image_steps)


def _loss_and_grads(model, task, batch):
    loss, logs = task.training_step(model, batch, step=3)
    loss.backward()
    plain = getattr(model, "module", model)
    return loss.detach(), logs, {n: p.grad.clone() for n, p in plain.named_parameters() if p.grad is not None}


MODES = ("incremental", "adaptive", "frozen")


def _mode_task(mode):
    if mode == "frozen":  # image encoder still frozen at step 3: exact zero gradients under DDP, none in one process
        return _task(freeze_image_steps=5)
    return _task(margin_mode=mode)


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        batch = _global_batch()
        local = tuple(t[rank::WORLD] for t in batch)  # what the engine's sampler gives this rank
        (order,) = gather_global_batch(torch.arange(12)[rank::WORLD])
        for mode in MODES:
            model = DistributedDataParallel(_model())
            loss, _, grads = _loss_and_grads(model, _mode_task(mode), local)
            out = Path(out_dir) / f"{mode}-rank{rank}.safetensors"
            save_weights({"loss": loss.reshape(1), "order": order, **grads}, out)
    finally:
        dist.destroy_process_group()


def test_two_process_loss_and_gradients_equal_one_process_with_the_global_batch(tmp_path):
    # fork: the children reuse the imported modules (a spawn re-imports torch, Lightning, timm: ~20 s per process)
    method = "fork" if sys.platform == "linux" else "spawn"
    mp.start_processes(_worker, (str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, start_method=method)
    batch = _global_batch()
    for mode in MODES:
        task = _mode_task(mode)
        loss, logs, grads = _loss_and_grads(_model(), task, batch)
        assert logs["loss_sirr"] > 0 and logs["loss_srii"] > 0  # the semantic triplets are active
        for rank in range(WORLD):
            got = load_weights(tmp_path / f"{mode}-rank{rank}.safetensors")
            assert torch.equal(got["order"], torch.arange(12))
            torch.testing.assert_close(got["loss"][0], loss, rtol=1e-6, atol=1e-7)
            if mode == "frozen":
                image = {k for k in got if k.startswith("image_encoder.")}
                assert image and not image & set(grads) and all(not got[k].any() for k in image)
                got = {k: v for k, v in got.items() if k not in image}
            assert set(got) - {"loss", "order"} == set(grads)
            for name, grad in grads.items():
                torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-7, msg=lambda m, n=name: f"{n}: {m}")
        # the test can fail: one rank's half batch alone gives another loss
        half, _, _ = _loss_and_grads(_model(), task, tuple(t[0::WORLD] for t in batch))
        assert not torch.allclose(half, loss, atol=1e-4)


class _SGDTask(TFoodTask):
    """SGD instead of Adam: Adam turns the float noise of exactly-zero gradients (key biases) into full steps."""

    def build_optimizer(self, model, loop):
        return torch.optim.SGD(model.parameters(), lr=loop.lr, momentum=0.9)


def _engine_run(engine, data_root, out_dir, batch_size):
    from frugalvision.engine import LoopConfig
    from frugalvision.methods.tfood.data import RecipeImageDataset, load_recipe1m
    from frugalvision.methods.tfood.text import WordTokenizer

    torch.set_num_threads(1)
    recipes, _ = load_recipe1m(data_root)
    train = [r for r in recipes if r.partition == "train"]
    tok = WordTokenizer.fit(t for r in train for t in (r.title, *r.ingredients, *r.instructions))
    dataset = RecipeImageDataset(train, tok, 16, train=False)  # no random image choice or flip: same data per rank

    def build():
        recipe = RecipeEncoderConfig(vocab_size=len(tok), width=16, heads=2, layers=1, htd_layers=1, ffn=32, dropout=0)
        image = ImageEncoderConfig(img_size=16, patch_size=8, width=16, depth=1, heads=2)
        return TFoodModel(image, recipe, embed_dim=12, mmr_width=0)

    loss = LossConfig(semantic_weight=0.1, itm_weight=0.0)
    task = _SGDTask(build, dataset, None, loss, steps_per_epoch=2, batch_size=batch_size)
    loop = LoopConfig(max_steps=3, batch_size=batch_size, lr=0.1, weight_decay=0.0, warmup_steps=0, seed=3)
    result = engine.fit(task, loop)
    save_weights(result.model.state_dict(), Path(out_dir) / f"engine-rank{engine.rank}.safetensors")


@pytest.mark.slow
def test_engine_ddp_training_equals_one_process_with_the_global_batch(tmp_path):
    from frugalvision.engine import Engine, FabricConfig
    from frugalvision.methods.tfood.data import write_mini_recipe1m

    write_mini_recipe1m(tmp_path / "data", num_recipes=120, image_size=16, seed=2)
    ddp = Engine(FabricConfig(accelerator="cpu", devices="2", strategy="ddp_spawn"), progress=False)
    ddp.launch(_engine_run, str(tmp_path / "data"), str(tmp_path), 6)
    single_dir = tmp_path / "single"
    single_dir.mkdir()
    _engine_run(Engine(FabricConfig(accelerator="cpu"), progress=False), str(tmp_path / "data"), str(single_dir), 12)
    single = load_weights(single_dir / "engine-rank0.safetensors")
    for rank in range(WORLD):
        got = load_weights(tmp_path / f"engine-rank{rank}.safetensors")
        for key, value in single.items():
            torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-5, msg=lambda m, k=key: f"{k}: {m}")
