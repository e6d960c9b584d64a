"""Exercise checker of ``notebooks/06_forking_tokens.ipynb``: ARES's window entropy of one response.

The student writes ``window_entropy(entropy, window)`` for one response (``entropy [T]`` float, an
integer ``window`` ≥ 1) returning the forward window mean of every token (ARES, arXiv 2510.08457):

    H̄_t = (1 / |W_t|) Σ_{τ ∈ W_t} H_τ,   W_t = {t, t+1, …, min(t + w, T) − 1}

so near the end of the response the window is cut short and the mean is over the tokens it still
covers. :func:`check_window_entropy` compares it with :func:`solution_window_entropy` (a plain loop);
``tests/test_exercises_nb06.py`` checks that reference against the library's batched
:func:`forklab.diagnostics.entropy.window_entropy`. :func:`show_solution` prints the reference source
(never called by Run All).
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor

from forklab.exercises import Feedback

__all__ = ["solution_window_entropy", "check_window_entropy", "show_solution"]

NAME = "ARES window entropy"


def solution_window_entropy(entropy: Tensor, window: int) -> Tensor:
    """Reference: the forward window mean, cut short at the end, ``[T] -> [T]`` float64."""
    h = entropy.double()
    length = h.shape[0]
    return torch.stack([h[t:min(t + window, length)].mean() for t in range(length)])


def _cases() -> list[tuple[str, Tensor, int]]:
    gen = torch.Generator().manual_seed(6)
    spiky = torch.zeros(9, dtype=torch.float64)
    spiky[4] = 2.7
    return [
        ("window 1 (each token alone)", torch.tensor([0.1, 2.0, 0.0, 0.5], dtype=torch.float64), 1),
        ("one forking token at t = 4 in a run of certain tokens, w = 3", spiky, 3),
        ("window longer than the response, w = 10 > T = 5", torch.rand(5, generator=gen, dtype=torch.float64), 10),
        ("random entropies, T = 12, w = 4", 2 * torch.rand(12, generator=gen, dtype=torch.float64) ** 2, 4),
    ]


def _hint(got: Tensor, h: Tensor, window: int) -> str:
    length = h.shape[0]
    trailing = torch.stack([h[max(0, t - window + 1):t + 1].mean() for t in range(length)])
    padded = torch.stack([h[t:t + window].sum() / window for t in range(length)])
    if got.shape == trailing.shape and torch.allclose(got, trailing):
        return "that is the trailing window (t−w+1 … t); ARES's window looks forward: t … t+w−1"
    if got.shape == padded.shape and torch.allclose(got, padded):
        return "near the end, divide by the number of tokens the window still covers, not by w"
    if got.shape[0] != length:
        return "return one value per token: the output has the same length T as the input"
    return "H̄_t is the mean of H over t, t+1, …, min(t+w, T)−1"


def check_window_entropy(fn) -> Feedback:
    """Run ``fn(entropy, window)`` on the cases; report the first failure, expected vs got, and a hint."""
    lines = []
    for case, h, window in _cases():
        h_in = h.clone()
        try:
            got = fn(h_in, window)
        except NotImplementedError:
            return Feedback(NAME, False, ["not attempted yet (the stub raises NotImplementedError)"])
        except Exception as err:  # noqa: BLE001 -- any student error becomes a message, not a traceback
            return Feedback(NAME, False, [f"case '{case}': raised {type(err).__name__}: {err}"])
        if not torch.equal(h_in, h):
            return Feedback(NAME, False, [f"case '{case}': your function modified its input"])
        want = solution_window_entropy(h, window)
        try:
            got_t = torch.as_tensor(got, dtype=torch.float64).reshape(-1)
        except (TypeError, ValueError, RuntimeError):
            return Feedback(NAME, False, [f"case '{case}': expected a tensor of {len(h)} numbers, got {got!r:.60}"])
        if got_t.shape != want.shape or not torch.allclose(got_t, want, rtol=1e-9, atol=1e-12):
            show = lambda x: "[" + ", ".join(f"{v:.3f}" for v in x.tolist()[:6]) + (", …]" if len(x) > 6 else "]")  # noqa: E731
            return Feedback(NAME, False, [f"case '{case}': expected {show(want)}, got {show(got_t)}",
                                          f"hint: {_hint(got_t, h, window)}"])
        lines.append(f"{case}: ✓")
    return Feedback(NAME, True, lines)


def show_solution() -> None:
    """Print the reference solution (only when the student asks for it)."""
    print(inspect.getsource(solution_window_entropy))
