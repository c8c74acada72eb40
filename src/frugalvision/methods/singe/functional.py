"""SInGE as pure functions: path quadrature, BatchNorm folding, channel gates and the integrated-gradient criteria.

Every formula here is OUR reading of the paper (its method section was not available); see the method README.
A *channel* is one index of a Torch-Pruning dependency group, described by a :class:`GroupSpec` (module names and
index maps, no Torch-Pruning objects), so these functions work on any copy of a model with the same module names.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call

Rule = Literal["trapezoid", "midpoint", "right"]
Scope = Literal["layer", "neuron"]
Batches = Sequence[tuple[Tensor, Tensor]]
LossFn = Callable[[Tensor, Tensor], Tensor]

CRITERIA = ("ig_norm", "taylor_path", "ig_signed", "ig_variation", "oracle")


@dataclass
class IndexMap:
    """Which index of one module's channel dimension holds each group channel.

    Attributes:
        root: group (root) channel of each entry.
        index: the module's channel index of each entry.
    """

    root: Tensor
    index: Tensor


@dataclass
class GroupSpec:
    """A dependency group described by module names (independent of Torch-Pruning objects).

    Attributes:
        root: name of the group's root module (a conv/linear whose out-channels are pruned).
        size: number of channels of the group.
        producers: conv/linear modules whose *output* channels the group removes.
        norms: BatchNorm modules whose channels the group removes.
        consumers: conv/linear modules whose *input* channels the group removes.
        sites: where the gate multiplies each channel: the BatchNorm after a producer if there is one, else the
            producer itself (the "terminal producers").
    """

    root: str
    size: int
    producers: dict[str, IndexMap] = field(default_factory=dict)
    norms: dict[str, IndexMap] = field(default_factory=dict)
    consumers: dict[str, IndexMap] = field(default_factory=dict)
    sites: dict[str, IndexMap] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- quadrature
def path_points(steps: int, rule: Rule = "trapezoid") -> tuple[Tensor, Tensor]:
    """Points μ_k on the path from 1 (intact) to 0 (removed) and their quadrature weights ω_k (they sum to 1).

    Args:
        steps: number of intervals K (>= 1).
        rule: "trapezoid" (μ = k/K, k = 0..K, end weights 1/(2K)), "midpoint" (μ = (k - 1/2)/K) or "right"
            (μ = k/K, k = 1..K).

    Returns:
        (points, weights), float64 tensors.
    """
    if steps < 1:
        raise ValueError(f"steps={steps} is invalid; use K >= 1")
    k = torch.arange(steps + 1, dtype=torch.float64)
    if rule == "trapezoid":
        weights = torch.full((steps + 1,), 1.0 / steps, dtype=torch.float64)
        weights[0] = weights[-1] = 0.5 / steps
        return k / steps, weights
    if rule == "midpoint":
        return (k[1:] - 0.5) / steps, torch.full((steps,), 1.0 / steps, dtype=torch.float64)
    if rule == "right":
        return k[1:] / steps, torch.full((steps,), 1.0 / steps, dtype=torch.float64)
    raise ValueError(f"rule={rule!r} is invalid; use trapezoid, midpoint or right")


# ---------------------------------------------------------------------------------------------- BN folding
def fold_conv_bn(conv: nn.Conv2d | nn.Linear, bn: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor]:
    """Fold an eval-mode BatchNorm into the preceding conv/linear: W' = (γ/σ) W, b' = β + (γ/σ)(b − m).

    Returns:
        (folded weight, folded bias).
    """
    sigma = torch.sqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.affine else torch.ones_like(sigma)
    beta = bn.bias if bn.affine else torch.zeros_like(sigma)
    scale = gamma / sigma
    bias = conv.bias if conv.bias is not None else torch.zeros_like(sigma)
    weight = conv.weight * scale.view(-1, *([1] * (conv.weight.ndim - 1)))
    return weight.detach().clone(), (beta + scale * (bias - bn.running_mean)).detach().clone()


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, attr = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), attr


def fold_batchnorms(model: nn.Module, pairs: Iterable[tuple[str, str]]) -> nn.Module:
    """Return an eval-mode deep copy in which each (conv, bn) pair is folded: the conv gets W', b', the BN is removed.

    Args:
        model: the network (not modified).
        pairs: (conv name, BatchNorm name) pairs where the BN reads only that conv's output.
    """
    folded = copy.deepcopy(model).eval()
    for conv_name, bn_name in pairs:
        conv = folded.get_submodule(conv_name)
        weight, bias = fold_conv_bn(conv, folded.get_submodule(bn_name))
        conv.weight = nn.Parameter(weight)
        conv.bias = nn.Parameter(bias)
        parent, attr = _parent(folded, bn_name)
        setattr(parent, attr, nn.Identity())
    return folded


# ---------------------------------------------------------------------------------------------- gates
def install_gates(model: nn.Module, spec: GroupSpec, gate: Tensor, sites: dict[str, IndexMap] | None = None) -> list:
    """Multiply each channel c of the group by ``gate[c]`` at every gate site (forward hooks).

    Args:
        model: the network (hooks are added to its modules).
        spec: the group.
        gate: one value per group channel (may require grad).
        sites: override of ``spec.sites`` (e.g. the producers of a BN-folded copy).

    Returns:
        The hook handles (call ``.remove()`` on each to uninstall).
    """
    handles = []
    for name, imap in (spec.sites if sites is None else sites).items():
        module = model.get_submodule(name)

        last = isinstance(module, nn.Linear)  # Linear: channels last ([..., C]); conv/BN: channels at dim 1

        def hook(
            _module: nn.Module, _inputs: object, output: Tensor, imap: IndexMap = imap, last: bool = last
        ) -> Tensor:
            scale = torch.ones(output.shape[-1 if last else 1], dtype=output.dtype, device=output.device)
            scale = scale.index_put((imap.index.to(output.device),), gate.to(output)[imap.root.to(output.device)])
            return output * (scale if last else scale.view(1, -1, *([1] * (output.ndim - 2))))

        handles.append(module.register_forward_hook(hook))
    return handles


# ---------------------------------------------------------------------------------------------- paths
@dataclass
class PathResult:
    """Per-channel quantities integrated along the path of one group (all float64, one entry per channel).

    Attributes:
        ig_signed: −Σ_k ω_k γ_c(μ_k), the integral of the gate gradient ≈ L(c removed) − L(intact) (neuron scope).
        ig_norm: ‖φ_c ⊙ Σ_k ω_k G_c(μ_k)‖_p, the norm of the per-weight integrated gradients.
        taylor_path: Σ_k ω_k ‖μ_k φ_c ⊙ G_c(μ_k)‖_p, the Taylor criterion averaged along the path.
        taylor_path_gate: Σ_k ω_k |μ_k γ_c(μ_k)|.
        ig_weight_sum: Σ_i IG_{c,i} (completeness: equals −ig_signed).
        ig_variation: Σ_k ω_k ‖G_c(μ_k) − G_c(1)‖_p, the literal "integral of the gradient variation" reading.
        passes: forward+backward passes over the calibration data.
    """

    ig_signed: Tensor
    ig_norm: Tensor
    taylor_path: Tensor
    taylor_path_gate: Tensor
    ig_weight_sum: Tensor
    passes: int
    ig_variation: Tensor | None = None


def _producer_tensors(model: nn.Module, spec: GroupSpec) -> dict[str, tuple[Tensor, Tensor]]:
    out = {}
    for name in spec.producers:
        module = model.get_submodule(name)
        weight = module.weight
        bias = module.bias if module.bias is not None else weight.new_zeros(weight.shape[0])
        out[name] = (module.weight.detach(), bias.detach())
    return out


def _row_scale(length: int, imap: IndexMap, gate: Tensor) -> Tensor:
    scale = torch.ones(length, dtype=gate.dtype)
    scale[imap.index] = gate[imap.root]
    return scale


def scaled_loss_and_grads(
    model: nn.Module, spec: GroupSpec, gate: Tensor, batches: Batches, loss_fn: LossFn
) -> tuple[float, dict[str, tuple[Tensor, Tensor]]]:
    """Loss and producer-parameter gradients of the network whose producer rows of channel c are scaled by gate[c].

    ``model`` must be BN-folded (each producer's output is the post-BN channel), so scaling the producer's weight
    and bias rows by μ equals gating the channel by μ, and μ = 0 equals removal.

    Returns:
        (mean loss over the calibration data, {producer: (dL/dW at the scaled point, dL/db at the scaled point)}).
    """
    base = _producer_tensors(model, spec)
    leaves: dict[str, Tensor] = {}
    for name, (weight, bias) in base.items():
        scale = _row_scale(weight.shape[0], spec.producers[name], gate.double()).to(weight)
        leaves[f"{name}.weight"] = (weight * scale.view(-1, *([1] * (weight.ndim - 1)))).requires_grad_()
        leaves[f"{name}.bias"] = (bias * scale).requires_grad_()
    total = sum(len(x) for x, _ in batches)
    grads = {key: torch.zeros_like(value) for key, value in leaves.items()}
    loss_sum = 0.0
    keys = list(leaves)
    for inputs, targets in batches:
        loss = loss_fn(functional_call(model, leaves, (inputs,)), targets) * (len(inputs) / total)
        for key, grad in zip(keys, torch.autograd.grad(loss, [leaves[k] for k in keys]), strict=True):
            grads[key] += grad
        loss_sum += float(loss.detach())
    return loss_sum, {name: (grads[f"{name}.weight"], grads[f"{name}.bias"]) for name in base}


def _channel_rows(tensor: Tensor, imap: IndexMap, size: int) -> Tensor:
    """Gather the rows of each group channel into [size, m × row numel].

    A channel owning m rows of the module (an attention head: its ``head_dim`` v rows) gets them concatenated;
    when channels own different numbers of rows, the rows of a channel are summed.
    """
    rows = tensor.detach().reshape(tensor.shape[0], -1).double().cpu()
    counts = torch.bincount(imap.root, minlength=size)
    m = int(counts.max()) if len(counts) else 1
    if m > 1 and bool((counts == m).all()):
        order = torch.argsort(imap.root * len(imap.root) + torch.arange(len(imap.root)))
        return rows[imap.index[order]].reshape(size, -1)
    out = torch.zeros(size, rows.shape[1], dtype=torch.float64)
    return out.index_add_(0, imap.root, rows[imap.index])


def integrate_group(
    model: nn.Module,
    spec: GroupSpec,
    batches: Batches,
    loss_fn: LossFn,
    steps: int = 8,
    rule: Rule = "trapezoid",
    scope: Scope = "layer",
    p: float = 1.0,
    channels: Sequence[int] | None = None,
) -> PathResult:
    """Integrate the gradients along the path that scales the group's channels from 1 to 0.

    Args:
        model: BN-folded network in eval mode (see :func:`fold_batchnorms`).
        spec: the group, with ``producers`` naming modules of ``model``.
        batches: calibration data as (inputs, targets) batches.
        loss_fn: mean loss of (logits, targets).
        steps: K intervals of the quadrature.
        rule: quadrature rule.
        scope: "layer" moves all channels of the group together (one pass per point gives every channel);
            "neuron" moves one channel at a time, the others stay at 1.
        p: norm of the weight-level criteria.
        channels: neuron scope only: which channels to score (default all; others get NaN).

    Returns:
        The per-channel integrals.
    """
    points, weights = path_points(steps, rule)
    params = _producer_tensors(model, spec)
    phi = {
        n: (_channel_rows(w, spec.producers[n], spec.size), _channel_rows(b, spec.producers[n], spec.size))
        for n, (w, b) in params.items()
    }
    n = spec.size
    nan = torch.full((n,), float("nan"), dtype=torch.float64)
    keys = ("ig_signed", "ig_norm", "taylor_path", "taylor_path_gate", "ig_sum", "ig_variation")
    result = {key: nan.clone() for key in keys}
    todo = [list(range(n))] if scope == "layer" else [[c] for c in (range(n) if channels is None else channels)]
    # Gradient rows at the intact network (μ = 1 for every channel), the reference of the variation reading.
    _, grads_one = scaled_loss_and_grads(model, spec, torch.ones(n, dtype=torch.float64), batches, loss_fn)
    rows_one = {
        name: (_channel_rows(gw, spec.producers[name], n), _channel_rows(gb.unsqueeze(1), spec.producers[name], n))
        for name, (gw, gb) in grads_one.items()
    }
    passes = 1
    for chans in todo:
        idx = torch.tensor(chans)
        gamma_int = torch.zeros(n, dtype=torch.float64)
        taylor_gate = torch.zeros(n, dtype=torch.float64)
        taylor_w = torch.zeros(n, dtype=torch.float64)
        variation = torch.zeros(n, dtype=torch.float64)
        grad_int = {name: (torch.zeros_like(pw), torch.zeros_like(pb)) for name, (pw, pb) in phi.items()}
        for mu, omega in zip(points.tolist(), weights.tolist(), strict=True):
            if mu == 1.0:
                rows = rows_one
            else:
                gate = torch.ones(n, dtype=torch.float64)
                gate[idx] = mu
                _, grads = scaled_loss_and_grads(model, spec, gate, batches, loss_fn)
                passes += 1
                rows = {
                    name: (
                        _channel_rows(gw, spec.producers[name], n),
                        _channel_rows(gb.unsqueeze(1), spec.producers[name], n),
                    )
                    for name, (gw, gb) in grads.items()
                }
            gamma = torch.zeros(n, dtype=torch.float64)
            norm_p = torch.zeros(n, dtype=torch.float64)
            diff_p = torch.zeros(n, dtype=torch.float64)
            for name, (rw, rb) in rows.items():
                pw, pb = phi[name]
                gamma += (pw * rw).sum(1) + (pb * rb).sum(1)
                norm_p += (mu * pw * rw).abs().pow(p).sum(1) + (mu * pb * rb).abs().pow(p).sum(1)
                ow, ob = rows_one[name]
                diff_p += (rw - ow).abs().pow(p).sum(1) + (rb - ob).abs().pow(p).sum(1)
                grad_int[name][0].add_(rw, alpha=omega)
                grad_int[name][1].add_(rb, alpha=omega)
            gamma_int += omega * gamma
            taylor_gate += omega * (mu * gamma).abs()
            taylor_w += omega * norm_p.pow(1.0 / p)
            variation += omega * diff_p.pow(1.0 / p)
        ig_p = torch.zeros(n, dtype=torch.float64)
        ig_sum = torch.zeros(n, dtype=torch.float64)
        for name, (iw, ib) in grad_int.items():
            pw, pb = phi[name]
            ig_p += (pw * iw).abs().pow(p).sum(1) + (pb * ib).abs().pow(p).sum(1)
            ig_sum += (pw * iw).sum(1) + (pb * ib).sum(1)
        result["ig_signed"][idx] = -gamma_int[idx]
        result["ig_norm"][idx] = ig_p.pow(1.0 / p)[idx]
        result["taylor_path"][idx] = taylor_w[idx]
        result["taylor_path_gate"][idx] = taylor_gate[idx]
        result["ig_sum"][idx] = ig_sum[idx]
        result["ig_variation"][idx] = variation[idx]
    return PathResult(
        ig_signed=result["ig_signed"],
        ig_norm=result["ig_norm"],
        taylor_path=result["taylor_path"],
        taylor_path_gate=result["taylor_path_gate"],
        ig_weight_sum=result["ig_sum"],
        passes=passes,
        ig_variation=result["ig_variation"],
    )


@torch.no_grad()
def loss_with_gate(model: nn.Module, spec: GroupSpec, gate: Tensor, batches: Batches, loss_fn: LossFn) -> float:
    """Mean calibration loss of a BN-folded ``model`` with the group's channels scaled by ``gate``."""
    base = _producer_tensors(model, spec)
    params: dict[str, Tensor] = {}
    for name, (weight, bias) in base.items():
        scale = _row_scale(weight.shape[0], spec.producers[name], gate.double()).to(weight)
        params[f"{name}.weight"] = weight * scale.view(-1, *([1] * (weight.ndim - 1)))
        params[f"{name}.bias"] = bias * scale
    total = sum(len(x) for x, _ in batches)
    return sum(float(loss_fn(functional_call(model, params, (x,)), y)) * len(x) / total for x, y in batches)


def oracle_scores(model: nn.Module, spec: GroupSpec, batches: Batches, loss_fn: LossFn) -> Tensor:
    """Exact leave-one-out loss change L(channel c removed) − L(intact) of every channel (|G| + 1 forward passes)."""
    ones = torch.ones(spec.size, dtype=torch.float64)
    intact = loss_with_gate(model, spec, ones, batches, loss_fn)
    scores = torch.empty(spec.size, dtype=torch.float64)
    for c in range(spec.size):
        gate = ones.clone()
        gate[c] = 0.0
        scores[c] = loss_with_gate(model, spec, gate, batches, loss_fn) - intact
    return scores


# ---------------------------------------------------------------------------------------------- baselines
@torch.no_grad()
def magnitude_scores(model: nn.Module, spec: GroupSpec, p: int = 2, norms_only: bool = False) -> Tensor:
    """Group magnitude: mean over the group's layers of Σ|w|^p of each channel's slice (out rows, in columns, BN γ).

    ``norms_only=True`` keeps only the BatchNorm scales (network-slimming "BN-scale" criterion).
    """
    total = torch.zeros(spec.size, dtype=torch.float64)
    count = 0
    entries: list[tuple[Tensor, IndexMap]] = []
    if not norms_only:
        for name, imap in spec.producers.items():
            weight = model.get_submodule(name).weight
            entries.append((weight.flatten(1).abs().pow(p).sum(1), imap))
    for name, imap in spec.norms.items():
        module = model.get_submodule(name)
        if module.affine:
            entries.append((module.weight.abs().pow(p), imap))
    if not norms_only:
        for name, imap in spec.consumers.items():
            module = model.get_submodule(name)
            if isinstance(module, nn.modules.conv._ConvNd) and module.groups not in (1, module.in_channels):
                continue
            entries.append((module.weight.transpose(0, 1).flatten(1).abs().pow(p).sum(1), imap))
    for values, imap in entries:
        total.index_add_(0, imap.root, values.detach().double().cpu()[imap.index])
        count += 1
    return total / max(count, 1)


def finite_or_raise(scores: Tensor, what: str) -> Tensor:
    """Return ``scores`` or raise if some are NaN/inf (a diverged model or an empty calibration set)."""
    if not torch.isfinite(scores).all():
        raise FloatingPointError(f"{what}: non-finite scores; check the model and the calibration data")
    return scores
