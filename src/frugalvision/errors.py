"""One-line, actionable errors shared by the whole library.

Every error raised on bad user input names the problem and the fix in a single line. The CLI turns these into
``error: <message>`` on stderr with exit code 2; :func:`writing` turns an operating-system error met while writing
outputs (read-only folder, full disk, a file in the way) into one such line.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager


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


class OutputError(FrugalError, RuntimeError):
    """An output file or folder cannot be written: read-only, full, or a file in the way (names the path and fix)."""


class RunFolderBusyError(OutputError):
    """Another process is writing the same run folder (names the holder and the fix)."""


_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_DENIED = {errno.EACCES, errno.EPERM, errno.EROFS}
_IN_THE_WAY = {errno.ENOTDIR, errno.EEXIST, errno.EISDIR}


def output_error(error: OSError, path: str | os.PathLike[str] | None = None) -> OutputError:
    """Turn an ``OSError`` met while writing outputs into a one-line :class:`OutputError` naming the path and fix.

    Args:
        error: the operating system's error.
        path: the file or folder being written (default: the one the error names).
    """
    where = path if path is not None else (error.filename or "the output folder")
    reason = error.strerror or str(error) or type(error).__name__
    if error.errno in _FULL:
        fix = "free disk space (or raise the file-size limit) or pass --out on another disk"
    elif error.errno in _DENIED:
        fix = "make it writable or pass another --out"
    elif error.errno in _IN_THE_WAY:
        fix = "a file stands where a folder is needed (or the reverse); remove it or pass another --out"
    else:
        fix = "check the folder or pass another --out"
    return OutputError(f"cannot write {where} ({reason}); {fix}")


@contextmanager
def writing(path: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """Context manager: an ``OSError`` inside becomes a one-line :class:`OutputError` (see :func:`output_error`)."""
    try:
        yield
    except OSError as error:
        raise output_error(error, path) from None
