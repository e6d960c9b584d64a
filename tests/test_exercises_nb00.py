"""Notebook 00's exercise checker: the reference passes, typical wrong answers fail with a useful message."""

import pytest
import torch

from forklab.exercises import nb00
from forklab.kl import kl_estimate


def test_reference_k3_passes_and_equals_forklab_kl():
    feedback = nb00.check_k3(nb00.reference_k3)
    assert feedback and "unbiased" in str(feedback)
    logp, ref = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(nb00.reference_k3(logp, ref), kl_estimate(logp, ref, "k3"))


@pytest.mark.parametrize(("wrong", "hint"), [
    (lambda lp, rp: lp - rp, "k1"),
    (lambda lp, rp: torch.exp(lp - rp) - 1 - (lp - rp), "wrong way round"),
    (lambda lp, rp: torch.exp(rp - lp) + (lp - rp), "−1 is missing"),
    (lambda lp, rp: 0.5 * (lp - rp) ** 2, "k2"),
    (lambda lp, rp: (torch.exp(rp - lp) - 1 + (lp - rp)).sum(), "shape"),
])
def test_typical_wrong_k3_answers_fail_with_a_hint(wrong, hint):
    feedback = nb00.check_k3(wrong)
    assert not feedback
    assert hint in str(feedback) and "expected" in str(feedback)


def test_stub_reports_not_attempted_and_errors_are_reported():
    def stub(logp, ref_logp):
        raise NotImplementedError

    assert "not attempted yet" in str(nb00.check_k3(stub))
    assert "raised ZeroDivisionError" in str(nb00.check_k3(lambda lp, rp: 1 / 0))


def test_show_solution(capsys):
    nb00.show_solution(4)
    assert "torch.exp(-x) - 1 + x" in capsys.readouterr().out
    with pytest.raises(ValueError, match="`exercise`"):
        nb00.show_solution(9)
