"""One figure style for the whole suite, and the plots notebooks share.

Introduced in ``notebooks/00_tour.ipynb``.

``use_style()`` is applied by every plotting helper; ``save_figure(fig, name)`` writes
``figures/name.png`` (paper-style: 150 dpi, tight bounding box) and closes the figure so that
Jupyter does not draw it a second time and nbval sees no ``<Figure size ...>`` text.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)  # harmless in Jupyter (inline backend already chosen); needed headless

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

from forklab.paths import figures_dir  # noqa: E402

__all__ = ["use_style", "save_figure", "band", "PALETTE"]

#: Colour-blind-safe palette, in the order estimators/modes are usually listed.
PALETTE = sns.color_palette("colorblind")

# Sizes in points at figure.dpi 100: JupyterLab shows a figure at 1 px per pixel up to the cell width, so
# 10 pt is ~14 px, JupyterLab's body text (13–14 px) at default zoom; legends and ticks must not go below it.
_STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "legend.title_fontsize": 10,
    "figure.titlesize": 12,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.family": "DejaVu Sans",
}


def use_style() -> None:
    """The forklab look: seaborn 'whitegrid', colour-blind palette, readable sizes."""
    sns.set_theme(style="whitegrid", palette=PALETTE, rc=_STYLE)


def save_figure(fig, name: str, caption: str | None = None) -> Path:
    """Save ``fig`` to ``figures/<name>.png``, close it, and return the path.

    ``name`` is a plain file stem (letters, digits, ``_``, ``-``), e.g. ``"01_advantages"``.
    ``caption`` (one or two sentences: what the figure shows) is written into the PNG's Description and
    listed in ``figures/README.md`` (``scripts/figures_gallery.py`` reads it from the notebook's call).
    In a notebook, show the saved file with ``IPython.display.Image(path)``.
    """
    if caption is not None and not (isinstance(caption, str) and caption.strip()):
        raise ValueError(f"`caption` must be a non-empty string or None, got {caption!r}")
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", name or ""):
        raise ValueError(f"`name` must be a plain file stem like '01_advantages', got {name!r}")
    out = figures_dir()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    metadata = {"Software": None, **({"Description": caption.strip()} if caption else {})}
    fig.savefig(path, bbox_inches="tight", metadata=metadata)
    plt.close(fig)
    return path


def band(ax, x, runs, label: str, color=None, alpha: float = 0.2):
    """Plot the mean of ``runs [steps, seeds]`` with a ±1 standard-error band; returns the line."""
    runs = np.asarray(runs, dtype=float)
    mean = runs.mean(1)
    se = runs.std(1, ddof=1) / np.sqrt(runs.shape[1]) if runs.shape[1] > 1 else np.zeros_like(mean)
    (line,) = ax.plot(x, mean, label=label, color=color, lw=1.8)
    ax.fill_between(x, mean - se, mean + se, color=line.get_color(), alpha=alpha, lw=0)
    return line
