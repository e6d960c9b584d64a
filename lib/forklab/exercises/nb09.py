"""Checker for the code exercise of ``notebooks/09_on_policy_distillation.ipynb``.

Exercise ``gopd_advantage``: G-OPD's per-token advantage (Yang et al., *Learning beyond Teacher*, arXiv
2602.12125, official code ``dp_actor.py``)

    Â_t = λ·(log π_T(o_t) − log π_ref(o_t)) − (log π_old(o_t) − log π_ref(o_t)),   0 where ``mask`` is False,

for ``[B, T]`` log-probs of the sampled tokens and a ``[B, T]`` bool mask. The student's function takes
``(student_logp, teacher_logp, ref_logp, mask, lam)`` and returns ``[B, T]``.

The reference below loops over Python floats (independent of any forklab function). ``show_solution()``
prints a reference solution; nothing here prints one unless asked.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from forklab.exercises import Feedback, call_student

__all__ = ["check_gopd_advantage", "show_solution"]

_NEG_INF = -math.inf
_CASES = [
    ("λ = 1 (plain OPD: log π_T − log π_old, π_ref cancels)",
     [[-0.5, -1.2]], [[-0.1, -2.0]], [[-0.7, -0.3]], [[True, True]], 1.0),
    ("λ = 1.25 (extrapolation)", [[-0.5, -1.2, -0.2]], [[-0.1, -2.0, -0.4]], [[-0.7, -0.3, -1.0]],
     [[True, True, True]], 1.25),
    ("λ = 0 (pure KL to π_ref)", [[-0.5, -1.2]], [[-0.1, -2.0]], [[-0.7, -0.3]], [[True, True]], 0.0),
    ("padding: masked positions must be exactly 0, even with -inf log-probs",
     [[-0.5, _NEG_INF, 0.0], [-0.2, -0.9, -1.1]], [[-0.1, _NEG_INF, 0.0], [-0.3, -0.2, -2.5]],
     [[-0.7, 0.0, _NEG_INF], [-0.4, -0.6, -0.8]], [[True, False, False], [True, True, True]], 1.5),
]


def _reference(student, teacher, ref, mask, lam):
    return [[lam * (t - r) - (s - r) if m else 0.0 for s, t, r, m in zip(*rows, strict=True)]
            for rows in zip(student, teacher, ref, mask, strict=True)]


def _hint(got: torch.Tensor, s: torch.Tensor, t: torch.Tensor, r: torch.Tensor, mask: torch.Tensor, lam: float) -> str:
    if not torch.isfinite(got).all():
        return ("inf/NaN in your answer: padded positions hold -inf log-probs; use torch.where(mask, Â, 0) "
                "(multiplying by the mask gives 0·inf = NaN)")
    if (got[~mask] != 0).any():
        return "padding must be 0: apply the mask"
    m = mask
    if torch.allclose(got[m], -(lam * (t - r) - (s - r))[m]):
        return "the sign is flipped: the advantage is the teacher's reward minus the student's own log-ratio"
    if torch.allclose(got[m], (lam * (t - r) - lam * (s - r))[m]) or torch.allclose(got[m], (lam * (t - s))[m]):
        return "λ scales only the teacher's log-ratio log π_T − log π_ref, not the KL term"
    if torch.allclose(got[m], ((t - r) - lam * (s - r))[m]):
        return "λ goes on the teacher term, not on the student term"
    return "Â_t = λ·(log π_T − log π_ref) − (log π_old − log π_ref) on real tokens, 0 on padding"


def check_gopd_advantage(student: Callable) -> Feedback:
    """Check ``student(student_logp, teacher_logp, ref_logp, mask, lam) -> [B, T]`` against G-OPD's advantage."""
    name = "G-OPD per-token advantage"
    if not callable(student):
        return Feedback(name, False, [f"expected a function, got {type(student).__name__}"])
    lines = []
    for label, s_rows, t_rows, r_rows, m_rows, lam in _CASES:
        s, t, r = (torch.tensor(x, dtype=torch.float64) for x in (s_rows, t_rows, r_rows))
        mask = torch.tensor(m_rows)
        want = torch.tensor(_reference(s_rows, t_rows, r_rows, m_rows, lam), dtype=torch.float64)
        inputs = [s.clone(), t.clone(), r.clone(), mask.clone()]
        got, failed = call_student(name, label, student, *inputs, lam)
        if failed is not None:  # a Feedback is falsy when it fails
            return failed
        if not all(torch.equal(a, b) for a, b in zip(inputs, (s, t, r, mask), strict=True)):
            return Feedback(name, False, [f"case '{label}': your function modified its inputs",
                                          "hint: build new tensors (no in-place ops such as +=, masked_fill_)"])
        got = torch.as_tensor(got, dtype=torch.float64)
        if got.shape != want.shape:
            return Feedback(name, False, [f"case '{label}': expected shape {list(want.shape)}, got {list(got.shape)}",
                                          "hint: one advantage per token, same shape as the log-probs"])
        if not (torch.isfinite(got).all() and torch.allclose(got, want, atol=1e-12, rtol=1e-12)):
            return Feedback(name, False, [
                f"case '{label}' (λ = {lam})",
                f"   expected {[[round(x, 4) for x in row] for row in want.tolist()]}",
                f"   got      {[[round(x, 4) for x in row] for row in got.tolist()]}",
                f"hint: {_hint(got, s, t, r, mask, lam)}",
            ])
        lines.append(f"case '{label}' ok")
    return Feedback(name, True, lines)


_SOLUTION = '''def gopd_advantage(student_logp, teacher_logp, ref_logp, mask, lam):
    adv = lam * (teacher_logp - ref_logp) - (student_logp - ref_logp)
    return torch.where(mask, adv, torch.zeros_like(adv))   # where, not *: padding may hold -inf'''


def show_solution() -> None:
    """Print the reference solution of the exercise."""
    print(_SOLUTION)
