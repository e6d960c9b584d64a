"""The nb08 checker: the reference solution passes, typical wrong answers fail with a useful message."""

import torch

from forklab.exercises import nb08


def _solution(ref, rewards, beta):
    log_ref = torch.where(ref > 0, ref.log(), torch.tensor(-torch.inf, dtype=ref.dtype))
    return torch.softmax(log_ref + rewards / beta, dim=-1)


def test_reference_solution_passes():
    feedback = nb08.check_tilted_optimum(_solution)
    assert feedback, str(feedback)


def test_not_attempted_is_reported_without_raising():
    def stub(ref, rewards, beta):
        raise NotImplementedError

    feedback = nb08.check_tilted_optimum(stub)
    assert not feedback and "not attempted" in str(feedback)


def test_naive_exp_overflows_and_gets_the_log_space_hint():
    def naive(ref, rewards, beta):
        w = ref * torch.exp(rewards / beta)
        return w / w.sum(-1, keepdim=True)

    text = str(nb08.check_tilted_optimum(naive))
    assert "r/β = 1000" in text and "log space" in text


def test_beta_times_r_gets_the_exponent_hint():
    def swapped(ref, rewards, beta):
        w = ref * torch.exp(beta * rewards)
        return w / w.sum(-1, keepdim=True)

    assert "not β·r" in str(nb08.check_tilted_optimum(swapped))


def test_missing_normaliser_and_missing_reference_are_named():
    assert "sum to 1" in str(nb08.check_tilted_optimum(lambda ref, r, b: ref * torch.exp((r - r.max()) / b)))
    assert "π_ref is missing" in str(nb08.check_tilted_optimum(lambda ref, r, b: torch.softmax(r / b, -1)))


def test_in_place_modification_is_caught():
    def in_place(ref, rewards, beta):
        rewards /= beta
        return _solution(ref, rewards * beta, beta)

    assert "modified its inputs" in str(nb08.check_tilted_optimum(in_place))


def test_show_solution_prints_only_when_asked(capsys):
    nb08.show_solution()
    assert "softmax" in capsys.readouterr().out
