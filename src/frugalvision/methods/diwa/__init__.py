"""DiWA: diverse weight averaging of fine-tuned runs from a shared initialisation (arXiv:2205.09739).

Public API:

- :func:`average` (``state_dicts -> state_dict``): the uniform weight average of any models of one architecture, the
  method's central function; :func:`average_models` returns the averaged module, :func:`greedy_select` the
  restricted (greedy) subset.
- :func:`train_members` builds the members: M fine-tunings of a user's network from one shared initialisation with
  mild, diverse hyperparameters, each keeping its best checkpoint by training-domain validation;
  :func:`linear_probe` builds the shared initialisation.

``train_members`` and ``linear_probe`` are imported on first use (they bring in the training engine).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from frugalvision.methods.diwa.averaging import average, average_models, average_state_dicts, greedy_select

__all__ = [
    "MemberRecord",
    "average",
    "average_models",
    "average_state_dicts",
    "greedy_select",
    "linear_probe",
    "train_members",
]

_LAZY = {"linear_probe": "members", "train_members": "members", "MemberRecord": "members"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'frugalvision.methods.diwa' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"frugalvision.methods.diwa.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from frugalvision.methods.diwa.members import MemberRecord, linear_probe, train_members
