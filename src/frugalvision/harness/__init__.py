"""The one experiment harness under every method.

A method declares its experiment as one :class:`Experiment` (config class, presets, a main :class:`Study`, optional
studies, a benchmark); the harness (:func:`run_experiment`) owns run folders, seeding, resume, rank-0 writing,
results.json, config.yaml, figures and the printed summary, and every verdict is computed from the shared paired
statistics of :mod:`frugalvision.harness.stats`. See ``harness/README.md`` for a worked declaration.
"""

from frugalvision.harness.config import RunConfig, apply_threads, thread_environment
from frugalvision.harness.context import Context
from frugalvision.harness.declare import (
    REQUIRED_PRESETS,
    Experiment,
    FigureInput,
    Study,
    Unit,
    UnitRecord,
    UnitResult,
)
from frugalvision.harness.runner import fingerprint_fields, print_summary, run_experiment, study_dir
from frugalvision.harness.stats import (
    Comparison,
    Precondition,
    Verdict,
    claim_verdict,
    compare,
    metric_values,
    null_rows,
    paired_difference,
    supported_rate,
    threshold,
)
from frugalvision.harness.timing import (
    Timing,
    benchmark_result,
    interleaved_ratio,
    interleaved_timings,
    latency_ratio,
    ratio_entry,
)

__all__ = [
    "REQUIRED_PRESETS",
    "Comparison",
    "Context",
    "Experiment",
    "FigureInput",
    "Precondition",
    "RunConfig",
    "Study",
    "Timing",
    "Unit",
    "UnitRecord",
    "UnitResult",
    "Verdict",
    "apply_threads",
    "benchmark_result",
    "claim_verdict",
    "compare",
    "fingerprint_fields",
    "interleaved_ratio",
    "interleaved_timings",
    "latency_ratio",
    "metric_values",
    "null_rows",
    "paired_difference",
    "print_summary",
    "ratio_entry",
    "run_experiment",
    "study_dir",
    "supported_rate",
    "thread_environment",
    "threshold",
]
