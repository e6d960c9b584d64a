"""Where the repository's folders are, for code installed with ``pip install -e .``."""

from __future__ import annotations

import os
from pathlib import Path

#: The repository root (``lib/forklab/paths.py`` → two levels up from ``lib``).
REPO_ROOT = Path(__file__).resolve().parents[2]


def figures_dir() -> Path:
    """``figures/`` at the repository root, or ``$FORKLAB_FIGURES`` when set (tests use a temp dir)."""
    return Path(os.environ.get("FORKLAB_FIGURES", REPO_ROOT / "figures"))


def data_dir() -> Path:
    """``data/`` at the repository root, or ``$FORKLAB_DATA`` when set."""
    return Path(os.environ.get("FORKLAB_DATA", REPO_ROOT / "data"))
