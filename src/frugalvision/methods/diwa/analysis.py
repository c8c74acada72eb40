"""The averaging analysis of one data split, from its finished members: every arm's metrics, diversity, curves.

Pure functions of :class:`~frugalvision.methods.diwa.members.MemberRecord` lists and an :class:`Evaluator` (OOD
accuracy on the test domain, training-domain validation): ERM-best, member mean, MA, ENS, DiWA uniform / restricted,
greedy soups, the negative control, prediction diversity vs the pair-average gain.
"""

from __future__ import annotations

import itertools
import statistics
from fractions import Fraction
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from frugalvision.methods.diwa.averaging import average_state_dicts, buffer_keys, greedy_select
from frugalvision.methods.diwa.diversity import disagreement, ratio_error
from frugalvision.methods.diwa.members import MemberRecord
from frugalvision.methods.diwa.splits import exact_val

__all__ = ["ARMS", "Evaluator", "curves", "pairs", "seed_rows"]

ARMS = ("erm_best", "member_mean", "ma", "ens", "diwa_uniform", "diwa_restricted", "soup_greedy")
#: sets up to this many input values are kept in memory as tensors (the offline benchmark); larger ones stream
IN_MEMORY_VALUES = 50_000_000


class _Inputs:
    """One evaluation set as batches: held in memory when small, streamed from its dataset otherwise."""

    def __init__(self, dataset: Dataset, batch_size: int = 512) -> None:
        self.dataset, self.batch_size = dataset, batch_size
        first = dataset[0][0]
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        if len(dataset) * first.numel() <= IN_MEMORY_VALUES:  # type: ignore[arg-type]
            self.batches = list(DataLoader(dataset, batch_size=batch_size, shuffle=False))

    @torch.no_grad()
    def logits(self, net: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, targets) of ``net`` (in eval mode) on the whole set."""
        device = next(net.parameters()).device
        batches = self.batches or DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False)
        outs = [(net(x.to(device)).float().cpu(), torch.as_tensor(y)) for x, y in batches]
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])


class Evaluator:
    """OOD accuracy and training-domain val of state dicts and of averages of members (cached by member names).

    Args:
        net: a network of the members' architecture (its weights are overwritten).
        val_sets: the training domains' hold-outs.
        test_set: the test domain (used in full).
    """

    def __init__(self, net: nn.Module, val_sets: list[Dataset], test_set: Dataset) -> None:
        self.net = net.eval()
        self.buffers = buffer_keys(net)
        self.val = [_Inputs(d) for d in val_sets]
        self.test = _Inputs(test_set)
        self.cache: dict[tuple[str, ...], dict[str, Any]] = {}

    def outputs(self, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Test logits/targets, OOD accuracy, validation logits, mean per-domain val and merged val of a state dict.

        Accuracies are exact fractions of the correct counts, rounded once (ties between runs stay exact).
        """
        self.net.load_state_dict(state)
        logits, targets = self.test.logits(self.net)
        val_outputs = [inputs.logits(self.net) for inputs in self.val]
        per_domain, merged = exact_val([out.argmax(-1) == y for out, y in val_outputs])
        return {
            "logits": logits,
            "targets": targets,
            "val_outputs": val_outputs,
            "ood_acc": float(Fraction(int((logits.argmax(-1) == targets).sum()), len(targets))),
            "val": float(per_domain),
            "val_merged": float(merged),
        }

    def average(self, members: list[MemberRecord], force: bool = False) -> dict[str, Any]:
        """Outputs of the uniform weight average of ``members`` (init fingerprints checked unless ``force``)."""
        members = sorted(members, key=lambda m: m.name)
        key = tuple(m.name for m in members)
        if key not in self.cache:
            state = average_state_dicts(
                [m.state for m in members],
                buffers=self.buffers,
                fingerprints=[m.fingerprint for m in members],
                force=force,
            )
            self.cache[key] = self.outputs(state)
        return self.cache[key]


def _ensemble_acc(single: list[dict[str, Any]], count: int) -> float:
    probs = torch.stack([single[i]["logits"].softmax(-1) for i in range(count)]).mean(0)
    return float(Fraction(int((probs.argmax(-1) == single[0]["targets"]).sum()), len(probs)))


def _ensemble_val(single: list[dict[str, Any]], count: int) -> float:
    """In-domain validation score (mean per-domain accuracy) of the functional ensemble of the first ``count``."""
    correct = []
    for domain, (_, targets) in enumerate(single[0]["val_outputs"]):
        probs = torch.stack([single[i]["val_outputs"][domain][0].softmax(-1) for i in range(count)]).mean(0)
        correct.append(probs.argmax(-1) == targets)
    return float(exact_val(correct)[0])


def _erm_best(members: list[MemberRecord], count: int) -> int:
    """Index of the best single run by training-domain val among the first ``count`` (ties: the first)."""
    return max(range(count), key=lambda i: (members[i].val, -i))


def size_metrics(ev: Evaluator, members: list[MemberRecord], m: int, tie: str = "ge") -> dict[str, dict[str, float]]:
    """Every arm's metrics when the first ``m`` members are available (arm -> metrics)."""
    subset = members[:m]
    single = [ev.average([member]) for member in subset]
    best = single[_erm_best(subset, m)]
    uniform, ens, ens_val = ev.average(subset), _ensemble_acc(single, m), _ensemble_val(single, m)
    metrics: dict[str, dict[str, float]] = {
        "erm_best": {"ood_acc": best["ood_acc"], "val": best["val"]},
        "member_mean": {
            "ood_acc": statistics.fmean(s["ood_acc"] for s in single),
            "val": statistics.fmean(s["val"] for s in single),
        },
        "ens": {"ood_acc": ens, "val": ens_val, "forward_passes": float(m)},
        "diwa_uniform": {
            "ood_acc": uniform["ood_acc"],
            "val": uniform["val"],
            "wa_minus_ens": uniform["ood_acc"] - ens,
            "val_wa_minus_ens": uniform["val"] - ens_val,
            "forward_passes": 1.0,
        },
    }
    mas = [(ev.outputs(s.ma_state), i) for i, s in enumerate(subset) if s.ma_state is not None]
    if mas:
        ma = max(mas, key=lambda pair: (pair[0]["val"], -pair[1]))[0]
        metrics["ma"] = {"ood_acc": ma["ood_acc"], "val": ma["val"]}
    scores = [member.val for member in subset]
    for arm, rule in (("diwa_restricted", tie), ("soup_greedy", "gt")):
        greedy = greedy_select(
            scores,
            lambda chosen: ev.average([subset[i] for i in chosen])["val_merged"],
            tie=rule,  # type: ignore[arg-type]
            warn_single=arm == "diwa_restricted",
        )
        kept = ev.average([subset[i] for i in greedy.selected])
        metrics[arm] = {"ood_acc": kept["ood_acc"], "val": kept["val"], "kept": float(len(greedy.selected))}
    return metrics


def pairs(ev: Evaluator, members: list[MemberRecord], count: int) -> list[dict[str, float]]:
    """Diversity (ratio-error, disagreement) and the pair-average gain of every pair of the first ``count``."""
    single = [ev.average([member]) for member in members[:count]]
    out = []
    for i, j in itertools.combinations(range(len(single)), 2):
        pred_i, pred_j, targets = single[i]["logits"].argmax(-1), single[j]["logits"].argmax(-1), single[i]["targets"]
        gain = ev.average([members[i], members[j]])["ood_acc"] - (single[i]["ood_acc"] + single[j]["ood_acc"]) / 2
        out.append(
            {
                "i": i,
                "j": j,
                "ratio_error": ratio_error(pred_i, pred_j, targets),
                "disagreement": disagreement(pred_i, pred_j),
                "gain": gain,
            }
        )
    return out


def curves(ev: Evaluator, members: list[MemberRecord]) -> dict[str, list[float]]:
    """OOD accuracy of DiWA uniform, ENS and ERM-best over the first M members, M = 1..len(members)."""
    single = [ev.average([member]) for member in members]
    out: dict[str, list[float]] = {"diwa_uniform": [], "ens": [], "erm_best": []}
    for m in range(1, len(members) + 1):
        out["erm_best"].append(single[_erm_best(members, m)]["ood_acc"])
        out["ens"].append(_ensemble_acc(single, m))
        out["diwa_uniform"].append(ev.average(members[:m])["ood_acc"])
    return out


def control_rows(ev: Evaluator, members: list[MemberRecord], scratch: list[MemberRecord], seed: int) -> list[dict]:
    """The precondition's pair (default hparams from theta_0 vs from scratch) and the negative control.

    Without runs from scratch only ``finetune_default`` is returned.
    """
    first = ev.average([members[0]])
    rows = [{"name": "finetune_default", "seed": seed, "metrics": {"ood_acc": first["ood_acc"], "val": first["val"]}}]
    if not scratch:
        return rows
    accs = [ev.outputs(run.state)["ood_acc"] for run in scratch]
    averaged = ev.average(scratch, force=True)["ood_acc"]
    control = {
        "ood_acc": averaged,
        "worst_member_ood_acc": min(accs),
        "mean_member_ood_acc": statistics.fmean(accs),
        "collapse_gap": 0.5 * min(accs) - averaged,
    }
    scratch_metrics = {"ood_acc": statistics.fmean(accs), "val": statistics.fmean(r.val for r in scratch)}
    return rows + [
        {"name": "scratch_default", "seed": seed, "metrics": scratch_metrics},
        {"name": "control_random_inits", "seed": seed, "metrics": control},
    ]


def diversity_row(pair_list: list[dict[str, float]], seed: int) -> list[dict]:
    """Mean gain, mean disagreement and their Pearson r over the pairs (no row below three pairs)."""
    if len(pair_list) < 3:
        return []
    xs, ys = [p["disagreement"] for p in pair_list], [p["gain"] for p in pair_list]
    metrics = {"mean_gain": statistics.fmean(ys), "mean_disagreement": statistics.fmean(xs)}
    if len(set(xs)) > 1 and len(set(ys)) > 1:
        metrics["pearson_r"] = statistics.correlation(xs, ys)
    return [{"name": "diversity_vs_gain", "seed": seed, "metrics": metrics}]


def seed_rows(
    ev: Evaluator,
    members: list[MemberRecord],
    scratch: list[MemberRecord],
    seed: int,
    sizes: tuple[int, ...],
    diversity_members: int,
    tie: str = "ge",
) -> list[dict[str, Any]]:
    """Every row of one data split: each arm at each M of ``sizes``, the control pair, diversity vs gain."""
    rows = []
    for m in sizes:
        metrics = size_metrics(ev, members, m, tie)
        rows += [{"name": f"{arm}_M{m}", "seed": seed, "metrics": metrics[arm]} for arm in ARMS if arm in metrics]
    rows += control_rows(ev, members, scratch, seed)
    return rows + diversity_row(pairs(ev, members, diversity_members), seed)
