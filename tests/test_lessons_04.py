"""forklab.lessons.entropy_mechanism (notebook 04): oracles are exact recomputations by hand,
mathematical facts (an O(η²) error has log-log slope 2), and equal-by-construction runs."""

import matplotlib.figure
import numpy as np
import pandas as pd
import pytest
import torch

from forklab.envs.bandit import expected_advantages
from forklab.lessons import entropy_mechanism as em


def test_error_slope_recovers_a_known_power():
    lrs = np.logspace(-3, -1, 5)
    rows = [dict(update="u", lr=lr, policy=i, abs_error=c * lr**3) for i, c in enumerate([1.0, 5.0]) for lr in lrs]
    slopes = em.error_slope(pd.DataFrame(rows))
    assert abs(slopes["slope"].iloc[0] - 3.0) < 1e-10


def test_first_order_error_is_second_order():
    sweep = em.step_size_sweep(lrs=np.logspace(-3, -1, 5), num_policies=4, num_arms=5)
    slopes = em.error_slope(sweep)
    assert set(slopes["update"]) == {"PG", "natural PG"}
    assert (slopes["slope"] - 2).abs().max() < 0.05


def test_covariance_run_matches_hand_covariance_and_uniform_start_is_ordered():
    run = em.grpo_covariance_run(steps=6, lr=0.5, update="npg", num_seeds=3)
    later = run[run["step"] >= 1]
    assert later["ordered"].all() and (later["covariance"] > 0).all() and (later["exact"] < 0).all()
    # step 0 is the uniform policy: log π constant, so the covariance is exactly 0
    assert (run.loc[run["step"] == 0, "covariance"].abs() < 1e-15).all()
    # step 1 by hand: z1 = 0.5·Ā(uniform); Cov_π1(log π1, Ā(π1))
    bandit = em.default_bandit()
    uniform = torch.full((1, bandit.num_arms), 1.0 / bandit.num_arms, dtype=torch.float64)
    z1 = 0.5 * expected_advantages(bandit, uniform, "grpo", 8)[0]
    p1, logp1 = torch.softmax(z1, -1), torch.log_softmax(z1, -1)
    a1 = expected_advantages(bandit, p1[None], "grpo", 8)[0]
    cov = (p1 * logp1 * a1).sum() - (p1 * logp1).sum() * (p1 * a1).sum()
    assert abs(run.query("step == 1 and seed == 0")["covariance"].item() - float(cov)) < 1e-12


def test_discriminator_comparison_orders_the_estimates():
    df = em.discriminator_comparison(num=50, coef=0.02)
    first = (df["first_order"] - df["exact"]).abs().max()
    assert first < 1e-3 and (df["closed_form"] - df["first_order"]).abs().max() < 1e-12
    assert (df["steer"] - df["exact"]).abs().max() > 5 * first


def test_bandit_runs_share_the_start_and_kl_cov_without_penalty_is_grpo():
    runs = em.bandit_cov_runs({"grpo": {}, "kl_cov": {"kl_coef": 0.0}, "clip_cov": {"clip_ratio": 0.1}},
                              steps=5, num_seeds=2, num_groups=2, group_size=4)
    assert runs["grpo"]["entropy"].shape == (6, 2)
    np.testing.assert_array_equal(runs["grpo"]["entropy"][0], runs["clip_cov"]["entropy"][0])
    np.testing.assert_allclose(runs["kl_cov"]["entropy"], runs["grpo"]["entropy"], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="methods"):
        em.bandit_cov_runs({"entropy_bonus": {}}, steps=1, num_seeds=1)


def test_shaped_advantages_are_centred_and_move_entropy_the_predicted_way():
    from forklab.diagnostics import dynamics as dyn

    z = torch.tensor([2.0, 1.0, 0.0, -1.0], dtype=torch.float64)
    p = torch.softmax(z, -1)
    for shape in em.ADVANTAGE_SHAPES:
        assert abs(float((p * em.shaped_advantage(shape, z)).sum())) < 1e-12
    assert dyn.exact_entropy_change(z, 0.1 * em.shaped_advantage("likely arms good", z)) < 0
    assert dyn.exact_entropy_change(z, 0.1 * em.shaped_advantage("rare arm rewarded", z)) > 0
    with pytest.raises(ValueError, match="advantage"):
        em.shaped_advantage("nonsense", z)


def test_widget_callback_returns_a_figure_and_checks_inputs():
    fig = em.entropy_step_explorer(lr=0.3, advantage="rare arm rewarded", update="PG", num_arms=5)
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 2
    with pytest.raises(ValueError, match="update"):
        em.entropy_step_explorer(update="adam")
    with pytest.raises(ValueError, match="lr"):
        em.entropy_step_explorer(lr=0.0)


def test_entropy_law_points_average_windows():
    runs = pd.DataFrame(dict(run="r", lr=1e-3, seed=0, step=range(6), entropy=[1, 2, 3, 4, 5, 6.0],
                             accuracy=[0, 0, 0, 1, 1, 1.0]))
    pts = em.entropy_law_points(runs, window=3)
    assert pts["entropy"].tolist() == [2.0, 5.0] and pts["accuracy"].tolist() == [0.0, 1.0]


def test_lm_run_entropy_split_adds_up():
    df = em.lm_runs([dict(method="grpo", lr=1e-3, seed=0)], steps=2, prompts_per_step=2, group_size=4,
                    minibatches=1, entropy_split=True)
    assert len(df) == 2
    parts = df["tokens/pos"] + df["tokens/neg"] + df["tokens/flat"]
    assert (parts == df["tokens/all"]).all()
    total = df["dH/pos_sum"] + df["dH/neg_sum"] + df["dH/flat_sum"]
    np.testing.assert_allclose(total, df["dH/all_sum"], rtol=1e-10, atol=1e-12)
