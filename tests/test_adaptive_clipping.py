"""DCPO, BAPO and ETR against independent derivations: the quadratic constraint, autograd weights, brute force."""

import math

import pytest
import torch

from forklab import adaptive_clipping as ac
from forklab import surrogates as S


def weights(loss_fn, log_ratio, adv, mask, old_logp=None):
    """c_t = −(∂ℓ_t/∂logp_t)/A_t by autograd (ℓ summed over tokens)."""
    old = torch.zeros_like(log_ratio) if old_logp is None else old_logp
    logp = (old + log_ratio).clone().requires_grad_(True)
    loss = loss_fn(logp, old, adv, mask)
    (grad,) = torch.autograd.grad(loss.sum(), logp)
    a = adv[:, None].expand_as(grad) if adv.dim() == 1 else adv
    return -grad / a, loss


# --------------------------------------------------------------------------------------------- DCPO
@pytest.mark.parametrize(("q", "low", "high"), [(0.9, 0.769, 1.187), (0.1, 0.5, 2.0), (0.01, 0.5, 5.0)])
def test_dcpo_bounds_match_the_readme_table(q, low, high):
    lo, hi = ac.dcpo_clip_bounds(torch.tensor([q], dtype=torch.float64), eps_low=0.16, eps_high=0.20)
    assert lo.item() == pytest.approx(low, abs=5e-4) and hi.item() == pytest.approx(high, abs=5e-4)


def test_dcpo_bounds_solve_the_probability_constraint():
    """At the bounds the probability change |(r − 1)·r·q| equals ε exactly (the defining quadratic)."""
    q = torch.tensor([0.999, 0.9, 0.5, 0.3, 0.05, 0.01], dtype=torch.float64)
    lo, hi = ac.dcpo_clip_bounds(q, eps_low=0.2, eps_high=0.28)
    torch.testing.assert_close((hi - 1) * hi * q, torch.full_like(q, 0.28))
    binding = 1 - 4 * 0.2 / q >= 0  # below that, the constraint never binds and r_low stays at 0.5
    torch.testing.assert_close(((1 - lo) * lo * q)[binding], torch.full_like(q, 0.2)[binding])
    assert (lo[~binding] == 0.5).all() and (hi > 1).all() and (lo < 1).all()
    assert ac.dcpo_clip_bounds(torch.tensor([0.01]))[1].item() == pytest.approx(5.815, abs=5e-4)
    assert ac.dcpo_clip_bounds(torch.tensor([1e-6]))[1].item() == 10.0  # capped at max(c, 10)


def test_dcpo_clip_gradient_weights():
    q = torch.tensor([[0.9, 0.01, 0.01, 0.5]], dtype=torch.float64)
    r = torch.tensor([[1.3, 4.0, 6.0, 1.1]], dtype=torch.float64)
    mask = torch.ones(1, 4, dtype=torch.bool)
    c, loss = weights(ac.dcpo_clip, r.log(), torch.tensor([1.0], dtype=torch.float64), mask, q.log())
    lo, hi = ac.dcpo_clip_bounds(q)
    expected = torch.where(r > hi, 0.0, r)  # A > 0: gradient r up to r_high, 0 beyond
    torch.testing.assert_close(c, expected)
    assert c[0, 1].item() == pytest.approx(4.0) and c[0, 0] == 0  # rare token still learns at r = 4; common clips
    # A < 0 with dual clip c = 10: a ratio of 12 is capped, 0.3 is below r_low = 0.5
    c, _ = weights(ac.dcpo_clip, torch.tensor([[12.0, 0.3, 2.0]]).double().log(), torch.tensor([-1.0]).double(),
                   torch.ones(1, 3, dtype=torch.bool), torch.full((1, 3), 0.01).double().log())
    torch.testing.assert_close(c, torch.tensor([[0.0, 0.0, 2.0]], dtype=torch.float64))


def test_dcpo_reduces_to_ppo_clip_when_bounds_equal_constants():
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(3, 5, generator=g, dtype=torch.float64) * 3
    logp = old + 0.4 * torch.randn(3, 5, generator=g, dtype=torch.float64)
    adv, mask = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64), torch.rand(3, 5, generator=g) > 0.2
    lo, hi = ac.dcpo_clip_bounds(old.exp())
    expected = S.ppo_clip(logp, old, adv, mask, 1 - lo, hi - 1, dual_clip=10.0)
    torch.testing.assert_close(ac.dcpo_clip(logp, old, adv, mask), expected)
    assert (ac.dcpo_clip(logp, old, adv, mask)[~mask] == 0).all()


# --------------------------------------------------------------------------------------------- BAPO
def _bapo_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ratio = torch.exp(0.5 * torch.randn(6, 8, generator=g, dtype=torch.float64))
    adv = torch.tensor([1.0, 0.5, -1.0, -1.0, -2.0, -0.5], dtype=torch.float64)
    mask = torch.rand(6, 8, generator=g) > 0.1
    return ratio, adv, mask


def test_bapo_gradient_share_equals_the_autograd_mass_of_each_side():
    ratio, adv, mask = _bapo_batch()
    c_low, c_high, share = ac.bapo_clip_bounds(ratio, adv, mask)
    loss = lambda lp, o, a, m: S.ppo_clip(lp, o, a, m, 1 - c_low, c_high - 1, dual_clip=3.0)  # noqa: E731
    logp = ratio.log().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(logp, torch.zeros_like(logp), adv, mask).sum(), logp)
    a = adv[:, None].expand_as(grad)
    pos, neg = grad[mask & (a > 0)].abs().sum(), grad[mask & (a < 0)].abs().sum()
    assert share == pytest.approx(float(pos / neg))


def test_bapo_search_is_the_first_grid_point_reaching_the_target():
    ratio, adv, mask = _bapo_batch()
    c_low, c_high, share = ac.bapo_clip_bounds(ratio, adv, mask, target=1.0)
    highs = [1.2 + 0.05 * k for k in range(17)]
    lows = [0.6 + 0.05 * k for k in range(5)]

    def grad_share(cl, ch):  # independent: the PPO gradient mass, by autograd
        logp = ratio.log().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(S.ppo_clip(logp, torch.zeros_like(logp), adv, mask, 1 - cl, ch - 1,
                                              dual_clip=3.0).sum(), logp)
        a = adv[:, None].expand_as(g)
        return float(g[mask & (a > 0)].abs().sum() / g[mask & (a < 0)].abs().sum())

    # brute force: raise c_high first over its grid at c_low = 0.6, then c_low at the final c_high
    reached = [h for h in highs if grad_share(0.6, h) >= 1.0]
    h = reached[0] if reached else highs[-1]
    lows_ok = [lo for lo in lows if grad_share(lo, h) >= 1.0]
    lo = 0.6 if reached else (lows_ok[0] if lows_ok else lows[-1])
    assert (c_low, c_high) == (pytest.approx(lo), pytest.approx(h))
    assert share >= 1.0 or (c_low, c_high) == (pytest.approx(0.8), pytest.approx(2.0))


def test_bapo_code_measure_can_only_push_c_low_to_its_maximum():
    ratio, adv, mask = _bapo_batch()
    c_low, c_high, share = ac.bapo_clip_bounds(ratio, adv, mask, measure="code")
    e_pos = (ratio.clamp(max=c_high) * adv[:, None])[mask & (adv[:, None] >= 0)].sum()
    e_neg = (ratio.clamp(min=c_low) * -adv[:, None])[mask & (adv[:, None] < 0)].sum()
    assert share == pytest.approx(float(e_pos / e_neg))
    assert c_low == pytest.approx(0.8)  # negative side dominates this batch: raising c_l only raises E⁻


def test_bapo_loss_uses_its_bounds_and_validates():
    ratio, adv, mask = _bapo_batch()
    logp = ratio.log() - 1
    loss, m = ac.bapo_clip(logp, logp.detach() * 0 + (ratio.log() * 0 - 1), adv, mask, return_metrics=True)
    expected = S.ppo_clip(logp, logp * 0 - 1, adv, mask, 1 - m["bapo/c_low"], m["bapo/c_high"] - 1, dual_clip=3.0)
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError, match="`measure`"):
        ac.bapo_clip_bounds(ratio, adv, mask, measure="value")
    with pytest.raises(ValueError, match="`low_range`"):
        ac.bapo_clip_bounds(ratio, adv, mask, low_range=(0.9, 1.2))


# ---------------------------------------------------------------------------------------------- ETR
def test_etr_bounds_widen_with_advantage_and_group_spread():
    adv = torch.tensor([2.0, -1.0, 0.5, 0.0], dtype=torch.float64)
    mask = torch.ones(4, 3, dtype=torch.bool)
    lo, hi = ac.etr_clip_bounds(adv, mask, eps_low=0.2, eps_high=0.28, lam=1.0)
    torch.testing.assert_close(hi[:, 0], 1 + 0.28 * (1 + adv.abs() / 2))
    torch.testing.assert_close(lo[:, 0], 1 - 0.2 * (1 + adv.abs() / 2))
    std = torch.tensor([0.5, 0.5, 0.25, 0.0], dtype=torch.float64)
    lo2, hi2 = ac.etr_clip_bounds(adv, mask, std, kappa=0.5)
    macro = 1 + 0.5 * (std / 0.5 - 0.5)
    torch.testing.assert_close(hi2[:, 0] - 1, (hi[:, 0] - 1) * macro)
    with pytest.raises(ValueError, match="`group_std`"):
        ac.etr_clip_bounds(adv, mask, torch.ones(3))


def test_etr_clip_gradient_is_zero_exactly_where_its_own_bound_binds():
    adv = torch.tensor([2.0, 0.5], dtype=torch.float64)
    r = torch.tensor([[1.5, 1.5]], dtype=torch.float64).repeat(2, 1)
    c, _ = weights(ac.etr_clip, r.log(), adv, torch.ones(2, 2, dtype=torch.bool))
    # large |A|: 1 + 0.28·2 = 1.56 > 1.5 keeps the gradient; small |A|: 1 + 0.28·1.25 = 1.35 < 1.5 clips
    torch.testing.assert_close(c, torch.tensor([[1.5, 1.5], [0.0, 0.0]], dtype=torch.float64))


def test_every_adaptive_objective_is_the_policy_gradient_at_ratio_one():
    g = torch.Generator().manual_seed(1)
    old = -torch.rand(4, 5, generator=g, dtype=torch.float64) * 4
    adv = torch.tensor([1.0, -1.0, 0.3, -2.0], dtype=torch.float64)
    mask = torch.arange(5)[None] < torch.tensor([5, 2, 4, 1])[:, None]
    for fn in (ac.dcpo_clip, ac.bapo_clip, ac.etr_clip):
        c, loss = weights(fn, torch.zeros(4, 5, dtype=torch.float64), adv, mask, old)
        torch.testing.assert_close(c[mask], torch.ones(int(mask.sum()), dtype=torch.float64))
        assert (loss[~mask] == 0).all() and not math.isnan(float(loss.detach().sum()))
