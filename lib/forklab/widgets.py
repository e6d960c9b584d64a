"""Wire plain lib callbacks to ipywidgets (the notebook contract in DESIGN.md).

Introduced in ``notebooks/00_tour.ipynb``.

The pattern: a lesson module defines ``callback(**params) -> data or figure``; the notebook
calls it once with its defaults in a checked cell (nbval compares that output), and builds the
interactive version with :func:`interactive` in a cell tagged ``nbval-ignore-output``. pytest
drives the same widget through its range (``tests/test_widgets.py``) without a browser.
"""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as W

__all__ = ["interactive", "int_slider", "float_slider", "dropdown"]


def int_slider(value: int, lo: int, hi: int, step: int = 1, description: str = "") -> W.IntSlider:
    return W.IntSlider(value=value, min=lo, max=hi, step=step, description=description, continuous_update=False)


def float_slider(value: float, lo: float, hi: float, step: float, description: str = "") -> W.FloatSlider:
    return W.FloatSlider(value=value, min=lo, max=hi, step=step, description=description,
                         continuous_update=False, readout_format=".2f")


def dropdown(options, value=None, description: str = "") -> W.Dropdown:
    options = list(options)
    return W.Dropdown(options=options, value=options[0] if value is None else value, description=description)


def interactive(callback: Callable, **controls) -> W.interactive:
    """``ipywidgets.interactive(callback, **controls)`` with a manual-free, debounced layout.

    Every control must be a widget (use the helpers above) so ranges are explicit and testable.
    """
    for name, control in controls.items():
        if not isinstance(control, W.ValueWidget):
            raise ValueError(f"control `{name}` must be an ipywidgets value widget, got {type(control).__name__}")
    return W.interactive(callback, **controls)
