"""The nb05 checker: its reference agrees with the library controller and with hand-computed steps,
it accepts the reference and rejects typical wrong answers with a helpful message."""

import pytest

from forklab.entropy_control import skywork_entropy_coef_update
from forklab.exercises import nb05


def test_reference_by_hand_and_against_library():
    assert nb05.solution_skywork_update(0.0, 0.1, 0.2, 0.01, 1.0) == (0.01, 0.01)
    assert nb05.solution_skywork_update(0.02, 0.3, 0.2, 0.01, 1.0) == (0.01, 0.0)
    assert nb05.solution_skywork_update(0.0, 0.3, 0.2, 0.01, 1.0) == (0.0, 0.0)
    for coef in (0.0, 0.004, 0.005):
        for e in (0.0, 0.19, 0.2, 0.21, 1.0):
            want = skywork_entropy_coef_update(coef, e, 0.2, 1e-3, 0.0, 0.005)
            assert nb05.solution_skywork_update(coef, e, 0.2, 1e-3, 0.005) == pytest.approx(want)


def test_reference_passes():
    fb = nb05.check_skywork_update(nb05.solution_skywork_update)
    assert fb and "all checks passed" in str(fb)


def test_stub_reports_not_attempted():
    def stub(coef, sampled_entropy, target, delta, coef_max):
        raise NotImplementedError

    fb = nb05.check_skywork_update(stub)
    assert not fb and "not attempted" in str(fb)


def test_bonus_always_on_is_caught():
    def always_on(coef, e, target, delta, coef_max):
        new = min(max(coef + (delta if e < target else -delta), 0.0), coef_max)
        return new, new

    fb = nb05.check_skywork_update(always_on)
    assert not fb and "expected" in str(fb) and "α = 0" in str(fb)


def test_missing_clip_is_caught():
    def no_clip(coef, e, target, delta, coef_max):
        new = coef + (delta if e < target else -delta)
        return new, (new if e < target else 0.0)

    fb = nb05.check_skywork_update(no_clip)
    assert not fb and "clip" in str(fb)


def test_flipped_sign_is_caught():
    def flipped(coef, e, target, delta, coef_max):
        new = min(max(coef - (delta if e < target else -delta), 0.0), coef_max)
        return new, (new if e < target else 0.0)

    fb = nb05.check_skywork_update(flipped)
    assert not fb and "expected" in str(fb)


def test_wrong_return_type_is_caught():
    fb = nb05.check_skywork_update(lambda *a: 0.1)
    assert not fb and "pair" in str(fb)
