"""Run logs: one row of metrics per training step, written atomically, reloaded for plotting.

Introduced in ``notebooks/00_tour.ipynb``.

A log is a CSV file (default under ``data/runs/``). Every :meth:`RunLog.append` rewrites the file
through a temporary file and ``os.replace``, so a reader (a notebook plotting a live run, or a
resumed run) never sees a half-written row, even if the writer is killed mid-step. Columns are the
union of all metric names seen so far; a metric missing at a step is left empty (NaN on reload).
"""

from __future__ import annotations

import csv
import math
import numbers
import os
import tempfile
from pathlib import Path

import pandas as pd

__all__ = ["RunLog", "load_run"]


class RunLog:
    """Append-only, atomically written CSV of per-step metrics (``step`` is always the first column)."""

    def __init__(self, path: str | os.PathLike, resume: bool = False):
        self.path = Path(path)
        self.rows: list[dict] = []
        if resume and self.path.exists():
            self.rows = load_run(self.path).to_dict("records")
        elif self.path.exists() and not resume:
            raise ValueError(f"`path` {self.path} exists; pass resume=True to continue it or choose a new name")

    def append(self, step: int, metrics: dict) -> None:
        """Add the row of ``step``: an integer above the last logged step; ``metrics`` finite numbers."""
        if isinstance(step, bool) or not isinstance(step, numbers.Real) or not math.isfinite(step) \
                or step != int(step):
            raise ValueError(f"`step` must be an integer, got {step!r}")
        if self.rows and not int(step) > self.rows[-1]["step"]:
            raise ValueError(f"`step` must increase: {step} after {self.rows[-1]['step']} (duplicate or decreasing)")
        row = {"step": int(step)}
        for key, value in metrics.items():
            if key == "step":
                raise ValueError("`metrics` has a key named `step`, which would overwrite the step column")
            value = float(value)
            if math.isnan(value) or math.isinf(value):
                raise ValueError(f"metric `{key}` is {value} at step {step}")
            row[key] = value
        self.rows.append(row)
        self._write()

    def truncate(self, step: int) -> None:
        """Drop rows after ``step`` (used when resuming from an earlier checkpoint)."""
        self.rows = [r for r in self.rows if r["step"] <= step]
        self._write()

    def _write(self) -> None:
        columns = ["step"] + sorted({k for r in self.rows for k in r} - {"step"})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=columns)
                writer.writeheader()
                for r in self.rows:
                    writer.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in r.items()
                                     if not (isinstance(v, float) and math.isnan(v))})
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def load_run(path: str | os.PathLike) -> pd.DataFrame:
    """The log as a DataFrame indexed by row, one column per metric (``step`` first)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"`path` {path} does not exist")
    return pd.read_csv(path)
