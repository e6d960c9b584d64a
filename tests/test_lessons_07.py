"""Notebook 07's experiments: the finite-difference check's oracle and the |THR| concentration measure."""

import numpy as np
import pytest

from forklab.lessons import token_hidden_reward as lesson


def test_finite_difference_check_reproduces_thr_when_only_w_moves():
    fd = lesson.finite_difference_check(seeds=[0], group_size=12)
    assert len(fd) > 10 and fd["correct"].any() and (~fd["correct"]).any()
    np.testing.assert_allclose(fd["fd_unembed"], fd["thr"], rtol=1e-3, atol=1e-8)
    moving = fd[fd["thr"].abs() > 1e-12]
    assert (np.sign(moving["thr"]) == np.sign(moving["fd_all"])).mean() > 0.75


def test_top_share_by_hand():
    assert lesson.top_share([1.0, -3.0, 0.0, 6.0], 0.25) == pytest.approx(0.6)
    assert lesson.top_share([2.0, 2.0], 0.5) == pytest.approx(0.5)
    assert lesson.top_share([5.0], 0.01) == 1.0
    with pytest.raises(ValueError, match="values"):
        lesson.top_share([0.0, 0.0], 0.5)
