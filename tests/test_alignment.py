"""forklab.alignment against independent oracles: gradient ascent, Monte Carlo, brute-force pairs."""

import math

import pytest
import torch

from forklab import alignment as al


def _dist(seed, k=6, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.softmax(spread * torch.randn(k, generator=g, dtype=torch.float64), -1),
            torch.randn(k, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("seed", range(3))
def test_tilted_optimum_is_where_gradient_ascent_on_the_exact_objective_ends(seed):
    ref, r = _dist(seed)
    beta = 0.4
    theta = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        p = torch.softmax(theta, -1)
        loss = -((p * r).sum() - beta * (p * (p.log() - ref.log())).sum())
        loss.backward()
        return loss

    opt.step(closure)
    torch.testing.assert_close(torch.softmax(theta.detach(), -1), al.tilted_optimum(ref, r, beta), atol=1e-8, rtol=0)


def test_objective_equals_beta_log_z_minus_beta_kl_to_the_optimum():
    ref, r = _dist(5)
    beta = 0.7
    log_z = torch.logsumexp(ref.log() + r / beta, -1)
    star = al.tilted_optimum(ref, r, beta)
    for seed in range(5):
        pi, _ = _dist(100 + seed, spread=2.0)
        lhs = al.kl_regularized_value(pi, ref, r, beta)
        torch.testing.assert_close(lhs, beta * log_z - beta * al.categorical_kl(pi, star), atol=1e-12, rtol=0)


def test_tilted_optimum_survives_huge_r_over_beta_and_keeps_zero_support():
    ref = torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64)
    r = torch.tensor([100.0, 10.0, 9.0], dtype=torch.float64)
    out = al.tilted_optimum(ref, r, 0.01)
    assert out[0] == 0 and torch.isfinite(out).all()
    torch.testing.assert_close(out[1:], torch.tensor([1.0, math.exp(-100)], dtype=torch.float64))


def _monte_carlo_best_of_n(ref, r, n, draws, seed):
    g = torch.Generator().manual_seed(seed)
    arms = torch.multinomial(ref.expand(draws, -1), n, replacement=True, generator=g)
    # uniform tie-breaking: a random secondary key smaller than any reward gap
    key = r[arms] + 1e-9 * torch.rand(arms.shape, generator=g, dtype=torch.float64)
    best = arms.gather(1, key.argmax(1, keepdim=True)).squeeze(1)
    return torch.bincount(best, minlength=len(ref)).double() / draws


@pytest.mark.parametrize("n", [1, 3, 8])
def test_best_of_n_matches_monte_carlo_with_and_without_ties(n):
    ref = torch.tensor([0.1, 0.25, 0.05, 0.3, 0.2, 0.1], dtype=torch.float64)
    for r in (torch.tensor([0.3, -1.0, 2.0, 0.1, 0.5, 1.0], dtype=torch.float64),
              torch.tensor([1.0, 0.0, 1.0, 0.0, 0.5, 1.0], dtype=torch.float64)):  # ties
        draws = 200_000
        freq = _monte_carlo_best_of_n(ref, r, n, draws, seed=n)
        exact = al.best_of_n(ref, r, n)
        se = (exact * (1 - exact) / draws).sqrt()
        assert ((freq - exact).abs() <= 4.5 * se + 1e-12).all(), (freq, exact)


def test_best_of_n_kl_is_at_most_the_bound_and_reaches_it_without_ties():
    ref, r = _dist(3)
    for n in (2, 4, 8, 16):
        assert al.categorical_kl(al.best_of_n(ref, r, n), ref) <= al.best_of_n_kl_bound(n) + 1e-12
    k = 20_000
    flat = torch.full((k,), 1 / k, dtype=torch.float64)
    rewards = torch.randperm(k, generator=torch.Generator().manual_seed(0)).double()
    for n in (2, 4, 8):
        kl = float(al.categorical_kl(al.best_of_n(flat, rewards, n), flat))
        assert abs(kl - al.best_of_n_kl_bound(n)) < 5e-3


def test_win_rate_matches_brute_force_pairs_and_best_of_n_bound():
    ref, r = _dist(7)
    r = torch.round(r)  # ties on purpose
    pi, _ = _dist(8)
    brute = sum(pi[i] * ref[j] * (1.0 if r[i] > r[j] else 0.5 if r[i] == r[j] else 0.0)
                for i in range(6) for j in range(6))
    torch.testing.assert_close(al.win_rate(pi, ref, r), brute)
    for n in (1, 2, 5):
        assert al.win_rate(al.best_of_n(ref, r, n), ref, r) <= n / (n + 1) + 1e-12


def test_tilt_matching_kl_hits_the_target_and_beats_best_of_n_reward():
    ref, r = _dist(11)
    for n in (2, 4, 8):
        bon = al.best_of_n(ref, r, n)
        kl = float(al.categorical_kl(bon, ref))
        tilt, lam = al.tilt_matching_kl(ref, r, kl)
        assert lam > 0 and abs(float(al.categorical_kl(tilt, ref)) - kl) < 1e-9
        assert tilt @ r >= bon @ r - 1e-12


def test_bad_inputs_raise_value_errors_naming_the_argument():
    ref, r = _dist(0)
    with pytest.raises(ValueError, match="beta"):
        al.tilted_optimum(ref, r, 0.0)
    with pytest.raises(ValueError, match="ref_probs"):
        al.tilted_optimum(ref * 2, r, 1.0)
    with pytest.raises(ValueError, match="`n`"):
        al.best_of_n(ref, r, 0)
    with pytest.raises(ValueError, match="rewards"):
        al.best_of_n(ref, r[:3], 2)
    with pytest.raises(ValueError, match="kl_target"):
        al.tilt_matching_kl(ref, r, 50.0)
    before = ref.clone()
    al.best_of_n(ref, r, 3)
    assert torch.equal(ref, before)
