"""forklab.distill objectives against independent oracles: NumPy closed forms on small vocabularies,
exact enumeration of the sampled token, finite differences, and direct maximisation."""

import math

import numpy as np
import pytest
import torch

from forklab import distill

RNG = np.random.default_rng(0)


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_kl(p, q):
    return float(np.sum(p * (np.log(p) - np.log(q))))


def np_jsd(s, t, beta):
    m = (1 - beta) * s + beta * t
    return beta * np_kl(t, m) + (1 - beta) * np_kl(s, m)


def fd_grad(f, z, h=1e-6):
    """Central finite differences of a scalar NumPy function at z (1-D)."""
    g = np.zeros_like(z)
    for i in range(z.size):
        e = np.zeros_like(z)
        e[i] = h
        g[i] = (f(z + e) - f(z - e)) / (2 * h)
    return g


def test_opd_reward_expectation_is_minus_reverse_kl_by_enumeration():
    zs, zt = RNG.normal(size=6), RNG.normal(size=6)
    s, t = np_softmax(zs), np_softmax(zt)
    # every token of the vocabulary as the sampled one, weighted by the student's probability
    logp_s = torch.tensor(np.log(s))[None, :]
    logp_t = torch.tensor(np.log(t))[None, :]
    r = distill.opd_reward(logp_s, logp_t, torch.ones(1, 6, dtype=torch.bool))
    assert not r.requires_grad
    assert float((torch.tensor(s) * r[0]).sum()) == pytest.approx(-np_kl(s, t), abs=1e-12)


def test_opd_loss_expected_gradient_is_the_reverse_kl_gradient():
    zs, zt = RNG.normal(size=5), RNG.normal(size=5)
    t = np_softmax(zt)
    z = torch.tensor(zs, requires_grad=True)
    logp_all = torch.log_softmax(z, -1)
    probs = logp_all.exp().detach()
    # the sampled token takes every value v; the loss of that sample weighted by π_S(v) (exact expectation)
    loss = distill.opd_loss(logp_all[None, :], torch.tensor(np.log(t))[None, :], torch.ones(1, 5, dtype=torch.bool))
    (probs * loss[0]).sum().backward()
    oracle = fd_grad(lambda x: np_kl(np_softmax(x), t), zs)
    np.testing.assert_allclose(z.grad.numpy(), oracle, atol=1e-8)


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_gkd_loss_matches_numpy_jsd_and_ignores_padding(beta):
    zs, zt = RNG.normal(size=(2, 3, 7)), RNG.normal(size=(2, 3, 7))
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    student = torch.tensor(zs)
    student[0, 2] = float("nan")  # padding may hold anything
    out = distill.gkd_loss(student, torch.tensor(zt), mask, beta=beta)
    for b, t_ in [(0, 0), (0, 1), (1, 0)]:
        s, t = np_softmax(zs[b, t_]), np_softmax(zt[b, t_])
        want = np_kl(t, s) if beta == 0 else np_kl(s, t) if beta == 1 else np_jsd(s, t, beta)
        assert float(out[b, t_]) == pytest.approx(want, abs=1e-12)
    assert float(out[0, 2]) == 0.0 and float(out[1, 1]) == 0.0


def test_divergence_loss_directions_and_total_variation():
    zs, zt = RNG.normal(size=(1, 1, 4)), RNG.normal(size=(1, 1, 4))
    s, t = np_softmax(zs[0, 0]), np_softmax(zt[0, 0])
    m = torch.ones(1, 1, dtype=torch.bool)
    args = (torch.tensor(zs), torch.tensor(zt), m)
    assert float(distill.divergence_loss(*args, "reverse_kl")) == pytest.approx(np_kl(s, t), abs=1e-12)
    assert float(distill.divergence_loss(*args, "forward_kl")) == pytest.approx(np_kl(t, s), abs=1e-12)
    assert float(distill.divergence_loss(*args, "total_variation")) == pytest.approx(0.5 * abs(s - t).sum())
    with pytest.raises(ValueError, match="`divergence`"):
        distill.divergence_loss(*args, "kl")


def test_jsd_beta_schedule_hand_values():
    assert distill.jsd_beta_schedule(5, 10, 0.3) == 0.3  # no end: constant (GKD)
    assert distill.jsd_beta_schedule(5, 10, 0.0, 1.0) == pytest.approx(0.5)
    assert distill.jsd_beta_schedule(25, 10, 0.0, 1.0) == 1.0  # past the end it stays
    assert distill.jsd_beta_schedule(5, 20, 0.0, 1.0, "cosine") == pytest.approx((1 - math.cos(math.pi / 4)) / 2)
    assert distill.jsd_beta_schedule(5, 10, 0.2, 0.8, "constant") == 0.2
    with pytest.raises(ValueError, match="`beta_end`"):
        distill.jsd_beta_schedule(1, 10, 0.0, 1.5)
    with pytest.raises(ValueError, match="`total_steps`"):
        distill.jsd_beta_schedule(1, 0, 0.0, 1.0)


def test_gopd_advantage_lambda_one_is_opd_whatever_the_reference():
    m = torch.ones(2, 3, dtype=torch.bool)
    old, teacher = -torch.rand(2, 3, dtype=torch.float64), -torch.rand(2, 3, dtype=torch.float64)
    for ref in (-torch.rand(2, 3, dtype=torch.float64), -5 * torch.rand(2, 3, dtype=torch.float64)):
        torch.testing.assert_close(distill.gopd_advantage(old, teacher, ref, m, lam=1.0), teacher - old)
    ref = -torch.rand(2, 3, dtype=torch.float64)
    lam = 1.25
    by_hand = lam * (teacher - ref) - (old - ref)
    torch.testing.assert_close(distill.gopd_advantage(old, teacher, ref, m, lam), by_hand)


def _gopd_objective(pi, ref, teacher, lam):
    """J(π) = E_π[λ log(π_T/π_ref)] − KL(π‖π_ref) written out in NumPy."""
    return float(np.sum(pi * lam * (np.log(teacher) - np.log(ref))) - np_kl(pi, ref))


@pytest.mark.parametrize("lam", [0.5, 1.0, 1.25, 1.5])
def test_gopd_target_maximises_the_objective(lam):
    ref_z, t_z = RNG.normal(size=6), RNG.normal(size=6)
    ref, teacher = np_softmax(ref_z), np_softmax(t_z)
    star = distill.gopd_target(torch.tensor(ref_z), torch.tensor(t_z), lam).exp().numpy()
    best = _gopd_objective(star, ref, teacher, lam)
    for _ in range(200):  # no random distribution does better
        assert _gopd_objective(np_softmax(RNG.normal(size=6) * 2), ref, teacher, lam) <= best + 1e-12
    # and the gradient of J in softmax coordinates vanishes at π*
    grad = fd_grad(lambda z: _gopd_objective(np_softmax(z), ref, teacher, lam), np.log(star))
    assert np.abs(grad).max() < 1e-6
    if lam == 1.0:
        np.testing.assert_allclose(star, teacher, atol=1e-12)


def test_gopd_extrapolation_goes_past_the_teacher_on_a_bandit():
    ref = np.full(4, 0.25)  # arm 0 is correct; the teacher prefers it
    teacher = np.array([0.55, 0.15, 0.15, 0.15])
    p_correct = [float(distill.gopd_target(torch.tensor(np.log(ref)), torch.tensor(np.log(teacher)), lam).exp()[0])
                 for lam in (0.5, 1.0, 1.25, 1.5)]
    assert p_correct == sorted(p_correct) and p_correct[1] == pytest.approx(0.55) and p_correct[2] > 0.55


def test_gopd_loss_trained_by_exact_expected_gradient_converges_to_the_target():
    ref_z = torch.tensor([0.0, 0.3, -0.2, 0.1], dtype=torch.float64)
    t_z = torch.tensor([1.0, -0.5, 0.2, -1.0], dtype=torch.float64)
    lam = 1.5
    z = ref_z.clone().requires_grad_(True)
    opt = torch.optim.SGD([z], lr=0.5)
    arms = torch.ones(1, 4, dtype=torch.bool)
    for _ in range(600):
        logp = torch.log_softmax(z, -1)[None]
        loss = distill.gopd_loss(logp, logp.detach(), torch.log_softmax(t_z, -1)[None],
                                 torch.log_softmax(ref_z, -1)[None], arms, lam=lam)
        opt.zero_grad()
        (logp.exp().detach() * loss).sum().backward()  # exact expectation over the sampled arm
        opt.step()
    target = distill.gopd_target(ref_z, t_z, lam).exp()
    assert float((torch.softmax(z.detach(), -1) - target).abs().sum() / 2) < 1e-3


def test_opsd_loss_is_jsd_half_and_privileged_prompt():
    zs, zt = RNG.normal(size=(1, 2, 5)), RNG.normal(size=(1, 2, 5))
    m = torch.ones(1, 2, dtype=torch.bool)
    out = distill.opsd_loss(torch.tensor(zs), torch.tensor(zt), m)
    assert float(out[0, 1]) == pytest.approx(np_jsd(np_softmax(zs[0, 1]), np_softmax(zt[0, 1]), 0.5), abs=1e-12)
    from forklab.envs import tasks

    task = tasks.get_task("addition")
    example = task.parse_prompt("61+81=")
    assert distill.privileged_prompt(task, example) == "142;61+81="
    assert distill.privileged_prompt(task, example, "answer_only") == "142;"
    with pytest.raises(ValueError, match="`template`"):
        distill.privileged_prompt(task, example, "no answer here")
    assert distill.lookup("objective", "opsd").teacher_context == "privileged"


def test_clipped_forward_kl_caps_the_value_and_its_gradient():
    zs = torch.tensor(RNG.normal(size=(1, 2, 4)) * 3, requires_grad=True)
    zt = torch.tensor(RNG.normal(size=(1, 2, 4)) * 3)
    m = torch.ones(1, 2, dtype=torch.bool)
    full = distill.clipped_forward_kl_loss(zs, zt, m)
    want = [np_kl(np_softmax(zt[0, i].numpy()), np_softmax(zs[0, i].detach().numpy())) for i in range(2)]
    np.testing.assert_allclose(full[0].detach().numpy(), want, atol=1e-12)
    cap = (min(want) + max(want)) / 2
    capped = distill.clipped_forward_kl_loss(zs, zt, m, clip=cap)
    capped.sum().backward()
    big = int(np.argmax(want))
    assert float(capped.detach()[0, big]) == pytest.approx(cap) and float(zs.grad[0, big].abs().max()) == 0.0
    assert float(zs.grad[0, 1 - big].abs().max()) > 0


def test_objectives_name_bad_arguments():
    m = torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="`mask`"):
        distill.opd_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(2))
    with pytest.raises(ValueError, match="`teacher_logp`"):
        distill.opd_loss(torch.zeros(1, 2), torch.tensor([[0.0, float("nan")]]), m)
    with pytest.raises(ValueError, match="`student_logits`"):
        distill.gkd_loss(torch.zeros(1, 3, 4), torch.zeros(1, 2, 4), m)
    with pytest.raises(ValueError, match="`lam`"):
        distill.gopd_advantage(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2), m, lam=float("inf"))


def test_float64_in_float64_out_and_inputs_untouched():
    zs = torch.randn(2, 3, 5, dtype=torch.float64)
    zt = torch.randn(2, 3, 5, dtype=torch.float64)
    before = zs.clone()
    m = torch.ones(2, 3, dtype=torch.bool)
    for out in (distill.gkd_loss(zs, zt, m), distill.opsd_loss(zs, zt, m), distill.clipped_forward_kl_loss(zs, zt, m)):
        assert out.dtype == torch.float64
    assert torch.equal(zs, before)
