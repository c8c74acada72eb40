import shutil

import torch

from frugalvision.data.caption_world import caption_world
from frugalvision.engine import Engine, FabricConfig, LoopConfig
from frugalvision.methods.vicha.data import CaptionDataset, CaptionEntry
from frugalvision.methods.vicha.model import ModelConfig, ViCHAModel
from frugalvision.methods.vicha.objectives import ObjectiveConfig
from frugalvision.methods.vicha.task import ViCHATask, retrieval_scores
from frugalvision.methods.vicha.text import WordTokenizer
from frugalvision.metrics import retrieval_metrics

CFG = {
    "vision_width": 32,
    "vision_depth": 3,
    "text_width": 32,
    "text_intermediate": 64,
    "text_layers": 2,
    "fusion_layers": 1,
    "embed_dim": 16,
    "mim_width": 32,
    "dropout": 0.0,
    "hitc_levels": 1,
    "concept_layers": 1,
    "mim": True,
}


def _task():
    world = caption_world(24, seed=0)
    entries = [CaptionEntry(None, s.captions, ("red", "circle", "small")) for s in world.scenes]
    tokenizer = WordTokenizer.fit(c for s in world.scenes for c in s.captions)
    train = CaptionDataset(entries, tokenizer, True, images=world.images, concept_fraction=0.67)
    test = CaptionDataset(entries[:8], tokenizer, False, images=world.images[:8])
    return ViCHATask(
        lambda: ViCHAModel(ModelConfig(vocab_size=len(tokenizer), **CFG)),
        train,
        {"test": test},
        ObjectiveConfig(),
        queue_size=10,
        momentum=0.9,
        alpha=0.4,
        alpha_ramp_steps=3,
    )


def _fit(run_dir, steps, resume=False):
    task = _task()
    loop = LoopConfig(max_steps=steps, batch_size=4, lr=1e-3, ckpt_every=2, log_every=1, ckpt_every_s=0)
    result = Engine(FabricConfig(accelerator="cpu", precision="32-true"), progress=False).fit(
        task, loop, run_dir=run_dir, resume=resume
    )
    return task, result


def test_resume_continues_exactly_momentum_and_queues_included(tmp_path):
    straight, _ = _fit(tmp_path / "a", 4)
    _fit(tmp_path / "b", 4)
    checkpoints = tmp_path / "b" / "checkpoints"  # as if killed right after the step-2 checkpoint
    shutil.rmtree(checkpoints / "step_00000004")
    (checkpoints / "latest").write_text("step_00000002")
    resumed, result = _fit(tmp_path / "b", 4, resume=True)
    assert result.steps == 4
    for key, value in straight.momentum.state_dict().items():
        assert torch.equal(value, resumed.momentum.state_dict()[key]), key
    assert torch.equal(straight.queue.image, resumed.queue.image) and int(straight.queue.pointer) == (4 * 4) % 10
    assert set(result.metrics["test"]) >= {"tr_r1", "ir_r10", "r1_mean"}


def test_alpha_ramps_over_the_first_epoch():
    task = _task()
    assert [task.alpha_at(s) for s in (0, 1, 3, 10)] == [0.0, 0.4 / 3, 0.4, 0.4]


def test_retrieval_scores_agree_with_the_shared_metric():
    g = torch.Generator().manual_seed(0)
    image, text = torch.randn(12, 4, generator=g), torch.randn(12, 4, generator=g)
    scores = retrieval_scores(image, text)
    sim = image @ text.T
    assert scores["tr_r5"] == retrieval_metrics(sim)["R@5"] and scores["ir_r1"] == retrieval_metrics(sim.T)["R@1"]
    assert scores["r1_mean"] == (scores["tr_r1"] + scores["ir_r1"]) / 2
