"""Exercise checker of ``notebooks/05_entropy_interventions.ipynb``: Skywork-OR1's adaptive entropy coefficient.

The student writes ``skywork_update(coef, sampled_entropy, target, delta, coef_max)`` returning the
pair ``(new_coef, alpha)`` of one step of the bang-bang integral controller of the "Skywork Open
Reasoner 1 Technical Report" (arXiv 2505.22312), with c_min = 0:

    c_{k+1} = clip(c_k + Δ·sign(tgt − ê_k), 0, c_max)      (+Δ if ê_k < tgt, −Δ otherwise)
    α_{k+1} = c_{k+1} · 1[ê_k < tgt]                        (the bonus is off above target)

:func:`check_skywork_update` compares it with :func:`solution_skywork_update` on a scripted
sequence of entropies; ``tests/test_exercises_nb05.py`` checks that reference against the library's
:func:`forklab.entropy_control.skywork_entropy_coef_update` and against hand-computed values.
:func:`show_solution` prints the reference source (never called by Run All).
"""

from __future__ import annotations

import inspect
import math

from forklab.exercises import Feedback

__all__ = ["solution_skywork_update", "check_skywork_update", "show_solution"]

_NAME = "Skywork adaptive entropy coefficient"


def solution_skywork_update(coef: float, sampled_entropy: float, target: float, delta: float,
                            coef_max: float) -> tuple[float, float]:
    """Reference: one controller step, returns (c_{k+1}, α_{k+1})."""
    below = sampled_entropy < target
    new = coef + delta if below else coef - delta
    new = min(max(new, 0.0), coef_max)
    return new, (new if below else 0.0)


def _cases() -> list[tuple[str, list[float], float, float, float]]:
    """(name, the sequence ê_0, ê_1, ..., target, Δ, c_max); c starts at 0."""
    return [
        ("below target three times: c climbs by Δ each step", [0.1, 0.1, 0.1], 0.2, 0.01, 1.0),
        ("c_max caps the climb", [0.0] * 6, 0.2, 0.01, 0.03),
        ("above target: α is 0 even though c > 0", [0.1, 0.1, 0.5], 0.2, 0.01, 1.0),
        ("c never goes below 0", [0.5, 0.5, 0.1], 0.2, 0.01, 1.0),
        ("ê equal to the target counts as 'not below'", [0.1, 0.2], 0.2, 0.01, 1.0),
    ]


def _hint(got: tuple, want: tuple, case: str) -> str:
    if "above target" in case or "equal" in case:
        return "α_{k+1} = c_{k+1}·1[ê_k < tgt]: return α = 0 whenever ê_k ≥ tgt (c itself still steps down)"
    if "below 0" in case or "caps" in case:
        return "clip c_{k+1} into [0, c_max] after the step"
    if math.isclose(got[0], -want[0], abs_tol=1e-12):
        return "the sign is flipped: entropy below target must *raise* the coefficient"
    return "c_{k+1} = c_k + Δ if ê_k < tgt else c_k − Δ, then clip; return (c_{k+1}, α_{k+1})"


def check_skywork_update(fn) -> Feedback:
    """Run ``fn`` along each scripted sequence; report the first failing step, expected vs got, and a hint."""
    lines = []
    for case, entropies, target, delta, coef_max in _cases():
        coef_got = coef_want = 0.0
        for step, e in enumerate(entropies):
            try:
                got = fn(coef_got, e, target, delta, coef_max)
            except NotImplementedError:
                return Feedback(_NAME, False, ["not attempted yet (the stub raises NotImplementedError)"])
            except Exception as err:  # noqa: BLE001 -- any student error becomes a message, not a traceback
                return Feedback(_NAME, False, [f"case '{case}', step {step}: raised {type(err).__name__}: {err}"])
            want = solution_skywork_update(coef_want, e, target, delta, coef_max)
            try:
                got = (float(got[0]), float(got[1]))
            except (TypeError, ValueError, IndexError):
                return Feedback(_NAME, False, [f"case '{case}': expected a pair (new_coef, alpha), got {got!r:.60}"])
            if not all(math.isclose(g, w, rel_tol=1e-9, abs_tol=1e-12) for g, w in zip(got, want, strict=True)):
                return Feedback(_NAME, False, [f"case '{case}', step {step} (ê = {e}, c = {coef_want:g}): expected "
                                               f"(c, α) = ({want[0]:.4g}, {want[1]:.4g}), got ({got[0]:.4g}, "
                                               f"{got[1]:.4g})", f"hint: {_hint(got, want, case)}"])
            coef_got, coef_want = got[0], want[0]
        lines.append(f"{case} ✓")
    return Feedback(_NAME, True, lines)


def show_solution() -> None:
    """Print the reference solution (only when the student asks for it)."""
    print(inspect.getsource(solution_skywork_update))
