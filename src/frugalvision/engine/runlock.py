"""An exclusive lock on a run folder while one process writes it, so that two runs cannot mix their files.

The lock is an advisory ``flock`` on ``<folder>/.lock``: the operating system releases it when its process ends, even
by SIGKILL, so a crashed run never leaves a stale lock behind. The file names its holder (pid, host, start time,
command) so that a second run can say who holds the folder. Only rank 0 of a distributed run takes it.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from frugalvision.errors import RunFolderBusyError, writing

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, the folder is not protected
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "RunLock"]

LOCK_NAME = ".lock"
_HELD: dict[Path, tuple[int, int]] = {}  # folder -> (descriptor, depth): a process may re-enter its own lock


def _holder_line() -> str:
    command = " ".join(Path(sys.argv[0]).name if i == 0 else a for i, a in enumerate(sys.argv))[:160]
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    return f"pid {os.getpid()} on {socket.gethostname()} since {started}: {command or 'python'}"


class RunLock:
    """Hold ``<folder>/.lock`` exclusively, as a context manager; a second process gets a one-line error.

    Args:
        folder: the run folder (created if missing).

    Raises:
        RunFolderBusyError: another process holds the folder (the message names it and the fix).
        OutputError: the folder cannot be created or written.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).resolve()
        self._owned = False

    def acquire(self) -> RunLock:
        """Take the lock (re-entrant within one process)."""
        if self.folder in _HELD:
            fd, depth = _HELD[self.folder]
            _HELD[self.folder] = (fd, depth + 1)
            self._owned = True
            return self
        path = self.folder / LOCK_NAME
        with writing(self.folder):
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = path.read_text(errors="replace").strip() or "another process"
                os.close(fd)
                raise RunFolderBusyError(
                    f"{self.folder} is being written by another run ({holder}); wait for it to finish, or pass "
                    "another --out"
                ) from None
        with writing(path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, (_holder_line() + "\n").encode(), 0)
        _HELD[self.folder] = (fd, 1)
        self._owned = True
        return self

    def release(self) -> None:
        """Give the lock back (the file stays; its content is cleared)."""
        if not self._owned:
            return
        self._owned = False
        fd, depth = _HELD[self.folder]
        if depth > 1:
            _HELD[self.folder] = (fd, depth - 1)
            return
        del _HELD[self.folder]
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()
