"""The shared statistics behind every verdict: paired comparisons over seeds and the rules built from them.

A claim "arm B beats arm A on a metric" is judged from the per-seed differences ``d_s = B_s - A_s``. With ``n``
seeds, mean ``m`` and standard error ``se = std(d) / sqrt(n)``, the one-sided 95 % confidence bounds are
``m -/+ t_{0.95, n-1} * se``. The comparison is

- ``better`` when the lower bound exceeds the claim's margin (B beats A by more than the margin, beyond the noise),
- ``worse`` when the upper bound is below the equivalence margin (B is not better by as much as that margin; with
  the default 0: B is significantly worse),
- ``unclear`` otherwise.

Under no effect (``d`` centred on 0 with Gaussian noise) a comparison is ``better`` with probability 5 %, whatever
the noise size; a rule that needs several comparisons to be ``better`` is no more permissive. One seed (or zero
spread with zero mean) is always ``unclear``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from frugalvision.errors import ConfigError

__all__ = [
    "ALPHA",
    "Comparison",
    "Precondition",
    "Verdict",
    "claim_verdict",
    "compare",
    "metric_values",
    "null_rows",
    "one_sided_critical",
    "paired_difference",
    "supported_rate",
    "threshold",
]

ALPHA = 0.05
Outcome = Literal["better", "worse", "unclear"]
VerdictName = Literal["supported", "not supported", "inconclusive"]


@lru_cache(maxsize=256)
def one_sided_critical(dof: int, alpha: float = ALPHA) -> float:
    """The ``1 - alpha`` quantile of Student's t with ``dof`` degrees of freedom (``inf`` for ``dof < 1``)."""
    if dof < 1:
        return math.inf
    from scipy.stats import t as student_t

    return float(student_t.ppf(1.0 - alpha, dof))


def _rows(rows: Iterable[Any]) -> list[Mapping[str, Any]]:
    out = []
    for row in rows:
        out.append(row.to_dict() if hasattr(row, "to_dict") else row)
    return out


def metric_values(rows: Iterable[Any], metric: str, name: str) -> dict[int, float]:
    """``{seed: value}`` of one metric for one row name.

    Raises:
        ConfigError: a seed repeats for the name.
    """
    values: dict[int, float] = {}
    for row in _rows(rows):
        if row["name"] == name and metric in row["metrics"]:
            if row["seed"] in values:
                raise ConfigError(f"row {name!r} has seed {row['seed']} twice; give each run its own seed")
            values[int(row["seed"])] = float(row["metrics"][metric])
    return values


def paired_difference(rows: Iterable[Any], metric: str, reference: str, better: str) -> list[float]:
    """Per-seed differences ``better - reference`` of one metric, over the seeds both rows have (sorted by seed).

    Raises:
        ConfigError: a row name has no value of ``metric``, or the two share no seed.
    """
    rows = _rows(rows)
    a, b = metric_values(rows, metric, reference), metric_values(rows, metric, better)
    for name, values in ((reference, a), (better, b)):
        if not values:
            raise ConfigError(f"no row named {name!r} records metric {metric!r}; check the row and metric names")
    common = sorted(set(a) & set(b))
    if not common:
        raise ConfigError(f"rows {reference!r} and {better!r} share no seed; run both with the same seeds")
    return [b[s] - a[s] for s in common]


@dataclass(frozen=True)
class Comparison:
    """A paired comparison over seeds of ``better - reference`` on one metric.

    Attributes:
        metric: the metric compared.
        better: the row claimed to be better (or a description of it).
        reference: the row it is compared with (or a constant, for a threshold).
        diffs: per-seed differences.
        margin: the lower bound must exceed this for ``better``.
        equivalence: the upper bound below this gives ``worse``.
        alpha: one-sided error rate of each bound.
        higher_is_better: False for metrics such as NLL or latency (the differences are then ``reference - better``).
    """

    metric: str
    better: str
    reference: str
    diffs: tuple[float, ...]
    margin: float = 0.0
    equivalence: float = 0.0
    alpha: float = ALPHA
    higher_is_better: bool = True

    @property
    def n(self) -> int:
        """Number of paired seeds."""
        return len(self.diffs)

    @property
    def mean(self) -> float:
        """Mean difference (NaN without seeds)."""
        return math.fsum(self.diffs) / self.n if self.n else math.nan

    @property
    def se(self) -> float:
        """Standard error of the mean difference (NaN below two seeds)."""
        if self.n < 2:
            return math.nan
        mean = self.mean
        var = math.fsum((d - mean) ** 2 for d in self.diffs) / (self.n - 1)
        return math.sqrt(var / self.n)

    @property
    def critical(self) -> float:
        """One-sided critical value t_{1-alpha, n-1}."""
        return one_sided_critical(self.n - 1, self.alpha)

    @property
    def lower(self) -> float:
        """One-sided lower confidence bound of the mean difference."""
        return self._bound(-1.0)

    @property
    def upper(self) -> float:
        """One-sided upper confidence bound of the mean difference."""
        return self._bound(1.0)

    def _bound(self, sign: float) -> float:
        if self.n < 2 or not all(math.isfinite(d) for d in self.diffs):
            return sign * math.inf
        if self.se == 0.0:
            return self.mean if self.mean != 0.0 else sign * math.inf
        return self.mean + sign * self.critical * self.se

    @property
    def t(self) -> float:
        """The t statistic mean / se (NaN when undefined)."""
        se = self.se
        return self.mean / se if se and math.isfinite(se) else math.nan

    @property
    def outcome(self) -> Outcome:
        """``better``, ``worse`` or ``unclear`` (see the module docstring)."""
        if self.lower > self.margin:
            return "better"
        if self.upper < self.equivalence:
            return "worse"
        return "unclear"

    def describe(self) -> str:
        """One line: the difference, its standard error and the outcome."""
        sign = "" if self.higher_is_better else " (lower is better)"
        return (
            f"{self.better} vs {self.reference} on {self.metric}{sign}: d = {self.mean:+.4g} ± {self.se:.2g} "
            f"(SE, n={self.n}), one-sided {confidence_words(self.alpha)} bounds [{self.lower:+.4g}, {self.upper:+.4g}] "
            f"-> {self.outcome}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to results.json (``comparisons``)."""
        return {
            "metric": self.metric,
            "better": self.better,
            "reference": self.reference,
            "n": self.n,
            "mean": _finite(self.mean),
            "se": _finite(self.se),
            "lower": _finite(self.lower),
            "upper": _finite(self.upper),
            "margin": self.margin,
            "outcome": self.outcome,
        }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def compare(
    rows: Iterable[Any],
    metric: str,
    better: str,
    reference: str,
    margin: float = 0.0,
    equivalence: float = 0.0,
    alpha: float = ALPHA,
    higher_is_better: bool = True,
) -> Comparison:
    """Pair two rows over their common seeds and compare them on ``metric``.

    Args:
        rows: the experiment's rows.
        metric: metric to compare.
        better: row claimed better.
        reference: row it is compared with.
        margin: minimal effect the lower bound must clear.
        equivalence: the upper bound below this makes the comparison ``worse``.
        alpha: one-sided error rate.
        higher_is_better: False when lower values are better (NLL, latency).

    Returns:
        The comparison.
    """
    diffs = paired_difference(rows, metric, reference, better)
    if not higher_is_better:
        diffs = [-d for d in diffs]
    return Comparison(metric, better, reference, tuple(diffs), margin, equivalence, alpha, higher_is_better)


def threshold(
    rows: Iterable[Any], metric: str, name: str, above: float, alpha: float = ALPHA, label: str | None = None
) -> Comparison:
    """One-sample comparison of a row's per-seed values against a constant (``better`` if clearly above it)."""
    values = metric_values(rows, metric, name)
    if not values:
        raise ConfigError(f"no row named {name!r} records metric {metric!r}; check the row and metric names")
    diffs = tuple(v - above for _, v in sorted(values.items()))
    return Comparison(metric, name, label or f"{above:g}", diffs, alpha=alpha)


@dataclass(frozen=True)
class Precondition:
    """A fact the claim needs before it can be judged (e.g. "the shared initialisation beats training from scratch").

    Attributes:
        name: what is required, in words.
        holds: whether it holds on these rows.
        detail: the numbers behind it.
    """

    name: str
    holds: bool
    detail: str = ""


@dataclass(frozen=True)
class Verdict:
    """A computed verdict, its rule in words, and the evidence that decided it.

    Attributes:
        verdict: "supported", "not supported" or "inconclusive".
        rule: the rule in words (written to results.json as ``verdict_rule``).
        evidence: the numbers that decided it, one sentence each.
        comparisons: the paired comparisons used (written to results.json).
    """

    verdict: VerdictName
    rule: str
    evidence: tuple[str, ...] = ()
    comparisons: tuple[Comparison, ...] = field(default=())


def confidence_words(alpha: float) -> str:
    """The confidence level of a one-sided bound at ``alpha`` as a percentage: 0.05 -> "95%", 0.025 -> "97.5%"."""
    return f"{round(100 * (1 - alpha), 2):g}%"


def _bound_words(comparisons: Sequence[Comparison]) -> str:
    alpha = comparisons[0].alpha if comparisons else ALPHA
    return f"one-sided {confidence_words(alpha)} bound (Student t over seeds)"


def claim_verdict(
    comparisons: Sequence[Comparison],
    preconditions: Sequence[Precondition] = (),
    claim: str = "",
    any_worse_refutes: bool = True,
) -> Verdict:
    """The house rule: supported iff every precondition holds and every comparison is ``better``.

    Not supported when (the preconditions hold and) any comparison is ``worse`` (with ``any_worse_refutes``; else
    only when all are). Inconclusive otherwise, and whenever a precondition fails: the claim cannot be judged then.

    Args:
        comparisons: the paired comparisons the claim consists of.
        preconditions: facts that must hold before the claim is judged.
        claim: a short name of the claim for the rule text.
        any_worse_refutes: one ``worse`` comparison refutes the claim (default), or only all of them.

    Returns:
        The verdict with its rule and evidence.
    """
    if not comparisons:
        raise ConfigError("a verdict needs at least one comparison; compare the method with its reference")
    parts = [
        f"{c.better} > {c.reference} on {c.metric}" + (f" by > {c.margin:g}" if c.margin else "") for c in comparisons
    ]
    refute = "any" if any_worse_refutes else "every"
    worse_words = "its upper bound below " + (
        "0" if all(c.equivalence == 0 for c in comparisons) else "the equivalence margin"
    )
    rule = (
        f"{claim + ': ' if claim else ''}supported if "
        + (f"the preconditions hold ({'; '.join(p.name for p in preconditions)}) and " if preconditions else "")
        + f"each paired difference has its {_bound_words(comparisons)} above its margin: {'; '.join(parts)}; "
        f"not supported if {refute} comparison has {worse_words}; otherwise inconclusive"
    )
    evidence = [c.describe() for c in comparisons]
    evidence += [f"precondition '{p.name}' {'holds' if p.holds else 'fails'}: {p.detail}" for p in preconditions]
    outcomes = [c.outcome for c in comparisons]
    if not all(p.holds for p in preconditions):
        verdict: VerdictName = "inconclusive"
    elif all(o == "better" for o in outcomes):
        verdict = "supported"
    elif (any if any_worse_refutes else all)(o == "worse" for o in outcomes):
        verdict = "not supported"
    else:
        verdict = "inconclusive"
    return Verdict(verdict, rule, tuple(evidence), tuple(comparisons))


# ------------------------------------------------------------------------------------------------ null simulation
def _noise_sizes(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Per metric: the pooled within-name standard deviation over seeds (floored at 1e-3 of its magnitude)."""
    by: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        for metric, value in row["metrics"].items():
            by.setdefault(metric, {}).setdefault(row["name"], []).append(float(value))
    sizes = {}
    for metric, names in by.items():
        squares, dof = 0.0, 0
        for values in names.values():
            finite = [v for v in values if math.isfinite(v)]
            if len(finite) > 1:
                mean = math.fsum(finite) / len(finite)
                squares += math.fsum((v - mean) ** 2 for v in finite)
                dof += len(finite) - 1
        scale = max((abs(v) for values in names.values() for v in values if math.isfinite(v)), default=1.0)
        sizes[metric] = max(math.sqrt(squares / dof) if dof else 0.0, 1e-3 * scale, 1e-9)
    return sizes


def null_rows(
    rows: Sequence[Any],
    rng: random.Random,
    levels: Mapping[str, float] | None = None,
    noise_scale: float = 1.0,
) -> list[dict[str, Any]]:
    """Rows shaped like ``rows`` in which no row name differs from another: the "no effect" world.

    Every value of a metric is the metric's pooled mean over all rows (or ``levels[metric]`` when given) plus
    independent Gaussian noise of the measured size (the pooled within-name standard deviation over seeds, times
    ``noise_scale``).

    Args:
        rows: a real experiment's rows (names, seeds and metrics are kept).
        rng: random source.
        levels: metric -> the value it takes when the claim is false (e.g. chance accuracy for a sanity claim).
        noise_scale: multiplier of the measured noise.

    Returns:
        The simulated rows.
    """
    plain = _rows(rows)
    sizes = _noise_sizes(plain)
    means: dict[str, list[float]] = {}
    for row in plain:
        for metric, value in row["metrics"].items():
            if math.isfinite(float(value)):
                means.setdefault(metric, []).append(float(value))
    centre = {metric: math.fsum(v) / len(v) for metric, v in means.items()}
    centre.update(levels or {})
    return [
        {
            "name": row["name"],
            "seed": row["seed"],
            "metrics": {m: centre.get(m, 0.0) + rng.gauss(0.0, noise_scale * sizes[m]) for m in row["metrics"]},
        }
        for row in plain
    ]


def supported_rate(
    verdict: Callable[[list[dict[str, Any]]], Verdict],
    rows: Sequence[Any],
    trials: int = 400,
    seed: int = 0,
    levels: Mapping[str, float] | None = None,
    noise_scale: float = 1.0,
) -> float:
    """Fraction of simulated no-effect experiments (:func:`null_rows`) that ``verdict`` calls "supported"."""
    rng = random.Random(seed)
    hits = sum(verdict(null_rows(rows, rng, levels, noise_scale)).verdict == "supported" for _ in range(trials))
    return hits / trials
