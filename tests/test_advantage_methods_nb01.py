"""Oracle tests of notebook 01's newer advantage methods: BNPO, DGPO, D³S, SPO, prompt replay, and the
off-policy reading of group-relative REINFORCE. Each oracle is derived independently of the code under test
(closed forms, scipy, brute force over subsets, autograd, or Monte Carlo with a stated standard error)."""

import itertools
import math
import statistics

import pytest
import torch
from scipy import stats

from forklab import advantage_weighting as aw
from forklab import advantages as adv
from forklab import offpolicy_reinforce as opr
from forklab.prompt_selection import PromptReplay, SingleStreamBaseline, spo_rho

F64 = torch.float64


def _batch():
    rewards = torch.tensor([1, 0, 0, 0, 1, 1, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=F64)
    group = torch.arange(4).repeat_interleave(4)
    return rewards, group


# ----- BNPO ---------------------------------------------------------------------------------------
def test_bnpo_alpha_beta_one_is_mean_baseline():
    rewards, group = _batch()
    got = aw.bnpo(rewards, group, alpha=1.0, beta=1.0)
    torch.testing.assert_close(got, adv.grpo(rewards, group, scale="none"))


def test_bnpo_alpha_beta_three_halves_is_grpo_population_std_times_pi_over_8():
    rewards, group = _batch()
    got = aw.bnpo(rewards, group, alpha=1.5, beta=1.5)
    expected = []
    for r, g in zip(rewards.tolist(), group.tolist(), strict=True):
        members = rewards[group == g].tolist()
        p, sd = statistics.fmean(members), statistics.pstdev(members)
        expected.append(0.0 if sd == 0 else math.pi / 8 * (r - p) / sd)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=F64))


def test_bnpo_fit_and_weight_against_scipy():
    rewards, group = _batch()
    pass_rates = [statistics.fmean(rewards[group == g].tolist()) for g in range(4)]
    mu, v = statistics.fmean(pass_rates), statistics.variance(pass_rates)
    c = mu * (1 - mu) / v - 1
    alpha, beta = max(1 + c * mu / 3, 1), max(1 + c * (1 - mu) / 3, 1)
    assert aw.bnpo_beta_parameters(torch.tensor(pass_rates)) == pytest.approx((alpha, beta), rel=1e-12)
    got = aw.bnpo(rewards, group)
    for i, (r, g) in enumerate(zip(rewards.tolist(), group.tolist(), strict=True)):
        p = pass_rates[g]
        want = 0.0 if p in (0.0, 1.0) else (r - p) / stats.beta.pdf(p, alpha, beta)
        assert got[i].item() == pytest.approx(want, rel=1e-10, abs=1e-12)


def test_bnpo_bad_input():
    with pytest.raises(ValueError, match="alpha"):
        aw.bnpo(torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), alpha=1.0)
    with pytest.raises(ValueError, match="r_max"):
        aw.bnpo(torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), r_min=1.0, r_max=0.0)
    with pytest.raises(ValueError, match="pass_rates"):
        aw.bnpo_beta_parameters(torch.tensor([0.5]))


# ----- DGPO ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 4, 6, 7])
def test_dgae_total_abs_advantage_is_group_size(k):
    rewards = torch.tensor([1.0] * k + [0.0] * (8 - k), dtype=F64)
    a = aw.dgpo(rewards, torch.zeros(8, dtype=torch.long), question_weights=False)
    assert a.abs().sum().item() == pytest.approx(8.0, abs=1e-3)
    grpo_total = adv.grpo(rewards, torch.zeros(8, dtype=torch.long), eps=1e-4).abs().sum().item()
    want = {1: 4.948, 2: 6.479, 4: 7.482, 6: 6.479, 7: 4.948}[k]  # 2G·sqrt(p(1-p))·sqrt((G-1)/G), by hand
    assert grpo_total == pytest.approx(want, abs=1e-3)


def test_dqw_weights_closed_form():
    w = aw.dgpo_question_weights(torch.tensor([0.25, 0.5, 0.75]), torch.tensor([True, True, True]))
    e = [math.exp(-p / 2) for p in (0.25, 0.5, 0.75)]
    torch.testing.assert_close(w, torch.tensor([3 * x / sum(e) for x in e], dtype=F64))
    assert w.tolist() == pytest.approx([1.127, 0.995, 0.878], abs=1e-3)


def test_dgpo_degenerate_groups_zero_and_weight_one():
    rewards = torch.tensor([1.0, 0, 0, 0, 1, 1, 1, 1], dtype=F64)
    group = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    a = aw.dgpo(rewards, group)
    assert (a[4:] == 0).all()
    # only group 0 is informative: K_v = 1, softmax over one prompt = 1, so DGPO = DGAE there
    torch.testing.assert_close(a[:4], aw.dgpo(rewards[:4], group[:4], question_weights=False))


# ----- D3S ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_d3s_subset_matches_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(9, generator=gen, dtype=F64)
    for n in (2, 4, 6):
        best = max(statistics.pvariance([a[i].item() for i in s]) for s in itertools.combinations(range(9), n))
        keep = aw.d3s_sample_subset(a, n)
        assert keep.sum().item() == n
        assert statistics.pvariance(a[keep].tolist()) == pytest.approx(best, rel=1e-12)


def test_d3s_token_mask_keeps_top_scores():
    a = torch.tensor([2.0, -1.0, 0.5])
    h = torch.tensor([[0.1, 0.9, 0.0], [1.0, 1.0, 2.0], [3.0, 0.2, 0.0]])
    mask = torch.tensor([[True, True, False], [True, True, True], [True, True, False]])
    keep = aw.d3s_token_mask(a, h, mask, keep_fraction=0.4)  # 7 tokens -> ceil(2.8) = 3 kept
    # scores: row0 0.2, 1.8; row1 1, 1, 2; row2 1.5, 0.1 -> top 3 = 2 (1,2), 1.8 (0,1), 1.5 (2,0)
    want = torch.zeros_like(mask)
    want[1, 2] = want[0, 1] = want[2, 0] = True
    assert torch.equal(keep, want)
    with pytest.raises(ValueError, match="keep_fraction"):
        aw.d3s_token_mask(a, h, mask, keep_fraction=0.0)


# ----- SPO ----------------------------------------------------------------------------------------
def test_spo_effective_count_and_deterministic_update():
    tracker = SingleStreamBaseline(1, rho_min=0.875)
    for step in range(200):
        tracker.update([0], [float(step % 2)])
    assert (tracker.alpha + tracker.beta).item() == pytest.approx(1 / (1 - 0.875), rel=1e-9)
    # closed form of the discounted sums: after rewards 0,1,0,1,... the last one (199) is 1
    rho = 0.875
    alpha = sum(rho**j for j in range(0, 200, 2))  # rewards 1 at steps 199, 197, ... -> lags 0, 2, ...
    assert tracker.alpha.item() == pytest.approx(alpha + 0.5 * rho**200, rel=1e-12)


def test_spo_tracks_pass_rate_monte_carlo():
    p, steps, burn = 0.3, 20_000, 100
    gen = torch.Generator().manual_seed(0)
    tracker, estimates = SingleStreamBaseline(1), []
    draws = (torch.rand(steps, generator=gen, dtype=F64) < p).double()
    for t in range(steps):
        tracker.update([0], [draws[t].item()])
        if t >= burn:
            estimates.append(tracker.pass_rate.item())
    # p̂ is an EWMA with ~8 effective samples: consecutive estimates are correlated over ~8 steps, so the
    # standard error uses n_eff = n / (2·8) (conservative): se ≈ sqrt(p(1-p)/8 / n_eff) ≈ 0.0063
    se = math.sqrt(p * (1 - p) / 8 / ((steps - burn) / 16))
    assert abs(statistics.fmean(estimates) - p) < 4 * se


def test_spo_offline_init_advantages_and_rho():
    tracker = SingleStreamBaseline(2, offline_successes=[3, 0], offline_trials=[4, 4])
    assert tracker.alpha.tolist() == pytest.approx([8 * 3.5 / 5, 8 * 0.5 / 5])
    a = tracker.advantages([0, 1, 1], [1.0, 0.0, 1.0], normalize=False)
    assert a.tolist() == pytest.approx([1 - 0.7, -0.1, 0.9])
    z = tracker.advantages([0, 1, 1], [1.0, 0.0, 1.0])
    assert z.mean().item() == pytest.approx(0, abs=1e-12) and z.std().item() == pytest.approx(1, abs=1e-6)
    assert spo_rho(torch.tensor([0.0, 0.06, 10.0])).tolist() == pytest.approx([0.96, 0.875, 0.875])
    assert spo_rho(torch.tensor([0.01])).item() == pytest.approx(2 ** (-1 / 6))
    with pytest.raises(ValueError, match="rewards"):
        tracker.update([0], [2.0])
    with pytest.raises(ValueError, match="prompt_ids"):
        tracker.update([5], [1.0])


# ----- prompt replay --------------------------------------------------------------------------------
def _fresh():
    counter = itertools.count(1000)
    return lambda k: [next(counter) for _ in range(k)]


def test_prompt_replay_order_window_cooldown_and_cap():
    replay = PromptReplay(fraction=0.5, cooldown=2, max_reuse=1)
    replay.observe(0, [1, 2, 3, 4, 5], [0.5, 0.25, 0.75, 0.9, 0.45])
    fresh = _fresh()
    # step 1: all candidates are in cooldown (1 - 0 < 2)
    assert replay.select(1, 4, fresh) == ([1000, 1001, 1002, 1003], 0)
    # step 2: window [0.24, 0.7] drops 3 (0.75) and 4 (0.9); order by |p - 0.5| then higher p
    ids, n = replay.select(2, 4, fresh)
    brute = sorted([(abs(p - 0.5), -p, x) for x, p in [(1, 0.5), (2, 0.25), (5, 0.45)]])
    assert n == 2 and ids[:2] == [x for *_, x in brute[:2]]
    # those two have now been reused once (the cap): observing them again does not re-queue them
    replay.observe(2, ids[:2], [0.5, 0.5])
    ids, n = replay.select(10, 4, fresh)
    assert ids[:n] == [2]


def test_prompt_replay_bad_input():
    with pytest.raises(ValueError, match="fraction"):
        PromptReplay(fraction=1.5)
    with pytest.raises(ValueError, match="pass_rates"):
        PromptReplay().observe(0, [1], [1.5])


# ----- off-policy reading -----------------------------------------------------------------------------
def test_pairwise_loss_gradient_is_group_mean_reinforce_for_any_samples():
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(5, generator=gen, dtype=F64, requires_grad=True)
    samples = torch.tensor([4, 4, 4, 1, 0, 4])  # drawn from "any" behaviour policy: mostly arm 4
    rewards = torch.tensor([0.2, 0.0, 1.0, 0.7, 0.3, 0.2], dtype=F64)
    logp = torch.log_softmax(theta, 0)[samples]
    (grad_loss,) = torch.autograd.grad(opr.pairwise_consistency_loss(logp, logp.detach(), rewards, tau=0.7), theta)
    # REINFORCE by hand: -(1/K) sum_i (r_i - mean r) (e_{y_i} - softmax(theta))
    pi = torch.softmax(theta.detach(), 0)
    onehot = torch.eye(5, dtype=F64)
    reinforce = sum((r - rewards.mean()) * (onehot[y] - pi) for r, y in zip(rewards, samples, strict=True))
    torch.testing.assert_close(grad_loss, -reinforce / len(samples))


@pytest.mark.parametrize("behaviour", [[0.05, 0.9, 0.05], [0.6, 0.2, 0.2]])
def test_pairwise_loss_minimiser_is_kl_optimum_for_any_behaviour(behaviour):
    rewards, tau = torch.tensor([1.0, 0.8, 0.0], dtype=F64), 0.5
    anchor = torch.tensor([0.2, 0.5, 0.3], dtype=F64)
    target = anchor * torch.exp(rewards / tau)
    target = target / target.sum()  # closed form, by hand
    theta = torch.zeros(3, dtype=F64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], max_iter=200, tolerance_grad=1e-14, tolerance_change=1e-16)

    def closure():
        opt.zero_grad()
        loss = opr.pairwise_consistency_loss(torch.log_softmax(theta, 0), anchor.log(), rewards, tau,
                                             weights=torch.tensor(behaviour, dtype=F64))
        loss.backward()
        return loss

    opt.step(closure)
    torch.testing.assert_close(torch.softmax(theta.detach(), 0), target, atol=1e-7, rtol=0)
    torch.testing.assert_close(opr.kl_regularised_optimum(anchor, rewards, tau), target)


def test_pairwise_loss_bad_input():
    with pytest.raises(ValueError, match="weights"):
        opr.pairwise_consistency_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), weights=torch.ones(2))
    with pytest.raises(ValueError, match="tau"):
        opr.pairwise_consistency_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2), tau=0.0)


def test_spo_closed_form_update_equals_sequential_recursion():
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 4, (30,), generator=gen)
    r = (torch.rand(30, generator=gen) < 0.5).double()
    fast, slow = SingleStreamBaseline(4), SingleStreamBaseline(4)
    fast.update(ids, r)
    slow.update(ids, r, rho=torch.full((30,), 0.875, dtype=F64))  # the per-entry (loop) path
    alpha, beta = [0.5] * 4, [0.5] * 4  # by hand
    for x, reward in zip(ids.tolist(), r.tolist(), strict=True):
        alpha[x], beta[x] = 0.875 * alpha[x] + reward, 0.875 * beta[x] + 1 - reward
    for tracker in (fast, slow):
        torch.testing.assert_close(tracker.alpha, torch.tensor(alpha, dtype=F64))
        torch.testing.assert_close(tracker.beta, torch.tensor(beta, dtype=F64))
