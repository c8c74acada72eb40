"""Registry entry of LaRa: ``frugal run lara --preset smoke|standard|paper`` (see :mod:`.runner`)."""

from frugalvision.methods.lara.benchmark import benchmark
from frugalvision.methods.lara.runner import CONFIG_CLASS, PRESETS, STUDIES, LaraConfig, run

__all__ = ["CONFIG_CLASS", "PRESETS", "STUDIES", "LaraConfig", "benchmark", "run"]
