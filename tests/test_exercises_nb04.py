"""The nb04 checker: its reference is right (finite differences of the exact entropy), it accepts
the reference and rejects typical wrong answers with a helpful message."""

import torch

from forklab.exercises import nb04


def _entropy(z):
    logp = torch.log_softmax(z, -1)
    return -(logp.exp() * logp).sum()


def test_reference_matches_finite_difference_of_exact_entropy():
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        z = torch.randn(6, generator=gen, dtype=torch.float64)
        a = torch.randn(6, generator=gen, dtype=torch.float64) + 1.0
        eps = 1e-6  # central difference: error O(eps²)
        fd = (_entropy(z + eps * a) - _entropy(z - eps * a)) / (2 * eps)
        assert abs(float(nb04.solution_npg_entropy_change(z, a, 1.0)) - float(fd)) < 1e-8
        assert abs(float(nb04.solution_npg_entropy_change(z, a, 0.3)) - 0.3 * float(fd)) < 1e-8


def test_reference_passes():
    fb = nb04.check_npg_entropy_change(nb04.solution_npg_entropy_change)
    assert fb and "all checks passed" in str(fb)


def test_stub_reports_not_attempted():
    def stub(logits, adv, lr):
        raise NotImplementedError

    fb = nb04.check_npg_entropy_change(stub)
    assert not fb and "not attempted" in str(fb)


def test_wrong_sign_is_caught_with_hint():
    fb = nb04.check_npg_entropy_change(lambda z, a, lr: -nb04.solution_npg_entropy_change(z, a, lr))
    assert not fb and "sign" in str(fb) and "expected" in str(fb)


def test_uncentred_covariance_is_caught():
    def uncentred(z, a, lr):
        logp = torch.log_softmax(z, -1)
        return -lr * (logp.exp() * logp * a).sum()

    fb = nb04.check_npg_entropy_change(uncentred)
    assert not fb and "E_π[log π]·E_π[A]" in str(fb)


def test_unweighted_means_and_missing_lr_are_caught():
    def unweighted(z, a, lr):
        logp = torch.log_softmax(z, -1)
        return -lr * ((logp * a).mean() - logp.mean() * a.mean())

    def no_lr(z, a, lr):
        return nb04.solution_npg_entropy_change(z, a, 1.0)

    for wrong in (unweighted, no_lr):
        fb = nb04.check_npg_entropy_change(wrong)
        assert not fb and "expected" in str(fb) and "hint" in str(fb)


def test_non_scalar_and_mutation_are_reported():
    fb = nb04.check_npg_entropy_change(lambda z, a, lr: torch.zeros(3))
    assert not fb and "scalar" in str(fb)

    def mutating(z, a, lr):
        a -= a.mean()
        return nb04.solution_npg_entropy_change(z, a, lr)

    fb = nb04.check_npg_entropy_change(mutating)
    assert not fb and "modified its inputs" in str(fb)
