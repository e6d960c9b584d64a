"""Widget wiring: the notebook widgets' callbacks driven through their ranges, no browser needed."""

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
