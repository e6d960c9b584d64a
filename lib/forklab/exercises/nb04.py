"""Exercise checker of ``notebooks/04_entropy_mechanism.ipynb``: the natural-PG entropy prediction.

The student writes ``npg_entropy_change(logits, adv, lr)`` for one softmax policy (``logits [V]``,
``adv [V]``, a float ``lr``) returning the first-order entropy change of the natural-PG step
Δz = η·A (The Entropy Mechanism of RL for Reasoning LMs, arXiv 2505.22617):

    ΔH ≈ −η · Cov_{a∼π}(log π(a), A(a)) = −η · (E_π[log π · A] − E_π[log π] · E_π[A])

:func:`check_npg_entropy_change` compares it with :func:`solution_npg_entropy_change` on a few
cases; ``tests/test_exercises_nb04.py`` checks that reference against finite differences of the
exact entropy. :func:`show_solution` prints the reference source (never called by Run All).
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import Tensor

from forklab.exercises import Feedback

__all__ = ["solution_npg_entropy_change", "check_npg_entropy_change", "show_solution"]


def solution_npg_entropy_change(logits: Tensor, adv: Tensor, lr: float) -> Tensor:
    """Reference: −η·Cov_π(log π, A), a float64 scalar tensor."""
    logp = torch.log_softmax(logits.double(), -1)
    p = logp.exp()
    a = adv.double()
    return -lr * ((p * logp * a).sum() - (p * logp).sum() * (p * a).sum())


def _cases() -> list[tuple[str, Tensor, Tensor, float]]:
    gen = torch.Generator().manual_seed(4)
    z = 1.5 * torch.randn(7, generator=gen, dtype=torch.float64)
    return [
        ("two arms, A = (+1, −1), π = (0.73, 0.27)", torch.tensor([1.0, 0.0], dtype=torch.float64),
         torch.tensor([1.0, -1.0], dtype=torch.float64), 0.1),
        ("uniform policy (log π constant: the covariance is 0)", torch.zeros(5, dtype=torch.float64),
         torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=torch.float64), 0.5),
        ("advantages not centred (E_π[A] = 2.3 ≠ 0)", z, torch.randn(7, generator=gen, dtype=torch.float64) + 2.3, 0.2),
        ("random policy over 7 arms, η = 1", z, torch.randn(7, generator=gen, dtype=torch.float64), 1.0),
    ]


def _hint(got: float, want: float, case: str, z: Tensor, a: Tensor, lr: float) -> str:
    logp = torch.log_softmax(z, -1)
    uncentred = float(-lr * (logp.exp() * logp * a).sum())
    if math.isclose(got, -want, rel_tol=1e-6):
        return "the sign is flipped: ΔH ≈ −η·Cov (a positive covariance lowers the entropy)"
    if math.isclose(got, uncentred, rel_tol=1e-6) or "not centred" in case:
        return "a covariance subtracts E_π[log π]·E_π[A]; E_π[log π · A] alone is right only when E_π[A] = 0"
    if "uniform" in case:
        return "with log π constant the covariance must vanish: are the means weighted by π?"
    return "weight every expectation by π(a) (not 1/V), and multiply by the step size η"


def check_npg_entropy_change(fn) -> Feedback:
    """Run ``fn(logits, adv, lr)`` on the cases; report the first failure, expected vs got, and a hint."""
    lines = []
    for case, z, a, lr in _cases():
        z_in, a_in = z.clone(), a.clone()
        try:
            got = fn(z_in, a_in, lr)
        except NotImplementedError:
            return Feedback("natural-PG entropy change", False,
                            ["not attempted yet (the stub raises NotImplementedError)"])
        except Exception as err:  # noqa: BLE001 -- any student error becomes a message, not a traceback
            return Feedback("natural-PG entropy change", False, [f"case '{case}': raised {type(err).__name__}: {err}"])
        want = float(solution_npg_entropy_change(z, a, lr))
        try:
            got_f = float(torch.as_tensor(got))
        except (TypeError, ValueError, RuntimeError):
            return Feedback("natural-PG entropy change", False,
                            [f"case '{case}': expected one number (a scalar), got {type(got).__name__} {got!r:.60}"])
        if not (torch.equal(z_in, z) and torch.equal(a_in, a)):
            return Feedback("natural-PG entropy change", False,
                            [f"case '{case}': your function modified its inputs"])
        if not math.isclose(got_f, want, rel_tol=1e-6, abs_tol=1e-12):
            return Feedback("natural-PG entropy change", False,
                            [f"case '{case}': expected {want:.6g}, got {got_f:.6g}",
                             f"hint: {_hint(got_f, want, case, z, a, lr)}"])
        lines.append(f"{case}: {want:+.4g} ✓")
    return Feedback("natural-PG entropy change", True, lines)


def show_solution() -> None:
    """Print the reference solution (only when the student asks for it)."""
    print(inspect.getsource(solution_npg_entropy_change))
