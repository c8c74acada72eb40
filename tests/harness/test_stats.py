import math
import random

import pytest
from scipy import stats as scipy_stats

from frugalvision.errors import ConfigError
from frugalvision.harness import (
    Precondition,
    claim_verdict,
    compare,
    null_rows,
    paired_difference,
    supported_rate,
    threshold,
)
from frugalvision.harness.stats import one_sided_critical

ROWS = [
    {"name": "baseline", "seed": 0, "metrics": {"top1": 0.80}},
    {"name": "baseline", "seed": 1, "metrics": {"top1": 0.82}},
    {"name": "baseline", "seed": 2, "metrics": {"top1": 0.81}},
    {"name": "ours", "seed": 0, "metrics": {"top1": 0.85}},
    {"name": "ours", "seed": 1, "metrics": {"top1": 0.86}},
    {"name": "ours", "seed": 2, "metrics": {"top1": 0.87}},
    {"name": "single", "seed": 5, "metrics": {"top1": 0.5}},
]


def test_paired_difference_pairs_by_seed_and_names_bad_input():
    assert paired_difference(ROWS, "top1", "baseline", "ours") == pytest.approx([0.05, 0.04, 0.06])
    with pytest.raises(ConfigError, match="no row named 'x'"):
        paired_difference(ROWS, "top1", "x", "ours")
    with pytest.raises(ConfigError, match="share no seed"):
        paired_difference(ROWS, "top1", "baseline", "single")
    with pytest.raises(ConfigError, match="seed 0 twice"):
        paired_difference([*ROWS, ROWS[3]], "top1", "baseline", "ours")


@pytest.mark.parametrize("dof", [1, 2, 4, 9, 30])
def test_critical_value_is_the_student_t_quantile(dof):
    # closed forms: t_{0.95,1} = tan(pi (0.95 - 0.5)), t_{0.95,2} = (2p-1) sqrt(2 / (1 - (2p-1)^2)) with p = 0.95
    if dof == 1:
        assert one_sided_critical(1) == pytest.approx(math.tan(math.pi * 0.45))
    elif dof == 2:
        a = 2 * 0.95 - 1
        assert one_sided_critical(2) == pytest.approx(a * math.sqrt(2 / (1 - a * a)))
    else:
        assert one_sided_critical(dof) == pytest.approx(scipy_stats.t.ppf(0.95, dof))


def test_comparison_equals_the_paired_t_test():
    comparison = compare(ROWS, "top1", better="ours", reference="baseline")
    diffs = [0.05, 0.04, 0.06]
    mean = sum(diffs) / 3
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2 / 3)
    assert comparison.mean == pytest.approx(mean) and comparison.se == pytest.approx(se)
    result = scipy_stats.ttest_rel([0.85, 0.86, 0.87], [0.80, 0.82, 0.81], alternative="greater")
    assert comparison.t == pytest.approx(result.statistic)
    # the lower bound clears 0 exactly when the one-sided p-value is below 5 %
    assert (comparison.lower > 0) == (result.pvalue < 0.05)
    assert comparison.lower == pytest.approx(mean - scipy_stats.t.ppf(0.95, 2) * se)


def test_lower_is_better_flips_the_difference():
    comparison = compare(ROWS, "top1", better="baseline", reference="ours", higher_is_better=False)
    assert comparison.mean == pytest.approx(compare(ROWS, "top1", "ours", "baseline").mean)


def test_outcomes_and_verdicts():
    better = compare(ROWS, "top1", "ours", "baseline")
    assert better.outcome == "better"
    assert claim_verdict([better]).verdict == "supported"
    worse = compare(ROWS, "top1", "baseline", "ours")
    assert worse.outcome == "worse"
    assert claim_verdict([better, worse]).verdict == "not supported"
    assert claim_verdict([better, worse], any_worse_refutes=False).verdict == "inconclusive"
    failed = Precondition("the reference learned", False, "top1 0.1")
    verdict = claim_verdict([better], [failed])
    assert verdict.verdict == "inconclusive" and "fails" in verdict.evidence[-1]
    assert compare(ROWS, "top1", "ours", "baseline", margin=0.1).outcome == "unclear"


def test_one_seed_or_no_spread_is_never_decisive():
    one = [{"name": n, "seed": 0, "metrics": {"m": v}} for n, v in (("a", 0.1), ("b", 0.9))]
    assert compare(one, "m", "b", "a").outcome == "unclear"
    tied = [{"name": n, "seed": s, "metrics": {"m": 0.5}} for n in "ab" for s in range(3)]
    assert compare(tied, "m", "b", "a").outcome == "unclear"


def test_threshold_compares_with_a_constant():
    assert threshold(ROWS, "top1", "ours", 0.8).outcome == "better"
    assert threshold(ROWS, "top1", "ours", 0.9).outcome == "worse"


@pytest.mark.parametrize("noise", [1e-3, 0.05])
def test_a_single_comparison_says_supported_five_percent_of_the_time_under_no_effect(noise):
    rows = [{"name": n, "seed": s, "metrics": {"m": 0.5 + noise * (s % 2)}} for n in "ab" for s in range(3)]
    rate = supported_rate(lambda r: claim_verdict([compare(r, "m", "b", "a")]), rows, trials=4000)
    assert 0.035 < rate < 0.065  # binomial 99 % interval around 0.05 for 4,000 trials


def test_a_best_of_two_rule_without_correction_is_caught_by_the_simulation():
    rows = [{"name": n, "seed": s, "metrics": {"m": 0.5}} for n in "abc" for s in range(3)]

    def best_of_two(r):
        return max((claim_verdict([compare(r, "m", arm, "a")]) for arm in "bc"), key=lambda v: v.verdict == "supported")

    def corrected(r):
        return max(
            (claim_verdict([compare(r, "m", arm, "a", alpha=0.025)]) for arm in "bc"),
            key=lambda v: v.verdict == "supported",
        )

    assert supported_rate(best_of_two, rows, trials=3000) > 0.07
    assert supported_rate(corrected, rows, trials=3000) < 0.062


def test_null_rows_keep_the_shape_and_centre_every_arm_on_one_mean():
    rows = null_rows(ROWS, random.Random(0), levels={"top1": 0.3})
    assert [(r["name"], r["seed"]) for r in rows] == [(r["name"], r["seed"]) for r in ROWS]
    values = [r["metrics"]["top1"] for r in null_rows(ROWS * 200, random.Random(1))]
    pooled = sum(r["metrics"]["top1"] for r in ROWS) / len(ROWS)
    assert sum(values) / len(values) == pytest.approx(pooled, abs=2e-3)


def test_confidence_words_keep_the_half_alpha_level_exact():
    from frugalvision.harness.stats import confidence_words

    assert [confidence_words(a) for a in (0.05, 0.025, 0.01, 0.1)] == ["95%", "97.5%", "99%", "90%"]
