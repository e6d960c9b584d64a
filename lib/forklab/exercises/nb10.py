"""Checker for the code exercise of ``notebooks/10_token_importance_tip.ipynb``.

Exercise ``soft_or_keep``: TIP's soft-OR selection. Min-max normalise the student entropy and the
teacher–student divergence over the valid tokens (h, d in [0, 1]; an axis that is constant there maps to 0),
score u = h + d − h·d, and keep the k = max(1, ⌊ρ·N⌋) valid tokens with the highest u (N = number of valid
tokens in the batch). The student's function takes ``(entropy [B, T], divergence [B, T], mask [B, T] bool,
ratio: float)`` and returns a bool ``[B, T]`` mask inside ``mask``. Values off the mask are padding (they may
be NaN) and must be ignored.

The reference below works on Python lists one token at a time (independent of
:mod:`forklab.diagnostics.tip`). The cases have no ties in u, so the answer is unique. ``show_solution()``
prints a reference solution; nothing here prints one unless asked.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from forklab.exercises import Feedback, call_student

__all__ = ["check_soft_or_keep", "show_solution"]

_NAN = float("nan")
_CASES = [
    ("one row, ρ = 0.5", [[0.9, 0.1, 0.5, 0.05]], [[0.2, 3.0, 0.1, 0.4]], [[1, 1, 1, 1]], 0.5),
    ("two rows with padding (NaN off the mask), ρ = 0.4",
     [[1.2, 0.02, 0.3, _NAN], [0.6, 0.01, _NAN, _NAN]], [[0.05, 2.5, 0.3, _NAN], [0.9, 0.2, _NAN, _NAN]],
     [[1, 1, 1, 0], [1, 1, 0, 0]], 0.4),
    ("padding holds huge values that must not set the min-max range",
     [[0.3, 0.1, 50.0], [0.2, 0.7, 0.0]], [[0.1, 0.8, 90.0], [0.5, 0.05, -7.0]], [[1, 1, 0], [1, 1, 0]], 0.5),
    ("constant entropy: that axis carries no information (maps to 0)",
     [[0.5, 0.5, 0.5, 0.5, 0.5]], [[0.1, 0.9, 0.4, 0.3, 0.7]], [[1, 1, 1, 1, 1]], 0.4),
    ("axes above 1 nat: without min-max, h + d − h·d is no OR", [[2.0, 0.1, 1.5]], [[3.0, 0.2, 0.1]],
     [[1, 1, 1]], 0.34),
    ("tiny ρ still keeps one token", [[0.2, 0.8, 0.4]], [[0.3, 0.1, 0.6]], [[1, 1, 1]], 0.1),
    ("a sure-and-wrong token (low H, high D) beats a middling one",
     [[0.01, 0.5, 0.6, 0.02, 1.0]], [[4.0, 0.5, 0.45, 0.01, 0.02]], [[1, 1, 1, 1, 1]], 0.4),
]


def _reference(entropy, divergence, mask, ratio) -> list[list[bool]]:
    valid = [(b, t) for b, row in enumerate(mask) for t, m in enumerate(row) if m]

    def normalised(x):
        values = [x[b][t] for b, t in valid]
        lo, hi = min(values), max(values)
        return {(b, t): (x[b][t] - lo) / (hi - lo) if hi > lo else 0.0 for b, t in valid}

    h, d = normalised(entropy), normalised(divergence)
    u = {p: h[p] + d[p] - h[p] * d[p] for p in valid}
    k = max(1, math.floor(ratio * len(valid) + 1e-9))
    kept = set(sorted(valid, key=lambda p: -u[p])[:k])
    return [[(b, t) in kept for t in range(len(row))] for b, row in enumerate(mask)]


def _hint(label: str, got: torch.Tensor, want: torch.Tensor, mask: torch.Tensor, entropy, divergence,
          ratio: float) -> str:
    n_valid = int(mask.sum())
    k = max(1, math.floor(ratio * n_valid + 1e-9))
    if (got & ~mask).any():
        return "you kept padding positions: select only where `mask` is True"
    if int(got.sum()) != k:
        return (f"keep exactly k = max(1, ⌊ρ·N⌋) = {k} tokens (N = {n_valid} valid tokens of the whole batch), "
                f"you kept {int(got.sum())}")
    h, d = entropy.double(), divergence.double()
    raw = h + d - h * d
    alt = torch.where(mask, raw, torch.tensor(-math.inf, dtype=torch.float64))
    if torch.equal(got, _top_mask(alt, k)):
        return "normalise each axis to [0, 1] with (x − min)/(max − min) over the valid tokens before combining"
    if "padding holds" in label:
        return "take min and max over the valid tokens only (x[mask]), not over the padding"
    if "constant" in label:
        return "when max = min over the valid tokens, that normalised axis is 0 (avoid 0/0 = NaN)"
    return "u = h + d − h·d (a soft OR: high if either axis is high), then the top k of u"


def _top_mask(score: torch.Tensor, k: int) -> torch.Tensor:
    flat = score.flatten()
    out = torch.zeros(flat.numel(), dtype=torch.bool)
    out[flat.argsort(descending=True, stable=True)[:k]] = True
    return out.reshape(score.shape)


def check_soft_or_keep(student: Callable) -> Feedback:
    """Check ``student(entropy, divergence, mask, ratio) -> bool [B, T]`` against the soft-OR top-k rule."""
    name = "soft-OR selection (TIP)"
    if not callable(student):
        return Feedback(name, False, [f"expected a function, got {type(student).__name__}"])
    lines = []
    for label, h_rows, d_rows, m_rows, ratio in _CASES:
        entropy = torch.tensor(h_rows, dtype=torch.float64)
        divergence = torch.tensor(d_rows, dtype=torch.float64)
        mask = torch.tensor(m_rows, dtype=torch.bool)
        want = torch.tensor(_reference(h_rows, d_rows, m_rows, ratio))
        args = (entropy.clone(), divergence.clone(), mask.clone())
        got, failed = call_student(name, label, student, *args, ratio)
        if failed is not None:  # a Feedback is falsy when it fails
            return failed
        same = all(torch.equal(a, b) or (a.is_floating_point() and torch.equal(a.nan_to_num(), b.nan_to_num()))
                   for a, b in zip(args, (entropy, divergence, mask), strict=True))
        if not same:
            return Feedback(name, False, [f"case '{label}': your function modified its inputs",
                                          "hint: build new tensors (no in-place ops such as -=, .clamp_())"])
        got = torch.as_tensor(got)
        if got.shape != want.shape or got.dtype != torch.bool:
            return Feedback(name, False, [f"case '{label}': expected a bool tensor of shape {list(want.shape)}, "
                                          f"got {got.dtype} {list(got.shape)}",
                                          "hint: return a mask shaped like `mask` (e.g. a comparison or zeros_like)"])
        if not torch.equal(got, want):
            return Feedback(name, False, [
                f"case '{label}' (ρ = {ratio}): entropy {h_rows}, divergence {d_rows}, mask {m_rows}",
                f"   expected {want.int().tolist()}",
                f"   got      {got.int().tolist()}",
                f"hint: {_hint(label, got, want, mask, entropy, divergence, ratio)}",
            ])
        lines.append(f"case '{label}' ok")
    return Feedback(name, True, lines)


_SOLUTION = '''def soft_or_keep(entropy, divergence, mask, ratio):
    def unit(x):                                   # min-max over the valid tokens; constant axis -> 0
        lo, hi = x[mask].min(), x[mask].max()
        return (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
    h, d = unit(entropy), unit(divergence)
    u = torch.where(mask, h + d - h * d, torch.tensor(-torch.inf, dtype=h.dtype))   # padding never wins
    k = max(1, int(ratio * int(mask.sum()) + 1e-9))
    keep = torch.zeros(mask.numel(), dtype=torch.bool)
    keep[u.flatten().topk(k).indices] = True
    return keep.reshape(mask.shape)'''


def show_solution() -> None:
    """Print the reference solution of the exercise."""
    print(_SOLUTION)
