"""The notebook-01 exercise checkers: the reference solutions pass, typical wrong answers fail helpfully."""

import torch

from forklab import advantages as adv
from forklab.exercises import nb01


def _solution(name):
    namespace = {"torch": torch}
    exec(nb01._SOLUTIONS[name], namespace)  # the text show_solution prints is itself a working answer
    return namespace[name]


def test_reference_solutions_pass():
    assert nb01.check_grpo_group(_solution("grpo_group"))
    assert nb01.check_rloo_group(_solution("rloo_group"))


def test_library_estimators_pass_as_answers():
    zeros = lambda r: torch.zeros(len(r), dtype=torch.long)  # noqa: E731
    assert nb01.check_grpo_group(lambda r: adv.grpo(r, zeros(r)))
    assert nb01.check_rloo_group(lambda r: adv.rloo(r, zeros(r)))


def test_not_attempted():
    def stub(rewards):
        raise NotImplementedError

    fb = nb01.check_grpo_group(stub)
    assert not fb and "not attempted yet" in str(fb)


def test_population_std_fails_with_hint():
    fb = nb01.check_grpo_group(lambda r: (r - r.mean()) / (r.std(unbiased=False) + 1e-6))
    text = str(fb)
    assert not fb and "expected" in text and "got" in text and "unbiased" in text


def test_missing_degenerate_guard_fails_with_hint():
    fb = nb01.check_grpo_group(lambda r: (r - r.mean()) / (r.std() + 1e-6))  # no guard: fine until a constant group
    assert not fb and "exactly 0" in str(fb)


def test_rloo_with_mean_baseline_fails():
    fb = nb01.check_rloo_group(lambda r: r - r.mean())
    assert not fb and "OTHER" in str(fb)


def test_wrong_shape_and_exception():
    assert "shape" in str(nb01.check_grpo_group(lambda r: r.mean()))
    assert "raised ZeroDivisionError" in str(nb01.check_grpo_group(lambda r: 1 / 0))


def test_show_solution_prints_only_on_request(capsys):
    nb01.show_solution("rloo_group")
    assert "others_mean" in capsys.readouterr().out
