"""Weight averaging (DiWA, model soups, moving average) and the functional ensemble, as pure functions.

Everything here works on plain state dicts with identical keys, so it composes with any model of the library (a
CIFAR ResNet, a timm ViT fine-tuned by the DeiT III recipe, ...). Averages are accumulated in float64 and cast back
to each tensor's dtype (spec pitfall 6).

Buffers (e.g. BatchNorm running statistics) follow an explicit policy (spec pitfall 2):

- ``"error_if_different"`` (default): buffers must be identical in every member (true when BatchNorm is frozen, as in
  the paper, or absent, as in our GroupNorm network); they are copied from the first member, otherwise an error.
- ``"from_first"``: copy the first member's buffers (the official code's behaviour).
- ``"average"``: average floating buffers like parameters (what ``AveragedModel(use_buffers=True)`` does).

A fourth option is to recompute BatchNorm statistics of the averaged model on training data:
:func:`recompute_batchnorm`. Integer buffers (``num_batches_tracked``) are never averaged: the first member's value
is used.
"""

from __future__ import annotations

import copy
import hashlib
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from frugalvision.errors import ConfigError

BufferPolicy = Literal["error_if_different", "from_first", "average"]
TieRule = Literal["ge", "gt"]
StateDict = Mapping[str, torch.Tensor]

__all__ = [
    "FunctionalEnsemble",
    "GreedyResult",
    "MovingAverage",
    "average",
    "average_models",
    "average_state_dicts",
    "buffer_keys",
    "ensemble_probs",
    "greedy_select",
    "init_fingerprint",
    "recompute_batchnorm",
]


def buffer_keys(model: nn.Module) -> set[str]:
    """Return the state-dict keys of ``model`` that are buffers (not parameters)."""
    return {name for name, _ in model.named_buffers()}


def init_fingerprint(state: StateDict) -> str:
    """Return a short SHA-256 fingerprint of a state dict (keys, shapes, dtypes and values).

    Every fine-tuned member records the fingerprint of its shared initialisation theta_0; averaging members whose
    fingerprints differ is refused (spec pitfall 5).
    """
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def _check_members(states: Sequence[StateDict]) -> list[str]:
    if not states:
        raise ConfigError("no members to average; pass at least one state dict")
    keys = list(states[0])
    for index, state in enumerate(states[1:], start=1):
        if set(state) != set(keys):
            missing = sorted(set(keys) - set(state))[:3]
            extra = sorted(set(state) - set(keys))[:3]
            raise ConfigError(
                f"member {index} has different keys than member 0 (missing {missing}, extra {extra}); "
                "average only models of the same architecture"
            )
        for key in keys:
            if state[key].shape != states[0][key].shape:
                raise ConfigError(
                    f"member {index} key {key!r} has shape {tuple(state[key].shape)} != "
                    f"{tuple(states[0][key].shape)}; average only models of the same architecture"
                )
    return keys


def average_state_dicts(
    states: Sequence[StateDict],
    *,
    buffers: Iterable[str] = (),
    buffer_policy: BufferPolicy = "error_if_different",
    weights: Sequence[float] | None = None,
    fingerprints: Sequence[str | None] | None = None,
    force: bool = False,
) -> dict[str, torch.Tensor]:
    """Weight-average state dicts: ``theta_WA = sum_m w_m theta_m`` with ``w_m = 1/M`` by default (DiWA Eq. 1).

    Args:
        states: member state dicts with identical keys and shapes.
        buffers: keys that are buffers (see :func:`buffer_keys`); they follow ``buffer_policy``.
        buffer_policy: "error_if_different", "from_first" or "average" (module docstring).
        weights: optional non-negative member weights (normalised to sum 1).
        fingerprints: optional init fingerprint of each member (None entries are not checked).
        force: average even when the fingerprints differ (e.g. the negative control of different inits).

    Returns:
        A new state dict (tensors on the first member's devices, with its dtypes).

    Raises:
        ConfigError: keys/shapes differ, buffers differ under "error_if_different", fingerprints differ without
            ``force``, or the weights are invalid.
    """
    keys = _check_members(states)
    count = len(states)
    if weights is None:
        coeffs = [1.0 / count] * count
    else:
        if len(weights) != count or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError(f"weights={list(weights)} must be {count} non-negative numbers with a positive sum")
        total = float(sum(weights))
        coeffs = [float(w) / total for w in weights]
    if fingerprints is not None:
        known = {f for f in fingerprints if f is not None}
        if len(known) > 1 and not force:
            raise ConfigError(
                f"members come from {len(known)} different initialisations ({', '.join(sorted(known))}); weight "
                "averaging needs a shared init (pass force=True only for the negative control)"
            )
    if buffer_policy not in ("error_if_different", "from_first", "average"):
        raise ConfigError(f"buffer_policy={buffer_policy!r} is invalid; use error_if_different, from_first or average")
    buffer_set = set(buffers)
    unknown = buffer_set - set(keys)
    if unknown:
        raise ConfigError(f"buffers {sorted(unknown)[:3]} are not keys of the members; pass buffer_keys(model)")
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        first = states[0][key]
        is_buffer = key in buffer_set
        if not first.dtype.is_floating_point or (is_buffer and buffer_policy != "average"):
            if is_buffer and buffer_policy == "error_if_different":
                for index, state in enumerate(states[1:], start=1):
                    if not torch.equal(state[key].to(first.device), first):
                        raise ConfigError(
                            f"buffer {key!r} differs between member 0 and member {index}; freeze BatchNorm, pass "
                            "buffer_policy='average' or 'from_first', or recompute it with recompute_batchnorm"
                        )
            out[key] = first.detach().clone()
            continue
        if count == 1:
            out[key] = first.detach().clone()
            continue
        acc = torch.zeros(first.shape, dtype=torch.float64, device=first.device)
        if weights is None:
            for state in states:
                acc += state[key].detach().to(device=first.device, dtype=torch.float64)
            acc /= count
        else:
            for coeff, state in zip(coeffs, states):
                acc += coeff * state[key].detach().to(device=first.device, dtype=torch.float64)
        out[key] = acc.to(first.dtype)
    return out


def average(
    state_dicts: Sequence[StateDict],
    *,
    buffers: Iterable[str] = (),
    buffer_policy: BufferPolicy = "error_if_different",
    fingerprints: Sequence[str | None] | None = None,
) -> dict[str, torch.Tensor]:
    """Uniform weight average ``theta_WA = (1/M) sum_m theta_m`` of state dicts with identical keys (DiWA Eq. 1).

    The central function of DiWA, for any models of one architecture (see :func:`average_state_dicts` for member
    weights, the buffer policies and the init-fingerprint check; load the result with ``model.load_state_dict``).
    """
    return average_state_dicts(state_dicts, buffers=buffers, buffer_policy=buffer_policy, fingerprints=fingerprints)


def average_models(
    models: Sequence[nn.Module],
    *,
    buffer_policy: BufferPolicy = "error_if_different",
    weights: Sequence[float] | None = None,
    fingerprints: Sequence[str | None] | None = None,
    force: bool = False,
) -> nn.Module:
    """Return a new module (a copy of the first member) holding the weight average of ``models``.

    The result is an ordinary module of the members' architecture: one forward pass costs what one member costs.
    """
    if not models:
        raise ConfigError("no models to average; pass at least one module")
    state = average_state_dicts(
        [m.state_dict() for m in models],
        buffers=buffer_keys(models[0]),
        buffer_policy=buffer_policy,
        weights=weights,
        fingerprints=fingerprints,
        force=force,
    )
    merged = copy.deepcopy(models[0])
    merged.load_state_dict(state)
    return merged


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor | Sequence[torch.Tensor]]) -> nn.Module:
    """Recompute the BatchNorm running statistics of ``model`` on training batches (in place; returns it).

    Uses ``torch.optim.swa_utils.update_bn`` (cumulative average over all batches). The first element of a
    tuple/list batch is taken as the input.
    """
    device = next(model.parameters()).device
    inputs = (b[0] if isinstance(b, (tuple, list)) else b for b in batches)
    torch.optim.swa_utils.update_bn((x.to(device) for x in inputs), model)
    return model


@dataclass
class GreedyResult:
    """Outcome of :func:`greedy_select`.

    Attributes:
        selected: indices of the kept members, in the order they were accepted (the best one first).
        order: all candidate indices sorted by individual score (descending, ties by index).
        scores: merged score after each candidate was considered (len == len(order)).
    """

    selected: list[int]
    order: list[int]
    scores: list[float] = field(default_factory=list)


def greedy_select(
    individual_scores: Sequence[float],
    merged_score: Callable[[list[int]], float],
    tie: TieRule = "ge",
    warn_single: bool = True,
) -> GreedyResult:
    """Greedy ("restricted") selection of members to average (DiWA restricted; model soups greedy with ``tie="gt"``).

    Candidates are sorted by ``individual_scores`` descending, ties in index order (the run-id order of the official
    loop). The best one is always kept; each next candidate ``r`` is added when ``merged_score(S + [r]) >=
    merged_score(S)`` (``>`` for ``tie="gt"``). Scores are compared as given, never rounded here: pass exact values
    (``fractions.Fraction`` of correct counts, or floats rounded once from them) so that equal accuracies tie.

    Args:
        individual_scores: validation score of each candidate alone.
        merged_score: validation score of the weight average of a list of candidate indices.
        tie: "ge" (DiWA: ties accepted) or "gt" (model soups: strict improvement).
        warn_single: warn when only the first member was kept.

    Returns:
        The kept indices, the candidate order and the merged score after each step.
    """
    if tie not in ("ge", "gt"):
        raise ConfigError(f"tie={tie!r} is invalid; use 'ge' (DiWA) or 'gt' (model soups)")
    if not individual_scores:
        raise ConfigError("greedy_select got no candidates; pass at least one score")
    order = sorted(range(len(individual_scores)), key=lambda i: (-individual_scores[i], i))
    selected = [order[0]]
    best = merged_score(list(selected))
    scores = [float(best)]
    for candidate in order[1:]:
        score = merged_score([*selected, candidate])
        if score > best or (tie == "ge" and score == best):
            selected.append(candidate)
            best = score
        scores.append(float(best))
    if warn_single and len(selected) == 1 and len(order) > 1:
        warnings.warn(f"greedy selection kept only 1 of {len(order)} members", stacklevel=2)
    return GreedyResult(selected=selected, order=order, scores=scores)


@torch.no_grad()
def ensemble_probs(models: Sequence[nn.Module], inputs: torch.Tensor) -> torch.Tensor:
    """Functional ensemble: the mean of the members' softmax outputs (M forward passes)."""
    if not models:
        raise ConfigError("ensemble_probs got no models; pass at least one")
    total = torch.zeros(())
    for index, model in enumerate(models):
        probs = model(inputs).float().softmax(-1)
        total = probs if index == 0 else total + probs
    return total / len(models)


class FunctionalEnsemble(nn.Module):
    """An ``nn.Module`` whose forward returns ``log(mean_m softmax(f_m(x)))`` (argmax = the ensemble's prediction).

    Args:
        members: the member networks (M forward passes per call).
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ConfigError("FunctionalEnsemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Log of the mean member probabilities."""
        probs = sum(member(inputs).float().softmax(-1) for member in self.members) / len(self.members)
        return torch.log(probs.clamp_min(1e-12))


class MovingAverage:
    """Uniform running average of the weights along one run (the "MA" baseline; SWA without a cyclic schedule).

    ``update(state, step)`` is ignored before ``start_step``; afterwards the average is the plain mean of every state
    passed since (accumulated in float64; buffers follow the last update, integer tensors too).

    Args:
        start_step: first step whose weights enter the average (the official code starts at 100).
        buffers: keys that are buffers; they are copied from the newest state instead of averaged.
    """

    def __init__(self, start_step: int = 0, buffers: Iterable[str] = ()) -> None:
        self.start_step = start_step
        self.buffers = set(buffers)
        self.count = 0
        self._sum: dict[str, torch.Tensor] = {}
        self._last: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def update(self, state: StateDict, step: int) -> bool:
        """Add ``state`` (the weights after ``step``) when ``step >= start_step``; return whether it was added."""
        if step < self.start_step:
            return False
        for key, value in state.items():
            value = value.detach()
            self._last[key] = value.clone()
            if value.dtype.is_floating_point and key not in self.buffers:
                if key in self._sum:
                    self._sum[key] += value.to(device=self._sum[key].device, dtype=torch.float64)
                else:
                    self._sum[key] = value.to(torch.float64).clone()
        self.count += 1
        return True

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights (raises when nothing was averaged yet)."""
        if self.count == 0:
            raise ConfigError(f"the moving average is empty: no update at step >= start_step={self.start_step}")
        return {
            key: (self._sum[key] / self.count).to(last.dtype) if key in self._sum else last.clone()
            for key, last in self._last.items()
        }

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """Serialisable internal state (for resuming): the float64 sums, the last state and the count."""
        tensors = {f"sum.{k}": v for k, v in self._sum.items()}
        tensors.update({f"last.{k}": v for k, v in self._last.items()})
        tensors["count"] = torch.tensor(self.count)
        return tensors

    def load_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Restore what :meth:`to_tensors` returned."""
        self.count = int(tensors["count"])
        self._sum = {k[4:]: v.clone() for k, v in tensors.items() if k.startswith("sum.")}
        self._last = {k[5:]: v.clone() for k, v in tensors.items() if k.startswith("last.")}
