"""forklab.fdivergences against forklab.divergences (separate code), finite differences and enumeration."""

import math

import pytest
import torch

from forklab import divergences as dv
from forklab import fdivergences as fd


def _pair(seed, k=7):
    g = torch.Generator().manual_seed(seed)
    return (torch.softmax(1.5 * torch.randn(k, generator=g, dtype=torch.float64), -1),
            torch.softmax(1.5 * torch.randn(k, generator=g, dtype=torch.float64), -1))


@pytest.mark.parametrize("seed", range(4))
def test_family_members_equal_the_named_divergences(seed):
    pi, p = _pair(seed)
    lp, lq = pi.log(), p.log()
    torch.testing.assert_close(fd.f_divergence(pi, p, "reverse_kl"), dv.reverse_kl(lp, lq))
    torch.testing.assert_close(fd.f_divergence(pi, p, "forward_kl"), dv.forward_kl(lp, lq))
    torch.testing.assert_close(fd.f_divergence(pi, p, "js"), dv.jsd(lp, lq, beta=0.5))
    torch.testing.assert_close(fd.f_divergence(pi, p, "tv"), dv.total_variation(lp, lq))


def test_alpha_family_tends_to_reverse_kl_at_0_and_forward_kl_at_1():
    pi, p = _pair(9)
    torch.testing.assert_close(fd.f_divergence(pi, p, "alpha", alpha=1e-6), dv.reverse_kl(pi.log(), p.log()),
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(fd.f_divergence(pi, p, "alpha", alpha=1 - 1e-6), dv.forward_kl(pi.log(), p.log()),
                               atol=1e-4, rtol=0)


def test_support_mismatch_reverse_kl_is_infinite_forward_kl_where_pi_drops_a_mode():
    p = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    pi = torch.tensor([0.4, 0.4, 0.2], dtype=torch.float64)
    assert fd.f_divergence(pi, p, "reverse_kl") == math.inf
    assert fd.f_divergence(p, pi, "forward_kl") == math.inf  # KL(pi‖p) with p the policy missing arm 2
    js = fd.f_divergence(pi, p, "js")
    torch.testing.assert_close(js, dv.jsd(pi.log(), p.log(), beta=0.5))
    assert js <= math.log(2)


@pytest.mark.parametrize("f", ["reverse_kl", "forward_kl", "js", "alpha"])
def test_f_prime_matches_central_differences(f):
    t = torch.tensor([0.2, 0.9, 1.0, 2.5, 7.0], dtype=torch.float64)
    h = 1e-6
    numeric = (fd._f(f, t + h, 0.3) - fd._f(f, t - h, 0.3)) / (2 * h)
    torch.testing.assert_close(fd.f_prime(f, t, alpha=0.3), numeric, atol=1e-7, rtol=0)


@pytest.mark.parametrize("f", ["reverse_kl", "forward_kl", "js", "alpha"])
def test_gradient_of_d_f_is_policy_gradient_with_the_pseudo_reward(f):
    _, p = _pair(2)
    theta = torch.randn(7, generator=torch.Generator().manual_seed(3), dtype=torch.float64, requires_grad=True)
    (auto,) = torch.autograd.grad(fd.f_divergence(torch.softmax(theta, -1), p, f, alpha=0.3), theta)
    logp = torch.log_softmax(theta, -1)
    reward = fd.fdpg_pseudo_reward(logp, p.log(), f, alpha=0.3)
    pi = logp.exp().detach()
    # E_π[−R ∇log π] with ∇_θ log π(y) = e_y − π, summed exactly over y
    pg = -(pi[:, None] * reward.detach()[:, None] * (torch.eye(7, dtype=torch.float64) - pi[None, :])).sum(0)
    torch.testing.assert_close(pg, auto, atol=1e-12, rtol=0)


def test_dph_losses_estimate_forward_kl_twice_js_and_alpha_under_reference_samples():
    pi, p0 = _pair(4)
    lp, l0 = pi.log(), p0.log()
    expect = {"forward": dv.forward_kl(lp, l0), "js": 2 * dv.jsd(lp, l0, beta=0.5),
              "alpha": fd.f_divergence(pi, p0, "alpha", alpha=0.2)}
    for kind, want in expect.items():
        torch.testing.assert_close((p0 * fd.dph_sample_loss(lp, l0, kind)).sum(), want)


def test_bad_inputs_raise_value_errors():
    pi, p = _pair(0)
    with pytest.raises(ValueError, match="`f`"):
        fd.f_divergence(pi, p, "hellinger")
    with pytest.raises(ValueError, match="alpha"):
        fd.f_divergence(pi, p, "alpha", alpha=1.5)
    with pytest.raises(ValueError, match="target"):
        fd.f_divergence(pi, p[:3])
    with pytest.raises(ValueError, match="kind"):
        fd.dph_sample_loss(pi.log(), p.log(), "reverse")
    with pytest.raises(ValueError, match="`t`"):
        fd.f_prime("js", torch.tensor([0.0]))
