"""Progress bars for long notebook cells: tqdm's notebook bar in the lab, silent under tests.

Introduced in ``notebooks/00_tour.ipynb``. A training cell wraps its loop in :func:`progress`;
in JupyterLab the student sees a live bar. Under ``pytest --nbval``, ``make figures`` and CI the
bar is off (``TQDM_DISABLE=1`` or ``CI`` set), because a bar's text carries timings that would
differ run to run and strict nbval compares every output.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

__all__ = ["progress", "bars_enabled", "timed"]


def bars_enabled() -> bool:
    """False under tests and CI (``TQDM_DISABLE`` or ``CI`` set), True otherwise."""
    return not (os.environ.get("TQDM_DISABLE") or os.environ.get("CI"))


def progress(iterable: Iterable, desc: str = "", total: int | None = None) -> Iterator:
    """``iterable`` wrapped in a tqdm bar (the notebook widget in Jupyter), or unchanged when bars are off."""
    if not bars_enabled():
        return iter(iterable)
    from tqdm.auto import tqdm

    return iter(tqdm(iterable, desc=desc, total=total, leave=False))


@contextmanager
def timed(label: str):
    """Print ``<label>: N s elapsed`` after the block (tests/sanitize.cfg masks the number)."""
    start = time.perf_counter()
    yield
    print(f"{label}: {time.perf_counter() - start:.1f} s elapsed")
