"""Surrogates against the policy-gradient identity at r = 1, explicit autograd forms, and clip geometry."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from forklab import surrogates as S
from forklab.aggregation import aggregate


def batch(seed=0, b=4, t=6, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([6, 3, 5, 1])[:b]
    mask = torch.arange(t)[None, :] < lengths[:, None]
    logp = -torch.rand(b, t, generator=g, dtype=dtype) * 3
    adv = torch.tensor([1.5, -0.7, 0.3, -2.0], dtype=dtype)[:b]
    return logp, adv, mask


ALL = {
    "ppo_clip": lambda lp, old, a, m: S.ppo_clip(lp, old, a, m),
    "ppo_dual": lambda lp, old, a, m: S.ppo_clip(lp, old, a, m, 0.2, 0.28, dual_clip=3.0),
    "gspo": lambda lp, old, a, m: S.gspo(lp, old, a, m),
    "sapo": lambda lp, old, a, m: S.sapo(lp, old, a, m),
    "cispo_verl": lambda lp, old, a, m: S.cispo(lp, old, a, m),
    "cispo_trl": lambda lp, old, a, m: S.cispo(lp, old, a, m, convention="trl"),
    "gmpo": lambda lp, old, a, m: S.gmpo(lp, old, a, m),
    "dhpo": lambda lp, old, a, m: S.dhpo(lp, old, a, m),
    "hapo_clip": lambda lp, old, a, m: S.hapo_clip(lp, old, a, m, entropy=torch.rand(lp.shape, dtype=lp.dtype) + .1),
    "minpro": lambda lp, old, a, m: S.minpro(lp, old, a, m),
}


def grad_of(fn, logp, mode):
    x = logp.clone().requires_grad_(True)
    loss_tok = fn(x)
    (g,) = torch.autograd.grad(aggregate(loss_tok, MASK[0], mode), x)
    return g


MASK = [None]


@pytest.mark.parametrize("name", list(ALL))
@pytest.mark.parametrize("mode", ["seq-mean-token-mean", "token-mean"])
def test_on_policy_gradient_is_minus_a_grad_logp(name, mode):
    logp, adv, mask = batch()
    MASK[0] = mask
    if name == "gmpo" and mode == "token-mean":
        pytest.skip("GMPO is a sequence-level loss, defined with seq-mean-token-mean only")
    old = logp.detach()
    got = grad_of(lambda x: ALL[name](x, old, adv, mask), logp, mode)
    want = grad_of(lambda x: S.reinforce(x, adv, mask), logp, mode)
    if name in ("gspo", "dhpo") and mode == "token-mean":
        # sequence-ratio gradients spread over a response: equal after summing each response
        torch.testing.assert_close(got.sum(1), want.sum(1))
    else:
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", ["ppo_clip", "ppo_dual", "gspo", "gmpo", "dhpo", "minpro"])
def test_on_policy_value_is_minus_a(name):
    logp, adv, mask = batch()
    loss = ALL[name](logp, logp, adv, mask)
    torch.testing.assert_close(loss, torch.where(mask, -adv[:, None].expand_as(logp), 0.0))


def test_ppo_clipped_tokens_get_zero_gradient_but_cispo_keeps_it():
    mask = torch.ones(1, 4, dtype=torch.bool)
    old = torch.log(torch.full((1, 4), 0.5, dtype=torch.float64))
    # ratios 1.5 (A>0: upper clip binds), 0.5 (A<0: lower clip binds), 1.1 and 0.9 (inside)
    ratios = torch.tensor([[1.5, 0.5, 1.1, 0.9]], dtype=torch.float64)
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]], dtype=torch.float64)
    logp = (old + ratios.log()).requires_grad_(True)
    S.ppo_clip(logp, old, adv, mask).sum().backward()
    assert logp.grad[0, :2].tolist() == [0.0, 0.0]
    torch.testing.assert_close(logp.grad[0, 2:], -adv[0, 2:] * ratios[0, 2:])
    logp.grad = None
    S.cispo(logp, old, adv, mask).sum().backward()
    torch.testing.assert_close(logp.grad[0], -adv[0] * torch.tensor([1.2, 0.8, 1.1, 0.9], dtype=torch.float64))
    # the unbinding side of the clip keeps PPO's gradient: A>0 with r<1-eps, A<0 with r>1+eps
    logp2 = (old + torch.tensor([[0.5, 1.5, 0.5, 1.5]], dtype=torch.float64).log()).requires_grad_(True)
    S.ppo_clip(logp2, old, adv, mask).sum().backward()
    assert (logp2.grad != 0).all()


def test_dual_clip_zeroes_negative_advantage_gradients_beyond_c():
    mask = torch.ones(1, 3, dtype=torch.bool)
    old = torch.zeros(1, 3, dtype=torch.float64) - 2.0
    ratios = torch.tensor([[2.0, 3.5, 10.0]], dtype=torch.float64)
    adv = torch.full((1, 3), -1.0, dtype=torch.float64)
    logp = (old + ratios.log()).requires_grad_(True)
    loss = S.ppo_clip(logp, old, adv, mask, dual_clip=3.0)
    loss.sum().backward()
    torch.testing.assert_close(loss.detach(), torch.tensor([[2.0, 3.0, 3.0]], dtype=torch.float64))
    assert logp.grad[0, 0] != 0 and logp.grad[0, 1:].tolist() == [0.0, 0.0]
    loss_nodual = S.ppo_clip(logp.detach(), old, adv, mask)
    assert loss_nodual[0, 2].item() == pytest.approx(10.0)
    with pytest.raises(ValueError, match="`dual_clip`"):
        S.ppo_clip(logp, old, adv, mask, dual_clip=0.9)


def test_gspo_matches_autograd_through_the_explicit_sequence_ratio():
    logp, adv, mask = batch(seed=2)
    g = torch.Generator().manual_seed(9)
    old = logp + 0.0002 * torch.randn(logp.shape, generator=g, dtype=logp.dtype)  # inside the 3e-4 band
    old[0] = logp[0] - 0.01  # sequence 0 (A > 0) clipped high: s = e^0.01 > 1 + 4e-4
    x = logp.clone().requires_grad_(True)
    aggregate(S.gspo(x, old, adv, mask), mask, "seq-mean-token-mean").backward()
    # explicit form (TRL): s_i = exp(mean_t(logp - old)), J = mean_i min(s_i A_i, clip(s_i) A_i)
    y = logp.clone().requires_grad_(True)
    lengths = mask.sum(1)
    s = torch.exp(torch.where(mask, y - old, 0.0).sum(1) / lengths)
    explicit = -torch.minimum(s * adv, s.clamp(1 - 3e-4, 1 + 4e-4) * adv).mean()
    explicit.backward()
    torch.testing.assert_close(x.grad, y.grad)
    assert (x.grad[0] == 0).all() and (x.grad[1:][mask[1:]] != 0).all()


def test_sapo_gate_slope_is_one_at_ratio_one_and_decays():
    for tau in (1.0, 1.05, 3.0):
        r = torch.tensor([1.0, 1.5, 3.0], dtype=torch.float64, requires_grad=True)
        gate = (4 / tau) * torch.sigmoid(tau * (r - 1))
        (g,) = torch.autograd.grad(gate.sum(), r)
        assert g[0].item() == pytest.approx(1.0)
        assert g[0] > g[1] > g[2] > 0
    # and through the library: d loss / d logp = -A * f'(r) * r
    mask = torch.ones(2, 1, dtype=torch.bool)
    old = torch.zeros(2, 1, dtype=torch.float64) - 1
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    logp = (old + torch.log(torch.tensor([[2.0], [2.0]], dtype=torch.float64))).requires_grad_(True)
    S.sapo(logp, old, adv, mask).sum().backward()
    for i, tau in enumerate((1.0, 1.05)):
        sig = torch.sigmoid(torch.tensor(tau * 1.0, dtype=torch.float64))
        assert logp.grad[i, 0].item() == pytest.approx(-adv[i].item() * 4 * sig * (1 - sig) * 2.0)


def test_cispo_trl_convention_is_an_absolute_upper_cap():
    mask = torch.ones(1, 3, dtype=torch.bool)
    old = torch.zeros(1, 3, dtype=torch.float64) - 3
    ratios = torch.tensor([[0.1, 2.0, 8.0]], dtype=torch.float64)
    adv = torch.ones(1, 3, dtype=torch.float64)
    logp = (old + ratios.log()).requires_grad_(True)
    loss, metrics = S.cispo(logp, old, adv, mask, convention="trl", return_metrics=True)
    loss.sum().backward()
    torch.testing.assert_close(logp.grad, -torch.tensor([[0.1, 2.0, 5.0]], dtype=torch.float64))
    assert metrics["cispo_clip_ratio"] == pytest.approx(1 / 3)


def test_gmpo_clips_in_log_space_by_advantage_sign():
    mask = torch.ones(2, 2, dtype=torch.bool)
    old = torch.zeros(2, 2, dtype=torch.float64) - 1
    delta = torch.tensor([[0.5, -0.1], [0.5, -0.5]], dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    loss = S.gmpo(old + delta, old, adv, mask, eps_low=0.2, eps_high=0.2)
    # A>0: upper side clipped to 0.2, lower side free; A<0: lower side clipped to -0.2, upper free
    expected0 = -1.0 * torch.exp(torch.tensor((0.2 - 0.1) / 2, dtype=torch.float64))
    expected1 = +1.0 * torch.exp(torch.tensor((0.5 - 0.2) / 2, dtype=torch.float64))
    torch.testing.assert_close(loss[:, 0], torch.stack([expected0, expected1]))


def test_gmpo_default_is_the_official_log_space_clip_of_0_4():
    # one token at Δ = +1 among four: A > 0 clips it to 0.4 (ratio e^0.4 = 1.4918), A < 0 leaves it alone
    mask = torch.ones(2, 4, dtype=torch.bool)
    delta = torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0]], dtype=torch.float64)
    loss = S.gmpo(delta, torch.zeros_like(delta), torch.tensor([1.0, -1.0], dtype=torch.float64), mask)
    assert loss[0, 0].item() == pytest.approx(-math.exp(0.4 / 4))
    assert loss[1, 0].item() == pytest.approx(math.exp(1.0 / 4))
    assert (math.exp(-0.4), math.exp(0.4)) == (pytest.approx(0.6703, abs=5e-5), pytest.approx(1.4918, abs=5e-5))


def test_cispo_clip_ratio_counts_only_capped_tokens_with_positive_advantage():
    """TRL: is_cispo_clipped = (coef_1 > epsilon_high) & (advantages > 0), averaged over valid tokens."""
    ratios = torch.tensor([[2.0, 8.0, 8.0, 0.1, 1.0]], dtype=torch.float64).repeat(2, 1)
    adv = torch.tensor([[1.0, 1.0, -1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, 1.0, 1.0]], dtype=torch.float64)
    mask = torch.tensor([[True] * 5, [True, True, True, True, False]])
    logp = ratios.log() - 1.0
    # trl: cap 5 -> only (row 0, token 1) counts: 1 of 9 valid tokens
    _, m = S.cispo(logp, logp.detach() * 0 - 1.0, adv, mask, convention="trl", return_metrics=True)
    assert m["cispo_clip_ratio"] == pytest.approx(1 / 9)
    # verl: cap 1 + 0.28 -> row 0 tokens 0 and 1 (A > 0, r > 1.28); row 1 has A < 0 there; r = 0.1 is a low clip
    _, m = S.cispo(logp, logp.detach() * 0 - 1.0, adv, mask, eps_low=0.2, eps_high=0.28, return_metrics=True)
    assert m["cispo_clip_ratio"] == pytest.approx(2 / 9)


def test_dhpo_endpoints_are_ppo_clip_and_sequence_ratio_clip():
    logp, adv, mask = batch(seed=3)
    g = torch.Generator().manual_seed(4)
    old = logp + 0.3 * torch.randn(logp.shape, generator=g, dtype=logp.dtype)
    torch.testing.assert_close(S.dhpo(logp, old, adv, mask, weight=1.0), S.ppo_clip(logp, old, adv, mask))
    s = torch.exp(torch.where(mask, logp - old, 0.0).sum(1, keepdim=True) / mask.sum(1, keepdim=True))
    expected = torch.where(mask, torch.maximum(-adv[:, None] * s, -adv[:, None] * s.clamp(0.8, 1.2)), 0.0)
    torch.testing.assert_close(S.dhpo(logp, old, adv, mask, weight=0.0), expected)
    w = S.dhpo_entropy_weight(torch.rand(logp.shape, generator=g, dtype=logp.dtype), mask)
    assert (w[mask] >= 0).all() and (w[mask] <= 1).all() and w[mask].max() == 1 and w[mask].min() == 0


def test_hapo_normalized_entropy_and_adaptive_clip_ranges():
    mask = torch.ones(1, 6, dtype=torch.bool)
    entropy = torch.tensor([[0.01, 0.05, 0.2, 0.5, 1.0, 2.0]], dtype=torch.float64)
    h = S.hapo_normalized_entropy(entropy, mask)
    # by hand: log H, 0.8-quantile pivot, RMS around it, then scale each side to [-1, 1]
    lh = entropy.log()[0]
    m = torch.quantile(lh, 0.8)
    hh = (lh - m) / ((lh - m) ** 2).mean().sqrt()
    expected = torch.where(hh > 0, hh / hh.max(), hh / hh.min().abs())
    torch.testing.assert_close(h[0], expected)
    assert h.max() == 1 and h.min() == -1
    # the lowest-entropy token may drop to r = 1 - 0.2*(1+1) = 0.6 before its clip binds
    old = torch.zeros(1, 6, dtype=torch.float64) - 1
    adv = torch.full((1, 6), -1.0, dtype=torch.float64)
    logp = (old + torch.log(torch.full((1, 6), 0.7, dtype=torch.float64))).requires_grad_(True)
    S.hapo_clip(logp, old, adv, mask, entropy, dual_clip=None).sum().backward()
    assert logp.grad[0, 0] != 0 and logp.grad[0, -1] == 0


def test_prefix_log_ratio_is_the_cumulative_log_ratio():
    logp, _, mask = batch(seed=5)
    old = logp - 0.1
    got = S.prefix_log_ratio(logp, old, mask)
    for i in range(4):
        n = int(mask[i].sum())
        torch.testing.assert_close(got[i, :n], torch.full((n,), 0.1, dtype=logp.dtype).cumsum(0))
        assert (got[i, n:] == 0).all()


def test_metrics_match_trl_definitions():
    mask = torch.tensor([[True, True, True, True, False]])
    old = torch.zeros(1, 5, dtype=torch.float64)
    ratios = torch.tensor([[1.5, 0.5, 0.5, 1.0, 9.0]], dtype=torch.float64)
    adv = torch.tensor([[1.0, -1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    _, m = S.ppo_clip(old + ratios.log(), old, adv, mask, return_metrics=True)
    assert m["clip_ratio/high_mean"] == pytest.approx(0.25)  # token 0
    assert m["clip_ratio/low_mean"] == pytest.approx(0.25)  # token 1 (token 2 has A>0: not clipped low)
    assert m["clip_ratio/region_mean"] == pytest.approx(0.5)
    assert m["ratio/mean"] == pytest.approx((1.5 + 0.5 + 0.5 + 1.0) / 4)


@settings(max_examples=40, deadline=None)
@given(scale=st.sampled_from([1.0, 1e2, 1e4]), dtype=st.sampled_from([torch.float32, torch.bfloat16]),
       seed=st.integers(0, 1000), name=st.sampled_from(list(ALL)))
def test_finite_on_extreme_logits(scale, dtype, seed, name):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(4, 6, 9, generator=g) * scale).to(dtype)
    old_logits = (torch.randn(4, 6, 9, generator=g) * scale).to(dtype)
    tokens = torch.randint(0, 9, (4, 6), generator=g)
    logp = torch.log_softmax(logits.float(), -1).gather(-1, tokens[..., None])[..., 0].to(dtype).requires_grad_(True)
    old = torch.log_softmax(old_logits.float(), -1).gather(-1, tokens[..., None])[..., 0].to(dtype)
    _, adv, mask = batch(seed)
    loss = ALL[name](logp, old, adv.to(dtype), mask)
    total = aggregate(loss, mask, "seq-mean-token-mean")
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(logp.grad).all()


@settings(max_examples=30, deadline=None)
@given(extra=st.integers(1, 3), seed=st.integers(0, 1000), name=st.sampled_from(list(ALL)))
def test_padding_invariance(extra, seed, name):
    logp, adv, mask = batch(seed)
    g = torch.Generator().manual_seed(seed)
    old = logp + 0.3 * torch.randn(logp.shape, generator=g, dtype=logp.dtype)
    pad = torch.full((4, extra), 5.0, dtype=logp.dtype)  # garbage in padding
    if name == "hapo_clip":
        ent = torch.rand(logp.shape, generator=g, dtype=logp.dtype) + 0.1
        a = S.hapo_clip(logp, old, adv, mask, ent)
        b = S.hapo_clip(torch.cat([logp, pad], 1), torch.cat([old, -pad], 1), adv,
                        torch.cat([mask, torch.zeros(4, extra, dtype=torch.bool)], 1), torch.cat([ent, pad], 1))
    else:
        a = ALL[name](logp, old, adv, mask)
        b = ALL[name](torch.cat([logp, pad], 1), torch.cat([old, -pad], 1), adv,
                      torch.cat([mask, torch.zeros(4, extra, dtype=torch.bool)], 1))
    torch.testing.assert_close(b[:, : logp.shape[1]], a)
    assert (b[:, logp.shape[1]:] == 0).all()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: S.ppo_clip(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2), torch.ones(2, 3, dtype=torch.bool)),
         "`old_logp` must have the same shape"),
        (lambda: S.ppo_clip(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), torch.ones(2, 3, dtype=torch.bool)),
         "`adv` must have shape"),
        (lambda: S.reinforce(torch.zeros(2, 3), torch.zeros(2), torch.zeros(2, 3, dtype=torch.bool)),
         "`mask` is empty"),
        (lambda: S.reinforce(torch.zeros(3), torch.zeros(3), torch.ones(3, dtype=torch.bool)),
         "`logp` must have shape"),
        (lambda: S.sapo(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([float("nan")]),
                        torch.ones(1, 2, dtype=torch.bool)), "`adv` contains NaN"),
        (lambda: S.sapo(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1), torch.ones(1, 2, dtype=torch.bool),
                        tau_pos=0), "`tau_pos`"),
        (lambda: S.cispo(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1), torch.ones(1, 2, dtype=torch.bool),
                         convention="x"), "`convention`"),
        (lambda: S.dhpo(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1), torch.ones(1, 2, dtype=torch.bool),
                        weight=1.5), "`weight`"),
        (lambda: S.hapo_normalized_entropy(torch.ones(1, 2), torch.ones(1, 3, dtype=torch.bool)), "`mask` must have"),
    ],
)
def test_bad_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_minpro_weights_by_the_minimum_ratio_of_the_preceding_prefix():
    mask = torch.tensor([[True, True, True, True, False]])
    old = torch.zeros(1, 5, dtype=torch.float64) - 2
    ratios = torch.tensor([[1.1, 0.5, 1.05, 0.9, 7.0]], dtype=torch.float64)
    adv = torch.tensor([1.0], dtype=torch.float64)
    logp = old + ratios.log()
    base = S.ppo_clip(logp, old, adv, mask)
    got = S.minpro(logp, old, adv, mask)
    weights = torch.tensor([[1.0, 1.1, 0.5, 0.5, 0.0]], dtype=torch.float64)  # min over r_1..r_{t-1}
    torch.testing.assert_close(got, weights * base)
    inclusive = S.minpro(logp, old, adv, mask, include_current=True)
    torch.testing.assert_close(inclusive, torch.tensor([[1.1, 0.5, 0.5, 0.5, 0.0]], dtype=torch.float64) * base)
    torch.testing.assert_close(S.minpro(logp, logp, adv, mask), S.ppo_clip(logp, logp, adv, mask))
