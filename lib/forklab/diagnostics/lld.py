"""Lazy Likelihood Displacement (LLD): how much an update moves the log-likelihood of each response.

Introduced in ``notebooks/07_token_hidden_reward.ipynb``.

Paper: "On GRPO Collapse in Search-R1: The Lazy Likelihood-Displacement Death Spiral" (arXiv
2512.04220); the mechanism (negative gradients on tokens that resemble correct ones) is NTHR's, "On
the Effect of Negative Gradient in Group Relative Deep Reinforcement Optimization" (arXiv 2505.18830).
For a response τ with model-generated tokens y (tool outputs excluded through ``mask``)

.. math::
    \\ell(\\tau;\\theta) = \\sum_{t} \\log\\pi_\\theta(y_t \\mid \\cdot), \\qquad
    \\Delta(\\tau) = \\ell(\\tau;\\theta_{new}) - \\ell(\\tau;\\theta_{old})

and a correct response is *lazily displaced* when Δ(τ) ≤ ε (its likelihood barely rises, or falls)
although its advantage is positive. Confidence MED: the measure is stated by a secondary source
(a topic summary of the paper) and the abstract; the paper's full text was not read. Not in verl/TRL
(both log per-token log-ratios, not this per-response change).
"""

from __future__ import annotations

import torch
from torch import Tensor

from forklab import _checks

__all__ = ["likelihood_displacement", "displacement_summary"]


def likelihood_displacement(old_logp: Tensor, new_logp: Tensor, mask: Tensor) -> Tensor:
    """Δ(τ) = Σ_t [log π_new(y_t) − log π_old(y_t)] over the mask, per response (MED, arXiv 2512.04220).

    ==========  ============  =====================================================
    argument    shape         meaning
    ==========  ============  =====================================================
    old_logp    ``[B, T]``    log-probs of the sampled tokens before the update(s)
    new_logp    ``[B, T]``    the same tokens after
    mask        ``[B, T]``    bool, the model-generated tokens that count
    returns     ``[B]``       float64, Δ(τ) of each response (0 for an empty one)
    ==========  ============  =====================================================

    Off-mask values are ignored (even NaN). Not in verl/TRL. Notebook ``07_token_hidden_reward``.
    """
    mask = _checks.bool_mask("mask", mask)
    if mask.dim() != 2:
        raise ValueError(f"`mask` must have shape [B, T], got {list(mask.shape)}")
    old = _checks.masked("old_logp", _checks.as_tensor("old_logp", old_logp), mask).double()
    new = _checks.masked("new_logp", _checks.as_tensor("new_logp", new_logp), mask).double()
    return torch.where(mask, new - old, torch.zeros((), dtype=torch.float64)).sum(1)


def displacement_summary(delta: Tensor, correct: Tensor, group: Tensor, eps: float = 0.0) -> dict[str, float]:
    """Statistics of Δ over the correct responses of *mixed* groups (those that hold a wrong one too).

    ``delta [B]`` from :func:`likelihood_displacement`, ``correct [B]`` bool, ``group [B]`` prompt ids;
    ``eps``: the LLD threshold (Δ ≤ ε counts as displaced; 0 = the likelihood did not rise).
    Returns ``{"n", "mean_delta", "share_displaced"}`` (NaN statistics when no mixed group exists);
    only mixed groups are counted because GRPO gives an all-correct group zero advantage.
    """
    delta = _checks.floating("delta", delta).double()
    n = delta.shape[0] if delta.dim() == 1 else -1
    if n < 0:
        raise ValueError(f"`delta` must have shape [B], got {list(delta.shape)}")
    correct = _checks.bool_mask("correct", correct)
    if correct.shape != (n,):
        raise ValueError(f"`correct` must have shape [{n}], got {list(correct.shape)}")
    group = _checks.group_ids("group", group, n)
    eps = _checks.finite("eps", eps)
    mixed = torch.zeros(n, dtype=torch.bool)
    for gid in torch.unique(group):
        rows = group == gid
        mixed[rows] = bool(correct[rows].any() and (~correct[rows]).any())
    chosen = delta[mixed & correct]
    if chosen.numel() == 0:
        return {"n": 0, "mean_delta": float("nan"), "share_displaced": float("nan")}
    return {"n": int(chosen.numel()), "mean_delta": float(chosen.mean()),
            "share_displaced": float((chosen <= eps).double().mean())}
