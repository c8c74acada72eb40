"""The CPU thread policy of frugalvision processes, chosen by measurement (``benchmarks/thread_policy.py``).

OpenMP threads that finish their share of a parallel region spin, waiting for the next one, by default. On a busy
machine the spinning thread takes the core from the thread everyone waits for: measured on 2 cores, a training step
with 2 threads and the default policy ran up to 10-25x slower than with 1 thread as soon as other processes
competed for the cores, while ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep) kept 2 threads as fast as the
default on an idle machine and faster than 1 thread under load. The policy is read once, when torch loads its
OpenMP runtime, so :func:`apply_thread_policy` must run before ``import torch``: the ``frugal`` entry point calls it
first thing, and a script can too. A value the user set is never overridden.

This module imports nothing heavy (no torch).
"""

from __future__ import annotations

import os
import sys

__all__ = ["DEFAULT_WAIT_POLICY", "apply_thread_policy", "thread_policy"]

#: the OpenMP wait policy of every frugalvision process unless the user sets ``OMP_WAIT_POLICY``
DEFAULT_WAIT_POLICY = "PASSIVE"

_source = "unset"


def apply_thread_policy() -> str:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user set it or torch is already imported; return its source.

    Returns:
        "user" (the environment had a value, kept), "frugalvision" (set here, before torch), or "too late" (torch
        was imported before this call, so its OpenMP runtime keeps the policy it started with; nothing is changed).
    """
    global _source
    if "OMP_WAIT_POLICY" in os.environ:
        _source = "frugalvision" if _source == "frugalvision" else "user"
    elif "torch" in sys.modules:
        _source = "too late"
    else:
        os.environ["OMP_WAIT_POLICY"] = DEFAULT_WAIT_POLICY
        _source = "frugalvision"
    return _source


def thread_policy() -> dict[str, str]:
    """The OpenMP wait policy in effect and who chose it, for results.json.

    Returns:
        ``{"omp_wait_policy": value or "" (the OpenMP default: spin, then sleep), "omp_wait_policy_source": ...}``
        where the source is "user", "frugalvision", "too late" or "unset" (:func:`apply_thread_policy` never ran).
    """
    return {"omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""), "omp_wait_policy_source": _source}
