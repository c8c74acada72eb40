"""The paper's "mild" hyperparameter distribution and its seeded sampler (DomainBed convention: index 0 = defaults)."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from frugalvision.errors import ConfigError
from frugalvision.seeding import derive_seed

__all__ = ["HParams", "MildSpace", "sample_hparams"]


@dataclass(frozen=True)
class HParams:
    """Hyperparameters of one fine-tuning run.

    Attributes:
        lr: Adam learning rate.
        weight_decay: coupled L2 weight decay (Adam's ``weight_decay``).
        dropout: dropout rate on the features before the linear head.
    """

    lr: float
    weight_decay: float
    dropout: float

    def to_dict(self) -> dict[str, float]:
        """Plain dict (for hparams.json)."""
        return asdict(self)


@dataclass
class MildSpace:
    """The mild distribution of the DiWA fork (``hparams_registry.py``): uniform choices in small sets.

    Attributes:
        lr: learning-rate choices (paper: 1e-5, 3e-5, 5e-5; default 5e-5).
        weight_decay: weight-decay choices (paper: 1e-4, 1e-6; default 0).
        dropout: feature-dropout choices (paper: 0, 0.1, 0.5; default 0).
        default_lr: learning rate of hparams index 0.
        default_weight_decay: weight decay of hparams index 0.
        default_dropout: dropout of hparams index 0.
    """

    lr: tuple[float, ...] = (1e-5, 3e-5, 5e-5)
    weight_decay: tuple[float, ...] = (1e-4, 1e-6)
    dropout: tuple[float, ...] = (0.0, 0.1, 0.5)
    default_lr: float = 5e-5
    default_weight_decay: float = 0.0
    default_dropout: float = 0.0

    def validate(self) -> None:
        """Raise ConfigError on an empty or negative choice set."""
        for name in ("lr", "weight_decay", "dropout"):
            values = getattr(self, name)
            if not values or any(v < 0 for v in values):
                raise ConfigError(f"hparams.{name}={values} must be a non-empty tuple of non-negative numbers")
        if any(not 0 <= d < 1 for d in self.dropout):
            raise ConfigError(f"hparams.dropout={self.dropout} must lie in [0, 1)")

    def scaled(self, lr_base: float) -> MildSpace:
        """The same space with learning rates expressed as multiples of ``lr_base`` (offline analogue: 1/3/5x)."""
        factor = lr_base / self.default_lr
        return MildSpace(
            tuple(v * factor for v in self.lr),
            self.weight_decay,
            self.dropout,
            lr_base,
            self.default_weight_decay,
            self.default_dropout,
        )


def sample_hparams(index: int, seed: int = 0, space: MildSpace | None = None) -> HParams:
    """Draw the hyperparameters of run ``index``; index 0 returns the defaults (DomainBed convention).

    Args:
        index: hparams index of the run (0 = defaults).
        seed: sweep seed; the same (index, seed) always gives the same draw.
        space: the choice sets (the paper's mild distribution by default).

    Returns:
        The run's hyperparameters.
    """
    space = space or MildSpace()
    space.validate()
    if index < 0:
        raise ConfigError(f"hparams index {index} is invalid; use a non-negative integer")
    if index == 0:
        return HParams(space.default_lr, space.default_weight_decay, space.default_dropout)
    rng = random.Random(derive_seed(seed, "hparams", index))
    return HParams(rng.choice(space.lr), rng.choice(space.weight_decay), rng.choice(space.dropout))
