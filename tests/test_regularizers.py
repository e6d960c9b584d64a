"""Regularisers and token masks against TRL's published masks, hand-worked cases and the formulas."""

import math

import pytest
import torch

from forklab import regularizers as R
from forklab import surrogates as S


def trl_case():
    entropies = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.7, 0.8, 0.9, 1.0, 1.1, 1.2]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    return entropies, mask


def test_entropy_top_mask_reproduces_trl_expected_masks():
    # tests/test_grpo_trainer.py::TestGetHighEntropyMask: TRL's `threshold` = 1 - top_ratio
    entropies, mask = trl_case()
    keep = R.entropy_top_mask(entropies, mask, top_ratio=0.2)
    expected = torch.zeros_like(mask)
    expected[1, 2] = expected[1, 3] = True  # only 0.9 and 1.0
    assert torch.equal(keep, expected)
    assert torch.equal(R.entropy_top_mask(entropies, mask, top_ratio=1.0), mask)  # threshold 0.0: all valid
    only_max = torch.zeros_like(mask)
    only_max[1, 3] = True
    assert torch.equal(R.entropy_top_mask(entropies, mask, top_ratio=0.0), only_max)  # threshold 1.0
    assert not R.entropy_top_mask(entropies, torch.zeros_like(mask)).any()  # all masked: all False


def test_entropy_top_mask_count_method_and_ties():
    entropies, mask = trl_case()
    keep = R.entropy_top_mask(entropies, mask, top_ratio=0.25, method="count")  # ceil(10 * 0.25) = 3
    assert keep.sum() == 3 and keep[1, :4].tolist() == [False, True, True, True]
    ties = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert R.entropy_top_mask(ties, torch.ones(1, 4, dtype=torch.bool), 0.25).sum() == 3  # ties kept


def test_entropy_bonus_is_minus_coef_times_mean_entropy_and_differentiable():
    logits = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    p = torch.softmax(logits, -1)
    h = -(p * p.log()).sum(-1)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    bonus = R.entropy_bonus(h, mask, coef=0.1)
    assert bonus.item() == pytest.approx(-0.1 * h[mask].mean().item())
    bonus.backward()
    assert logits.grad.abs().sum() > 0


def test_token_covariance_is_centred_product():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -9.0, -9.0]], dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    cov = R.token_covariance(logp, adv, mask)
    lp = torch.tensor([-1.0, -2.0, -3.0, -0.5])
    a = torch.tensor([1.0, 1.0, 1.0, -1.0])
    torch.testing.assert_close(cov[mask].float(), (lp - lp.mean()) * (a - a.mean()))
    assert (cov[~mask] == 0).all()


def cov_batch():
    g = torch.Generator().manual_seed(0)
    b, t = 8, 50
    mask = torch.ones(b, t, dtype=torch.bool)
    logp = -torch.rand(b, t, generator=g, dtype=torch.float64) * 8
    adv = torch.randn(b, generator=g, dtype=torch.float64) * 2
    return logp, adv, mask


def test_clip_cov_zeroes_exactly_n_random_candidates():
    logp, adv, mask = cov_batch()
    old = logp.detach()
    cov = R.token_covariance(logp, adv, mask)
    candidates = (cov > 1) & (cov < 5)
    assert candidates.sum() > 10
    x = logp.clone().requires_grad_(True)
    loss, metrics = R.clip_cov(x, old, adv, mask, clip_ratio=0.02, generator=torch.Generator().manual_seed(1),
                               return_metrics=True)
    loss.sum().backward()
    zeroed = x.grad == 0
    assert zeroed.sum() == int(0.02 * 400) == 8
    assert (zeroed <= candidates).all()  # only candidates are ever detached
    assert metrics["clip_cov/frac"] == pytest.approx(8 / 400)
    again = R.clip_cov(logp, old, adv, mask, clip_ratio=0.02, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(again, loss.detach())  # seeded: reproducible


def test_kl_cov_penalises_the_top_covariance_tokens_without_clipping():
    logp, adv, mask = cov_batch()
    old = logp - 0.5  # ratios e^0.5 ≈ 1.65: PPO would clip many, KL-Cov must not
    loss = R.kl_cov(logp, old, adv, mask, kl_ratio=0.01, kl_coef=1.0)
    cov = R.token_covariance(logp, adv, mask)
    top = cov.flatten().topk(4).indices
    expected = (-adv[:, None] * math.exp(0.5)).expand_as(logp).flatten().clone()
    expected[top] += 0.5
    torch.testing.assert_close(loss.flatten(), expected)


def test_lp_reg_regularises_only_rare_non_noise_negative_tokens():
    mask = torch.ones(2, 4, dtype=torch.bool)
    logp = torch.log(torch.tensor([[0.5, 0.01, 0.3, 0.2], [0.02, 0.6, 0.4, 0.001]], dtype=torch.float64))
    old = logp.clone()
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    proxy = torch.log(torch.tensor([[0.6, 0.02, 0.3, 0.1], [0.05, 0.7, 0.2, 1e-9]], dtype=torch.float64))
    loss, metrics = R.lp_reg(logp, old, adv, mask, proxy, neg_ratio=0.5, beta=1.0, return_metrics=True)
    # negatives are row 1; bottom 50% by prob: 0.001 (proxy smaller: noise, excluded) and 0.02 (proxy 0.05: kept)
    base = S.ppo_clip(logp, old, adv, mask, 1.0, 9.0)
    q_over_p = 0.05 / 0.02
    expected = base.clone()
    expected[1, 0] = 1.0 + (q_over_p - math.log(q_over_p) - 1)
    torch.testing.assert_close(loss, expected)
    assert metrics["lp_reg/frac"] == pytest.approx(1 / 8)


def test_minp_proxy_filters_below_kappa_times_max_and_renormalises():
    logits = torch.log(torch.tensor([[[0.70, 0.25, 0.04, 0.01]]], dtype=torch.float64))
    got = R.minp_proxy_logprobs(logits, torch.tensor([[0]]), kappa=0.05).exp().item()
    assert got == pytest.approx(0.70 / 0.99)  # only 0.01 < 0.05 * 0.7 = 0.035 is filtered
    assert R.minp_proxy_logprobs(logits, torch.tensor([[3]]), kappa=0.05).item() < -1000


def test_steer_weights_follow_the_formula():
    mask = torch.ones(1, 3, dtype=torch.bool)
    p = torch.tensor([[0.9, 0.5, 0.1]], dtype=torch.float64)
    p_old = torch.tensor([[0.8, 0.5, 0.2]], dtype=torch.float64)
    h = torch.tensor([[0.3, 1.0, 2.0]], dtype=torch.float64)
    adv = torch.tensor([1.0], dtype=torch.float64)
    omega = (1.0 / p_old * p * (1 - p) * (p.log() + h)).abs()
    k = -math.log(0.8) / max(omega.max().item(), 0.02)
    expected = torch.exp(-k * omega).clamp(0.8, 1.0)
    torch.testing.assert_close(R.steer_weights(adv, p.log(), p_old.log(), h, mask), expected)
    lin = R.steer_weights(adv, p.log(), p_old.log(), h, mask, variant="linear")
    assert lin.max() <= 1.2 + 1e-12 and lin.min() == pytest.approx(0.8)
    assert torch.argmin(lin) == torch.argmax(omega)


def test_gtpo_conflict_weights_on_a_hand_case():
    # group 0: two positive, one negative; shared prefix "5 6", shared suffix "9"
    tokens = torch.tensor([[5, 6, 1, 9, 0], [5, 6, 2, 2, 9], [5, 6, 3, 9, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], dtype=torch.bool)
    adv = torch.tensor([1.0, 1.0, -1.0])
    group = torch.zeros(3, dtype=torch.long)
    w = R.gtpo_conflict_weights(tokens, mask, adv, group, w_raw=2.0)
    expected = torch.tensor([[2.0, 2.0, 1.0, 2.0, 0.0],   # prefix 5 6 and last token 9 conflict
                             [2.0, 2.0, 1.0, 1.0, 2.0],
                             [0.0, 0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(w, expected)
    # a zero-advantage response is never in conflict; other groups do not interact
    w2 = R.gtpo_conflict_weights(tokens, mask, torch.tensor([1.0, 0.0, -1.0]), torch.tensor([0, 0, 1]))
    assert (w2[mask] == 1).all()


def test_gtpo_entropy_filter():
    adv = torch.tensor([1.0, -1.0, 0.5])
    ent = torch.tensor([0.2, 0.9, 0.5])
    torch.testing.assert_close(R.gtpo_entropy_filter(adv, ent), torch.tensor([0.98, 0.0, 0.45]))


def test_bad_inputs():
    entropies, mask = trl_case()
    with pytest.raises(ValueError, match="`top_ratio`"):
        R.entropy_top_mask(entropies, mask, 1.5)
    with pytest.raises(ValueError, match="`mask` must have the same shape"):
        R.entropy_top_mask(entropies, mask[:, :3])
    with pytest.raises(ValueError, match="`method`"):
        R.entropy_top_mask(entropies, mask, method="rank")
    with pytest.raises(ValueError, match="`proxy_logp`"):
        R.lp_reg(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1), torch.ones(1, 2, dtype=torch.bool),
                 torch.zeros(2))
    with pytest.raises(ValueError, match="`adv` must have shape"):
        R.gtpo_conflict_weights(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool), torch.zeros(2, 3),
                                torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="`lambda_min`"):
        R.steer_weights(torch.ones(1), torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2),
                        torch.ones(1, 2, dtype=torch.bool), lambda_min=1.5)


def test_kl_cov_penalty_has_no_gradient_from_float_noise_at_ratio_one():
    """At ratio 1 the |log r| penalty's gradient must not depend on the sign of rounding noise
    (sampler and trainer log-probs differ at ~1e-16 in float64, with a CPU-dependent sign)."""
    torch.manual_seed(0)
    base = torch.randn(4, 6, dtype=torch.float64) - 2.0
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5], dtype=torch.float64)
    mask = torch.ones(4, 6, dtype=torch.bool)
    grads = []
    for sign in (1.0, -1.0):
        logp = base.clone().requires_grad_(True)
        old = base + sign * 4e-16 * torch.ones_like(base)  # rounding-size offsets, both signs
        loss = R.kl_cov(logp, old, adv, mask, kl_ratio=0.5, kl_coef=1.0)
        grads.append(torch.autograd.grad(loss.sum(), logp)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-12)
    # a real drift is still penalised: the penalty's gradient appears once |δ| is above the noise floor
    logp = base.clone().requires_grad_(True)
    loss = R.kl_cov(logp, base - 0.1, adv, mask, kl_ratio=0.5, kl_coef=1.0)
    free = R.kl_cov(logp, base - 0.1, adv, mask, kl_ratio=0.5, kl_coef=0.0)
    assert (torch.autograd.grad(loss.sum(), logp)[0] - torch.autograd.grad(free.sum(), logp)[0]).abs().max() > 0.5
