"""HAPO's token-entropy normalisation ĥ ∈ [−1, 1] and the batch statistics behind it (arXiv 2509.16591).

Shared by HAPO's clipping and its advantage redistribution (:func:`hapo_redistribute`; :mod:`forklab.surrogates`
re-exports all three functions) and its adaptive-temperature sampler (:mod:`forklab.lm.sampling`). Introduced in
``notebooks/03_ratios_and_clipping.ipynb``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from forklab import _checks
from forklab._objective_inputs import _eps, _log_ratio, _masked, _prepare

__all__ = ["hapo_entropy_stats", "hapo_normalized_entropy", "hapo_redistribute"]


def hapo_entropy_stats(entropy: Tensor, mask: Tensor, pivot: float = 0.8) -> dict[str, float]:
    """The statistics behind HAPO's ĥ: pivot m, spread σ and the two side scales, over valid tokens.

    m = Q_pivot(log H), σ = RMS(log H − m), ``scale_pos`` = max h and ``scale_neg`` = |min h| of
    h = (log H − m)/σ (1.0 for an empty side). Used by :func:`hapo_normalized_entropy` and, one step
    late, by the adaptive-temperature sampler (``forklab.lm.sampling.hapo_temperature_fn``).
    """
    mask = _checks.bool_mask("mask", mask)
    _checks.same_shape("entropy", _checks.as_tensor("entropy", entropy), "mask", mask)
    entropy = _checks.masked("entropy", entropy, mask)
    if not mask.any():
        raise ValueError("`mask` is empty")
    pivot = _checks.finite("pivot", pivot, 0.0, 1.0, low_open=True)
    if pivot == 1.0:
        raise ValueError(f"`pivot` must lie in (0, 1), got {pivot}")
    log_h = entropy.double().clamp(min=1e-8).log()[mask]  # quantile needs fp32/64; stats in fp64
    m = torch.quantile(log_h, pivot)
    sigma = ((log_h - m) ** 2).mean().sqrt().clamp(min=1e-12)
    h = (log_h - m) / sigma
    pos = float(h[h > 0].max()) if (h > 0).any() else 1.0
    neg = float(-h[h < 0].min()) if (h < 0).any() else 1.0
    return {"m": float(m), "sigma": float(sigma), "scale_pos": pos, "scale_neg": neg}


def hapo_normalized_entropy(entropy: Tensor, mask: Tensor, pivot: float = 0.8) -> Tensor:
    """HAPO's token-entropy normalisation ĥ ∈ [−1, 1] (``compute_entropy_h``; docs/formulas.md, HIGH as implemented).

    .. math::
        \\ell_t = \\log H_t,\\; m = Q_{pivot}(\\ell),\\; \\sigma = \\sqrt{\\mathrm{mean}_t(\\ell_t - m)^2},\\;
        h_t = (\\ell_t - m)/\\sigma,\\;
        \\hat h_t = h_t / \\max_{h>0} h \\text{ if } h_t > 0 \\text{ else } h_t / |\\min_{h<0} h|

    Statistics (:func:`hapo_entropy_stats`) are over the valid tokens of the batch; entropies are
    clamped at 1e-8 before the log. Two notes on the reference code (HAPO repo, ``compute_entropy_h``):
    it scales the negative side by 1/min(h<0), a negative number, which makes every ĥ ≥ 0 and
    disables the ε_low branch of :func:`hapo_clip` — we follow the documented intent, 1/|min|; and one
    reading of it divides by the masked std around the mean rather than the RMS around the pivot used
    here (docs/formulas.md). ``entropy``, ``mask``: ``[B, T]``; returns ``[B, T]``, 0 off the mask.
    """
    stats = hapo_entropy_stats(entropy, mask, pivot)
    entropy = _checks.masked("entropy", entropy, _checks.bool_mask("mask", mask))
    h = (entropy.double().clamp(min=1e-8).log() - stats["m"]) / stats["sigma"]
    h_hat = torch.where(h > 0, h / stats["scale_pos"], h / stats["scale_neg"])
    return _masked(h_hat, _checks.bool_mask("mask", mask))


def hapo_redistribute(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, entropy: Tensor, beta: float = 1.0,
                      eps_low: float = 0.2, eps_high: float = 0.2, pivot: float = 0.8) -> Tensor:
    """HAPO's Differential Advantage Redistribution (arXiv 2509.16591; HIGH as implemented).

    Formula reference: docs/formulas.md, Notebook 03.

    .. math:: A'_t = A_t (1 + \\beta \\hat h_t), \\qquad N = (1 - \\epsilon_{low}/2,\\; 1 + \\epsilon_{high}/2)

    High-entropy tokens (ĥ > 0) use A' when the ratio is *outside* the neutral band N, else A;
    low-entropy tokens (ĥ ≤ 0) use A' when the ratio is *inside* N, else A. ĥ from
    :func:`hapo_normalized_entropy`. Returns the per-token advantage ``[B, T]`` (detached, 0 off mask).
    """
    logp, old_logp, adv, mask = _prepare(logp, old_logp, adv, mask)
    eps_low, eps_high = _eps("eps_low", eps_low, 1.0), _eps("eps_high", eps_high)
    beta = _checks.finite("beta", beta, 0.0, 1e6)
    h_hat = hapo_normalized_entropy(entropy, mask, pivot).to(logp.dtype)
    ratio = _log_ratio(logp, old_logp, mask).exp().detach()
    inside = (ratio > 1 - eps_low / 2) & (ratio < 1 + eps_high / 2)
    use_new = torch.where(h_hat > 0, ~inside, inside)
    a = adv.detach()
    return _masked(torch.where(use_new, a * (1 + beta * h_hat), a), mask)
