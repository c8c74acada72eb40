"""One-line, actionable errors shared by the whole library.

Every error raised on bad user input names the problem and the fix in a single line. The CLI turns these into
``error: <message>`` on stderr with exit code 2.
"""

from __future__ import annotations


class FrugalError(Exception):
    """Base class of the errors the CLI reports as one line with exit code 2."""


class ConfigError(FrugalError, ValueError):
    """An invalid configuration value (names the field and the fix)."""


class DataError(FrugalError, ValueError):
    """Missing, corrupt or malformed data (names the path and the fix)."""


class CheckpointError(FrugalError, ValueError):
    """An unreadable, unsafe or incompatible checkpoint (names the file and the fix)."""


class TrainingDivergedError(FrugalError, RuntimeError):
    """The loss became NaN or infinite (names the step; the last good checkpoint is kept)."""
