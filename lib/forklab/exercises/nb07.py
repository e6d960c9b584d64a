"""Exercise checker of ``notebooks/07_token_hidden_reward.ipynb``: token influence in factorised form.

The student writes ``influence(h, g, positive)`` for one group's valid tokens (``h [N, d]`` the last
hidden states, ``g [N, V]`` the prediction errors e_y − π, ``positive [N]`` bool: the token belongs to
a correct response) and returns ``s [N]``, the first-order influence of each token's update on the
log-likelihood of the correct responses (NTHR, arXiv 2505.18830; THR, arXiv 2510.03669):

    s_t = Σ_{i∈P} ⟨g_t, g_i⟩ ⟨h_t, h_i⟩ = g_tᵀ M⁺ h_t,   M⁺ = Σ_{i∈P} g_i h_iᵀ   (M⁺ built once: O(N·V·d))

:func:`check_influence` compares it with :func:`solution_influence` on a few cases;
``tests/test_exercises_nb07.py`` checks that reference against the pairwise definition written as
loops. :func:`show_solution` prints the reference source (never called by Run All).
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor

from forklab.exercises import Feedback

__all__ = ["solution_influence", "check_influence", "show_solution"]

TITLE = "factorised token influence"


def solution_influence(h: Tensor, g: Tensor, positive: Tensor) -> Tensor:
    """Reference: M⁺ = g[P]ᵀ h[P] ([V, d]); s_t = g_tᵀ M⁺ h_t for every row, ``[N]`` float64."""
    h, g = h.double(), g.double()
    m_plus = g[positive].T @ h[positive]
    return ((g @ m_plus) * h).sum(-1)


def _case(seed: int, n: int, v: int, d: int, share: float) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=gen, dtype=torch.float64)
    probs = torch.softmax(torch.randn(n, v, generator=gen, dtype=torch.float64), -1)
    y = torch.randint(0, v, (n,), generator=gen)
    g = torch.nn.functional.one_hot(y, v).double() - probs
    positive = torch.rand(n, generator=gen) < share
    positive[0] = True
    return h, g, positive


def _cases():
    return [("one correct token, one wrong", *_case(0, 2, 3, 2, 0.0)),
            ("12 tokens, half correct, V = 5, d = 4", *_case(1, 12, 5, 4, 0.5)),
            ("30 tokens, few correct, V = 9, d = 6", *_case(2, 30, 9, 6, 0.2))]


def _hint(got: Tensor, h: Tensor, g: Tensor, positive: Tensor) -> str:
    if torch.allclose(got, solution_influence(h, g, torch.ones_like(positive)), rtol=1e-6):
        return "M⁺ sums over the tokens of correct responses only (g[positive], h[positive])"
    if torch.allclose(got, (h @ h[positive].T).sum(-1), rtol=1e-6):
        return "the hidden-state similarity alone is missing α = ⟨g_t, g_i⟩, the prediction-error similarity"
    if torch.allclose(got, -solution_influence(h, g, positive), rtol=1e-6):
        return "the sign is flipped: g = e_y − π, and a step on a correct token raises its own likelihood (s > 0)"
    return "build M⁺ = g[P]ᵀ @ h[P] (shape [V, d]) once, then s = ((g @ M⁺) * h).sum(-1)"


def check_influence(fn) -> Feedback:
    """Run ``fn(h, g, positive)`` on the cases; report the first failure, expected vs got, and a hint."""
    lines = []
    for case, h, g, positive in _cases():
        inputs = (h.clone(), g.clone(), positive.clone())
        try:
            got = fn(*inputs)
        except NotImplementedError:
            return Feedback(TITLE, False, ["not attempted yet (the stub raises NotImplementedError)"])
        except Exception as err:  # noqa: BLE001 -- any student error becomes a message, not a traceback
            return Feedback(TITLE, False, [f"case '{case}': raised {type(err).__name__}: {err}"])
        want = solution_influence(h, g, positive)
        try:
            got = torch.as_tensor(got).double()
        except (TypeError, ValueError, RuntimeError):
            return Feedback(TITLE, False, [f"case '{case}': expected a tensor, got {type(got).__name__}"])
        if not all(torch.equal(a, b) for a, b in zip(inputs, (h, g, positive), strict=True)):
            return Feedback(TITLE, False, [f"case '{case}': your function modified its inputs"])
        if got.shape != want.shape:
            return Feedback(TITLE, False, [f"case '{case}': expected shape {list(want.shape)} (one score per "
                                           f"token), got {list(got.shape)}"])
        if not torch.allclose(got, want, rtol=1e-6, atol=1e-10):
            worst = int((got - want).abs().argmax())
            return Feedback(TITLE, False, [f"case '{case}': token {worst}: expected {float(want[worst]):.6g}, "
                                           f"got {float(got[worst]):.6g}", f"hint: {_hint(got, h, g, positive)}"])
        lines.append(f"{case}: ✓")
    return Feedback(TITLE, True, lines)


def show_solution() -> None:
    """Print the reference solution (only when the student asks for it)."""
    print(inspect.getsource(solution_influence))
