"""Sampled KL estimators between the policy and a reference, per token.

Introduced in ``notebooks/08_kl_and_divergences.ipynb``; used by recipes with a KL term.

With x = log π(y) − log π_ref(y) for a token y sampled from π (Schulman, "Approximating KL
Divergence", 2020):

=======  ========================  =====================================================
kind     value                     under y ~ π
=======  ========================  =====================================================
``k1``   x                         unbiased for KL(π‖π_ref), high variance, can be < 0
``k2``   x² / 2                    biased, but ∇k2 = x ∇log π is KL's on-policy gradient
``k3``   e^(−x) − 1 + x            unbiased for KL(π‖π_ref), ≥ 0, lower variance near π_ref
``abs``  |x|                       biased, ≥ 0
=======  ========================  =====================================================

k3's lower variance is local: far from π_ref the e^(−x) term can make it noisier than k1
(``tests/test_kl_divergences.py`` shows both cases by exact enumeration).
"""

from __future__ import annotations

import torch
from torch import Tensor

from forklab import _checks

__all__ = ["kl_estimate", "KINDS"]

KINDS = ("k1", "k2", "k3", "abs")


def _base(x: Tensor, kind: str) -> Tensor:
    if kind == "k1":
        return x
    if kind == "k2":
        return 0.5 * x * x
    if kind == "k3":
        return torch.expm1(-x) + x  # e^(−x) − 1 + x without cancellation near x = 0
    return x.abs()


def kl_estimate(logp: Tensor, ref_logp: Tensor, kind: str = "k3", straight_through: bool = False,
                mask: Tensor | None = None) -> Tensor:
    """Per-token KL(π‖π_ref) estimate from sampled-token log-probs.

    .. math:: x = \\log\\pi(y) - \\log\\pi_{ref}(y), \\quad
              k_1 = x,\\; k_2 = \\tfrac12 x^2,\\; k_3 = e^{-x} - 1 + x,\\; \\mathrm{abs} = |x|

    ``straight_through=True`` returns the chosen estimator's *value* with k2's *gradient*:
    ``k2 − sg(k2) + sg(base)``, so ∇ = x·∇log π, the unbiased on-policy gradient of KL(π‖π_ref).

    ============  ===========================================
    argument      shape
    ============  ===========================================
    logp          ``[B, T]`` float (any shape), differentiable
    ref_logp      same shape as ``logp``
    mask          optional, same shape, bool
    returns       same shape; aggregation is the caller's
    ============  ===========================================

    Padding (docs/reliability.md): with ``mask`` given, values off it are ignored (NaN and ±inf
    included) and the result and its gradient are exactly 0 there — without this, a −inf log-prob in
    the padding makes ``expm1(inf)`` and a NaN gradient even after masked aggregation. Without a
    mask every value counts: NaN or ±inf raises ``ValueError``.

    Names: verl ``kl_penalty(logprob, ref_logprob, name)`` with ``kl``/``k1``, ``mse``/``k2``,
    ``low_var_kl``/``k3``, ``abs``, and a ``+`` suffix for straight-through (broken before verl PR
    #6058); verl clamps k3 (−x to [−20, 20], result to [−10, 10]), this function does not. TRL
    uses unclamped k3 with ``beta`` (default 0.0); OpenRLHF defaults to k1. Schulman (2020),
    "Approximating KL Divergence"; GRPO (arXiv 2402.03300) uses k3.
    """
    _checks.choice("kind", kind, set(KINDS))
    if mask is None:
        logp = _checks.floating("logp", logp)
        ref_logp = _checks.floating("ref_logp", ref_logp)
        _checks.same_shape("logp", logp, "ref_logp", ref_logp)
    else:
        mask = _checks.bool_mask("mask", mask)
        logp = _checks.masked("logp", logp, mask)
        ref_logp = _checks.masked("ref_logp", ref_logp, mask)
    x = logp - ref_logp
    value = _base(x, kind)
    if not straight_through:
        return value
    k2 = _base(x, "k2")
    return k2 - k2.detach() + value.detach()
