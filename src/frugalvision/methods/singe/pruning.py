"""Torch-Pruning plumbing: dependency groups, the SInGE ``Importance``, criteria, MAC targets and pruning plans.

Torch-Pruning's dependency graph finds the channel groups (residual streams included) and physically removes
channels; SInGE and the baselines only decide *which* channels.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch.nn import functional as F

from frugalvision.engine import load_weights, save_weights
from frugalvision.methods.singe import functional as fn
from frugalvision.methods.singe.functional import Batches, GroupSpec, IndexMap, LossFn

BASELINES = ("random", "l1", "l2", "bn_scale", "taylor_tp", "magnitude_tp", "fpgm_tp", "lamp_tp")
ALL_CRITERIA = BASELINES + fn.CRITERIA
PATH_VARIANTS = ("ig_norm", "taylor_path", "taylor_path_gate", "ig_signed", "ig_variation")
# Torch-Pruning's own group criteria, used as shipped (weight-only: no calibration data).
TP_WEIGHT_CRITERIA: dict[str, Callable[[], tp.importance.Importance]] = {
    "magnitude_tp": lambda: tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean", normalizer=None),
    "fpgm_tp": lambda: tp.importance.FPGMImportance(p=2, group_reduction="mean", normalizer=None),
    "lamp_tp": lambda: tp.importance.LAMPImportance(p=2, group_reduction="mean", normalizer="lamp"),
}
PLAN_NAME = "plan.json"
WEIGHTS_NAME = "model.safetensors"

_CONV_LINEAR = (nn.modules.conv._ConvNd, nn.Linear)
_BN = nn.modules.batchnorm._BatchNorm


@dataclass
class CriterionSettings:
    """How SInGE integrates (see :func:`frugalvision.methods.singe.functional.integrate_group`).

    Attributes:
        granularity: "weight" (folded producer weights) or "gate" (one scalar per channel).
        scope: "layer" (the whole group moves along the path) or "neuron" (one channel at a time).
        steps: K intervals.
        rule: "trapezoid", "midpoint" or "right".
        p: norm of the weight-granularity criteria.
    """

    granularity: str = "weight"
    scope: str = "layer"
    steps: int = 8
    rule: str = "trapezoid"
    p: float = 1.0


@dataclass
class ScoreResult:
    """Scores of one criterion for every group (higher = more important = kept) and their cost.

    Attributes:
        scores: {root module name: float64 score per channel}.
        seconds: wall time of the criterion.
        passes: forward(+backward) passes over the calibration data.
    """

    scores: dict[str, Tensor]
    seconds: float
    passes: int = 0


# ---------------------------------------------------------------------------------------------- graph
def build_graph(model: nn.Module, example_inputs: Tensor) -> tp.DependencyGraph:
    """Trace ``model`` (in eval mode, no grad kept) into a Torch-Pruning dependency graph."""
    was_training = model.training
    model.eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs)
    model.train(was_training)
    return graph


def default_ignored(model: nn.Module) -> list[nn.Module]:
    """Layers never pruned: the last Linear (the classifier's outputs are the classes)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1:]


def graph_groups(graph: tp.DependencyGraph, ignored: Sequence[nn.Module] = ()) -> list[Any]:
    """All prunable groups (roots: conv/linear out-channels), in the graph's order."""
    return list(graph.get_all_groups(ignored_layers=list(ignored), root_module_types=_CONV_LINEAR))


def _imap(root_idxs: Sequence[int], idxs: Sequence[int]) -> IndexMap:
    return IndexMap(torch.as_tensor(list(root_idxs), dtype=torch.long), torch.as_tensor(list(idxs), dtype=torch.long))


def group_spec(graph: tp.DependencyGraph, group: Any) -> GroupSpec:
    """Describe a Torch-Pruning group by module names and index maps."""
    names = graph._module2name
    root = group[0].dep.target.module
    spec = GroupSpec(root=names[root], size=len(group[0].idxs))
    for item in group:
        dep, idxs, root_idxs = item.dep, item.idxs, item.root_idxs
        module, handler = dep.target.module, dep.handler
        if module not in names or any(r is None for r in root_idxs):
            continue
        imap = _imap(root_idxs, idxs)
        if isinstance(module, _CONV_LINEAR) and graph.is_out_channel_pruning_fn(handler):
            spec.producers[names[module]] = imap
        elif isinstance(module, _CONV_LINEAR) and graph.is_in_channel_pruning_fn(handler):
            spec.consumers[names[module]] = imap
        elif isinstance(module, _BN):
            spec.norms[names[module]] = imap
    for name, imap in spec.producers.items():
        node = graph.module2node[graph.model.get_submodule(name)]
        following = [n.module for n in node.outputs if isinstance(n.module, _BN) and names.get(n.module) in spec.norms]
        if len(node.outputs) == 1 and following:
            bn_name = names[following[0]]
            spec.sites[bn_name] = spec.norms[bn_name]
        else:
            spec.sites[name] = imap
    return spec


def bn_pairs(graph: tp.DependencyGraph) -> list[tuple[str, str]]:
    """(conv, BatchNorm) pairs where the BN reads only that conv's output and the conv feeds only the BN."""
    names = graph._module2name
    pairs = []
    for module, node in graph.module2node.items():
        if isinstance(module, _BN) and len(node.inputs) == 1:
            source = node.inputs[0]
            if isinstance(source.module, _CONV_LINEAR) and len(source.outputs) == 1 and source.module in names:
                pairs.append((names[source.module], names[module]))
    return pairs


def folded_producer_spec(spec: GroupSpec) -> dict[str, IndexMap]:
    """Gate sites of a BN-folded copy: the producers themselves (their output is the post-BN channel)."""
    return dict(spec.producers)


# ---------------------------------------------------------------------------------------------- criteria
def _taylor_tp(
    model: nn.Module, groups: Sequence[Any], specs: Sequence[GroupSpec], batches: Batches, loss_fn: LossFn
) -> dict[str, Tensor]:
    model.zero_grad(set_to_none=True)
    total = sum(len(x) for x, _ in batches)
    for x, y in batches:
        (loss_fn(model(x), y) * (len(x) / total)).backward()
    importance = tp.importance.GroupTaylorImportance(group_reduction="mean", normalizer=None)
    scores = {spec.root: importance(group).double().cpu() for group, spec in zip(groups, specs, strict=True)}
    model.zero_grad(set_to_none=True)
    return scores


def compute_scores(
    model: nn.Module,
    example_inputs: Tensor,
    criterion: str,
    batches: Batches,
    settings: CriterionSettings | None = None,
    loss_fn: LossFn = F.cross_entropy,
    ignored: Sequence[nn.Module] | None = None,
    seed: int = 0,
) -> ScoreResult:
    """Score every channel of every prunable group with one criterion.

    The model is scored in eval mode and fp32 (outer autocast disabled); its mode is restored and no ``.grad``
    is left behind.

    Args:
        model: the network (its weights are not changed).
        example_inputs: an input batch for tracing.
        criterion: one of ``ALL_CRITERIA``: random, l1, l2, bn_scale, taylor_tp (Torch-Pruning's Taylor),
            magnitude_tp / fpgm_tp / lamp_tp (Torch-Pruning's group L2, FPGM and LAMP classes), ig_norm,
            taylor_path, ig_signed (the signed integral), ig_variation (integral of the gradient variation),
            oracle (exact leave-one-out loss change).
        batches: calibration (inputs, targets) batches.
        settings: SInGE integration settings (ig_* and taylor_path).
        loss_fn: mean loss of (logits, targets).
        ignored: layers not to prune (default: the classifier).
        seed: seed of the random criterion.
    """
    if criterion not in ALL_CRITERIA:
        raise ValueError(f"criterion={criterion!r} is unknown; use one of {', '.join(ALL_CRITERIA)}")
    settings = settings or CriterionSettings()
    if criterion == "ig_norm" and settings.granularity == "gate":
        raise ValueError("criterion=ig_norm needs granularity=weight (the gate version is |ig_signed|)")
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
            graph = build_graph(model, example_inputs)
            groups = graph_groups(graph, default_ignored(model) if ignored is None else ignored)
            specs = [group_spec(graph, g) for g in groups]
            scores: dict[str, Tensor] = {}
            passes = 0
            if criterion == "random":
                generator = torch.Generator().manual_seed(seed)
                scores = {s.root: torch.rand(s.size, generator=generator, dtype=torch.float64) for s in specs}
            elif criterion in ("l1", "l2", "bn_scale"):
                p = 2 if criterion == "l2" else 1
                scores = {s.root: fn.magnitude_scores(model, s, p, criterion == "bn_scale") for s in specs}
            elif criterion in TP_WEIGHT_CRITERIA:
                importance = TP_WEIGHT_CRITERIA[criterion]()
                scores = {s.root: importance(g).double().cpu() for g, s in zip(groups, specs, strict=True)}
            elif criterion == "taylor_tp":
                scores = _taylor_tp(model, groups, specs, batches, loss_fn)
                passes = 1
            elif criterion == "oracle":
                folded = fold_batchnorms_of(model, graph)
                for spec in specs:
                    scores[spec.root] = fn.oracle_scores(folded, spec, batches, loss_fn)
                    passes += spec.size + 1
            else:
                variants, passes = _path_variants(model, graph, specs, batches, settings, loss_fn)
                gate = criterion == "taylor_path" and settings.granularity == "gate"
                scores = variants["taylor_path_gate" if gate else criterion]
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    for root, values in scores.items():
        fn.finite_or_raise(values, f"{criterion} on {root}")
    return ScoreResult(scores=scores, seconds=time.perf_counter() - start, passes=passes)


def _path_variants(
    model: nn.Module,
    graph: tp.DependencyGraph,
    specs: Sequence[GroupSpec],
    batches: Batches,
    settings: CriterionSettings,
    loss_fn: LossFn,
) -> tuple[dict[str, dict[str, Tensor]], int]:
    folded = fold_batchnorms_of(model, graph)
    out: dict[str, dict[str, Tensor]] = {k: {} for k in PATH_VARIANTS}
    passes = 0
    for spec in specs:
        result = fn.integrate_group(
            folded,
            spec,
            batches,
            loss_fn,
            steps=settings.steps,
            rule=settings.rule,  # type: ignore[arg-type]
            scope=settings.scope,
            p=settings.p,
        )  # type: ignore[arg-type]
        passes += result.passes
        for key in PATH_VARIANTS:
            out[key][spec.root] = getattr(result, key)
    return out, passes


def compute_path_variants(
    model: nn.Module,
    example_inputs: Tensor,
    batches: Batches,
    settings: CriterionSettings | None = None,
    loss_fn: LossFn = F.cross_entropy,
    ignored: Sequence[nn.Module] | None = None,
) -> tuple[dict[str, dict[str, Tensor]], float, int]:
    """All path criteria from one integration: {ig_norm, taylor_path, taylor_path_gate, ig_signed: {root: scores}}.

    Same contract as :func:`compute_scores` (eval mode, fp32, mode restored, no ``.grad`` left).

    Returns:
        (scores per variant, seconds, passes).
    """
    settings = settings or CriterionSettings()
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
            graph = build_graph(model, example_inputs)
            groups = graph_groups(graph, default_ignored(model) if ignored is None else ignored)
            specs = [group_spec(graph, g) for g in groups]
            variants, passes = _path_variants(model, graph, specs, batches, settings, loss_fn)
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    return variants, time.perf_counter() - start, passes


def fold_batchnorms_of(
    model: nn.Module, graph: tp.DependencyGraph | None = None, example_inputs: Tensor | None = None
) -> nn.Module:
    """Eval-mode copy of ``model`` with every conv→BN pair folded (see :func:`functional.fold_batchnorms`)."""
    if graph is None:
        if example_inputs is None:
            raise ValueError("pass a dependency graph or example inputs")
        graph = build_graph(model, example_inputs)
    return fn.fold_batchnorms(model, bn_pairs(graph))


class SInGEImportance(tp.importance.Importance):
    """SInGE (or any criterion of this module) as a Torch-Pruning ``Importance``.

    Call :meth:`precompute` on the model and calibration data before the pruner step; ``__call__`` then returns the
    cached scores of the group's root channels (Torch-Pruning scores every group before pruning any).

    Args:
        criterion: see :func:`compute_scores`.
        settings: SInGE integration settings.
        normalizer: None, or "mean" (divide by the group mean, for global ranking).
    """

    def __init__(
        self, criterion: str = "ig_norm", settings: CriterionSettings | None = None, normalizer: str | None = None
    ) -> None:
        self.criterion = criterion
        self.settings = settings or CriterionSettings()
        self.normalizer = normalizer
        self.result: ScoreResult | None = None
        self._names: dict[nn.Module, str] = {}

    def precompute(
        self,
        model: nn.Module,
        example_inputs: Tensor,
        batches: Batches,
        loss_fn: LossFn = F.cross_entropy,
        ignored: Sequence[nn.Module] | None = None,
    ) -> ScoreResult:
        """Score every group of ``model`` and cache the scores."""
        self.result = compute_scores(model, example_inputs, self.criterion, batches, self.settings, loss_fn, ignored)
        self._names = {module: name for name, module in model.named_modules()}
        return self.result

    def __call__(self, group: Any) -> Tensor | None:
        """Scores of the group's root channels (None when the group was not scored)."""
        if self.result is None:
            raise RuntimeError("SInGEImportance.precompute(model, example_inputs, batches) must run first")
        name = self._names.get(group[0].dep.target.module)
        scores = self.result.scores.get(name) if name is not None else None
        if scores is None:
            return None
        scores = scores[torch.as_tensor(list(group[0].root_idxs), dtype=torch.long)].float()
        return scores / scores.mean() if self.normalizer == "mean" else scores


# ---------------------------------------------------------------------------------------------- pruning
def group_sizes(model: nn.Module, example_inputs: Tensor, ignored: Sequence[nn.Module] | None = None) -> dict[str, int]:
    """{root module name: channel count} of every prunable group."""
    graph = build_graph(model, example_inputs)
    groups = graph_groups(graph, default_ignored(model) if ignored is None else ignored)
    return {graph._module2name[g[0].dep.target.module]: len(g[0].idxs) for g in groups}


def keep_counts(dense_sizes: dict[str, int], ratio: float) -> dict[str, int]:
    """Channels kept per group when a fraction ``ratio`` of every dense group is removed (local pruning)."""
    return {root: max(1, round((1.0 - ratio) * size)) for root, size in dense_sizes.items()}


def macs_with_counts(dense: nn.Module, example_inputs: Tensor, keep: dict[str, int]) -> float:
    """MACs of the dense model with ``keep[root]`` channels left in each group (architecture only)."""
    pruned = copy.deepcopy(dense)
    prune_to_counts(pruned, example_inputs, None, keep)
    return count_macs_params(pruned, example_inputs)[0]


def round_counts(keep: dict[str, int], sizes: dict[str, int], multiple: int) -> dict[str, int]:
    """Each count rounded to the nearest multiple of ``multiple`` (Torch-Pruning's ``round_to``).

    At least one multiple, at most the group size; a group smaller than ``multiple`` keeps its count.
    """
    return {
        root: min(sizes[root], max(multiple, multiple * round(keep[root] / multiple)))
        if sizes[root] >= multiple
        else keep[root]
        for root in keep
    }


def rounded_keep_counts(
    dense: nn.Module, example_inputs: Tensor, target: float, multiple: int, iterations: int = 14
) -> dict[str, int]:
    """Channels kept per group, each a multiple of ``multiple``, with MACs at most ``target`` × dense MACs.

    Hardware-friendly widths: odd channel counts run slowly on CPUs and GPUs. First the smallest channel ratio whose
    local counts, rounded to the nearest multiple (:func:`round_counts`), meet the target (bisection); then, while a
    group can grow by one multiple without passing the target, the group with the smallest kept fraction grows
    (ties: the larger MACs), so the fractions stay as even as local pruning's and the MACs end close to the target.

    Raises:
        ValueError: even one multiple per group exceeds the target.
    """
    sizes = group_sizes(dense, example_inputs)
    limit = target * count_macs_params(dense, example_inputs)[0]

    def at(ratio: float) -> dict[str, int]:
        return round_counts(keep_counts(sizes, ratio), sizes, multiple)

    if macs_with_counts(dense, example_inputs, at(1.0)) > limit:
        raise ValueError(
            f"channel multiples of {multiple} cannot reach {target:.3f} of the dense MACs; use a smaller multiple"
        )
    low, high = 0.0, 1.0
    for _ in range(iterations):
        mid = 0.5 * (low + high)
        low, high = (low, mid) if macs_with_counts(dense, example_inputs, at(mid)) <= limit else (mid, high)
    keep = at(high)
    while True:
        options = []
        for root, size in sizes.items():
            if size >= multiple and keep[root] + multiple <= size:
                macs = macs_with_counts(dense, example_inputs, {**keep, root: keep[root] + multiple})
                if macs <= limit:
                    options.append((keep[root] / size, -macs, root))
        if not options:
            return keep
        keep[min(options)[2]] += multiple


def global_keep_counts(
    model: nn.Module,
    example_inputs: Tensor,
    scores: dict[str, Tensor],
    max_macs: float,
    ignored: Sequence[nn.Module] | None = None,
) -> dict[str, int]:
    """Channels kept per group under a global ranking, with the fewest removals that bring MACs to ``max_macs``.

    All channels of all groups are ranked by score (ascending; ties by group name, then channel); the ``n`` lowest
    are removed (every group keeps at least one channel), ``n`` found by bisection on the pruned copy's MACs. The
    scores must be comparable across groups (e.g. LAMP's normalised scores).
    """
    sizes = group_sizes(model, example_inputs, ignored)
    ranked = sorted((float(v), root, i) for root in sizes for i, v in enumerate(scores[root].tolist()))

    def counts(n: int) -> dict[str, int]:
        removed: dict[str, int] = {}
        for _, root, _ in ranked[:n]:
            removed[root] = removed.get(root, 0) + 1
        return {root: max(1, size - removed.get(root, 0)) for root, size in sizes.items()}

    def macs(n: int) -> float:
        pruned = copy.deepcopy(model)
        prune_to_counts(pruned, example_inputs, scores, counts(n), ignored)
        return count_macs_params(pruned, example_inputs)[0]

    low, high = 0, len(ranked)
    if macs(high) > max_macs:
        raise ValueError(f"no global pruning reaches {max_macs:.4g} MACs; lower the target's reduction")
    while low < high:
        mid = (low + high) // 2
        if macs(mid) <= max_macs:
            high = mid
        else:
            low = mid + 1
    return counts(high)


def prune_to_counts(
    model: nn.Module,
    example_inputs: Tensor,
    scores: dict[str, Tensor] | None,
    keep: dict[str, int],
    ignored: Sequence[nn.Module] | None = None,
) -> list[list[Any]]:
    """Physically remove the lowest-scoring channels of each group until it has ``keep[root]`` channels (in place).

    Args:
        model: the network (pruned in place by Torch-Pruning).
        example_inputs: an input batch for tracing.
        scores: {root: score per current channel}; None removes the last channels (architecture only).
        keep: channels to keep per group root (groups not listed are left alone).
        ignored: layers never pruned (default: the classifier).

    Returns:
        The Torch-Pruning history of this call: [root module name, is out-channel pruning, indices] per group.
    """
    graph = build_graph(model, example_inputs)
    groups = graph_groups(graph, default_ignored(model) if ignored is None else ignored)
    plan = []
    for group in groups:
        module = group[0].dep.target.module
        root = graph._module2name[module]
        size = len(group[0].idxs)
        remove = size - keep.get(root, size)
        if remove <= 0:
            continue
        order = torch.argsort(scores[root], stable=True) if scores is not None else torch.arange(size - 1, -1, -1)
        plan.append((module, group[0].dep.handler, sorted(order[:remove].tolist())))
    for module, handler, idxs in plan:
        group = graph.get_pruning_group(module, handler, idxs)
        if graph.check_pruning_group(group):
            group.prune()
    return [list(entry) for entry in graph.pruning_history()]


def count_macs_params(model: nn.Module, example_inputs: Tensor) -> tuple[float, float]:
    """(MACs, parameters) for one example batch, counted by Torch-Pruning."""
    was_training = model.training
    model.eval()
    macs, params = tp.utils.count_ops_and_params(model, example_inputs)
    model.train(was_training)
    return float(macs), float(params)


def macs_at_ratio(dense: nn.Module, example_inputs: Tensor, ratio: float) -> float:
    """MACs of the dense model after local pruning of ``ratio`` of every group (architecture only)."""
    return macs_with_counts(dense, example_inputs, keep_counts(group_sizes(dense, example_inputs), ratio))


def ratio_for_macs(dense: nn.Module, example_inputs: Tensor, target: float, iterations: int = 14) -> float:
    """Smallest channel ratio whose local pruning brings MACs to at most ``target`` × dense MACs (bisection)."""
    dense_macs = count_macs_params(dense, example_inputs)[0]
    low, high = 0.0, 0.99
    for _ in range(iterations):
        mid = 0.5 * (low + high)
        if macs_at_ratio(dense, example_inputs, mid) <= target * dense_macs:
            high = mid
        else:
            low = mid
    return high


# ---------------------------------------------------------------------------------------------- plans
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}


def register_architecture(name: str, builder: Callable[..., nn.Module]) -> None:
    """Make ``builder(**kwargs)`` available to :func:`load_pruned` under ``name``."""
    ARCHITECTURES[name] = builder


def _cifar_resnet(**kwargs: Any) -> nn.Module:
    from frugalvision.nn import cifar_resnet

    return cifar_resnet(**kwargs)


def _torchvision_resnet50(**kwargs: Any) -> nn.Module:
    from torchvision.models import resnet50

    return resnet50(weights=None, **kwargs)


def _small_vit(**kwargs: Any) -> nn.Module:
    from frugalvision.nn import small_vit

    return small_vit(**kwargs)


register_architecture("cifar_resnet", _cifar_resnet)
register_architecture("torchvision_resnet50", _torchvision_resnet50)
register_architecture("small_vit", _small_vit)


def sync_attention_heads(model: nn.Module) -> nn.Module:
    """After head pruning, set ``num_heads`` (and timm's ``attn_dim``) of every attention module from its qkv width.

    Torch-Pruning removes the q, k and v rows of a head and the matching ``proj`` columns; the module's head count
    is plain Python state that the forward pass reshapes with, so it is updated here.
    """
    for module in model.modules():
        qkv = getattr(module, "qkv", None)
        head_dim = getattr(module, "head_dim", None)
        if isinstance(qkv, nn.Linear) and isinstance(head_dim, int) and hasattr(module, "num_heads"):
            module.num_heads = qkv.out_features // (3 * head_dim)
            if hasattr(module, "attn_dim"):
                module.attn_dim = module.num_heads * head_dim
    return model


@dataclass
class PruningPlan:
    """How to rebuild a pruned model: the dense architecture and the Torch-Pruning history to replay.

    Attributes:
        arch: a name registered with :func:`register_architecture`.
        kwargs: the builder's keyword arguments (JSON types).
        input_shape: shape of the example input used to trace the graph.
        history: [root module name, is out-channel pruning, indices] entries, in order.
    """

    arch: str
    kwargs: dict[str, Any]
    input_shape: list[int]
    history: list[list[Any]] = field(default_factory=list)


def save_pruned(model: nn.Module, plan: PruningPlan, folder: str | Path) -> Path:
    """Write ``plan.json`` and ``model.safetensors`` (no pickle) into ``folder``, each atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{PLAN_NAME}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(plan.__dict__, indent=1))
    os.replace(tmp, folder / PLAN_NAME)
    save_weights(model.state_dict(), folder / WEIGHTS_NAME)
    return folder


def load_pruned(folder: str | Path) -> nn.Module:
    """Rebuild a pruned model: dense architecture, replay the plan with Torch-Pruning, load the safetensors weights."""
    folder = Path(folder)
    plan = PruningPlan(**json.loads((folder / PLAN_NAME).read_text()))
    if plan.arch not in ARCHITECTURES:
        raise KeyError(f"architecture {plan.arch!r} is not registered; known: {', '.join(ARCHITECTURES)}")
    model = ARCHITECTURES[plan.arch](**plan.kwargs).eval()
    graph = build_graph(model, torch.zeros(plan.input_shape))
    graph.load_pruning_history([list(entry) for entry in plan.history])
    sync_attention_heads(model)
    model.load_state_dict(load_weights(folder / WEIGHTS_NAME))
    return model


def convert_checkpoint(source: str | Path, target: str | Path) -> Path:
    """Convert a plain PyTorch state-dict file (e.g. torchvision's ``resnet50-*.pth``) to safetensors.

    The source is read with ``torch.load(weights_only=True)``, which refuses pickled code; the experiment itself only
    reads the safetensors file (``--pretrained``).
    """
    state = torch.load(source, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    save_weights({k: v for k, v in state.items() if isinstance(v, Tensor)}, target)
    return Path(target)
