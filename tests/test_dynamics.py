"""Entropy dynamics against direct float64 entropies, autograd, real bandit steps and synthetic fits."""

import math

import numpy as np
import pytest
import torch

from forklab import regularizers
from forklab.diagnostics import dynamics as D
from forklab.envs import bandit as bd


def direct_entropy(z: np.ndarray) -> np.ndarray:
    """H of softmax rows, plain NumPy float64 (independent of the code under test)."""
    z = z - z.max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    return -(p * np.log(p)).sum(-1)


def random_logits(*shape, seed=0, scale=1.5):
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, generator=gen, dtype=torch.float64)


def test_exact_change_matches_direct_float64_entropy():
    z, dz = random_logits(4, 3, 7, seed=1), random_logits(4, 3, 7, seed=2, scale=0.3)
    expected = direct_entropy((z + dz).numpy()) - direct_entropy(z.numpy())
    got = D.exact_entropy_change(z.float(), dz.float())  # fp32 inputs, computed in float64
    assert got.dtype == torch.float64 and got.shape == (4, 3)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-7)


def test_first_order_error_is_second_order():
    z, v = random_logits(16, 10, seed=3), random_logits(16, 10, seed=4)
    eta = 0.02
    err = [(D.exact_entropy_change(z, e * v) - D.first_order_entropy_change(z, e * v)).abs() for e in (eta, eta / 2)]
    ratio = err[0] / err[1]
    # measured: rows in [3.88, 4.12], median 3.99
    assert ((ratio > 3.5) & (ratio < 4.5)).all(), ratio


def test_first_order_is_the_directional_derivative():
    z, v = random_logits(5, 8, seed=5), random_logits(5, 8, seed=6)
    t = torch.zeros(5, 1, dtype=torch.float64, requires_grad=True)
    zt = z + t * v
    p = torch.softmax(zt, -1)
    h = -(p * torch.log_softmax(zt, -1)).sum(-1)
    (grad,) = torch.autograd.grad(h.sum(), t)
    torch.testing.assert_close(D.first_order_entropy_change(z, v), grad[:, 0])
    # it is a covariance: −Cov_p(log p, v), and a constant shift of Δz changes nothing
    p = torch.softmax(z, -1)
    logp = torch.log_softmax(z, -1)
    cov = (p * logp * v).sum(-1) - (p * logp).sum(-1) * (p * v).sum(-1)
    torch.testing.assert_close(D.first_order_entropy_change(z, v), -cov)
    torch.testing.assert_close(D.first_order_entropy_change(z, v + 3.0), D.first_order_entropy_change(z, v))


def bandit_step(update, lr, z0, arms):
    run = bd.train(arms, mode="exact", update=update, steps=1, lr=lr, num_seeds=1, init_logits=z0)
    measured = float(run.history["entropy"][1, 0] - run.history["entropy"][0, 0])
    adv = bd.expected_advantages(arms, bd.policy(z0[None]), "grpo", 8)[0]
    predict = D.pg_entropy_change if update == "pg" else D.npg_entropy_change
    return measured, float(predict(z0, adv, lr)), adv


@pytest.mark.parametrize("update", ["pg", "npg"])
def test_pg_and_npg_predictions_match_a_real_bandit_step(update):
    arms = bd.Bandit.bernoulli([0.9, 0.2, 0.6, 0.1, 0.4])
    z0 = torch.tensor([1.0, 0.5, -0.3, 0.2, -1.0], dtype=torch.float64)
    rel = []
    for lr in (0.1, 0.05, 0.025):
        measured, predicted, adv = bandit_step(update, lr, z0, arms)
        rel.append(abs(predicted - measured) / abs(measured))
    # measured relative errors: pg [0.033, 0.017, 0.0084], npg [0.103, 0.055, 0.028]: O(lr), halves with lr
    assert rel[-1] < 0.03
    assert rel[1] / rel[0] == pytest.approx(0.5, abs=0.1) and rel[2] / rel[1] == pytest.approx(0.5, abs=0.1)
    # the step itself is the bandit's: PG = lr·π⊙(Ā − π·Ā), NPG = lr·Ā
    pi = bd.policy(z0[None])
    expected_step = 0.05 * (bd.policy_gradient(pi, adv[None])[0] if update == "pg" else adv)
    step = D.pg_logit_step(z0, adv, 0.05) if update == "pg" else D.npg_logit_step(z0, adv, 0.05)
    torch.testing.assert_close(step, expected_step)


def test_pg_center_flag_matches_paper_form_when_advantages_are_centred():
    z = random_logits(3, 6, seed=7)
    a = random_logits(3, 6, seed=8)
    p = torch.softmax(z, -1)
    a_centred = a - (p * a).sum(-1, keepdim=True)
    torch.testing.assert_close(D.pg_entropy_change(z, a_centred, 0.1, center=False), D.pg_entropy_change(z, a, 0.1))
    torch.testing.assert_close(D.npg_entropy_change(z, a, 0.1), D.first_order_entropy_change(z, 0.1 * a))


def test_s_star_is_the_single_logit_first_order_change():
    z = random_logits(4, 9, seed=9)
    eps = 1e-3
    s_star = D.entropy_discriminator(z)  # [4, 9]
    p = torch.softmax(z, -1)
    h = torch.tensor(direct_entropy(z.numpy()))
    torch.testing.assert_close(s_star, p * (h[:, None] + p.log()))
    for k in range(9):
        e_k = torch.zeros(9, dtype=torch.float64)
        e_k[k] = eps
        dz = e_k.expand(4, 9)
        torch.testing.assert_close(D.first_order_entropy_change(z, dz), -eps * s_star[:, k])
        torch.testing.assert_close(D.entropy_discriminator(z, k), s_star[:, k])
        assert (D.exact_entropy_change(z, dz) + eps * s_star[:, k]).abs().max() < 10 * eps**2


def test_sampled_token_closed_form_equals_first_order_change():
    z = random_logits(6, 7, seed=10)
    tokens = torch.tensor([0, 3, 6, 2, 2, 5])
    c = torch.tensor([0.3, -0.2, 1.0, 0.05, -1.0, 0.7], dtype=torch.float64)
    p = torch.softmax(z, -1)
    dz = c[:, None] * (torch.nn.functional.one_hot(tokens, 7).double() - p)
    torch.testing.assert_close(D.sampled_token_entropy_change(z, tokens, c), D.first_order_entropy_change(z, dz))
    table = D.compare_entropy_estimates(z, tokens, c)
    torch.testing.assert_close(table["closed_form"], table["first_order"])
    torch.testing.assert_close(table["exact"], D.exact_entropy_change(z, dz))
    torch.testing.assert_close(table["single_logit_s_star"], -c * D.entropy_discriminator(z, tokens))


def test_steer_omega_formula_and_consistency_with_steer_weights():
    gen = torch.Generator().manual_seed(11)
    logp = -torch.rand(3, 5, generator=gen, dtype=torch.float64) * 3
    old_logp = logp + 0.1 * torch.randn(3, 5, generator=gen, dtype=torch.float64)
    entropy = torch.rand(3, 5, generator=gen, dtype=torch.float64) * 2
    adv = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[2, 3:] = False
    omega = D.steer_omega(adv, logp, old_logp, entropy, mask)
    p = logp.exp()
    expected = adv[:, None] / old_logp.exp() * p * (1 - p) * (logp + entropy)
    torch.testing.assert_close(omega, torch.where(mask, expected, 0.0))
    # the library's STEER weights are exp(−k|Ω|) clipped to [0.8, 1] with k = −ln 0.8 / max|Ω|
    k = -math.log(0.8) / max(float(omega.abs().max()), 0.02)
    weights = torch.where(mask, torch.exp(-k * omega.abs()).clamp(0.8, 1.0), 0.0)
    torch.testing.assert_close(regularizers.steer_weights(adv, logp, old_logp, entropy, mask), weights)
    # Ω at π_old = π with A = c·p_k is the "steer" row of the comparison table (−Ω)
    z = random_logits(5, 6, seed=12)
    tokens, c = torch.tensor([0, 1, 2, 3, 4]), 0.4
    lp = torch.log_softmax(z, -1).gather(-1, tokens[:, None])
    h = torch.tensor(direct_entropy(z.numpy()))[:, None]
    omega = D.steer_omega(c * lp.exp()[:, 0], lp, lp, h)
    torch.testing.assert_close(D.compare_entropy_estimates(z, tokens, c)["steer"], -omega[:, 0])


def test_approximation_errors_on_a_sampled_step():
    z = random_logits(32, 12, seed=13)
    tokens = torch.arange(32) % 12
    table = [D.compare_entropy_estimates(z, tokens, c) for c in (0.1, 0.05)]
    err = {key: [(t[key] - t["exact"]).abs().mean() for t in table] for key in ("first_order", "steer", "s_star")}
    # measured mean |error| at c = 0.1 → 0.05: first order 5.1e-4 → 1.3e-4 (×4.06), steer 1.1e-2 → 5.8e-3
    # (×1.97), s_star 1.2e-2 → 6.0e-3 (×1.97)
    assert err["first_order"][0] / err["first_order"][1] == pytest.approx(4, abs=0.5)  # O(c²)
    assert err["steer"][0] / err["steer"][1] == pytest.approx(2, abs=0.3)  # O(c): a modelling error
    assert err["first_order"][0] < err["steer"][0] and err["first_order"][0] < err["s_star"][0]


def synthetic_law(n, seed, a=0.3, b=0.9, noise=0.01):
    rng = np.random.default_rng(seed)
    H = rng.uniform(0.1, 2.0, n)
    return H, -a * np.exp(H) + b + noise * rng.standard_normal(n)


def test_fit_entropy_law_recovers_a_and_b():
    fits = [D.fit_entropy_law(*synthetic_law(n, seed=n)) for n in (20, 400)]
    for fit in fits:
        # measured (true a=0.3, b=0.9, ceiling 0.6): n=20: a=0.2968±0.0018, b=0.8871±0.0054, ceiling
        # 0.5902±0.0040 (1.8, 2.4, 2.4 se off); n=400: a=0.29985±0.00029, b=0.8994±0.0010, ceiling 0.5996±0.0008
        assert abs(fit.a - 0.3) < 4 * fit.a_se and abs(fit.b - 0.9) < 4 * fit.b_se
        assert abs(fit.ceiling - 0.6) < 4 * fit.ceiling_se
        assert fit.rmse == pytest.approx(0.01, rel=0.5)
    assert fits[1].a_se < fits[0].a_se / 3 and fits[1].b_se < fits[0].b_se / 3  # ~1/√n: √20 ≈ 4.5
    H, R = synthetic_law(20, seed=20)
    np.testing.assert_allclose(fits[0].predict(torch.tensor(H)).numpy(), -fits[0].a * np.exp(H) + fits[0].b)
    # the same estimate and standard errors as NumPy's least squares with the textbook covariance
    X = np.stack([-np.exp(H), np.ones_like(H)], 1)
    beta, rss, *_ = np.linalg.lstsq(X, R, rcond=None)
    cov = rss[0] / (len(H) - 2) * np.linalg.inv(X.T @ X)
    np.testing.assert_allclose([fits[0].a, fits[0].b], beta)
    np.testing.assert_allclose([fits[0].a_se, fits[0].b_se], np.sqrt(np.diag(cov)))


@pytest.mark.parametrize(
    "H, R, name",
    [([0.1, 0.2, 0.3], [1.0, 2.0], "R"), ([0.1, 0.2], [1.0, 2.0], "H"), ([0.1, float("nan"), 0.3], [1, 2, 3], "H"),
     ([0.1, 0.2, 0.3], [1.0, float("nan"), 2.0], "R"), ([0.5, 0.5, 0.5], [1.0, 2.0, 3.0], "H")],
)
def test_fit_entropy_law_rejects_bad_inputs(H, R, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        D.fit_entropy_law(H, R)


def test_bad_inputs_name_the_argument():
    z = random_logits(2, 4)
    with pytest.raises(ValueError, match="`delta_logits`"):
        D.exact_entropy_change(z, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="`logits`"):
        D.first_order_entropy_change(torch.full((2, 4), float("nan")), z)
    with pytest.raises(ValueError, match="`adv`"):
        D.pg_entropy_change(z, torch.zeros(4), 0.1)
    with pytest.raises(ValueError, match="`lr`"):
        D.npg_entropy_change(z, z, -1.0)
    with pytest.raises(ValueError, match="`tokens`"):
        D.entropy_discriminator(z, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="`entropy`"):
        D.steer_omega(torch.ones(2), torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4))


def test_token_covariance_is_the_regularizers_function():
    assert D.token_covariance is regularizers.token_covariance
