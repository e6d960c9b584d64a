"""Wire plain lib callbacks to ipywidgets (the notebook contract in README.md).

Introduced in ``notebooks/00_tour.ipynb``.

The pattern: a lesson module defines ``callback(**params) -> matplotlib Figure``; the notebook
calls it once with its defaults in a checked cell (nbval compares that output), and builds the
interactive version with :func:`interactive` in a cell tagged ``nbval-ignore-output``. pytest
drives the same widget through its range (``tests/test_widgets.py``) without a browser, and
``tests/test_browser.py`` drives every notebook's widgets with the keyboard in JupyterLab.

Why not ``ipywidgets.interactive`` itself: it turns every keyword default of the callback into an
extra slider, leaves a returned Figure undisplayed, and prints a full traceback that stays on
screen after a bad value. Here only the passed controls appear, the figure is rendered to PNG
and put into an ``ipywidgets.Output`` by setting its ``outputs`` (kernel-side state, so JupyterLab,
Notebook 7 and VS Code show the same thing, and the previous image is replaced in one message),
and an exception becomes a one-line ``⚠`` message in place of the plot.
"""

from __future__ import annotations

import inspect
import io
import time
from collections.abc import Callable

import ipywidgets as W
import matplotlib.figure
from IPython.display import Image

__all__ = ["interactive", "Interactive", "int_slider", "float_slider", "dropdown"]


_LABEL = {"description_width": "initial"}  # the whole label, not "correct le…"


def int_slider(value: int, lo: int, hi: int, step: int = 1, description: str = "") -> W.IntSlider:
    return W.IntSlider(value=value, min=lo, max=hi, step=step, description=description, continuous_update=False,
                       style=_LABEL)


def float_slider(value: float, lo: float, hi: float, step: float, description: str = "") -> W.FloatSlider:
    return W.FloatSlider(value=value, min=lo, max=hi, step=step, description=description,
                         continuous_update=False, readout_format=".2f", style=_LABEL)


def dropdown(options, value=None, description: str = "") -> W.Dropdown:
    options = list(options)
    return W.Dropdown(options=options, value=options[0] if value is None else value, description=description,
                      style=_LABEL)


def _close(fig: matplotlib.figure.Figure) -> None:
    import matplotlib.pyplot as plt  # closing a figure pyplot does not know is a no-op

    plt.close(fig)


def figure_png(fig: matplotlib.figure.Figure) -> bytes:
    """``fig`` as PNG bytes at its own dpi, then closed.

    No ``bbox_inches="tight"``: the callbacks use constrained layout, which already fits the labels,
    and the tight-bbox pass would draw every text a second time (a fifth of an update's time).
    """
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=fig.dpi, metadata={"Software": None})
    finally:
        _close(fig)
    return buffer.getvalue()


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if isinstance(exc, ValueError) and text:  # the library's own messages already name the argument
        return f"⚠ {text}"
    return f"⚠ {type(exc).__name__}: {text}" if text else f"⚠ {type(exc).__name__}"


class Interactive(W.VBox):
    """Controls, then the callback's figure (or a one-line ``⚠`` message), then a small timing line.

    ``children`` is ``(*controls, panel)``, the panel holding ``output`` and ``status``. After each
    update: ``result`` is the callback's return value (``None`` when it raised), ``error`` the one-line
    message or ``None``, and ``timings`` holds every update's seconds (callback + PNG rendering).
    The PNG is rendered only once the widget has been displayed (``_repr_mimebundle_``), so code that
    only reads ``result`` (pytest driving a callback through its range) pays for no rendering.
    """

    def __init__(self, callback: Callable, controls: dict[str, W.ValueWidget]):
        self.callback = callback
        self.controls = dict(controls)
        self.output = W.Output(layout=W.Layout(min_height="2em"))
        self.output.add_class("forklab-widget-output")
        self.status = W.HTML(layout=W.Layout(margin="0 0 0 0.5em"))
        self.status.add_class("forklab-widget-status")
        self.result = None
        self.error: str | None = None
        self.timings: list[float] = []
        self.displayed = False
        panel = W.VBox(children=(self.output, self.status))
        super().__init__(children=(*self.controls.values(), panel))
        self.add_class("forklab-interactive")
        for control in self.controls.values():
            control.observe(self.update, names="value")
        self.update()

    @property
    def kwargs(self) -> dict:
        return {name: control.value for name, control in self.controls.items()}

    def update(self, *_change) -> None:
        """Run the callback with the controls' values; once displayed, show its figure (or one line)."""
        start = time.perf_counter()
        self.result, self.error = None, None
        try:
            result = self.callback(**self.kwargs)
            if not isinstance(result, matplotlib.figure.Figure):
                raise TypeError(f"{self._name()} returned {type(result).__name__}, expected a matplotlib Figure")
            self.result = result
            _close(result)  # drawn later from the object; pyplot must not keep (or auto-show) it
        except Exception as exc:  # a bad value must not leave a traceback on screen: one line instead
            self.error = _one_line(exc)
        if self.displayed:
            self._show()
        self.timings.append(time.perf_counter() - start)
        if self.displayed:
            self.status.value = f"<small style='color:#777'>updated in {self.timings[-1]:.2f} s</small>"
            # An invisible update counter for the browser test (tests/test_browser.py waits on it).
            self.status._dom_classes = ("forklab-widget-status", f"forklab-updates-{len(self.timings)}")

    def _show(self) -> None:
        if self.error is None:
            try:
                shown = self._display_data(Image(data=figure_png(self.result), format="png"), alt=self._name())
            except Exception as exc:  # e.g. a figure that fails to draw
                self.error = _one_line(exc)
        if self.error is not None:
            shown = {"output_type": "display_data", "data": {"text/plain": self.error}, "metadata": {}}
        self.output.outputs = (shown,)  # one state message replaces the previous image: no flicker

    def _repr_mimebundle_(self, **kwargs):
        if not self.displayed:
            self.displayed = True
            start = time.perf_counter()
            self._show()
            self.status.value = f"<small style='color:#777'>drawn in {time.perf_counter() - start:.2f} s</small>"
            self.status._dom_classes = ("forklab-widget-status", f"forklab-updates-{len(self.timings)}")
        return super()._repr_mimebundle_(**kwargs)

    @staticmethod
    def _display_data(image: Image, alt: str) -> dict:
        png = image._repr_png_()
        data, metadata = png if isinstance(png, tuple) else (png, {})
        return {"output_type": "display_data", "data": {"image/png": data, "text/plain": f"<{alt} figure>"},
                "metadata": {"image/png": metadata} if metadata else {}}

    def _name(self) -> str:
        return getattr(self.callback, "__name__", type(self.callback).__name__)

    def __repr__(self) -> str:
        # Shown as text/plain where the widget cannot render (an untrusted notebook before the first run).
        names = ", ".join(c.description or n for n, c in self.controls.items())
        return f"[interactive figure: {self._name()} ({names}); run this cell to use it]"


def interactive(callback: Callable, **controls) -> Interactive:
    """Show ``callback(**values)``'s Figure under the given controls, redrawn on every change.

    Every control must be a widget (use the helpers above) so ranges are explicit and testable.
    Only these controls appear; the callback's other parameters keep their defaults.
    """
    for name, control in controls.items():
        if not isinstance(control, W.ValueWidget):
            raise ValueError(f"control `{name}` must be an ipywidgets value widget, got {type(control).__name__}")
    if not callable(callback):
        raise ValueError(f"`callback` must be callable, got {type(callback).__name__}")
    params = inspect.signature(callback).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for name in controls:
        if not takes_any and name not in params:
            raise ValueError(f"control `{name}` is not a parameter of {callback.__name__}{inspect.signature(callback)}")
    for name, p in params.items():
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty and name not in controls:
            raise ValueError(f"parameter `{name}` of {callback.__name__} has no default: pass a control for it")
    return Interactive(callback, controls)
