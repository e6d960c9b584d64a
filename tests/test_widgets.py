"""Widget wiring: the notebook widgets' callbacks driven through their ranges, no browser needed."""

import json
from pathlib import Path

import matplotlib.figure
import pytest

from forklab import widgets
from forklab.lessons import policy_gradients as lesson


def explorer():
    return widgets.interactive(
        lesson.advantage_explorer,
        group_size=widgets.int_slider(8, 2, 32, description="G"),
        pass_rate=widgets.float_slider(0.3, 0.0, 1.0, 0.05, description="pass rate"),
        estimator=widgets.dropdown(["grpo", "mean", "rloo", "median", "median_std", "reinforce"]),
    )


def test_advantage_explorer_defaults_match_the_notebook_cell():
    w = explorer()
    w.update()
    fig = w.result
    assert isinstance(fig, matplotlib.figure.Figure)
    assert fig.axes[0].get_title() == "grpo, G=8, p=0.30: 6% of groups give no signal"


@pytest.mark.parametrize("group_size", [2, 3, 17, 32])
@pytest.mark.parametrize("pass_rate", [0.0, 0.05, 0.5, 1.0])
def test_advantage_explorer_through_its_range(group_size, pass_rate):
    w = explorer()
    controls = {c.description: c for c in w.children[:-1]}
    controls["G"].value = group_size
    controls["pass rate"].value = pass_rate
    for estimator in w.children[2].options:
        w.children[2].value = estimator
        w.update()
        fig = w.result
        title = fig.axes[0].get_title()
        assert title.startswith(f"{estimator}, G={group_size}, p={pass_rate:.2f}")
        if pass_rate in (0.0, 1.0):
            assert "100% of groups give no signal" in title


def test_interactive_rejects_non_widget_controls():
    with pytest.raises(ValueError, match="control `group_size`"):
        widgets.interactive(lesson.advantage_explorer, group_size=8)


# --- the widget shows the figure, only the passed controls, and one line on a bad value ---------------

def shown(w):
    """Display ``w`` as a notebook would (IPython asks for its mimebundle), which starts the PNG rendering."""
    w._repr_mimebundle_()
    return w


def _png_size(output) -> tuple[int, int]:
    """(width, height) read from the PNG header of the one image in ``output`` (independent of matplotlib)."""
    import base64
    import struct

    (image,) = output.outputs
    png = base64.b64decode(image["data"]["image/png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", png[16:24])


def test_the_figure_is_shown_in_the_output_as_a_png_of_the_figure_size():
    w = explorer()
    assert w.output.outputs == ()  # nothing is rendered for a widget nobody displays
    shown(w)
    assert w.error is None and isinstance(w.result, matplotlib.figure.Figure)
    width_in, height_in = w.result.get_size_inches()
    assert _png_size(w.output) == (round(width_in * w.result.dpi), round(height_in * w.result.dpi))


def test_each_change_replaces_the_image_and_is_timed():
    w = shown(explorer())
    before = w.output.outputs[0]["data"]["image/png"]
    w.controls["group_size"].value = 16
    (image,) = w.output.outputs  # replaced, not appended
    assert image["data"]["image/png"] != before
    assert w.result.axes[0].get_title().startswith("grpo, G=16")
    assert len(w.timings) == 2 and all(t > 0 for t in w.timings)
    assert "forklab-updates-2" in w.status._dom_classes


def test_only_the_passed_controls_appear_and_other_defaults_are_used():
    from forklab.lessons import tour

    w = widgets.interactive(tour.bandit_explorer, lr=widgets.float_slider(0.5, 0.0, 3.0, 0.05, description="lr"),
                            recipe=widgets.dropdown(list(tour.BANDIT_RECIPES), description="recipe"))
    assert list(w.controls) == ["lr", "recipe"]
    assert w.children[:-1] == (w.controls["lr"], w.controls["recipe"])
    labels = [c.description for c in w.children[:-1]]
    assert labels == ["lr", "recipe"]  # no `steps`, `num_seeds`, `seed` sliders made from the defaults
    assert "60 steps" in w.result.axes[0].get_title()  # bandit_explorer's own default


def test_a_bad_value_shows_one_line_in_place_of_the_plot_and_recovers():
    from forklab.lessons import loss_aggregation as la

    w = shown(widgets.interactive(la.length_gap_explorer, answers=widgets.int_slider(2, 0, 3, description="# answers")))
    w.controls["answers"].value = 0
    assert w.result is None
    assert w.error == "⚠ `answers` must be >= 1, got 0"
    (message,) = w.output.outputs
    assert message["data"] == {"text/plain": w.error}  # no traceback, no stale image
    w.controls["answers"].value = 1
    assert w.error is None and "image/png" in w.output.outputs[0]["data"]


def test_a_callback_that_returns_no_figure_or_raises_says_so_in_one_line():
    def no_figure(x: int = 1):
        return None

    def broken(x: int = 1):
        raise KeyError("x")

    w = shown(widgets.interactive(no_figure, x=widgets.int_slider(1, 0, 3)))
    assert w.error == "⚠ TypeError: no_figure returned NoneType, expected a matplotlib Figure"
    assert w.output.outputs[0]["data"] == {"text/plain": w.error}
    assert widgets.interactive(broken, x=widgets.int_slider(1, 0, 3)).error == "⚠ KeyError: 'x'"


def test_figures_are_closed_after_display():
    import matplotlib.pyplot as plt

    def pyplot_figure(x: int = 1):
        fig, ax = plt.subplots()
        ax.plot([0, x])
        return fig

    before = plt.get_fignums()
    w = widgets.interactive(pyplot_figure, x=widgets.int_slider(1, 0, 3))
    assert plt.get_fignums() == before  # closed even before the widget is displayed
    shown(w)
    w.controls["x"].value = 2
    assert plt.get_fignums() == before
    assert "image/png" in w.output.outputs[0]["data"]  # a closed figure still draws


def test_the_text_shown_before_the_first_run_is_not_the_raw_repr():
    text = explorer()._repr_mimebundle_()["text/plain"]
    assert not text.startswith("interactive(children=")
    assert text == "[interactive figure: advantage_explorer (G, pass rate, estimator); run this cell to use it]"


def test_interactive_rejects_unknown_and_missing_parameters():
    with pytest.raises(ValueError, match="control `G` is not a parameter of advantage_explorer"):
        widgets.interactive(lesson.advantage_explorer, G=widgets.int_slider(8, 2, 32))

    def needs_x(x, y=1):
        return None

    with pytest.raises(ValueError, match="parameter `x` of needs_x has no default"):
        widgets.interactive(needs_x, y=widgets.int_slider(1, 0, 3))


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[1].glob("notebooks/[0-9][0-9]_*.ipynb")),
                         ids=lambda p: p.stem)
def test_stored_widget_outputs_are_not_the_raw_repr(path):
    """What an untrusted (freshly opened) notebook shows for a widget cell is its stored text/plain."""
    for cell in json.loads(path.read_text())["cells"]:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "application/vnd.jupyter.widget-view+json" in data:
                text = "".join(data.get("text/plain", ""))
                assert not text.startswith("interactive(children="), (
                    f"{path.name}: a widget cell stores {text[:60]!r}…: re-execute it with the current forklab.widgets")
