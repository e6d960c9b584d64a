"""forklab.entropy_control and forklab.entropy_objectives against independent oracles (hand
arithmetic, numpy re-implementations, finite differences), plus the notebook-05 lesson loop."""

import math

import numpy as np
import pytest
import torch

from forklab import entropy_control as ctl
from forklab import entropy_objectives as eo
from forklab import recipes
from forklab import surrogates as sur


# ------------------------------------------------------------------------------ Skywork-OR1
def test_skywork_scripted_sequence():
    # tgt 0.2, Δ 0.1, c ∈ [0, 0.25]: hand-computed (c, α) after each ê
    coef, seen = 0.0, []
    for e in (0.1, 0.1, 0.1, 0.3, 0.1, 0.2):
        coef, alpha = ctl.skywork_entropy_coef_update(coef, e, target=0.2, delta=0.1, coef_min=0.0, coef_max=0.25)
        seen.append((round(coef, 10), round(alpha, 10)))
    assert seen == [(0.1, 0.1), (0.2, 0.2), (0.25, 0.25), (0.15, 0.0), (0.25, 0.25), (0.15, 0.0)]


def test_skywork_alpha_zero_above_target_and_errors():
    for c in (0.0, 0.003, 0.005):
        assert ctl.skywork_entropy_coef_update(c, 0.5)[1] == 0.0
    with pytest.raises(ValueError, match="coef_max"):
        ctl.skywork_entropy_coef_update(0.0, 0.1, coef_min=0.1, coef_max=0.0)
    with pytest.raises(ValueError, match="sampled_entropy"):
        ctl.skywork_entropy_coef_update(0.0, float("nan"))


# ----------------------------------------------------------- Arbitrary-Entropy temperature switch
def test_temperature_switch_and_sample_count():
    assert ctl.entropy_target_temperature(0.0, 0.5) == 1.2  # Ĥ_0 = 0: the first step samples hot
    assert ctl.entropy_target_temperature(0.5, 0.5) == 1.2  # ≤ target
    assert ctl.entropy_target_temperature(0.51, 0.5) == 0.8
    assert ctl.arbitrary_entropy_sample_count(0.1, 0.5, 100) == 60
    assert ctl.arbitrary_entropy_sample_count(0.9, 0.5, 100) == 30
    assert ctl.arbitrary_entropy_sample_count(0.9, 0.5, 7) == 3
    with pytest.raises(ValueError, match="num_kept"):
        ctl.arbitrary_entropy_sample_count(0.1, 0.5, -1)


# ------------------------------------------------------------------------------------- SAFE
def test_safe_controller_by_hand():
    c = ctl.SafeController()
    tau = c.update(kl=1.0, reward=1.0)
    # kl_s = 0.1; R̄: 0 → 0.05; e = 0.05 − 0.001 = 0.049; I = 0.049; u = 0.3e + 0.01I + 0.05e
    e = 0.049
    u = 0.3 * e + 0.01 * e + 0.05 * e
    assert c.kl_smooth == pytest.approx(0.1)
    assert tau == pytest.approx(min(max((0.3 + u) * 1.5, 0.1), 0.6))  # warm-up factor 1.5
    tau2 = c.update(kl=1.0, reward=1.0)
    e2 = (0.05 + 0.05 * 0.95) - 0.05 - 0.001  # R̄ 0.05 → 0.0975
    u2 = 0.3 * e2 + 0.01 * (e + e2) + 0.05 * (e2 - e)
    assert tau2 == pytest.approx((0.3 + u2) * 1.5)
    assert c.kl_smooth == pytest.approx(0.19)


def test_safe_phases():
    c = ctl.SafeController(rewards=[0.8] * 60)
    assert c.phase() == "converged"
    c = ctl.SafeController(rewards=[0.1] * 50 + [0.5] * 50)
    assert c.phase() == "climbing"
    c = ctl.SafeController(rewards=[0.5, 0.1] * 50)
    assert c.phase() == "plateau"


def test_safe_penalty_value_gate_and_gradient():
    # above τ: 0.1·(0.5 − 0.2)²·max(0.5, 2/(0.4 + 0.1)) = 0.1·0.09·4
    assert ctl.safe_kl_penalty(0.5, 0.2, 0.4) == pytest.approx(0.036)
    assert ctl.safe_kl_penalty(0.5, 0.2, 10.0) == pytest.approx(0.1 * 0.09 * 0.5)  # the 0.5 floor
    assert ctl.safe_kl_penalty(0.1, 0.2, 0.4) == 0.0
    kl = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(ctl.safe_kl_penalty(kl, 0.2, 0.4), kl)
    h = 1e-6
    fd = (ctl.safe_kl_penalty(0.5 + h, 0.2, 0.4) - ctl.safe_kl_penalty(0.5 - h, 0.2, 0.4)) / (2 * h)
    assert float(g) == pytest.approx(fd, rel=1e-6)


def test_safe_official_penalty_adds_no_gradient():
    # the code builds the penalty from kl.item(): the loss gradient is PPO − 0.01·H, exactly
    logits = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    arms = torch.tensor([0, 2, 2, 5])
    adv = torch.tensor([1.0, -0.5, -0.5, 0.3], dtype=torch.float64)
    mask = torch.ones(4, 1, dtype=torch.bool)

    def base():
        lp = torch.log_softmax(logits, -1)
        h = -(lp.exp() * lp).sum()
        return sur.ppo_clip(lp[arms][:, None], lp[arms][:, None].detach(), adv, mask).mean() - 0.01 * h, lp

    loss, lp = base()
    kl = (lp[arms] - math.log(1 / 6)).mean().item()
    tau = kl - 0.5
    official = loss + ctl.safe_kl_penalty(kl, tau, 0.5)
    assert ctl.safe_kl_penalty(kl, tau, 0.5) > 0  # the penalty is on, yet ...
    (g_official,) = torch.autograd.grad(official, logits)
    (g_base,) = torch.autograd.grad(base()[0], logits)
    assert torch.equal(g_official, g_base)


# ------------------------------------------------------------------------------------ SIREN
def _top_p_entropy_numpy(logits, p):
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    keep, total = [], 0.0
    for v in order:  # add tokens while the running sum, this token included, stays below p
        if total + probs[v] >= p:
            break
        total += probs[v]
        keep.append(v)
    if not keep:
        return 0.0
    q = probs[keep] / probs[keep].sum()
    return float(-(q * np.log(q)).sum())


def test_top_p_entropy_matches_enumeration():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(7, 12, generator=gen, dtype=torch.float64) * 2
    got = eo.top_p_entropy(logits, 0.8)
    want = [_top_p_entropy_numpy(row.numpy(), 0.8) for row in logits]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-14)
    peaked = torch.tensor([5.0, 0.0, 0.0], dtype=torch.float64)  # p_max ≈ 0.99 ≥ 0.8: N = ∅
    assert float(eo.top_p_entropy(peaked, 0.8)) == 0.0


def test_top_p_entropy_gradient_finite_difference():
    logits = torch.tensor([1.0, 0.7, 0.2, -0.5, -3.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: eo.top_p_entropy(z, 0.8), (logits,))


def test_siren_mask_and_selected_entropy():
    gen = torch.Generator().manual_seed(2)
    ent = torch.rand(3, 10, generator=gen, dtype=torch.float64)
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[1, 7:] = False
    keep = eo.siren_position_mask(ent, mask, 0.8)
    for i in range(3):
        vals = ent[i][mask[i]].numpy()
        want = (ent[i].numpy() > np.quantile(vals, 0.8)) & mask[i].numpy()
        np.testing.assert_array_equal(keep[i].numpy(), want)
    sel = eo.siren_selected_entropy(ent, keep)
    want = np.mean([ent[i][keep[i]].mean().item() for i in range(3)])
    assert float(sel) == pytest.approx(want, rel=1e-12)
    assert float(eo.siren_anchor_loss(torch.tensor(1.5), 1.0, 0.1)) == pytest.approx(0.025)


# ---------------------------------------------------------------------- Distribution-Centric PO
def test_distribution_centric_by_hand():
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    correct = torch.tensor([True, False])
    old = torch.log(torch.tensor([[0.5, 0.2], [0.1, 0.4]], dtype=torch.float64))
    hot = torch.log(torch.tensor([[0.4, 0.3], [0.2, 0.3]], dtype=torch.float64))
    mask = torch.tensor([[True, True], [True, False]])
    got, alpha = eo.distribution_centric_advantages(adv, correct, hot, old, mask, prev_entropy=0.3, target=0.5)
    a = 0.1 / 0.5  # min(|0.5 − 0.3|, 0.1) / p_c
    assert alpha == pytest.approx(a / (a + 1))
    al = a / (a + 1)
    want = torch.tensor([[(1 - al) + al * 0.4 / 0.5, (1 - al) + al * 0.3 / 0.2], [-(1 - al), 0.0]],
                        dtype=torch.float64)
    torch.testing.assert_close(got, want)


def test_distribution_centric_all_wrong_batch_is_finite():
    adv = torch.zeros(4, dtype=torch.float64)
    lp = torch.full((4, 3), -1.0, dtype=torch.float64)
    got, alpha = eo.distribution_centric_advantages(adv, torch.zeros(4, dtype=torch.bool), lp, lp,
                                                    torch.ones(4, 3, dtype=torch.bool), 0.1, 0.5)
    assert alpha == 0.0 and torch.isfinite(got).all() and not got.any()
    with pytest.raises(ValueError, match="correct"):
        eo.distribution_centric_advantages(adv, torch.zeros(4), lp, lp, torch.ones(4, 3, dtype=torch.bool), 0.1, 0.5)


# ------------------------------------------------------------------------------ ProGRPO / ARM
def test_arm_advantages_by_hand():
    adv = torch.tensor([0.5, -0.5, 0.0, 0.0], dtype=torch.float64)
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    group = torch.tensor([0, 0, 1, 1])
    conf = torch.tensor([-0.1, -2.0, -0.3, -0.4], dtype=torch.float64)
    prompt = torch.tensor([-1.0, -1.0, -0.2, -0.2], dtype=torch.float64)
    got = eo.arm_advantages(adv, rewards, group, conf, prompt, alpha=0.5)
    # group 0 scored: Â + 0.5·(c(x) − c(o)); group 1 has no reward: unchanged
    torch.testing.assert_close(got, torch.tensor([0.5 - 0.45, -0.5 + 0.5, 0.0, 0.0], dtype=torch.float64))


def test_low_probability_confidence():
    logp = torch.tensor([[-0.1, -3.0, -0.2, -0.4, -0.05], [-1.0, -2.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    got = eo.low_probability_confidence(logp, mask, 0.4)
    torch.testing.assert_close(got, torch.tensor([(-3.0 - 0.4) / 2, -2.0], dtype=torch.float64))


def test_arm_po_recipe_equals_composition():
    gen = torch.Generator().manual_seed(3)
    logp = (-torch.rand(4, 3, generator=gen, dtype=torch.float64)).requires_grad_(True)
    old = logp.detach() - 0.05
    mask = torch.ones(4, 3, dtype=torch.bool)
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    group = torch.tensor([0, 0, 1, 1])
    batch = recipes.Batch(logp=logp, mask=mask, group=group, rewards=rewards, old_logp=old)
    loss, _ = recipes.get("progrpo_arm").loss(batch)
    adv = recipes.get("grpo").advantages(batch)
    conf = old.min(1).values  # fraction 0.2 of 3 tokens: the single lowest
    prompt = torch.stack([conf[:2].mean()] * 2 + [conf[2:].mean()] * 2)
    new_adv = adv + 0.5 * (prompt - conf)  # both groups scored
    want = sur.ppo_clip(logp, old, new_adv, mask, 0.2).mean()
    torch.testing.assert_close(loss, want)


# ---------------------------------------------------------------------------- Agentic EB-PO
def test_agentic_gradient_preserving_clip_one_token():
    # r = 1.5 > 1 + 0.28, Â = 1, a high-entropy token: ∂ℓ/∂log π = −(1 + ε_h) = −1.28 (PPO: 0)
    old = torch.zeros(1, 1, dtype=torch.float64)
    logp = torch.full((1, 1), math.log(1.5), dtype=torch.float64, requires_grad=True)
    adv, mask, ent = torch.ones(1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.bool), torch.ones(1, 1)
    loss = eo.agentic_entropy_balanced_po(logp, old, adv, mask, ent, eps_high=0.28, gamma=0.0)
    (g,) = torch.autograd.grad(loss.sum(), logp)
    assert float(g) == pytest.approx(-1.28)
    assert float(loss.detach()) == pytest.approx(-1.28)  # the value is PPO's clipped value
    (g_ppo,) = torch.autograd.grad(sur.ppo_clip(logp, old, adv, mask, 0.2, 0.28).sum(), logp)
    assert float(g_ppo) == 0.0


def test_agentic_low_entropy_token_keeps_ppo_clip_and_advantage_scaling():
    old = torch.zeros(2, 1, dtype=torch.float64)
    logp = torch.full((2, 1), math.log(1.5), dtype=torch.float64, requires_grad=True)
    adv, mask = torch.ones(2, dtype=torch.float64), torch.ones(2, 1, dtype=torch.bool)
    ent = torch.tensor([[2.0], [0.0]], dtype=torch.float64)  # mean 1, std 1
    loss = eo.agentic_entropy_balanced_po(logp, old, adv, mask, ent, eps_high=0.28, gamma=0.5)
    (g,) = torch.autograd.grad(loss.sum(), logp)
    # row 0: Ã = 1.5, preserved: −1.28·1.5; row 1: Ã = 0.5, below the mean entropy: PPO clip, 0 gradient
    torch.testing.assert_close(g, torch.tensor([[-1.28 * 1.5], [0.0]], dtype=torch.float64), rtol=1e-5, atol=0)


# ------------------------------------------------------------------------------------ lesson
def test_bandit_runs_same_seeds_and_official_safe_no_op():
    from forklab.lessons import entropy_interventions as L

    bandit, init = L.rare_correct_bandit()
    out = L.bandit_runs({"a": ("grpo", {}), "b": ("grpo", {}), "safe": ("safe_official", {}),
                         "bonus": ("entropy_bonus", {"coef": 0.01})}, bandit, init, steps=5, num_seeds=2)
    np.testing.assert_array_equal(out["a"]["entropy"], out["b"]["entropy"])
    # the official SAFE loss is GRPO − 0.01·H: its run equals the entropy bonus with c = 0.01
    np.testing.assert_array_equal(out["safe"]["entropy"], out["bonus"]["entropy"])
    with pytest.raises(ValueError, match="methods"):
        L.bandit_runs({"x": ("nope", {})}, bandit, init, steps=1)
