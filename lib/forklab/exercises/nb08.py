"""Checker for the code exercise of ``notebooks/08_kl_and_divergences.ipynb``.

Exercise ``tilted_optimum``: write π*(y) = π_ref(y)·exp(r(y)/β) / Z, the optimum of E_π[r] − β·KL(π‖π_ref),
so that it survives r/β = 1000 (no overflow), keeps arms with π_ref = 0 at exactly 0, and works on a batch
``[..., K]``. The student's function takes ``(ref_probs [..., K], rewards [..., K], beta: float)`` and
returns ``[..., K]``.

The reference below works with Python floats and ``math`` one row at a time (an implementation independent
of ``forklab.alignment``). ``show_solution()`` prints a reference solution; nothing here prints one unless
asked.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from forklab.exercises import Feedback, call_student

__all__ = ["check_tilted_optimum", "show_solution"]

_CASES = [
    ("three arms, β = 0.5", [[0.5, 0.3, 0.2]], [[0.0, 1.0, 0.5]], 0.5),
    ("large β: π* stays close to π_ref", [[0.25, 0.25, 0.5]], [[1.0, 0.0, 0.0]], 50.0),
    ("r/β = 1000: exp overflows unless you shift", [[0.4, 0.6]], [[10.0, 9.0]], 0.01),
    ("an arm with π_ref = 0 must stay at 0", [[0.0, 0.7, 0.3]], [[5.0, 0.0, 1.0]], 0.1),
    ("a batch of two rows", [[0.5, 0.5, 0.0], [0.1, 0.2, 0.7]], [[1.0, 0.0, 2.0], [0.3, -0.2, 0.1]], 0.2),
]


def _reference_row(ref: list[float], rewards: list[float], beta: float) -> list[float]:
    logs = [math.log(p) + r / beta if p > 0 else -math.inf for p, r in zip(ref, rewards, strict=True)]
    top = max(logs)
    weights = [math.exp(v - top) if v > -math.inf else 0.0 for v in logs]
    total = math.fsum(weights)
    return [w / total for w in weights]


def _hint(label: str, got: torch.Tensor, ref: torch.Tensor, rewards: torch.Tensor, beta: float) -> str:
    if not torch.isfinite(got).all():
        return ("your answer has inf/NaN: exp(r/β) overflowed. Work in log space: softmax(log π_ref + r/β), "
                "or subtract the largest r/β before exp")
    if not torch.allclose(got.sum(-1), torch.ones(got.shape[:-1], dtype=torch.float64), atol=1e-9):
        return "each row must sum to 1: divide by Z = Σ_y π_ref(y)·exp(r(y)/β)"
    swapped = ref * torch.exp(beta * rewards)
    if torch.allclose(got, swapped / swapped.sum(-1, keepdim=True), atol=1e-9):
        return "the exponent is r/β (β divides the reward), not β·r"
    plain = torch.softmax(rewards / beta, -1)
    if torch.allclose(got, plain, atol=1e-9):
        return "π_ref is missing: π* is the reference *reweighted* by exp(r/β)"
    if "π_ref = 0" in label:
        return "log(0) = -inf is fine inside a softmax; 0 * inf is not. Keep zero-mass arms at exactly 0"
    return "π*(y) = π_ref(y)·exp(r(y)/β) / Z along the last axis"


def check_tilted_optimum(student: Callable) -> Feedback:
    """Check ``student(ref_probs [..., K], rewards [..., K], beta) -> [..., K]`` against π_ref·exp(r/β)/Z."""
    name = "tilted optimum π_ref·exp(r/β)/Z"
    if not callable(student):
        return Feedback(name, False, [f"expected a function, got {type(student).__name__}"])
    lines = []
    for label, ref_rows, reward_rows, beta in _CASES:
        ref = torch.tensor(ref_rows, dtype=torch.float64)
        rewards = torch.tensor(reward_rows, dtype=torch.float64)
        want = torch.tensor([_reference_row(p, r, beta) for p, r in zip(ref_rows, reward_rows, strict=True)],
                            dtype=torch.float64)
        if len(ref_rows) == 1:  # single-row cases are passed as one distribution [K]
            ref, rewards, want = ref[0], rewards[0], want[0]
        ref_in, rewards_in = ref.clone(), rewards.clone()
        got, failed = call_student(name, label, student, ref_in, rewards_in, beta)
        if failed is not None:  # a Feedback is falsy when it fails
            return failed
        if not (torch.equal(ref_in, ref) and torch.equal(rewards_in, rewards)):
            return Feedback(name, False, [f"case '{label}': your function modified its inputs",
                                          "hint: build new tensors (no in-place ops such as +=, .exp_())"])
        got = torch.as_tensor(got, dtype=torch.float64)
        if got.shape != want.shape:
            return Feedback(name, False, [f"case '{label}': expected shape {list(want.shape)}, got {list(got.shape)}",
                                          "hint: normalise along the last axis only (dim=-1)"])
        exact_zero = (ref == 0)
        ok = torch.isfinite(got).all() and torch.allclose(got, want, atol=1e-9, rtol=1e-9)
        if not ok or (got[exact_zero] != 0).any():
            return Feedback(name, False, [
                f"case '{label}': π_ref {ref_rows}, r {reward_rows}, β = {beta}",
                f"   expected {[[round(x, 4) for x in row] for row in want.reshape(-1, want.shape[-1]).tolist()]}",
                f"   got      {[[round(x, 4) for x in row] for row in got.reshape(-1, got.shape[-1]).tolist()]}",
                f"hint: {_hint(label, got, ref, rewards, beta)}",
            ])
        lines.append(f"case '{label}' ok")
    return Feedback(name, True, lines)


_SOLUTION = '''def tilted_optimum(ref_probs, rewards, beta):
    log_ref = torch.where(ref_probs > 0, ref_probs.log(), torch.tensor(-torch.inf, dtype=ref_probs.dtype))
    return torch.softmax(log_ref + rewards / beta, dim=-1)   # softmax subtracts the max: no overflow'''


def show_solution() -> None:
    """Print the reference solution of the exercise."""
    print(_SOLUTION)
