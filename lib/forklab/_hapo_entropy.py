"""HAPO's token-entropy normalisation ĥ ∈ [−1, 1] and the batch statistics behind it (arXiv 2509.16591).

Shared by HAPO's clipping and advantage redistribution (:mod:`forklab.surrogates`, which re-exports both
functions) and its adaptive-temperature sampler (:mod:`forklab.lm.sampling`). Introduced in
``notebooks/03_ratios_and_clipping.ipynb``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from forklab import _checks
from forklab._objective_inputs import _masked

__all__ = ["hapo_entropy_stats", "hapo_normalized_entropy"]


def hapo_entropy_stats(entropy: Tensor, mask: Tensor, pivot: float = 0.8) -> dict[str, float]:
    """The statistics behind HAPO's ĥ: pivot m, spread σ and the two side scales, over valid tokens.

    m = Q_pivot(log H), σ = RMS(log H − m), ``scale_pos`` = max h and ``scale_neg`` = |min h| of
    h = (log H − m)/σ (1.0 for an empty side). Used by :func:`hapo_normalized_entropy` and, one step
    late, by the adaptive-temperature sampler (``forklab.lm.sampling.hapo_temperature_fn``).
    """
    entropy = _checks.floating("entropy", entropy)
    mask = _checks.bool_mask("mask", mask)
    _checks.same_shape("entropy", entropy, "mask", mask)
    if not mask.any():
        raise ValueError("`mask` is empty")
    if not 0 < pivot < 1:
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
    h = (entropy.double().clamp(min=1e-8).log() - stats["m"]) / stats["sigma"]
    h_hat = torch.where(h > 0, h / stats["scale_pos"], h / stats["scale_neg"])
    return _masked(h_hat, _checks.bool_mask("mask", mask))
