"""The nb09 checker: the reference solution passes, typical wrong answers fail with a useful message."""

import torch

from forklab.exercises import nb09


def _solution(s, t, r, mask, lam):
    adv = lam * (t - r) - (s - r)
    return torch.where(mask, adv, torch.zeros_like(adv))


def test_reference_solution_passes():
    feedback = nb09.check_gopd_advantage(_solution)
    assert feedback, str(feedback)


def test_reference_agrees_with_an_independent_formula_at_lambda_one():
    # at λ = 1 the advantage is log π_T − log π_old whatever π_ref is (G-OPD's "standard OPD")
    s, t = torch.tensor([[-0.5, -1.2]]), torch.tensor([[-0.1, -2.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    for r in (torch.zeros(1, 2), torch.tensor([[-3.0, 0.4]])):
        torch.testing.assert_close(_solution(s, t, r, mask, 1.0), t - s)


def test_not_attempted_is_reported_without_raising():
    def stub(s, t, r, mask, lam):
        raise NotImplementedError

    feedback = nb09.check_gopd_advantage(stub)
    assert not feedback and "not attempted" in str(feedback)


def test_multiplying_by_the_mask_gives_nan_and_the_where_hint():
    text = str(nb09.check_gopd_advantage(lambda s, t, r, m, lam: (lam * (t - r) - (s - r)) * m))
    assert "padding" in text and "torch.where" in text


def test_flipped_sign_and_misplaced_lambda_are_named():
    def flipped(s, t, r, m, lam):
        return torch.where(m, (s - r) - lam * (t - r), torch.zeros_like(s))

    def lam_on_student(s, t, r, m, lam):
        return torch.where(m, (t - r) - lam * (s - r), torch.zeros_like(s))

    def lam_on_both(s, t, r, m, lam):
        return torch.where(m, lam * (t - s), torch.zeros_like(s))

    assert "sign is flipped" in str(nb09.check_gopd_advantage(flipped))
    assert "λ goes on the teacher term" in str(nb09.check_gopd_advantage(lam_on_student))
    assert "λ scales only" in str(nb09.check_gopd_advantage(lam_on_both))


def test_forgotten_mask_and_modified_inputs_are_reported():
    text = str(nb09.check_gopd_advantage(lambda s, t, r, m, lam: lam * (t - r) - (s - r)))
    assert "padding" in text

    def in_place(s, t, r, m, lam):
        s.mul_(1.0).neg_().neg_()
        s += 0.0
        t -= r
        return torch.where(m, lam * t - (s - r), torch.zeros_like(s))

    assert "modified its inputs" in str(nb09.check_gopd_advantage(in_place))
