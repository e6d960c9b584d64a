"""Adaptive clip bounds: DCPO, BAPO and ETR move PPO's trust region per token, per batch or per sample.

Introduced in ``notebooks/03_ratios_and_clipping.ipynb``. Same conventions as
:mod:`forklab.surrogates`: every objective returns a per-token *loss to minimise* ``[B, T]``, exactly 0
where ``mask`` is False, and with ``return_metrics=True`` a ``(loss, metrics)`` pair whose metrics use
TRL's clip names (``clip_ratio/low_mean``, ``clip_ratio/high_mean``, ``clip_ratio/region_mean``,
``ratio/mean``) plus the method's own bounds. Each one is PPO's clipped surrogate
(:func:`forklab.surrogates.ppo_clip`) with bounds that are no longer two constants:

=========  ===============================================  ================================
method     the bounds depend on                             confidence
=========  ===============================================  ================================
DCPO       the token's old probability q (per token)        HIGH (code + README equations)
BAPO       the batch's positive/negative balance (per batch)  MED (paper and code disagree)
ETR        |Â| (per sample) and the group's reward spread   LOW (abstract only)
=========  ===============================================  ================================

HAPO's entropy-dependent per-token bounds are :func:`forklab.surrogates.hapo_clip`.

Shapes: ``logp``, ``old_logp`` ``[B, T]`` float; ``adv`` ``[B]`` or ``[B, T]``; ``mask`` ``[B, T]`` bool.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from forklab import _checks
from forklab import surrogates as sur
from forklab._objective_inputs import _eps, _log_ratio, _mean, _prepare
from forklab._registry import objective

__all__ = ["dcpo_clip_bounds", "dcpo_clip", "bapo_clip_bounds", "bapo_clip", "etr_clip_bounds", "etr_clip"]


def _with_bounds(logp, old_logp, adv, mask, low: Tensor, high: Tensor, dual_clip, extra: dict, return_metrics):
    """PPO clip with ratio bounds [low, high] (tensors or floats), plus the method's own metrics."""
    dtype = logp.dtype
    eps_low = 1 - torch.as_tensor(low, dtype=dtype)
    eps_high = torch.as_tensor(high, dtype=dtype) - 1
    out = sur.ppo_clip(logp, old_logp, adv, mask, eps_low, eps_high, dual_clip=dual_clip,
                       return_metrics=return_metrics)
    if not return_metrics:
        return out
    loss, metrics = out
    metrics.update(extra)
    return loss, metrics


# -------------------------------------------------------------------------------------------- DCPO
def dcpo_clip_bounds(old_prob, eps_low: float = 0.2, eps_high: float = 0.28, max_high: float = 10.0):
    """DCPO's dynamic-adaptive clip (DAC): ratio bounds from the token's old probability q.

    .. math::
        |(r - 1)\\,p| \\le \\epsilon \\text{ with } p = r q \\;\\Rightarrow\\;
        r_{low} = \\tfrac12 + \\tfrac12\\sqrt{\\max(1 - 4\\epsilon_{low}/q,\\,0)},\\quad
        r_{high} = \\min\\big(\\tfrac12 + \\tfrac12\\sqrt{1 + 4\\epsilon_{high}/q},\\; c_{max}\\big)

    The constraint bounds the *probability* change |p − q| instead of the ratio: a confident token
    (q near 1) gets PPO-like bounds, a rare token (q = 0.01) may grow 5×. r_low ≥ 0.5 always.
    ``old_prob`` ``[...]`` in (0, 1]; returns ``(low, high)`` of the same shape. ``max_high`` is the
    code's cap max(c, 10) with c = ``clip_ratio_c`` = 10. Paper: "DCPO: Dynamic Clipping Policy
    Optimization" (Yang, Dou et al., arXiv 2509.02333), code ``get_clip_low_high`` (clip_type
    "dynamic"). Not in verl/TRL (a verl fork). HIGH: README equations and code agree. Notebook 03.
    """
    q = _checks.floating("old_prob", old_prob)
    if ((q <= 0) | (q > 1)).any():
        raise ValueError("`old_prob` must lie in (0, 1]")
    eps_low, eps_high = _eps("eps_low", eps_low), _eps("eps_high", eps_high)
    max_high = _checks.finite("max_high", max_high, 1.0, 1e6, low_open=True)
    low = 0.5 + 0.5 * torch.sqrt((1 - 4 * eps_low / q).clamp(min=0))
    high = (0.5 + 0.5 * torch.sqrt(1 + 4 * eps_high / q)).clamp(max=max_high)
    return low, high


@objective("dcpo", label="DCPO", notebook="03_ratios_and_clipping")
def dcpo_clip(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, eps_low: float = 0.2,
              eps_high: float = 0.28, dual_clip: float | None = 10.0, max_high: float = 10.0,
              return_metrics: bool = False):
    """DCPO's loss: PPO clip with per-token bounds from :func:`dcpo_clip_bounds`, plus dual clip.

    .. math:: q_t = e^{\\log\\pi_{old}(y_t)},\\; [r_{low,t}, r_{high,t}] = \\mathrm{DAC}(q_t),\\;
              \\ell_t = \\max\\big(-A r_t,\\; -A\\,\\mathrm{clip}(r_t, r_{low,t}, r_{high,t})\\big)
              \\;(\\min \\text{ with } -A c \\text{ for } A < 0)

    Defaults are the paper's scripts: ε = (0.2, 0.28), dual clip c = 10. DCPO's other two parts,
    smooth advantage standardisation across steps and "only-token-mean" aggregation, are not here.
    Paper: arXiv 2509.02333 (``compute_policy_loss_dcpo``). Not in verl/TRL. HIGH. Metrics add
    ``dcpo/high_mean`` and ``dcpo/low_mean`` (mean bounds over valid tokens). Notebook 03.
    """
    logp, old_logp, adv, mask = _prepare(logp, old_logp, adv, mask)
    q = torch.where(mask, old_logp.detach(), torch.zeros((), dtype=logp.dtype)).exp()
    low, high = dcpo_clip_bounds(q, eps_low, eps_high, max_high)
    extra = {"dcpo/low_mean": _mean(low, mask), "dcpo/high_mean": _mean(high, mask)} if return_metrics else {}
    return _with_bounds(logp, old_logp, adv, mask, low, high, dual_clip, extra, return_metrics)


# -------------------------------------------------------------------------------------------- BAPO
def _bapo_share(ratio, adv, mask, c_low, c_high, measure, dual_clip):
    pos, neg = mask & (adv > 0), mask & (adv < 0)
    if measure == "gradient":
        # mass of the tokens that still carry a gradient under PPO clip with [c_low, c_high] (+ dual clip)
        keep_neg = ratio >= c_low if dual_clip is None else (ratio >= c_low) & (ratio <= dual_clip)
        e_pos = (ratio * adv)[pos & (ratio <= c_high)].sum()
        e_neg = (ratio * -adv)[neg & keep_neg].sum()
    else:  # the official code's value-based contributions
        e_pos = (ratio.clamp(max=c_high) * adv)[mask & (adv >= 0)].sum()
        e_neg = (ratio.clamp(min=c_low) * -adv)[neg].sum()
    return float(e_pos / e_neg) if e_neg > 0 else math.inf


def bapo_clip_bounds(ratio, adv, mask, target: float = 1.0, low_range=(0.6, 0.8), high_range=(1.2, 2.0),
                     step_low: float = 0.05, step_high: float = 0.05, measure: str = "gradient",
                     dual_clip: float | None = 3.0) -> tuple[float, float, float]:
    """BAPO's per-batch search for clip bounds [c_low, c_high] that let positive tokens weigh enough.

    .. math::
        E^+ = \\sum_{A_t > 0,\\ r_t \\le c_h} r_t A_t, \\quad
        E^- = \\sum_{A_t < 0,\\ c_l \\le r_t (\\le c)} r_t |A_t|, \\quad
        \\text{raise } c_h \\text{ by } \\delta_h, \\text{ then } c_l \\text{ by } \\delta_l,
        \\text{ while } E^+/E^- < \\text{target}

    ``measure="gradient"`` (default) counts only tokens that keep a gradient under PPO clip with
    these bounds (and dual clip c), raising c_high first: the paper's stated intent (raise the
    upper bound to let more positive tokens in, raise the lower bound to drop more negative ones).
    ``measure="code"`` is the official code's value-based contribution E⁺ = Σ_{A≥0} min(r, c_h)A,
    E⁻ = Σ_{A<0} max(r, c_l)|A|, raising c_low first; there raising c_l *increases* E⁻, so the
    c_low loop runs to its maximum whenever the batch starts below target. Bounds move on grids
    lo + k·step up to their maxima. ``ratio``, ``adv``, ``mask``: ``[B, T]`` (``adv`` may be ``[B]``).
    Returns ``(c_low, c_high, E⁺/E⁻)`` (``inf`` when no negative token counts).

    Paper: "BAPO: Stabilizing Off-Policy RL for LLMs via Balanced Policy Optimization with
    Adaptive Clipping" (Xi, Guo et al., arXiv 2510.18927); code ``compute_policy_loss_bapo``
    (defaults: target 1, c_l ∈ [0.6, 0.8], c_h ∈ [1.2, 2.0], δ = 0.05). Not in verl/TRL (a verl
    recipe in the authors' repo). MED: the paper and the code measure the share differently and
    move the bounds in a different order; forklab's default follows the paper's intent. Notebook 03.
    """
    _checks.choice("measure", measure, {"gradient", "code"})
    mask = _checks.bool_mask("mask", mask)
    ratio = _checks.masked("ratio", _checks.as_tensor("ratio", ratio).detach(), mask)  # padding ignored
    if ratio.dim() != 2 or (ratio[mask] < 0).any():
        raise ValueError(f"`ratio` must be a non-negative [B, T] tensor, got shape {list(ratio.shape)}")
    adv = _checks.as_tensor("adv", adv)
    adv = _checks.floating("adv", adv)[:, None].expand_as(ratio) if adv.dim() == 1 else adv
    adv = _checks.masked("adv", adv, mask).to(ratio.dtype)
    target = _checks.positive("target", target)
    step_low, step_high = _checks.positive("step_low", step_low), _checks.positive("step_high", step_high)
    if dual_clip is not None:
        dual_clip = _checks.finite("dual_clip", dual_clip, 1.0, low_open=True)
    if not (0 < low_range[0] <= low_range[1] <= 1):
        raise ValueError(f"`low_range` must satisfy 0 < lo ≤ hi ≤ 1, got {low_range}")
    if not (1 <= high_range[0] <= high_range[1]):
        raise ValueError(f"`high_range` must satisfy 1 ≤ lo ≤ hi, got {high_range}")
    lows = _grid(low_range, step_low)
    highs = _grid(high_range, step_high)
    i_low = i_high = 0

    def share():
        return _bapo_share(ratio, adv, mask, lows[i_low], highs[i_high], measure, dual_clip)

    first, second = ("high", "low") if measure == "gradient" else ("low", "high")
    for side in (first, second):
        while share() < target:
            if side == "high" and i_high < len(highs) - 1:
                i_high += 1
            elif side == "low" and i_low < len(lows) - 1:
                i_low += 1
            else:
                break
    return lows[i_low], highs[i_high], share()


def _grid(bounds, step) -> list[float]:
    lo, hi = float(bounds[0]), float(bounds[1])
    n = int(math.floor((hi - lo) / step + 1e-9))
    points = [round(lo + k * step, 12) for k in range(n + 1)]  # 0.6 + 4·0.05 is 0.8, not 0.8000000000000002
    return points if points[-1] >= hi - 1e-12 else [*points, hi]


@objective("bapo", label="BAPO", notebook="03_ratios_and_clipping")
def bapo_clip(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, target: float = 1.0,
              low_range=(0.6, 0.8), high_range=(1.2, 2.0), step_low: float = 0.05, step_high: float = 0.05,
              measure: str = "gradient", dual_clip: float | None = 3.0, return_metrics: bool = False):
    """BAPO's loss: PPO clip (+ dual clip c = 3) with the batch's bounds from :func:`bapo_clip_bounds`.

    .. math:: (c_l, c_h) = \\mathrm{search}(r, A), \\qquad
              \\ell_t = \\max\\big(-A r_t,\\; -A\\,\\mathrm{clip}(r_t, c_l, c_h)\\big)

    The bounds are recomputed from the current ratios on every call (the code does so per
    mini-batch, all-reduced over data-parallel ranks). Paper: arXiv 2510.18927. Not in verl/TRL.
    MED (see :func:`bapo_clip_bounds`). Metrics add ``bapo/c_low``, ``bapo/c_high`` and
    ``bapo/positive_share`` (E⁺/E⁻). Notebook 03.
    """
    logp, old_logp, adv, mask = _prepare(logp, old_logp, adv, mask)
    ratio = _log_ratio(logp, old_logp, mask).exp().detach()
    c_low, c_high, share = bapo_clip_bounds(ratio, adv, mask, target, low_range, high_range, step_low, step_high,
                                            measure, dual_clip)
    extra = {"bapo/c_low": c_low, "bapo/c_high": c_high, "bapo/positive_share": share}
    return _with_bounds(logp, old_logp, adv, mask, torch.tensor(c_low), torch.tensor(c_high), dual_clip, extra,
                        return_metrics)


# --------------------------------------------------------------------------------------------- ETR
def etr_clip_bounds(adv, mask, group_std=None, eps_low: float = 0.2, eps_high: float = 0.28, lam: float = 1.0,
                    kappa: float = 0.5) -> tuple[Tensor, Tensor]:
    """ETR's elastic trust region, **LOW confidence — reconstructed from the abstract** (no code found).

    .. math::
        \\epsilon^{\\pm}_{t} = \\epsilon^{\\pm}\\Big(1 + \\lambda \\frac{|A_t|}{\\max |A|}\\Big)
        \\Big(1 + \\kappa\\big(\\frac{\\sigma_{x(t)}}{\\max \\sigma} - \\tfrac12\\big)\\Big)

    Micro level: larger |Â| (a confident signal) gets a wider trust region. Macro level: groups
    whose reward spread σ_x is large (pass rate near ½ for 0/1 rewards, "the optimal learning
    zone") get a larger budget, degenerate groups a smaller one. The functional forms, λ and κ
    are forklab's guesses; the abstract gives only the direction of each effect. ``group_std``
    ``[B]`` (the reward std of each response's group) or ``None`` (macro level off); maxima are
    over the valid tokens of the batch. Returns ratio bounds ``(1 − ε⁻_t, 1 + ε⁺_t)``, ``[B, T]``.

    Paper: "ETR: Outcome-Guided Elastic Trust Regions for Policy Optimization" (Zhang, Zhang, Gu
    et al., arXiv 2601.03723). Not in verl/TRL. LOW: the abstract does not give the equations.
    Notebook 03.
    """
    mask = _checks.bool_mask("mask", mask)
    adv = _checks.as_tensor("adv", adv)
    adv = _checks.floating("adv", adv)[:, None].expand(mask.shape) if adv.dim() == 1 else adv
    adv = _checks.masked("adv", adv, mask)  # padding ignored, NaN/inf on the mask raise
    eps_low, eps_high = _eps("eps_low", eps_low, 1.0), _eps("eps_high", eps_high)
    lam = _checks.finite("lam", lam, 0.0, 1e6)
    kappa = _checks.finite("kappa", kappa, 0.0, 2.0)
    if kappa == 2.0:
        raise ValueError(f"`kappa` must lie in [0, 2), got {kappa}")
    a = adv.abs().detach()
    a_max = a[mask].max() if mask.any() else a.new_zeros(())
    scale = 1 + lam * (a / a_max if a_max > 0 else torch.zeros_like(a))
    if group_std is not None:
        sigma = _checks.floating("group_std", group_std).to(a.dtype)
        if sigma.shape != (mask.shape[0],) or (sigma < 0).any():
            raise ValueError(f"`group_std` must be a non-negative [B] = [{mask.shape[0]}] tensor")
        s_max = sigma.max()
        macro = 1 + kappa * ((sigma / s_max if s_max > 0 else torch.full_like(sigma, 0.5)) - 0.5)
        scale = scale * macro[:, None]
    return 1 - eps_low * scale, 1 + eps_high * scale


@objective("etr", label="ETR (LOW)", notebook="03_ratios_and_clipping")
def etr_clip(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, group_std=None, eps_low: float = 0.2,
             eps_high: float = 0.28, lam: float = 1.0, kappa: float = 0.5, return_metrics: bool = False):
    """ETR's loss, **LOW confidence**: PPO clip with the elastic bounds of :func:`etr_clip_bounds`.

    .. math:: \\ell_t = \\max\\big(-A r_t,\\; -A\\,\\mathrm{clip}(r_t, 1-\\epsilon^-_t, 1+\\epsilon^+_t)\\big)

    Paper: arXiv 2601.03723 (abstract only). Not in verl/TRL. LOW. Metrics add ``etr/eps_high_mean``.
    Notebook 03.
    """
    logp, old_logp, adv, mask = _prepare(logp, old_logp, adv, mask)
    low, high = etr_clip_bounds(adv, mask, group_std, eps_low, eps_high, lam, kappa)
    extra = {"etr/eps_high_mean": _mean(high - 1, mask)} if return_metrics else {}
    return _with_bounds(logp, old_logp, adv, mask, low.to(logp.dtype), high.to(logp.dtype), None, extra,
                        return_metrics)
