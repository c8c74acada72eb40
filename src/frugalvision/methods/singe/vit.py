"""SInGE on a timm Vision Transformer: MLP hidden units and whole attention heads as prunable channels.

MLP unit c of a block: the producer is row c of ``fc1`` (weight and bias), the consumer column c of ``fc2``; the
gate sits on ``fc1``'s output before the GELU, and GELU(0) = 0, so gate 0 equals removing the unit.
Attention head h: the producers are the ``v`` rows of head h in ``qkv``. The head's output softmax(q kᵀ) v is linear
in v, so scaling those rows (and biases) by μ scales the head's output by μ and μ = 0 equals removing the head (its
q, k, v rows and its ``proj`` columns), which Torch-Pruning does through its dependency graph (qkv → unbind →
attention → proj). LayerNorm-normalised channels (the residual stream) are not pruned here: a zero channel would
still change the LayerNorm statistics, so gate 0 would not equal removal.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch.nn import functional as F

from frugalvision.methods.singe import functional as fn
from frugalvision.methods.singe import pruning as P
from frugalvision.methods.singe.functional import Batches, GroupSpec, IndexMap, LossFn

VIT_CRITERIA = ("random", "l1", "l2", "ig_norm", "taylor_path", "ig_signed", "ig_variation")


@dataclass
class VitGroups:
    """The prunable groups of a ViT.

    Attributes:
        mlp: one spec per block MLP (root = the ``fc1`` name, one channel per hidden unit).
        heads: one spec per attention module (root = the ``qkv`` name, one channel per head).
        head_dims: {qkv name: head dimension}.
    """

    mlp: list[GroupSpec]
    heads: list[GroupSpec]
    head_dims: dict[str, int]


def _is_attention(module: nn.Module) -> bool:
    return all(hasattr(module, a) for a in ("qkv", "proj", "num_heads", "head_dim")) and isinstance(
        module.qkv, nn.Linear
    )


def vit_groups(model: nn.Module, example_inputs: Tensor, mlp: bool = True, heads: bool = True) -> VitGroups:
    """Find the MLP hidden-unit groups (through Torch-Pruning's graph) and the attention-head groups of a timm ViT."""
    graph = P.build_graph(model, example_inputs)
    names = {m: n for n, m in model.named_modules()}
    out = VitGroups([], [], {})
    for module in model.modules():
        fc1, fc2 = getattr(module, "fc1", None), getattr(module, "fc2", None)
        if mlp and isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear):
            group = graph.get_pruning_group(fc1, tp.prune_linear_out_channels, list(range(fc1.out_features)))
            out.mlp.append(P.group_spec(graph, group))
        if heads and _is_attention(module):
            qkv, proj, d = module.qkv, module.proj, int(module.head_dim)
            width = qkv.out_features // 3
            count = width // d
            rows = torch.arange(count * d)
            head_of = rows // d
            spec = GroupSpec(root=names[qkv], size=count)
            spec.producers[names[qkv]] = IndexMap(head_of, 2 * width + rows)
            spec.consumers[names[proj]] = IndexMap(head_of, rows)
            out.heads.append(spec)
            out.head_dims[names[qkv]] = d
    return out


@dataclass
class VitScores:
    """Scores of a ViT's groups (higher = kept) and their cost.

    Attributes:
        scores: {root name: score per channel} for MLP (fc1) and head (qkv) groups.
        seconds: wall time.
        passes: forward+backward passes over the calibration data.
    """

    scores: dict[str, Tensor]
    seconds: float
    passes: int


def vit_scores(
    model: nn.Module,
    example_inputs: Tensor,
    criterion: str,
    batches: Batches,
    settings: P.CriterionSettings | None = None,
    loss_fn: LossFn = F.cross_entropy,
    groups: VitGroups | None = None,
    seed: int = 0,
) -> VitScores:
    """Score every MLP hidden unit and attention head of a ViT (eval mode, fp32; mode restored, no ``.grad`` left).

    Args:
        model: the ViT (not modified).
        example_inputs: an input batch for tracing.
        criterion: one of ``VIT_CRITERIA`` (path criteria integrate along the gate path of each group).
        batches: calibration (inputs, targets) batches.
        settings: integration settings (``scope``, ``steps``, ``rule``, ``p``; ``granularity`` "gate" selects the
            gate version of ``taylor_path``).
        loss_fn: mean loss of (logits, targets).
        groups: precomputed :func:`vit_groups`.
        seed: seed of the random criterion.
    """
    if criterion not in VIT_CRITERIA:
        raise ValueError(f"criterion={criterion!r} is unknown for a ViT; use one of {', '.join(VIT_CRITERIA)}")
    settings = settings or P.CriterionSettings()
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    scores: dict[str, Tensor] = {}
    passes = 0
    try:
        with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
            groups = groups or vit_groups(model, example_inputs)
            generator = torch.Generator().manual_seed(seed)
            for spec in groups.mlp + groups.heads:
                if criterion == "random":
                    scores[spec.root] = torch.rand(spec.size, generator=generator, dtype=torch.float64)
                elif criterion in ("l1", "l2"):
                    scores[spec.root] = fn.magnitude_scores(model, spec, 1 if criterion == "l1" else 2)
                else:
                    result = fn.integrate_group(
                        model,
                        spec,
                        batches,
                        loss_fn,
                        steps=settings.steps,
                        rule=settings.rule,
                        scope=settings.scope,
                        p=settings.p,
                    )  # type: ignore[arg-type]
                    passes += result.passes
                    gate = criterion == "taylor_path" and settings.granularity == "gate"
                    scores[spec.root] = getattr(result, "taylor_path_gate" if gate else criterion)
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    for root, values in scores.items():
        fn.finite_or_raise(values, f"{criterion} on {root}")
    return VitScores(scores, time.perf_counter() - start, passes)


def prune_vit(
    model: nn.Module,
    example_inputs: Tensor,
    scores: dict[str, Tensor],
    keep: dict[str, int],
    groups: VitGroups | None = None,
) -> list[list[object]]:
    """Physically remove the lowest-scoring MLP units / heads of each listed group (in place, via Torch-Pruning).

    Args:
        model: the ViT (pruned in place; attention ``num_heads`` updated).
        example_inputs: an input batch for tracing.
        scores: {root: score per channel} (see :func:`vit_scores`).
        keep: channels (MLP units, or heads for a qkv root) to keep per root; roots not listed are left alone.
        groups: precomputed :func:`vit_groups` of this model.

    Returns:
        The Torch-Pruning history (replayable with :func:`pruning.load_pruned`).
    """
    groups = groups or vit_groups(model, example_inputs)
    graph = P.build_graph(model, example_inputs)
    plan: list[tuple[nn.Module, list[int]]] = []
    for spec in groups.mlp + groups.heads:
        remove = spec.size - keep.get(spec.root, spec.size)
        if remove <= 0:
            continue
        channels = sorted(torch.argsort(scores[spec.root], stable=True)[:remove].tolist())
        if spec.root in groups.head_dims:
            d = groups.head_dims[spec.root]
            width = spec.size * d
            idxs = [part * width + h * d + i for part in range(3) for h in channels for i in range(d)]
        else:
            idxs = channels
        plan.append((model.get_submodule(spec.root), sorted(idxs)))
    for module, idxs in plan:
        group = graph.get_pruning_group(module, tp.prune_linear_out_channels, idxs)
        if graph.check_pruning_group(group):
            group.prune()
    P.sync_attention_heads(model)
    return [list(entry) for entry in graph.pruning_history()]


def vit_keep_counts(
    groups: VitGroups, mlp_ratio: float, head_ratio: float = 0.0, roots: Sequence[str] | None = None
) -> dict[str, int]:
    """Units/heads kept per group when fractions ``mlp_ratio`` / ``head_ratio`` are removed (at least one kept)."""
    keep = {s.root: max(1, round((1.0 - mlp_ratio) * s.size)) for s in groups.mlp}
    keep |= {s.root: max(1, round((1.0 - head_ratio) * s.size)) for s in groups.heads}
    return {k: v for k, v in keep.items() if roots is None or k in roots}
