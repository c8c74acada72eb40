"""Several optimisers behind one ``torch.optim.Optimizer`` (e.g. SGD for a segmenter and Adam for its discriminator).

The engine drives one optimiser per task: it sets each parameter group's learning rate from the schedule (times the
group's ``lr_scale``), clips, steps, and saves and restores the optimiser state. A task whose parts train with
different optimisers returns a :class:`CompositeOptimizer`; every part then follows the same schedule shape, scaled
per group by ``lr_scale`` (e.g. ``lr_scale = 1e-4 / 2.5e-4`` for ADVENT's discriminator under a segmenter at 2.5e-4).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = ["CompositeOptimizer"]


class CompositeOptimizer(torch.optim.Optimizer):
    """Named optimisers stepped together; ``param_groups`` is the concatenation of theirs (the same dicts).

    Args:
        optimizers: name -> optimiser over disjoint parameters.

    Raises:
        ValueError: no optimiser, or two optimisers share a parameter.
    """

    def __init__(self, optimizers: Mapping[str, torch.optim.Optimizer]) -> None:
        if not optimizers:
            raise ValueError("CompositeOptimizer needs at least one optimiser")
        self.optimizers = dict(optimizers)
        seen: set[int] = set()
        for name, optimizer in self.optimizers.items():
            ids = {id(p) for group in optimizer.param_groups for p in group["params"]}
            if ids & seen:
                raise ValueError(f"optimiser {name!r} shares parameters with another; give each part its own")
            seen |= ids
        self.defaults: dict[str, Any] = {}
        self._optimizer_step_pre_hooks = {}  # type: ignore[assignment]
        self._optimizer_step_post_hooks = {}  # type: ignore[assignment]
        self._optimizer_state_dict_pre_hooks = {}  # type: ignore[assignment]
        self._optimizer_state_dict_post_hooks = {}  # type: ignore[assignment]
        self._optimizer_load_state_dict_pre_hooks = {}  # type: ignore[assignment]
        self._optimizer_load_state_dict_post_hooks = {}  # type: ignore[assignment]

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """Every inner optimiser's groups, in the order of ``optimizers``."""
        return [group for optimizer in self.optimizers.values() for group in optimizer.param_groups]

    @property
    def state(self) -> dict[Any, Any]:  # type: ignore[override]
        """The inner optimisers' per-parameter states, merged (parameters are disjoint)."""
        merged: dict[Any, Any] = {}
        for optimizer in self.optimizers.values():
            merged.update(optimizer.state)
        return merged

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Step every inner optimiser (a closure is evaluated once, before the steps)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for optimizer in self.optimizers.values():
            optimizer.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of every inner optimiser."""
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """``{name: inner state dict}``."""
        return {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:  # type: ignore[override]
        """Restore what :meth:`state_dict` returned.

        Raises:
            ValueError: the names differ from this composite's.
        """
        if set(state_dict) != set(self.optimizers):
            raise ValueError(f"optimizer state has parts {sorted(state_dict)}, expected {sorted(self.optimizers)}")
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state_dict[name])

    def __repr__(self) -> str:
        return f"CompositeOptimizer({', '.join(f'{k}={type(v).__name__}' for k, v in self.optimizers.items())})"
