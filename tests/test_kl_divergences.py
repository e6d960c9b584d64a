"""KL estimators by exact expectation on small categoricals; divergences against F.kl_div and NumPy."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from forklab import divergences as dv
from forklab import kl


def categorical_pair(seed, v=6, spread=1.5):
    g = torch.Generator().manual_seed(seed)
    return (torch.log_softmax(torch.randn(v, generator=g, dtype=torch.float64) * spread, -1),
            torch.log_softmax(torch.randn(v, generator=g, dtype=torch.float64) * spread, -1))


def exact_moments(logp, ref, kind):
    """Mean and variance of the estimator under y ~ π, by summing over the whole vocabulary."""
    p = logp.exp()
    values = kl.kl_estimate(logp, ref, kind)
    mean = (p * values).sum()
    return mean, (p * (values - mean) ** 2).sum()


@pytest.mark.parametrize("seed", range(5))
def test_k1_and_k3_are_unbiased_for_kl_pi_ref_and_k2_is_not(seed):
    logp, ref = categorical_pair(seed)
    true_kl = (logp.exp() * (logp - ref)).sum()  # exact KL(π‖π_ref)
    torch.testing.assert_close(exact_moments(logp, ref, "k1")[0], true_kl)
    torch.testing.assert_close(exact_moments(logp, ref, "k3")[0], true_kl)
    assert not torch.isclose(exact_moments(logp, ref, "k2")[0], true_kl)


@pytest.mark.parametrize("seed", range(5))
def test_k3_has_lower_variance_than_k1_when_policies_are_close(seed):
    logp, _ = categorical_pair(seed)
    g = torch.Generator().manual_seed(100 + seed)
    ref = torch.log_softmax(logp + 0.2 * torch.randn(logp.shape, generator=g, dtype=torch.float64), -1)
    assert exact_moments(logp, ref, "k3")[1] < exact_moments(logp, ref, "k1")[1]


def test_k3_variance_can_exceed_k1_when_policies_are_far():
    # Schulman's low-variance claim is local: far from π_ref the e^(−x) term dominates
    logp, ref = categorical_pair(0)
    assert exact_moments(logp, ref, "k3")[1] > exact_moments(logp, ref, "k1")[1]


def test_values_match_the_formulas_and_straight_through_has_k2_gradient():
    x = torch.tensor([-2.0, -0.3, 0.0, 0.4, 3.0], dtype=torch.float64)
    ref = torch.zeros_like(x)
    torch.testing.assert_close(kl.kl_estimate(x, ref, "k1"), x)
    torch.testing.assert_close(kl.kl_estimate(x, ref, "k2"), x**2 / 2)
    torch.testing.assert_close(kl.kl_estimate(x, ref, "k3"), torch.exp(-x) - 1 + x)
    torch.testing.assert_close(kl.kl_estimate(x, ref, "abs"), x.abs())
    for kind in kl.KINDS:
        a = x.clone().requires_grad_(True)
        out = kl.kl_estimate(a, ref, kind, straight_through=True)
        torch.testing.assert_close(out.detach(), kl.kl_estimate(x, ref, kind))  # value of the estimator
        out.sum().backward()
        torch.testing.assert_close(a.grad, x)  # gradient of k2 = x


def test_kl_rejects_bad_inputs():
    with pytest.raises(ValueError, match="`ref_logp` must have the same shape"):
        kl.kl_estimate(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="`kind`"):
        kl.kl_estimate(torch.zeros(2), torch.zeros(2), "k4")
    with pytest.raises(ValueError, match="`logp` contains NaN"):
        kl.kl_estimate(torch.tensor([float("nan")]), torch.zeros(1))


def test_forward_and_reverse_kl_match_torch_kl_div():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 11, generator=g) * 2, torch.randn(2, 3, 11, generator=g) * 2
    for temperature in (1.0, 0.8):
        ls, lt = F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1)
        fwd = F.kl_div(ls, lt, reduction="none", log_target=True).sum(-1)  # KL(t‖s)
        rev = F.kl_div(lt, ls, reduction="none", log_target=True).sum(-1)  # KL(s‖t)
        torch.testing.assert_close(dv.forward_kl(s, t, temperature), fwd)
        torch.testing.assert_close(dv.reverse_kl(s, t, temperature), rev)


def test_jsd_endpoints_symmetry_and_identity():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(4, 9, generator=g, dtype=torch.float64), torch.randn(4, 9, generator=g, dtype=torch.float64)
    torch.testing.assert_close(dv.jsd(s, t, beta=0.0), dv.forward_kl(s, t))
    torch.testing.assert_close(dv.jsd(s, t, beta=1.0), dv.reverse_kl(s, t))
    torch.testing.assert_close(dv.jsd(s, t, beta=0.5), dv.jsd(t, s, beta=0.5))
    assert not torch.allclose(dv.jsd(s, t, beta=0.1), dv.jsd(t, s, beta=0.1))
    for beta in (0.0, 0.3, 0.5, 1.0):
        assert dv.jsd(s, s, beta=beta).abs().max() < 1e-12
    # β = 0.5 by hand with NumPy, bounded by log 2
    ps, pt = torch.softmax(s, -1).numpy(), torch.softmax(t, -1).numpy()
    m = 0.5 * (ps + pt)
    by_hand = 0.5 * (pt * np.log(pt / m)).sum(-1) + 0.5 * (ps * np.log(ps / m)).sum(-1)
    np.testing.assert_allclose(dv.jsd(s, t).numpy(), by_hand, rtol=1e-12)
    assert (dv.jsd(s * 50, -t * 50) <= math.log(2) + 1e-12).all()


def test_total_variation_and_top_k_support():
    s = torch.tensor([[2.0, 1.0, 0.0, -1.0]], dtype=torch.float64)
    t = torch.tensor([[0.0, 3.0, 1.0, -5.0]], dtype=torch.float64)
    ps, pt = torch.softmax(s, -1), torch.softmax(t, -1)
    torch.testing.assert_close(dv.total_variation(s, t), 0.5 * (ps - pt).abs().sum(-1))
    # top-2 of the teacher = tokens 1 and 2, both renormalised there
    ks, kt = torch.softmax(s[:, [1, 2]], -1), torch.softmax(t[:, [1, 2]], -1)
    torch.testing.assert_close(dv.reverse_kl(s, t, top_k=2), (ks * (ks.log() - kt.log())).sum(-1))
    torch.testing.assert_close(dv.reverse_kl(s, t, top_k=4), dv.reverse_kl(s, t))


@settings(max_examples=30, deadline=None)
@given(scale=st.sampled_from([1.0, 1e2, 1e4]), dtype=st.sampled_from([torch.float32, torch.bfloat16]),
       seed=st.integers(0, 1000))
def test_divergences_are_finite_and_non_negative_on_extreme_logits(scale, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(3, 17, generator=g) * scale).to(dtype)
    t = (torch.randn(3, 17, generator=g) * scale).to(dtype)
    for fn in (dv.forward_kl, dv.reverse_kl, dv.jsd, dv.total_variation):
        out = fn(s, t)
        assert torch.isfinite(out).all() and (out >= -1e-5).all(), fn.__name__


def test_divergences_reject_bad_inputs():
    with pytest.raises(ValueError, match="`teacher_logits` must have the same shape"):
        dv.reverse_kl(torch.zeros(2, 5), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="`beta`"):
        dv.jsd(torch.zeros(2, 5), torch.zeros(2, 5), beta=1.5)
    with pytest.raises(ValueError, match="`top_k`"):
        dv.forward_kl(torch.zeros(2, 5), torch.zeros(2, 5), top_k=6)
    with pytest.raises(ValueError, match="`student_logits` contains NaN"):
        dv.forward_kl(torch.full((1, 3), float("nan")), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="`temperature`"):
        dv.total_variation(torch.zeros(2, 5), torch.zeros(2, 5), temperature=0)
