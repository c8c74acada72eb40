"""Fidelity tests of the SInGE criterion (spec §7: completeness, Taylor at K = 1, gate 0 = removal, BN folding)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch_pruning as tp
from torch import nn
from torch.nn import functional as F

from frugalvision.methods.singe import functional as fn
from frugalvision.methods.singe import pruning as P
from frugalvision.nn import cifar_resnet

torch.set_num_threads(1)


def _resnet8(width: int = 8, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = cifar_resnet(8, width, 1, 10)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.3, 0.3)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    return model.eval()


def _data(n: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 16, 16, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def _specs(model: nn.Module, example: torch.Tensor) -> tuple[tp.DependencyGraph, dict[str, fn.GroupSpec]]:
    graph = P.build_graph(model, example)
    groups = P.graph_groups(graph, P.default_ignored(model))
    return graph, {s.root: s for s in (P.group_spec(graph, g) for g in groups)}


def test_path_points_weights_sum_to_one_and_rules() -> None:
    for rule in ("trapezoid", "midpoint", "right"):
        points, weights = fn.path_points(4, rule)
        assert weights.sum().item() == pytest.approx(1.0)
        assert points.min() >= 0 and points.max() <= 1
    points, weights = fn.path_points(2, "trapezoid")
    assert points.tolist() == [0.0, 0.5, 1.0] and weights.tolist() == [0.25, 0.5, 0.25]


def test_completeness_closed_form_quadratic() -> None:
    """Linear net + MSE: L(g) is quadratic, so the trapezoid integral is exact for every K."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 3)).eval()
    spec = fn.GroupSpec(root="0", size=4, producers={"0": fn.IndexMap(torch.arange(4), torch.arange(4))})
    x, y = torch.randn(32, 5), torch.randn(32, 3)
    batches = [(x[:20], y[:20]), (x[20:], y[20:])]
    loss = F.mse_loss
    ones = torch.ones(4, dtype=torch.float64)
    intact = fn.loss_with_gate(model, spec, ones, batches, loss)
    for steps in (1, 2, 5):
        neuron = fn.integrate_group(model, spec, batches, loss, steps=steps, scope="neuron")
        for c in range(4):
            gate = ones.clone()
            gate[c] = 0
            removed = fn.loss_with_gate(model, spec, gate, batches, loss)
            assert neuron.ig_signed[c].item() == pytest.approx(removed - intact, abs=1e-6)
        layer = fn.integrate_group(model, spec, batches, loss, steps=steps, scope="layer")
        off = fn.loss_with_gate(model, spec, torch.zeros(4, dtype=torch.float64), batches, loss)
        assert layer.ig_signed.sum().item() == pytest.approx(off - intact, abs=1e-6)


def test_completeness_resnet_error_shrinks_with_k() -> None:
    model = _resnet8()
    x, y = _data()
    batches = [(x, y)]
    graph, specs = _specs(model, x[:2])
    folded = P.fold_batchnorms_of(model, graph)
    spec = specs["stem.0"]  # residual-stream group
    ones = torch.ones(spec.size, dtype=torch.float64)
    intact = fn.loss_with_gate(folded, spec, ones, batches, F.cross_entropy)
    gate = ones.clone()
    gate[0] = 0
    target = fn.loss_with_gate(folded, spec, gate, batches, F.cross_entropy) - intact
    errors = []
    for steps in (8, 32, 256):
        result = fn.integrate_group(folded, spec, batches, F.cross_entropy, steps=steps, scope="neuron", channels=[0])
        errors.append(abs(result.ig_signed[0].item() - target))
        # per-weight completeness: the integrated gradients of a channel's weights sum to −S_A
        assert result.ig_weight_sum[0].item() == pytest.approx(-result.ig_signed[0].item(), abs=1e-9)
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-2 * abs(target)
    off = fn.loss_with_gate(folded, spec, torch.zeros_like(ones), batches, F.cross_entropy) - intact
    layer = fn.integrate_group(folded, spec, batches, F.cross_entropy, steps=256, scope="layer")
    assert abs(layer.ig_signed.sum().item() - off) < 1e-2 * abs(off)


def _chain() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, bias=False),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, bias=False),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).eval()


def test_k1_right_rule_equals_torch_pruning_taylor() -> None:
    model = _chain()
    x, y = torch.randn(8, 1, 10, 10), torch.randint(0, 3, (8,))
    graph = P.build_graph(model, x[:1])
    groups = P.graph_groups(graph, [model[6]])
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    plain = tp.importance.GroupTaylorImportance(group_reduction="first", normalizer=None)
    multi = tp.importance.GroupTaylorImportance(group_reduction="first", normalizer=None, multivariable=True)
    expected = {graph._module2name[g[0].dep.target.module]: (plain(g), multi(g)) for g in groups}
    model.zero_grad(set_to_none=True)
    settings = P.CriterionSettings(steps=1, rule="right", p=1)
    gate = P.CriterionSettings(steps=1, rule="right", p=1, granularity="gate")
    for criterion in ("ig_norm", "taylor_path"):
        scores = P.compute_scores(model, x[:1], criterion, [(x, y)], settings).scores
        for root, (reference, _) in expected.items():
            torch.testing.assert_close(scores[root].float(), reference, rtol=1e-5, atol=1e-8)
    scores = P.compute_scores(model, x[:1], "taylor_path", [(x, y)], gate).scores
    for root, (_, reference) in expected.items():
        torch.testing.assert_close(scores[root].float(), reference, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("root", ["layers.1.conv1", "stem.0"])
def test_gate_zero_equals_torch_pruning_removal(root: str) -> None:
    model = _resnet8()
    x, _ = _data()
    _, specs = _specs(model, x[:2])
    removed = [1, 3, 4]
    gate = torch.ones(specs[root].size)
    gate[removed] = 0
    handles = fn.install_gates(model, specs[root], gate)
    with torch.no_grad():
        gated = model(x)
    for handle in handles:
        handle.remove()
    pruned = copy.deepcopy(model)
    graph = P.build_graph(pruned, x[:2])
    module = pruned.get_submodule(root)
    graph.get_pruning_group(module, tp.prune_conv_out_channels, removed).prune()
    assert pruned.get_submodule(root).out_channels == specs[root].size - len(removed)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), gated, atol=1e-5, rtol=1e-5)


def test_bn_folding_matches_eval_logits_and_torch_fusion() -> None:
    model = _resnet8()
    x, _ = _data()
    folded = P.fold_batchnorms_of(model, example_inputs=x[:2])
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)
    reference = torch.nn.utils.fusion.fuse_conv_bn_eval(model.layers[0].conv1, model.layers[0].bn1)
    torch.testing.assert_close(folded.layers[0].conv1.weight, reference.weight)
    torch.testing.assert_close(folded.layers[0].conv1.bias, reference.bias)


def test_oracle_equals_brute_force_pruning() -> None:
    model = _resnet8()
    x, y = _data()
    scores = P.compute_scores(model, x[:2], "oracle", [(x, y)]).scores
    with torch.no_grad():
        intact = F.cross_entropy(model(x), y).item()
    for root in ("layers.0.conv1", "stem.0"):
        for c in range(0, 8, 3):
            pruned = copy.deepcopy(model)
            graph = P.build_graph(pruned, x[:2])
            graph.get_pruning_group(pruned.get_submodule(root), tp.prune_conv_out_channels, [c]).prune()
            with torch.no_grad():
                loss = F.cross_entropy(pruned(x), y).item()
            assert scores[root][c].item() == pytest.approx(loss - intact, abs=1e-5)


@pytest.mark.parametrize("p", [1, 2])
def test_magnitude_selects_same_channels_as_torch_pruning(p: int) -> None:
    model = _resnet8(width=16)
    x, y = _data()
    graph, specs = _specs(model, x[:2])
    ours = P.compute_scores(model, x[:2], f"l{p}", [(x, y)]).scores
    bn_ours = P.compute_scores(model, x[:2], "bn_scale", [(x, y)]).scores
    reference = tp.importance.GroupMagnitudeImportance(p=p, group_reduction="mean", normalizer=None)
    bn_reference = tp.importance.BNScaleImportance(normalizer=None)
    for group in P.graph_groups(graph, P.default_ignored(model)):
        root = graph._module2name[group[0].dep.target.module]
        expected = reference(group).double()
        torch.testing.assert_close(ours[root], expected, rtol=1e-5, atol=1e-7)
        k = specs[root].size // 3
        assert set(torch.argsort(ours[root])[:k].tolist()) == set(torch.argsort(expected)[:k].tolist())
        torch.testing.assert_close(bn_ours[root], bn_reference(group).double(), rtol=1e-5, atol=1e-7)


def test_scores_fp32_eval_mode_deterministic_and_no_grad_left() -> None:
    model = _resnet8()
    x, y = _data()
    settings = P.CriterionSettings(steps=2)
    reference = P.compute_scores(model, x[:2], "ig_norm", [(x, y)], settings).scores
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        again = P.compute_scores(model, x[:2], "ig_norm", [(x, y)], settings).scores
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    perm = torch.randperm(len(x))
    shuffled = P.compute_scores(
        model, x[:2], "ig_norm", [(x[perm][:7], y[perm][:7]), (x[perm][7:], y[perm][7:])], settings
    ).scores
    for root in reference:
        torch.testing.assert_close(again[root], reference[root], rtol=0, atol=0)
        torch.testing.assert_close(shuffled[root], reference[root], rtol=1e-5, atol=1e-9)
    P.compute_scores(model, x[:2], "taylor_tp", [(x, y)])
    assert all(p.grad is None for p in model.parameters())


def _variation_brute_force(
    folded: nn.Module, spec: fn.GroupSpec, x: torch.Tensor, y: torch.Tensor, steps: int, rule: str, scope: str, p: float
) -> torch.Tensor:
    """Σ_k ω_k ‖∇_{φ_c} L(μ_k) − ∇_{φ_c} L(1)‖_p by editing the weights of a copy, one point and channel at a time."""
    points, weights = fn.path_points(steps, rule)  # type: ignore[arg-type]

    def channel_grads(gate: torch.Tensor) -> dict[int, torch.Tensor]:
        model = copy.deepcopy(folded)
        params = []
        with torch.no_grad():
            for name, imap in spec.producers.items():
                module = model.get_submodule(name)
                for c, index in zip(imap.root.tolist(), imap.index.tolist(), strict=True):
                    module.weight[index] *= float(gate[c])
                    module.bias[index] *= float(gate[c])
                params += [module.weight, module.bias]
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), params)
        out: dict[int, list[torch.Tensor]] = {}
        for k, imap in enumerate(spec.producers.values()):
            gw, gb = grads[2 * k], grads[2 * k + 1]
            for c, index in zip(imap.root.tolist(), imap.index.tolist(), strict=True):
                out.setdefault(c, []).extend([gw[index].flatten(), gb[index].view(1)])
        return {c: torch.cat(parts).double() for c, parts in out.items()}

    ones = torch.ones(spec.size)
    reference = channel_grads(ones)
    scores = torch.zeros(spec.size, dtype=torch.float64)
    for mu, omega in zip(points.tolist(), weights.tolist(), strict=True):
        layer_grads = channel_grads(ones * mu) if scope == "layer" else None
        for c in range(spec.size):
            if layer_grads is None:
                gate = ones.clone()
                gate[c] = mu
                grads = channel_grads(gate)[c]
            else:
                grads = layer_grads[c]
            scores[c] += omega * (grads - reference[c]).abs().pow(p).sum().pow(1.0 / p)
    return scores


@pytest.mark.parametrize(
    ("root", "scope", "rule", "p"),
    [("stem.0", "layer", "trapezoid", 1.0), ("layers.1.conv1", "neuron", "midpoint", 2.0)],
)
def test_gradient_variation_equals_brute_force_loop(root: str, scope: str, rule: str, p: float) -> None:
    model = _resnet8(width=4)
    x, y = _data(8)
    graph, specs = _specs(model, x[:2])
    folded = P.fold_batchnorms_of(model, graph)
    spec = specs[root]
    result = fn.integrate_group(folded, spec, [(x, y)], F.cross_entropy, steps=3, rule=rule, scope=scope, p=p)  # type: ignore[arg-type]
    expected = _variation_brute_force(folded, spec, x, y, 3, rule, scope, p)
    torch.testing.assert_close(result.ig_variation, expected, rtol=1e-4, atol=1e-9)
    assert (result.ig_variation > 0).all()
    variants, _, _ = P.compute_path_variants(
        model, x[:2], [(x, y)], P.CriterionSettings(steps=3, rule=rule, scope=scope, p=p)
    )
    torch.testing.assert_close(variants["ig_variation"][root], expected, rtol=1e-4, atol=1e-9)


# The two groups of a CIFAR ResNet-8 written out by hand (independent of Torch-Pruning's graph): the layers whose output
# channels the group removes, and the layers whose input channels it removes (BatchNorms listed separately).
_GROUP_LAYERS = {
    "stem.0": (["stem.0", "layers.0.conv2"], ["layers.0.conv1", "layers.1.conv1", "layers.1.shortcut.0"]),
    "layers.1.conv1": (["layers.1.conv1"], ["layers.1.conv2"]),
}
_GROUP_NORMS = {"stem.0": ["stem.1", "layers.0.bn2"], "layers.1.conv1": ["layers.1.bn1"]}


def _channel_slices(model: nn.Module, root: str) -> list[torch.Tensor]:
    """Per layer of the group, one row per channel: output filters, then input columns (flattened)."""
    outs, ins = _GROUP_LAYERS[root]
    slices = [model.get_submodule(n).weight.detach().flatten(1) for n in outs]
    return slices + [model.get_submodule(n).weight.detach().transpose(0, 1).flatten(1) for n in ins]


def test_fpgm_scores_equal_the_geometric_median_distances_written_out() -> None:
    """FPGM (He et al. 2019): a channel's score is its summed distance to the other channels of the layer; Torch-
    Pruning measures the distance between |w|^p rows (not the raw filters) and averages over the group's layers."""
    model = _resnet8(width=8)
    x, _ = _data()
    scores = P.compute_scores(model, x[:1], "fpgm_tp", []).scores
    for root in _GROUP_LAYERS:
        per_layer = []
        for rows in _channel_slices(model, root):
            powered = rows.abs().pow(2).double()
            count = len(powered)
            distances = [[float((powered[i] - powered[j]).norm()) for j in range(count)] for i in range(count)]
            per_layer.append(torch.tensor([sum(row) for row in distances], dtype=torch.float64))
        torch.testing.assert_close(scores[root], torch.stack(per_layer).mean(0), rtol=1e-4, atol=1e-6)


def test_lamp_scores_equal_the_lamp_normalisation_written_out() -> None:
    """LAMP (Lee et al. 2021): s_u / sum of the scores >= s_u, on the group L2 magnitude (sum of squares of the
    channel's rows in every layer and its BN scale, averaged over the group's layers)."""
    model = _resnet8(width=8)
    x, _ = _data()
    scores = P.compute_scores(model, x[:1], "lamp_tp", []).scores
    for root in _GROUP_LAYERS:
        parts = [rows.pow(2).sum(1).double() for rows in _channel_slices(model, root)]
        parts += [model.get_submodule(n).weight.detach().pow(2).double() for n in _GROUP_NORMS[root]]
        magnitude = torch.stack(parts).mean(0)
        expected = torch.tensor([float(m / magnitude[magnitude >= m].sum()) for m in magnitude], dtype=torch.float64)
        torch.testing.assert_close(scores[root], expected, rtol=1e-4, atol=1e-7)
        # inside one group LAMP ranks like the magnitude: it matters only for global pruning
        assert torch.equal(torch.argsort(scores[root]), torch.argsort(magnitude))


# ---------------------------------------------------------------------------------------------- K > 1 references
# The groups of a CIFAR ResNet-8, written out by hand (independent of Torch-Pruning's graph): producer conv -> its BN.
_PRODUCERS = {
    "stem.0": {"stem.0": "stem.1", "layers.0.conv2": "layers.0.bn2"},  # stage-1 residual stream
    "layers.1.conv1": {"layers.1.conv1": "layers.1.bn1"},  # inner channel of block 1
}


def _folded_copy(model: nn.Module) -> nn.Module:
    """Every conv -> BN pair of the ResNet-8 folded with torch's own ``fuse_conv_bn_eval`` (not our folding)."""
    folded = copy.deepcopy(model).eval()
    pairs = [("stem.0", "stem.1")]
    for index, block in enumerate(folded.layers):
        pairs += [(f"layers.{index}.conv1", f"layers.{index}.bn1"), (f"layers.{index}.conv2", f"layers.{index}.bn2")]
        if isinstance(block.shortcut, nn.Sequential):
            pairs.append((f"layers.{index}.shortcut.0", f"layers.{index}.shortcut.1"))
    for conv_name, bn_name in pairs:
        fused = torch.nn.utils.fusion.fuse_conv_bn_eval(folded.get_submodule(conv_name), folded.get_submodule(bn_name))
        for name, replacement in ((conv_name, fused), (bn_name, nn.Identity())):
            parent, _, attr = name.rpartition(".")
            setattr(folded.get_submodule(parent), attr, replacement)
    return folded.requires_grad_(True)


def _rows_of(model: nn.Module, producers: list[str], channel: int, grad: bool = False) -> torch.Tensor:
    """Weight row and bias of one channel in every producer, concatenated (or their gradients)."""
    parts = []
    for name in producers:
        module = model.get_submodule(name)
        weight, bias = (module.weight.grad, module.bias.grad) if grad else (module.weight, module.bias)
        parts += [weight[channel].flatten(), bias[channel : channel + 1]]
    return torch.cat(parts).detach().double()


def _weight_path_reference(
    model: nn.Module, root: str, x: torch.Tensor, y: torch.Tensor, steps: int, rule: str, scope: str, p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ig_norm, taylor_path) by brute force: scale the folded rows of a copy, backward, one point at a time."""
    folded = _folded_copy(model)
    producers = list(_PRODUCERS[root])
    size = folded.get_submodule(producers[0]).out_channels
    phi = {c: _rows_of(folded, producers, c) for c in range(size)}

    def channel_grads(gate: torch.Tensor) -> dict[int, torch.Tensor]:
        edited = copy.deepcopy(folded)
        with torch.no_grad():
            for name in producers:
                module = edited.get_submodule(name)
                module.weight.mul_(gate.view(-1, 1, 1, 1))
                module.bias.mul_(gate)
        edited.zero_grad()
        F.cross_entropy(edited(x), y).backward()
        return {c: _rows_of(edited, producers, c, grad=True) for c in range(size)}

    points, weights = fn.path_points(steps, rule)  # type: ignore[arg-type]
    integrated = {c: torch.zeros_like(phi[c]) for c in range(size)}
    taylor = torch.zeros(size, dtype=torch.float64)
    for mu, omega in zip(points.tolist(), weights.tolist(), strict=True):
        layer = channel_grads(torch.full((size,), mu)) if scope == "layer" else None
        for c in range(size):
            if layer is None:
                gate = torch.ones(size)
                gate[c] = mu
                grads = channel_grads(gate)[c]
            else:
                grads = layer[c]
            integrated[c] += omega * grads
            taylor[c] += omega * (mu * phi[c] * grads).abs().pow(p).sum().pow(1.0 / p)
    ig_norm = torch.stack([(phi[c] * integrated[c]).abs().pow(p).sum().pow(1.0 / p) for c in range(size)])
    return ig_norm, taylor


def _gate_path_reference(model: nn.Module, root: str, x: torch.Tensor, y: torch.Tensor, steps: int) -> torch.Tensor:
    """Σ_k ω_k |μ_k ∂L/∂g_c(μ_k)| (layer scope, trapezoid) with a gate multiplied after each BN by plain hooks."""
    sites = list(_PRODUCERS[root].values())
    size = model.get_submodule(sites[0]).num_features
    points, weights = fn.path_points(steps, "trapezoid")
    scores = torch.zeros(size, dtype=torch.float64)
    for mu, omega in zip(points.tolist(), weights.tolist(), strict=True):
        gate = torch.full((size,), mu, requires_grad=True)
        handles = [
            model.get_submodule(s).register_forward_hook(lambda _m, _i, out, g=gate: out * g.view(1, -1, 1, 1))
            for s in sites
        ]
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), [gate])
        for handle in handles:
            handle.remove()
        scores += omega * (mu * grad.double()).abs()
    return scores


@pytest.mark.parametrize(
    ("root", "scope", "rule", "p", "steps"),
    [
        ("stem.0", "layer", "trapezoid", 1.0, 4),
        ("layers.1.conv1", "layer", "midpoint", 2.0, 3),
        ("layers.1.conv1", "neuron", "trapezoid", 1.0, 3),
    ],
)
def test_ig_norm_and_taylor_path_at_k_above_one_equal_a_brute_force_loop(
    root: str, scope: str, rule: str, p: float, steps: int
) -> None:
    model = _resnet8(width=4)
    x, y = _data(8)
    settings = P.CriterionSettings(steps=steps, rule=rule, scope=scope, p=p)
    variants, _, _ = P.compute_path_variants(model, x[:2], [(x, y)], settings)
    ig_norm, taylor = _weight_path_reference(model, root, x, y, steps, rule, scope, p)
    torch.testing.assert_close(variants["ig_norm"][root], ig_norm, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(variants["taylor_path"][root], taylor, rtol=1e-4, atol=1e-9)
    # K > 1 is not the K = 1 Taylor criterion: the path changes the ranking input
    k1 = P.compute_path_variants(model, x[:2], [(x, y)], P.CriterionSettings(steps=1, rule="right", p=p))[0]
    assert not torch.allclose(k1["taylor_path"][root], taylor, rtol=1e-3)


@pytest.mark.parametrize("root", ["stem.0", "layers.1.conv1"])
def test_gate_taylor_path_at_k_above_one_equals_hooked_gates_on_the_unfolded_model(root: str) -> None:
    model = _resnet8(width=4)
    x, y = _data(8)
    settings = P.CriterionSettings(granularity="gate", steps=4)
    scores = P.compute_scores(model, x[:2], "taylor_path", [(x, y)], settings).scores
    torch.testing.assert_close(scores[root], _gate_path_reference(model, root, x, y, 4), rtol=1e-4, atol=1e-9)
