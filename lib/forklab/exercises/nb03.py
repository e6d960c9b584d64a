"""Checkers for ``notebooks/03_ratios_and_clipping.ipynb``.

Exercise 1, "clip-higher PPO in five lines": write ``clip_higher(logp, old_logp, adv, mask, eps_low,
eps_high)`` returning DAPO's per-token loss ``[B, T]`` (to minimise, 0 off the mask)::

    ℓ_t = −min(r_t A, clip(r_t, 1 − ε_low, 1 + ε_high) A),   r_t = exp(logp_t − old_logp_t)

:func:`check_clip_higher` compares values *and* gradients (autograd) with an independent reference on
cases chosen to catch the usual mistakes. ``show_solution("clip_higher")`` prints the reference.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor

from forklab.exercises import Feedback

__all__ = ["check_clip_higher", "show_solution"]


def _solution_clip_higher(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, eps_low: float = 0.2,
                          eps_high: float = 0.28) -> Tensor:
    ratio = torch.exp(logp - old_logp.detach())
    a = adv[:, None] if adv.dim() == 1 else adv
    unclipped = ratio * a
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high) * a
    return torch.where(mask, -torch.minimum(unclipped, clipped), torch.zeros((), dtype=logp.dtype))


def _cases():
    """(description, logp, old_logp, adv, mask, eps_low, eps_high): each aimed at one mistake."""
    f64 = torch.float64
    old = torch.log(torch.tensor([[0.5, 0.2, 0.1, 0.4]], dtype=f64))
    ratios = torch.tensor([[1.25, 1.35, 0.7, 1.0]], dtype=f64)
    yield ("A > 0, ratio 1.25 inside 1 + ε_high = 1.28 but outside 1 + ε_low (a symmetric clip kills it), "
           "ratio 1.35 beyond it (gradient must be 0)",
           old + ratios.log(), old, torch.tensor([1.0], dtype=f64), torch.ones(1, 4, dtype=torch.bool), 0.2, 0.28)
    yield ("A < 0: ratio 0.7 below 1 − ε_low (gradient 0), ratio 1.35 unclipped (A < 0 is not capped above)",
           old + ratios.log(), old, torch.tensor([-1.0], dtype=f64), torch.ones(1, 4, dtype=torch.bool), 0.2, 0.28)
    yield ("padding: tokens where mask is False must get loss exactly 0",
           old + ratios.log(), old, torch.tensor([2.0], dtype=f64), torch.tensor([[True, True, False, False]]),
           0.2, 0.28)
    g = torch.Generator().manual_seed(3)
    old = -torch.rand(5, 7, generator=g, dtype=f64) * 3
    logp = old + 0.4 * torch.randn(5, 7, generator=g, dtype=f64)
    yield ("random batch, per-sequence advantages [B] and ε = (0.1, 0.5)",
           logp, old, torch.randn(5, generator=g, dtype=f64), torch.rand(5, 7, generator=g) > 0.3, 0.1, 0.5)
    yield ("random batch, per-token advantages [B, T]",
           logp, old, torch.randn(5, 7, generator=g, dtype=f64), torch.rand(5, 7, generator=g) > 0.3, 0.2, 0.28)


def _evaluate(fn, logp, old, adv, mask, eps_low, eps_high):
    logp = logp.clone().requires_grad_(True)
    loss = fn(logp, old.clone(), adv.clone(), mask.clone(), eps_low, eps_high)
    if not isinstance(loss, Tensor):
        raise TypeError(f"must return a torch.Tensor, got {type(loss).__name__}")
    grad = torch.autograd.grad(loss.sum(), logp, allow_unused=True)[0] if loss.requires_grad else None
    return loss.detach(), torch.zeros_like(logp) if grad is None else grad


def check_clip_higher(fn) -> Feedback:
    """Run ``fn(logp, old_logp, adv, mask, eps_low, eps_high)`` on five cases; values and gradients must match."""
    name = "clip-higher PPO in five lines"
    for i, (what, logp, old, adv, mask, lo, hi) in enumerate(_cases(), start=1):
        try:
            got, got_grad = _evaluate(fn, logp, old, adv, mask, lo, hi)
        except NotImplementedError:
            return Feedback(name, False, ["not attempted yet: replace `raise NotImplementedError` with your code."])
        except Exception as err:  # the student's code: report any failure as feedback, not a traceback
            return Feedback(name, False, [f"case {i} ({what}) raised {type(err).__name__}: {err}"])
        want, want_grad = _evaluate(_solution_clip_higher, logp, old, adv, mask, lo, hi)
        if got.shape != want.shape:
            return Feedback(name, False, [f"case {i}: shape {list(got.shape)}, expected {list(want.shape)} "
                                          "(one loss per token, [B, T]).",
                                          "hint: broadcast a [B] advantage with adv[:, None]."])
        if not torch.allclose(got, want, atol=1e-9):
            bad = (got - want).abs().argmax()
            hint = ("hint: tokens off the mask must be exactly 0 (torch.where(mask, loss, 0))."
                    if (got[~mask] != 0).any() else
                    "hint: the loss is −min(r·A, clip(r, 1 − ε_low, 1 + ε_high)·A): mind the minus sign, min (not "
                    "max) and the two different ε.")
            return Feedback(name, False, [f"case {i} ({what}): loss values differ; first at flat index {int(bad)}: "
                                          f"expected {want.flatten()[bad]:.4f}, got {got.flatten()[bad]:.4f}.", hint])
        if not torch.allclose(got_grad, want_grad, atol=1e-9):
            bad = (got_grad - want_grad).abs().argmax()
            return Feedback(name, False, [
                f"case {i} ({what}): values match but gradients differ; first at flat index {int(bad)}: "
                f"d loss/d logp expected {want_grad.flatten()[bad]:.4f}, got {got_grad.flatten()[bad]:.4f}.",
                "hint: the ratio must carry the gradient of logp (no .detach() on logp), and old_logp must not."])
    return Feedback(name, True, ["values and gradients match on 5 cases (clip bounds, A < 0, padding, random)."])


def show_solution(exercise: str = "clip_higher") -> None:
    """Print the reference solution of an exercise (only when the student asks for it)."""
    solutions = {"clip_higher": _solution_clip_higher}
    if exercise not in solutions:
        raise ValueError(f"`exercise` must be one of {sorted(solutions)}, got {exercise!r}")
    print(inspect.getsource(solutions[exercise]))
