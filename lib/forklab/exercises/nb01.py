"""Checkers for the code exercises of ``notebooks/01_policy_gradients_and_advantages.ipynb``.

Exercise 1, ``grpo_group``: the GRPO advantage of ONE group, (R_i − mean)/(std + eps) with the unbiased
std, eps = 1e-6, and exactly 0 for a group whose rewards are all equal.
Exercise 2, ``rloo_group``: the RLOO advantage of one group, R_i − mean of the others.

The student's function takes ``rewards`` (a 1-D float64 tensor, one group) and returns a tensor of the same
shape. The references below use Python's ``statistics`` module (an implementation independent of
``forklab.advantages``). ``show_solution(name)`` prints a reference solution; nothing here prints one
unless asked.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch

from forklab.exercises import Feedback, call_student

__all__ = ["check_grpo_group", "check_rloo_group", "show_solution"]

_CASES = [
    ("4 responses, 2 correct", [1.0, 0.0, 0.0, 1.0]),
    ("8 responses, 1 correct (a hard prompt)", [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]),
    ("graded rewards", [0.5, 0.0, 1.0, 1.0, 0.2]),
    ("two responses", [0.3, 0.9]),
    ("all correct: a degenerate group", [1.0, 1.0, 1.0, 1.0]),
    ("all equal, not 0/1", [0.7, 0.7, 0.7]),
]


def _reference_grpo(rewards: list[float], eps: float = 1e-6) -> list[float]:
    if len(set(rewards)) == 1:
        return [0.0] * len(rewards)
    mean, std = statistics.fmean(rewards), statistics.stdev(rewards)
    return [(r - mean) / (std + eps) for r in rewards]


def _reference_rloo(rewards: list[float]) -> list[float]:
    total, n = sum(rewards), len(rewards)
    return [r - (total - r) / (n - 1) for r in rewards]


def _check(name: str, student: Callable, reference: Callable, hints: dict[str, str],
           exact_zero: bool = False) -> Feedback:
    if not callable(student):
        return Feedback(name, False, [f"expected a function, got {type(student).__name__}"])
    lines = []
    for label, values in _CASES:
        rewards = torch.tensor(values, dtype=torch.float64)
        want = torch.tensor(reference(values), dtype=torch.float64)
        got, failed = call_student(name, label, student, rewards.clone())
        if failed is not None:  # a Feedback is falsy when it fails
            return failed
        got = torch.as_tensor(got, dtype=torch.float64)
        if got.shape != want.shape:
            return Feedback(name, False, [f"case '{label}': expected shape {list(want.shape)}, got "
                                          f"{list(got.shape)}", "hint: return one advantage per response"])
        exact = exact_zero and len(set(values)) == 1  # a degenerate group must give exactly 0, not 1e-10 of rounding
        wrong = not torch.isfinite(got).all() or not torch.allclose(got, want, atol=1e-6, rtol=1e-6)
        if wrong or (exact and not (got == 0).all()):
            hint = next((h for key, h in hints.items() if key in label), hints["default"])
            return Feedback(name, False, [
                f"case '{label}': rewards {values}",
                f"   expected {[round(x, 4) for x in want.tolist()]}",
                f"   got      {[x if x != 0 and abs(x) < 1e-4 else round(x, 4) for x in got.tolist()]}",
                f"hint: {hint}",
            ])
        lines.append(f"case '{label}' ok")
    return Feedback(name, True, lines)


def check_grpo_group(student: Callable) -> Feedback:
    """Check ``student(rewards [G]) -> [G]`` against GRPO's advantage for one group."""
    return _check("GRPO advantage of one group", student, _reference_grpo, {
        "degenerate": "when every reward is equal the std is 0: return exactly 0 for every response",
        "all equal": "when every reward is equal the std is 0: return exactly 0 for every response",
        "two responses": "use the unbiased std (divide by G - 1): torch.std's default, not unbiased=False",
        "default": "A_i = (R_i - mean) / (std + 1e-6), with the unbiased std (divide by G - 1)",
    }, exact_zero=True)


def check_rloo_group(student: Callable) -> Feedback:
    """Check ``student(rewards [G]) -> [G]`` against RLOO's leave-one-out advantage."""
    return _check("RLOO advantage of one group", student, _reference_rloo, {
        "default": "the baseline of response i is the mean of the OTHER G - 1 rewards: (sum - R_i) / (G - 1)",
    })


_SOLUTIONS = {
    "grpo_group": '''def grpo_group(rewards):
    if (rewards == rewards[0]).all():          # degenerate group: no signal
        return torch.zeros_like(rewards)
    return (rewards - rewards.mean()) / (rewards.std() + 1e-6)   # torch.std is unbiased (G - 1)''',
    "rloo_group": '''def rloo_group(rewards):
    others_mean = (rewards.sum() - rewards) / (len(rewards) - 1)
    return rewards - others_mean''',
}


def show_solution(name: str) -> None:
    """Print the reference solution of exercise ``name`` ("grpo_group" or "rloo_group")."""
    if name not in _SOLUTIONS:
        raise ValueError(f"`name` must be one of {sorted(_SOLUTIONS)}, got {name!r}")
    print(_SOLUTIONS[name])
