"""forklab.distill reward-aware objectives, weighting and selection rules, and TSD-KD against independent
oracles (hand values, brute-force enumeration, exact expectations over the sampled token)."""

import itertools
import math

import numpy as np
import pytest
import torch

from forklab import distill

RNG = np.random.default_rng(1)


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_entropy(z):
    p = np_softmax(z)
    return float(-(p * np.log(p)).sum())


# ----------------------------------------------------------------------------- KDRL, TRRD, SCOPE loss
def _expected_grad(loss_fn, z):
    """Gradient of E_{v∼π_S}[loss(v)] with the sampling distribution held fixed (on-policy estimator)."""
    z = torch.tensor(z, requires_grad=True)
    logp = torch.log_softmax(z, -1)[None]
    loss = loss_fn(logp)
    (logp.exp().detach() * loss).sum().backward()
    return z.grad.numpy()


@pytest.mark.parametrize("estimator,unbiased", [("k2", True), ("k1", False), ("k3", False)])
def test_kdrl_kd_term_gradient_by_estimator(estimator, unbiased):
    zs, zt = RNG.normal(size=5), RNG.normal(size=5) * 2
    t = torch.log_softmax(torch.tensor(zt), -1)[None]
    ones = torch.ones(1, 5, dtype=torch.bool)
    zero_adv = torch.zeros(1)
    g = _expected_grad(lambda lp: distill.kdrl_loss(lp, lp.detach(), t, zero_adv, ones, kd_coef=1.0,
                                                    kl_estimator=estimator), zs)
    s = np_softmax(zs)
    reverse_kl = lambda z: float(np.sum(np_softmax(z) * (np.log(np_softmax(z)) - t[0].numpy())))  # noqa: E731
    h = 1e-6
    oracle = np.array([(reverse_kl(zs + h * e) - reverse_kl(zs - h * e)) / (2 * h) for e in np.eye(5)])
    if unbiased:
        np.testing.assert_allclose(g, oracle, atol=1e-8)
    elif estimator == "k1":
        np.testing.assert_allclose(g, 0.0, atol=1e-12)  # E[∇ log π] = 0: k1 carries no gradient on-policy
    else:
        assert np.abs(g - oracle).max() > 1e-3  # k3's gradient is not the reverse KL's
    assert s.sum() == pytest.approx(1.0)


def test_kdrl_policy_term_and_reward_guided_masking():
    logp = torch.log(torch.tensor([[0.5, 0.25], [0.2, 0.4]], dtype=torch.float64)).requires_grad_(True)
    teacher = torch.log(torch.tensor([[0.6, 0.3], [0.1, 0.5]], dtype=torch.float64))
    adv = torch.tensor([1.0, -0.5], dtype=torch.float64)
    m = torch.ones(2, 2, dtype=torch.bool)
    correct = torch.tensor([True, False])
    loss = distill.kdrl_loss(logp, logp.detach(), teacher, adv, m, correct, kd_coef=0.1, mask_correct=True)
    x = (logp - teacher).detach()
    by_hand = -adv[:, None] * 1.0 + 0.1 * 0.5 * x**2 * torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    torch.testing.assert_close(loss.detach(), by_hand)
    with pytest.raises(ValueError, match="`correct`"):
        distill.kdrl_loss(logp, logp.detach(), teacher, adv, m, kd_coef=0.1, mask_correct=True)
    assert distill.kdrl_beta_schedule(0, 10) == 5e-3 and distill.kdrl_beta_schedule(10, 10) == 1e-3
    assert distill.kdrl_beta_schedule(5, 10) == pytest.approx(3e-3)


def test_trrd_anchor_is_the_teacher_mixture():
    old = torch.log(torch.tensor([[0.2]], dtype=torch.float64))
    teacher = torch.log(torch.tensor([[0.6]], dtype=torch.float64))
    m = torch.ones(1, 1, dtype=torch.bool)
    adv = torch.tensor([1.0], dtype=torch.float64)
    mu = 0.5 * 0.6 + 0.5 * 0.2  # 0.4; a positive advantage pulls π_θ up to (1+ε)μ = 0.48
    for p, moving in [(0.3, True), (0.47, True), (0.49, False)]:
        logp = torch.log(torch.tensor([[p]], dtype=torch.float64)).requires_grad_(True)
        loss = distill.trrd_loss(logp, old, teacher, adv, m, alpha=0.5, eps=0.2)
        loss.sum().backward()
        assert float(loss.detach()) == pytest.approx(-min(p / mu, 1.2))
        assert (float(logp.grad) != 0) == moving
    # α = 0 is PPO's clip around π_old: already clipped at 0.3 > 1.2·0.2
    logp = torch.log(torch.tensor([[0.3]], dtype=torch.float64)).requires_grad_(True)
    distill.trrd_loss(logp, old, teacher, adv, m, alpha=0.0).sum().backward()
    assert float(logp.grad) == 0.0


def test_scope_loss_routes_by_correctness():
    logp = torch.log(torch.tensor([[0.5, 0.4], [0.3, 0.2]], dtype=torch.float64)).requires_grad_(True)
    teacher = torch.log(torch.tensor([[0.9, 0.1], [0.6, 0.1]], dtype=torch.float64))
    m = torch.tensor([[True, True], [True, False]])
    loss = distill.scope_loss(logp, logp.detach(), teacher, torch.tensor([True, False]), m)
    loss.sum().backward()
    np.testing.assert_allclose(loss[0].detach(), -logp[0].detach())  # MLE on the correct response
    # the wrong response: OPD policy gradient with Â = log π_T − log π_old at ratio 1
    assert float(logp.grad[1, 0]) == pytest.approx(-(math.log(0.6) - math.log(0.3)))
    assert float(loss.detach()[1, 1]) == 0.0 and float(logp.grad[1, 1]) == 0.0


# ----------------------------------------------------------------------------- weighting
def test_pass_rates_and_paced_weights_by_hand():
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    group = torch.tensor([0, 0, 1, 1, 2, 2])
    p = distill.pass_rates(rewards, group)
    torch.testing.assert_close(p, torch.tensor([0.5, 0.5, 1.0, 1.0, 0.0, 0.0]))
    w = distill.paced_weights(p)
    torch.testing.assert_close(w, torch.tensor([0.25, 0.25, 0.0, 0.0, 0.0, 0.0]))
    assert float(distill.paced_weights(torch.tensor([0.25]), alpha=2.0, beta=1.0)) == pytest.approx(0.25**2 * 0.75)
    with pytest.raises(ValueError, match="`pass_rate`"):
        distill.paced_weights(torch.tensor([1.5]))


def test_scope_weights_paper_and_code_conventions():
    # one group of 4: responses 0, 1 correct (student mean log-probs −0.2, −1.0), 2, 3 wrong (teacher −0.5, −2.0)
    m = torch.ones(4, 2, dtype=torch.bool)
    old = torch.tensor([[-0.2, -0.2], [-1.0, -1.0], [-0.7, -0.1], [-0.3, -0.3]], dtype=torch.float64)
    teacher = torch.tensor([[-0.1, -0.1], [-0.1, -0.1], [-0.5, -0.5], [-1.0, -3.0]], dtype=torch.float64)
    rewards = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    group = torch.zeros(4, dtype=torch.long)
    paper = distill.scope_weights(rewards, group, old, teacher, m)
    code = distill.scope_weights(rewards, group, old, teacher, m, convention="code")

    def mean1(scores):
        e = np.exp(np.array(scores))
        return e / e.sum() * len(scores)

    # wrong path (same in both): ∝ PPL_T^{-1} = exp(mean teacher log-prob)
    np.testing.assert_allclose(paper[2:], mean1([-0.5, -2.0]))
    np.testing.assert_allclose(code[2:], mean1([-0.5, -2.0]))
    # correct path: the paper up-weights the student's low-confidence sample (PPL_S^{+1}); the code the other
    np.testing.assert_allclose(paper[:2], mean1([0.2, 1.0]))
    np.testing.assert_allclose(code[:2], mean1([-0.2, -1.0]))
    assert paper[1] > paper[0] and code[1] < code[0]
    # a singleton path gets weight 1
    single = distill.scope_weights(torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), old[:2], teacher[:2], m[:2])
    torch.testing.assert_close(single, torch.ones(2, dtype=torch.float64))


def test_position_weights_by_hand():
    m = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    late = distill.position_weights(m)
    torch.testing.assert_close(late[0], torch.tensor([0.5, 1.0, 1.5, 0.0], dtype=torch.float64))
    torch.testing.assert_close(late[1], torch.tensor([2 / 3, 4 / 3, 0.0, 0.0], dtype=torch.float64))
    early = distill.position_weights(m, direction="early", normalize=False)
    torch.testing.assert_close(early[0], torch.tensor([1.0, 2 / 3, 1 / 3, 0.0], dtype=torch.float64))
    flat = distill.position_weights(m, power=0.0)
    torch.testing.assert_close(flat, m.double())


# ----------------------------------------------------------------------------- selection
def test_topk_overlap_against_python_sets():
    zs, zt = RNG.normal(size=(2, 3, 8)), RNG.normal(size=(2, 3, 8))
    m = torch.ones(2, 3, dtype=torch.bool)
    out = distill.topk_overlap(torch.tensor(zs), torch.tensor(zt), m, k=3)
    for b, t in itertools.product(range(2), range(3)):
        top_s, top_t = set(np.argsort(-zs[b, t])[:3]), set(np.argsort(-zt[b, t])[:3])
        assert float(out[b, t]) == pytest.approx(len(top_s & top_t) / 3)


def test_prune_opd_drift_and_weights_by_hand():
    overlap = torch.tensor([[1.0, 1.0, 0.2, 0.0, 0.0, 1.0]], dtype=torch.float64)
    m = torch.ones(1, 6, dtype=torch.bool)
    # trailing means over W = 2: 1, 1, 0.6, 0.1 → first below 0.5 at index 3
    assert distill.prune_opd_drift(overlap, m, threshold=0.5, window=2).tolist() == [3]
    assert distill.prune_opd_drift(torch.ones(1, 6), m).tolist() == [6]  # no drift: the row's length
    # identical student and teacher: full overlap, weights all 1
    z = torch.tensor(RNG.normal(size=(1, 6, 9)))
    torch.testing.assert_close(distill.prune_opd_weights(z, z, m), torch.ones(1, 6, dtype=torch.float64))
    # a teacher that ranks the student's top tokens last from position 2 on: drift at 2 with W = 1
    t = z.clone()
    t[0, 2:] = -z[0, 2:]
    w = distill.prune_opd_weights(z, t, m, k=3, threshold=0.5, window=1, decay=0.5)
    torch.testing.assert_close(w[0], torch.tensor([1.0, 1.0, 1.0, 0.5, 0.25, 0.125], dtype=torch.float64))
    w = distill.prune_opd_weights(z, t, m, k=3, threshold=0.5, window=1, decay=0.5, truncate_after=1)
    torch.testing.assert_close(w[0], torch.tensor([1.0, 1.0, 1.0, 0.5, 0.0, 0.0], dtype=torch.float64))


def test_tsd_token_weights_exceed_half_exactly_where_the_student_is_less_sure():
    zs, zt = RNG.normal(size=(3, 4, 6)) * 2, RNG.normal(size=(3, 4, 6)) * 2
    m = torch.ones(3, 4, dtype=torch.bool)
    w = distill.tsd_token_weights(torch.tensor(zs), torch.tensor(zt), m)
    for b, t in itertools.product(range(3), range(4)):
        gap = np_entropy(zs[b, t]) - np_entropy(zt[b, t])
        assert float(w[b, t]) == pytest.approx(1 / (1 + math.exp(-gap)))
        assert (float(w[b, t]) > 0.5) == (gap > 0)


# ----------------------------------------------------------------------------- TSD-KD
def _plackett_luce_nll(scores, order):
    """−log P(order | scores) under Plackett–Luce, by the product of sequential choices."""
    remaining = list(order)
    nll = 0.0
    for item in order:
        nll -= scores[item] - math.log(sum(math.exp(scores[j]) for j in remaining))
        remaining.remove(item)
    return nll


def test_ranking_loss_paper_order_is_plackett_luce_and_code_prefers_the_reverse():
    m = torch.ones(1, 1, dtype=torch.bool)
    teacher = torch.tensor([[[3.0, 2.0, 1.0]]], dtype=torch.float64)  # teacher order: 0, 1, 2
    agree = torch.tensor([[[3.0, 2.0, 1.0]]], dtype=torch.float64)
    reverse = torch.tensor([[[1.0, 2.0, 3.0]]], dtype=torch.float64)
    for student in (agree, reverse):
        s = student[0, 0].numpy() - student[0, 0].numpy().mean()
        assert float(distill.ranking_loss(student, teacher, m, top_k=3)) == pytest.approx(
            _plackett_luce_nll(s, [0, 1, 2]))
    paper = [float(distill.ranking_loss(s, teacher, m, top_k=3)) for s in (agree, reverse)]
    code = [float(distill.ranking_loss(s, teacher, m, top_k=3, convention="code")) for s in (agree, reverse)]
    assert paper[0] < paper[1]  # the teacher's order is the likely one
    assert code[0] > code[1]  # the released code's loss prefers the reverse order
    assert code[1] == pytest.approx(0.72, abs=0.01) and code[0] == pytest.approx(3.72, abs=0.01)


def test_tsd_prefix_mask_by_hand():
    h = torch.tensor([[0.05, 0.05, 0.5, 0.4], [0.5, 0.2, 0.2, 0.1]], dtype=torch.float64)
    m = torch.ones(2, 4, dtype=torch.bool)
    # row 0: cumulative shares 0.05, 0.10 → d = 1 (first ≥ 0.1), prefix {0}; row 1: d = 0, empty prefix
    assert distill.tsd_prefix_mask(h, m, 0.1).tolist() == [[True, False, False, False], [False] * 4]


def test_tsd_kd_loss_token_mean_is_the_three_term_loss():
    zs, zt = RNG.normal(size=(2, 5, 6)) * 2, RNG.normal(size=(2, 5, 6)) * 2
    m = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    s, t = torch.tensor(zs), torch.tensor(zt)
    loss = distill.tsd_kd_loss(s, t, m)
    total = float(loss[m].mean())
    # the three terms computed separately
    h = np.array([[np_entropy(zs[b, i]) for i in range(5)] for b in range(2)])
    valid = m.numpy()
    q = np.quantile(h[valid], 0.1)
    entropy_term = h[valid & (h >= q)].mean()
    w = distill.tsd_token_weights(s, t, m)
    direct = float((w * distill.gkd_loss(s, t, m, beta=0.9))[m].mean())
    prefix = distill.tsd_prefix_mask(torch.tensor(h), m, 0.1)
    rank = distill.ranking_loss(s, t, m, top_k=10)
    rank_term = float(rank[prefix].mean()) if prefix.any() else 0.0
    assert total == pytest.approx(direct + entropy_term + 0.1 * rank_term, rel=1e-10)


def test_rules_are_registered_with_paper_and_confidence():
    for kind in ("objective", "token_weighting", "sequence_weighting"):
        for name, rule in distill.rules(kind).items():
            assert rule.confidence in ("HIGH", "MED", "LOW") and rule.paper and rule.notebook, name
            assert "arXiv" in rule.paper or "ICLR" in rule.paper, name
    with pytest.raises(ValueError, match="`objective`"):
        distill.lookup("objective", "bogus")
