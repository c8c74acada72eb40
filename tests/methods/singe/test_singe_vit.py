"""SInGE on a timm ViT: MLP hidden units and attention heads, physically removed through Torch-Pruning."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from frugalvision.methods.singe import functional as fn
from frugalvision.methods.singe import pruning as P
from frugalvision.methods.singe import vit as V
from frugalvision.nn import small_vit

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message="Unwrapped parameters")


def _vit() -> nn.Module:
    torch.manual_seed(0)
    return small_vit(img_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=32, depth=2, num_heads=4).eval()


def _data(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return torch.randn(n, 1, 16, 16, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def _gated(model: nn.Module, removed: dict[str, list[int]], groups: V.VitGroups) -> list:
    """Gate removed MLP units at fc1's output and removed heads at proj's input (independent of the v-row path)."""
    handles = []
    for spec in groups.mlp:
        gate = torch.ones(spec.size)
        gate[removed.get(spec.root, [])] = 0.0
        handles += fn.install_gates(model, spec, gate)
    for spec in groups.heads:
        d = groups.head_dims[spec.root]
        mask = torch.ones(spec.size * d)
        for h in removed.get(spec.root, []):
            mask[h * d : (h + 1) * d] = 0.0
        proj = model.get_submodule(spec.root.replace("qkv", "proj"))
        handles.append(proj.register_forward_pre_hook(lambda _m, args, mask=mask: (args[0] * mask,)))
    return handles


def test_vit_groups_cover_mlp_units_and_heads() -> None:
    model = _vit()
    x, _ = _data()
    groups = V.vit_groups(model, x[:1])
    assert [s.root for s in groups.mlp] == ["blocks.0.mlp.fc1", "blocks.1.mlp.fc1"]
    assert [s.root for s in groups.heads] == ["blocks.0.attn.qkv", "blocks.1.attn.qkv"]
    assert all(s.size == 128 and set(s.consumers) == {s.root.replace("fc1", "fc2")} for s in groups.mlp)
    assert all(s.size == 4 for s in groups.heads)


@pytest.mark.parametrize("criterion", ["ig_norm", "l1"])
def test_pruned_vit_is_smaller_and_equals_the_gated_dense_model(criterion: str, tmp_path) -> None:  # noqa: ANN001
    model = _vit()
    x, y = _data()
    groups = V.vit_groups(model, x[:1])
    result = V.vit_scores(model, x[:1], criterion, [(x, y)], P.CriterionSettings(steps=2), groups=groups)
    assert set(result.scores) == {s.root for s in groups.mlp + groups.heads}
    assert all(model.get_submodule(n).weight.grad is None for n in result.scores)
    keep = V.vit_keep_counts(groups, mlp_ratio=0.5, head_ratio=0.5)
    removed = {
        root: sorted(torch.argsort(s, stable=True)[: len(s) - keep[root]].tolist()) for root, s in result.scores.items()
    }
    gated = copy.deepcopy(model)
    handles = _gated(gated, removed, groups)
    with torch.no_grad():
        expected = gated(x)
    for handle in handles:
        handle.remove()
    pruned = copy.deepcopy(model)
    dense_params = sum(p.numel() for p in model.parameters())
    history = V.prune_vit(pruned, x[:1], result.scores, keep)
    assert sum(p.numel() for p in pruned.parameters()) < 0.75 * dense_params
    block = pruned.blocks[0]
    assert block.mlp.fc1.out_features == 64 and block.mlp.fc2.in_features == 64
    assert block.attn.num_heads == 2 and block.attn.qkv.out_features == 48 and block.attn.proj.in_features == 16
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), expected, rtol=1e-5, atol=1e-5)
    plan = P.PruningPlan(
        "small_vit",
        {
            "img_size": 16,
            "patch_size": 4,
            "in_chans": 1,
            "num_classes": 10,
            "embed_dim": 32,
            "depth": 2,
            "num_heads": 4,
        },
        [1, 1, 16, 16],
        history,
    )
    P.save_pruned(pruned, plan, tmp_path / "vit")
    reloaded = P.load_pruned(tmp_path / "vit").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), expected, rtol=1e-5, atol=1e-5)


def test_vit_head_path_completeness() -> None:
    model = _vit()
    x, y = _data()
    spec = V.vit_groups(model, x[:1], mlp=False).heads[0]
    result = fn.integrate_group(model, spec, [(x, y)], torch.nn.functional.cross_entropy, steps=64, scope="neuron")
    ones = torch.ones(spec.size, dtype=torch.float64)
    intact = fn.loss_with_gate(model, spec, ones, [(x, y)], torch.nn.functional.cross_entropy)
    for h in range(spec.size):
        gate = ones.clone()
        gate[h] = 0.0
        removed = fn.loss_with_gate(model, spec, gate, [(x, y)], torch.nn.functional.cross_entropy)
        assert abs(result.ig_signed[h].item() - (removed - intact)) < 1e-3 * max(1.0, abs(removed - intact))
