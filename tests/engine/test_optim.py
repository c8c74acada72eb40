import copy

import pytest
import torch
from torch import nn

from frugalvision.engine import Engine, FabricConfig, LoopConfig, warmup_cosine_lr
from frugalvision.engine.optim import CompositeOptimizer
from frugalvision.engine.schedule import set_lr
from frugalvision.errors import ConfigError
from tests.engine.toy import ToyTask


class TwoPartTask(ToyTask):
    """The toy MLP with its first layer on SGD and its head on Adam at a third of the scheduled rate."""

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(self.dim, 16), nn.Tanh(), nn.Linear(16, self.classes))

    def build_optimizer(self, model, loop):
        body = torch.optim.SGD(model[0].parameters(), lr=loop.lr, momentum=0.9)
        head = torch.optim.Adam([{"params": model[2].parameters(), "lr_scale": 1 / 3}], betas=(0.9, 0.99))
        return CompositeOptimizer({"body": body, "head": head})


def _loop(**kw):
    return LoopConfig(**{"max_steps": 8, "batch_size": 16, "lr": 0.05, "schedule": "poly", "seed": 4, **kw})


def test_poly_and_step_schedules_match_their_closed_forms():
    assert warmup_cosine_lr(30, max_steps=100, lr=2.0, schedule="poly", poly_power=0.9) == pytest.approx(2.0 * 0.7**0.9)
    kwargs = dict(max_steps=100, lr=1.0, schedule="step", milestones=(10, 20), gamma=0.1)
    assert [warmup_cosine_lr(s, **kwargs) for s in (9, 10, 19, 20, 99)] == pytest.approx([1, 0.1, 0.1, 0.01, 0.01])
    with pytest.raises(ConfigError, match="milestones"):
        LoopConfig(schedule="step", milestones=(20, 10)).validate()


def test_composite_optimizer_equals_two_optimizers_stepped_by_hand():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    twin = copy.deepcopy(model)
    composite = TwoPartTask().build_optimizer(model, _loop())
    body = torch.optim.SGD(twin[0].parameters(), lr=0.05, momentum=0.9)
    head = torch.optim.Adam(twin[2].parameters(), betas=(0.9, 0.99))
    for step in range(5):
        lr = warmup_cosine_lr(step, max_steps=5, lr=0.05, schedule="poly")
        set_lr(composite, lr)
        body.param_groups[0]["lr"], head.param_groups[0]["lr"] = lr, lr / 3
        x = torch.randn(6, 4)
        for net, optimizers in ((model, [composite]), (twin, [body, head])):
            for optimizer in optimizers:
                optimizer.zero_grad()
            net(x).square().mean().backward()
            for optimizer in optimizers:
                optimizer.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_composite_optimizer_trains_in_the_engine_and_resumes_exactly(tmp_path):
    def fit(max_steps, run_dir=None, resume=False):
        engine = Engine(FabricConfig(accelerator="cpu"), progress=False)
        return engine.fit(TwoPartTask(), _loop(max_steps=max_steps, schedule="constant"), run_dir, resume)

    straight = fit(8)
    fit(4, tmp_path)
    resumed = fit(8, tmp_path, resume=True)
    assert resumed.steps == 8
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    before = fit(0 + 1).model.state_dict()["2.weight"]
    assert not torch.equal(before, straight.model.state_dict()["2.weight"])


def test_composite_optimizer_refuses_shared_parameters():
    layer = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="shares parameters"):
        CompositeOptimizer({"a": torch.optim.SGD(layer.parameters(), lr=1), "b": torch.optim.Adam(layer.parameters())})
