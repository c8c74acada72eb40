"""Run logs: a CSV of every logged row, and TensorBoard scalars when TensorBoard is installed.

The CSV is rewritten atomically from the run's history (which checkpoints carry), so it survives kills and resumes.
Only rank 0 writes.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any


class RunLogger:
    """Write the history of one training run to ``<folder>/metrics.csv`` (and ``<folder>/tb`` for TensorBoard).

    Args:
        folder: run folder.
        enabled: False on non-zero ranks.
    """

    def __init__(self, folder: str | Path, enabled: bool = True) -> None:
        self.path = Path(folder) / "metrics.csv"
        self.enabled = enabled
        self._tensorboard: Any = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tensorboard = SummaryWriter(str(Path(folder) / "tb"))
            except ImportError:
                self._tensorboard = None

    def scalars(self, row: dict[str, float]) -> None:
        """Send one row to TensorBoard (its ``step`` key is the x axis)."""
        if self._tensorboard is not None:
            step = int(row.get("step", 0))
            for key, value in row.items():
                if key != "step":
                    self._tensorboard.add_scalar(key, value, step)

    def write(self, history: list[dict[str, float]]) -> None:
        """Rewrite the CSV from the full history (columns = union of keys, ``step`` first)."""
        if not self.enabled or not history:
            return
        columns = ["step"] + sorted({key for row in history for key in row} - {"step"})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(history)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        tmp.write_text(buffer.getvalue())
        os.replace(tmp, self.path)
        if self._tensorboard is not None:
            self._tensorboard.flush()

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self._tensorboard is not None:
            self._tensorboard.close()
