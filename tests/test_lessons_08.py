"""Notebook 08's experiments: each claim checked against a condition derived separately from the code."""

import matplotlib.figure
import pytest
import torch

from forklab import alignment as al
from forklab import fdivergences as fd
from forklab.lessons import kl_divergences as lesson


def test_exact_moments_k1_k3_unbiased_k2_biased_upward_and_k3_noise_crosses_k1():
    table = lesson.estimator_moments([0.0, 0.25, 1.0, 3.0])
    for kind in ("k1", "k3"):
        torch.testing.assert_close(torch.tensor(table[f"mean {kind}"].values), torch.tensor(table["KL"].values))
    assert (table["mean k2"] >= table["KL"] - 1e-15).all() and table["mean k2"].iloc[-1] > table["KL"].iloc[-1]
    assert table["std k3"].iloc[1] < table["std k1"].iloc[1] / 5  # near π_ref
    assert table["std k3"].iloc[-1] > table["std k1"].iloc[-1]  # far away


def test_sampled_means_agree_with_exact_within_standard_errors():
    drifts = [0.5, 2.0]
    exact = lesson.estimator_moments(drifts)
    sampled = lesson.sampled_estimator_moments(drifts, num_samples=20_000)
    for kind in ("k1", "k2", "k3"):
        gap = (sampled[f"mean {kind}"] - exact[f"mean {kind}"]).abs()
        assert (gap < 4.5 * sampled[f"se {kind}"]).all(), kind


def test_estimator_gradients_k1_zero_k2_and_straight_through_true_k3_forward_kl():
    ref, direction = lesson.drift_family()
    grads = lesson.expected_estimator_gradients(ref + 1.3 * direction, ref)
    assert grads["k1"].abs().max() < 1e-15
    for name in ("k2", "k1+", "k2+", "k3+", "abs+"):
        torch.testing.assert_close(grads[name], grads["∇KL(π‖π_ref)"])
    torch.testing.assert_close(grads["k3"], grads["∇KL(π_ref‖π)"])
    assert (grads["k3"] - grads["∇KL(π‖π_ref)"]).abs().max() > 1e-2


def test_exact_kl_pg_reaches_the_tilted_optimum_and_k3_loss_reaches_the_forward_kl_fixed_point():
    bandit, ref = lesson.kl_bandit()
    beta = 0.5
    run = lesson.kl_pg_run(bandit, ref, beta, "k1-reward", steps=2000)
    assert run["kl_to_optimum"][-1].item() < 1e-10
    k3 = lesson.kl_pg_run(bandit, ref, beta, "k3-loss", steps=2000)["probs"][-1, 0]
    # stationarity of E[r] − β KL(π_ref‖π) on softmax logits: π ⊙ (r − π·r) − β (π − π_ref) = 0
    residual = k3 * (bandit.mean - k3 @ bandit.mean) - beta * (k3 - ref)
    assert residual.abs().max() < 1e-10
    assert al.categorical_kl(k3, run["target"]) > 1e-2


def test_sampled_kl_pg_hovers_around_the_optimum():
    bandit, ref = lesson.kl_bandit()
    run = lesson.kl_pg_run(bandit, ref, 0.5, "k1-reward", "sampled", steps=600, lr=0.5, num_seeds=32)
    assert run["kl_to_optimum"][-1].mean() < 0.02
    average = run["probs"][-200:].mean((0, 1))
    assert al.categorical_kl(average, run["target"]) < 2e-3


def test_regularised_runs_meet_their_own_stationarity_conditions():
    _, ref, rewards = lesson.strategies_bandit()
    beta = 0.1
    runs = lesson.regularized_runs(beta=beta, divergences=("reverse_kl", "forward_kl", "js", "dph"))
    torch.testing.assert_close(runs["reverse_kl"], al.tilted_optimum(ref, rewards, beta), atol=1e-10, rtol=0)
    # natural-gradient fixed point: r − β f′(π/anchor) is the same on every arm
    fwd = rewards - beta * fd.f_prime("forward_kl", runs["forward_kl"] / ref)
    assert fwd.max() - fwd.min() < 1e-9
    js = rewards - beta * fd.f_prime("js", runs["js"] / ref)
    assert js.max() - js.min() < 1e-9
    solves, _, _ = lesson.strategies_bandit()
    dph, reverse = (lesson.coverage_pass_at_k(runs[name], solves, 64) for name in ("dph", "reverse_kl"))
    assert dph > reverse


def test_coverage_pass_at_k_by_brute_force_over_problems():
    solves, ref, _ = lesson.strategies_bandit()
    for k in (1, 3):
        brute = sum(1 - (1 - sum(ref[a] for a in range(8) if solves[a, m])) ** k for m in range(10)) / 10
        torch.testing.assert_close(lesson.coverage_pass_at_k(ref, solves, k), torch.as_tensor(brute))


def test_rapo_world_reverse_kl_is_trapped_forward_kl_is_not():
    world = (torch.tensor([0.5, 0.3, 0.2 - 1e-6, 1e-6], dtype=torch.float64),
             torch.tensor([0.2, 0.0, 0.0, 1.0], dtype=torch.float64))
    runs = lesson.regularized_runs(beta=0.1, divergences=("reverse_kl", "forward_kl", "rapo"), world=world,
                                   steps=1000)
    assert runs["reverse_kl"][3] < 0.05 and runs["forward_kl"][3] > 0.5 and runs["rapo"][3] > 0.5


def test_unimodal_fits_reverse_kl_seeks_a_mode_forward_kl_covers_both():
    x, target, fits = lesson.unimodal_fits()
    std = {name: ((x - (x * q).sum()) ** 2 * q).sum().sqrt() for name, q in fits.items()}
    assert std["reverse_kl"] < 0.6 and std["forward_kl"] > 2.0


@pytest.mark.parametrize("n", [1, 2, 8, 64])
def test_quadrature_bon_kl_equals_the_closed_form(n):
    assert abs(lesson.continuous_best_of_n_kl(n) - al.best_of_n_kl_bound(n)) < 1e-9


def test_best_of_n_table_tilt_beats_best_of_n_at_equal_kl():
    bandit, ref = lesson.kl_bandit()
    table = lesson.best_of_n_table(ref, bandit.mean, (1, 2, 4, 8))
    assert (table["E r tilt"] >= table["E r best-of-N"] - 1e-12).all()
    assert (table["KL(π_N‖p)"] <= table["log N − (N−1)/N"] + 1e-12).all()


@pytest.mark.parametrize("kwargs", [{}, {"drift": 0.0, "beta": 0.05, "n": 1}, {"drift": 3.0, "beta": 2.0, "n": 64}])
def test_explore_returns_a_figure_across_its_range(kwargs):
    fig = lesson.explore(**kwargs)
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 3
