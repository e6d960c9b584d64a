"""TIP: which student tokens carry the signal in on-policy distillation.

Introduced in ``notebooks/10_token_importance_tip.ipynb``. Paper: Xu, Sang, Zhou, He, Wang, Geramifard,
"TIP: Token Importance in On-Policy Distillation", arXiv 2604.14084; code base
HJSang/OPSD_OnPolicyDistillation (docs/formulas.md).

Every student token gets two coordinates: the student's entropy H_t (how unsure it is) and a
teacher–student divergence D_t (how far from the teacher it is; reverse KL by default). The plane splits
into four quadrants; Q3, low entropy and high divergence, holds the "overconfident and wrong" tokens
that entropy-only selection never picks, because they look certain. Selection rules keep a share ρ
of the tokens for the distillation loss:

==================  ===========================================================================
rule                keeps
==================  ===========================================================================
``entropy_top``     the ⌊ρN⌋ highest-entropy tokens (the forking-token rule applied to OPD)
``entropy_sample``  ⌊ρN⌋ tokens drawn without replacement with weights (H/ln V)^α·(JSD/ln 2)^γ
``q3``              the Q3 tokens (``ratio=None``), or the ⌊ρN⌋ most Q3-like ones
``soft_or``         the ⌊ρN⌋ highest u = h + d − h·d (min-max normalised axes)
``random``          ⌊ρN⌋ uniformly random tokens (the control)
==================  ===========================================================================

Counting: N valid tokens per selection group (``scope="batch"``: the whole batch, as the repo's
sampler flattens it; ``scope="sequence"``: each row, as TIP's TopK per trajectory), and every rule keeps
exactly k = max(1, ⌊ρ·N⌋) tokens of each group — TIP's ⌊ρm⌋ and the repo's ``max(1, int(N·ratio))``
(a 1e-9 guard keeps ⌊0.29·100⌋ at 29). Masks are bool ``[B, T]``; off-mask values (padding) are
ignored (NaN and ±inf included), NaN or ±inf inside the mask is an error (forklab's one padding rule,
docs/reliability.md), an empty mask is an error.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from forklab import _checks
from forklab.divergences import forward_kl, jsd, reverse_kl
from forklab.ops import _topk_indices, entropy_from_logits

__all__ = [
    "DIVERGENCES",
    "RULES",
    "token_axes",
    "Quadrants",
    "quadrants",
    "soft_or_score",
    "sampling_weights",
    "select_entropy_top",
    "select_entropy_sampling",
    "select_q3",
    "select_soft_or",
    "select_random",
    "select_tokens",
]

DIVERGENCES = {"reverse_kl": reverse_kl, "forward_kl": forward_kl, "jsd": jsd}
RULES = ("entropy_top", "entropy_sample", "q3", "soft_or", "random")
_SCOPES = {"batch", "sequence"}


# ----- validation ---------------------------------------------------------------------------
def _mask(mask) -> Tensor:
    mask = _checks.bool_mask("mask", mask)
    if mask.dim() != 2:
        raise ValueError(f"`mask` must have shape [B, T], got {list(mask.shape)}")
    if not mask.any():
        raise ValueError("`mask` is empty: no token to score or select")
    return mask


def _values(name: str, x, mask: Tensor) -> Tensor:
    """A float64 ``[B, T]`` per-token value, 0 off the mask (padding may hold anything, even NaN/inf)."""
    return _checks.masked(name, x, mask).double()


def _ratio(ratio) -> float:
    ratio = float(ratio)
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"`ratio` must lie in (0, 1], got {ratio}")
    return ratio


def _count(n: int, ratio: float) -> int:
    return max(1, math.floor(ratio * n + 1e-9))


def _groups(mask: Tensor, scope: str) -> list[Tensor]:
    """Flat indices of the valid tokens of each selection group."""
    _checks.choice("scope", scope, _SCOPES)
    if scope == "batch":
        return [mask.flatten().nonzero().flatten()]
    width = mask.shape[1]
    return [row.nonzero().flatten() + b * width for b, row in enumerate(mask) if row.any()]


def _as_mask(mask: Tensor, picked: list[Tensor]) -> Tensor:
    out = torch.zeros(mask.numel(), dtype=torch.bool)
    if picked:
        out[torch.cat(picked)] = True
    return out.reshape(mask.shape)


def _top(score: Tensor, mask: Tensor, ratio: float, scope: str) -> Tensor:
    flat = score.flatten()
    picked = []
    for idx in _groups(mask, scope):
        picked.append(idx[_topk_indices(flat[idx], _count(idx.numel(), ratio))])
    return _as_mask(mask, picked)


def _minmax(x: Tensor, mask: Tensor) -> Tensor:
    """(x − min)/(max − min) over the valid tokens; a constant axis maps to 0 (it ranks nothing)."""
    lo, hi = x[mask].min(), x[mask].max()
    span = hi - lo
    scaled = (x - lo) / span if span > 0 else torch.zeros_like(x)
    return torch.where(mask, scaled, torch.zeros((), dtype=x.dtype))


# ----- the two axes -------------------------------------------------------------------------
def token_axes(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, divergence: str = "reverse_kl",
               temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """TIP's two coordinates of every student token: student entropy and teacher–student divergence.

    .. math:: H_t = -\\sum_v s_t(v)\\log s_t(v), \\qquad
              D_t = \\mathrm{KL}(s_t \\,\\|\\, t_t) \\;\\text{(default; or } \\mathrm{KL}(t_t\\|s_t),\\;
              \\mathrm{JSD}_{1/2}(s_t, t_t))

    with s_t = softmax(student_logits/T), t_t = softmax(teacher_logits/T).

    ==============  ==========================================
    argument        shape
    ==============  ==========================================
    student_logits  ``[B, T, V]`` float
    teacher_logits  ``[B, T, V]`` float
    mask            ``[B, T]`` bool
    returns         ``(entropy [B, T], divergence [B, T])``, 0 off the mask
    ==============  ==========================================

    ``divergence``: ``"reverse_kl"`` (the repo's default OPD loss, :func:`forklab.divergences.reverse_kl`),
    ``"jsd"`` (β = 0.5, what the repo's sampler uses, :func:`forklab.divergences.jsd`) or
    ``"forward_kl"``. Which one TIP's δ axis uses is not pinned down (docs/formulas.md). Logits off the
    mask are replaced by zeros first, so padding garbage cannot reach the result. TRL:
    ``entropy_from_logits``, ``GKDTrainer.generalized_jsd_loss``. arXiv 2604.14084; notebook
    10_token_importance_tip.
    """
    _checks.choice("divergence", divergence, DIVERGENCES.keys())
    mask = _mask(mask)
    logits = {}
    for name, x in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        x = _checks.as_tensor(name, x)
        if not x.is_floating_point():
            raise ValueError(f"`{name}` must be a floating tensor, got dtype {x.dtype}")
        if x.dim() != 3 or x.shape[:2] != mask.shape or x.shape[-1] == 0:
            raise ValueError(f"`{name}` must have shape [{mask.shape[0]}, {mask.shape[1]}, V], got {list(x.shape)}")
        _checks.logits(name, x[mask])  # on the mask: no NaN, no +inf, no all −inf row
        logits[name] = torch.where(mask[..., None], x, torch.zeros((), dtype=x.dtype))
    _checks.same_shape("student_logits", logits["student_logits"], "teacher_logits", logits["teacher_logits"])
    s, t = logits["student_logits"], logits["teacher_logits"]
    entropy = entropy_from_logits(s, temperature)
    div = DIVERGENCES[divergence](s, t, temperature=temperature)
    zero = torch.zeros((), dtype=entropy.dtype)
    return torch.where(mask, entropy, zero), torch.where(mask, div.to(entropy.dtype), zero)


# ----- quadrants and soft-OR ----------------------------------------------------------------
class Quadrants(NamedTuple):
    """Result of :func:`quadrants`."""

    ids: Tensor  # [B, T] long: 0 off the mask, 1..4 = Q1..Q4
    shares: Tensor  # [4] float64: share of valid tokens in Q1..Q4 (sums to 1)
    entropy_threshold: float
    divergence_threshold: float


def _threshold(name: str, value, x: Tensor, mask: Tensor, q: float, dtype: torch.dtype) -> float:
    if value is None:
        # linear interpolation like torch.quantile, which refuses inputs above 2**24 elements
        v = x[mask].sort().values
        pos = q * (v.numel() - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        return float(v[lo] + (pos - lo) * (v[hi] - v[lo]))
    value = _checks.finite(name, value)
    # round to the input's precision: 0.4 must tie with a float32 0.4, not sit just below it
    return float(torch.tensor(value, dtype=dtype)) if dtype.is_floating_point else value


def quadrants(entropy: Tensor, divergence: Tensor, mask: Tensor, entropy_threshold: float | None = None,
              divergence_threshold: float | None = None, quantile: float = 0.5) -> Quadrants:
    """TIP's entropy × divergence taxonomy of the valid tokens.

    .. math:: \\text{high } H \\iff H_t > \\tau_H, \\qquad \\text{high } D \\iff D_t > \\tau_D

    ======  ============  ==================  ===========================================
    id      entropy       divergence          reading
    ======  ============  ==================  ===========================================
    1 (Q1)  high          high                unsure and wrong
    2 (Q2)  high          low                 unsure but right (teacher agrees)
    3 (Q3)  low           high                overconfident and wrong
    4 (Q4)  low           low                 the confident, correct bulk
    0       —             —                   off the mask
    ======  ============  ==================  ===========================================

    ============  ==========================================
    argument      shape
    ============  ==========================================
    entropy       ``[B, T]`` float (student entropy)
    divergence    ``[B, T]`` float (teacher–student divergence)
    mask          ``[B, T]`` bool
    returns       :class:`Quadrants` (ids ``[B, T]`` long, shares ``[4]``, the two thresholds)
    ============  ==========================================

    Thresholds: a value given by the caller, else the ``quantile`` (default 0.5, the median; linear
    interpolation) of that axis over the valid tokens. Ties with a threshold count as *low*, so a bulk
    of zero-entropy tokens sitting on a zero median stays in the low half.
    Confidence: Q3 = low entropy/high divergence is HIGH (abstract and summaries); the numbering of
    Q1, Q2, Q4 is an inference from the same pattern (LOW), and so is the median split: the paper's
    thresholds were not found (LOW: implemented as documented in docs/formulas.md). arXiv 2604.14084;
    verl/TRL: none. Notebook 10_token_importance_tip.
    """
    mask = _mask(mask)
    h, d = _values("entropy", entropy, mask), _values("divergence", divergence, mask)
    q = float(quantile)
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"`quantile` must lie in [0, 1], got {quantile}")
    tau_h = _threshold("entropy_threshold", entropy_threshold, h, mask, q, _checks.as_tensor("entropy", entropy).dtype)
    tau_d = _threshold("divergence_threshold", divergence_threshold, d, mask, q,
                       _checks.as_tensor("divergence", divergence).dtype)
    high_h, high_d = h > tau_h, d > tau_d
    # Q1..Q4 = (high H, high D), (high H, low D), (low H, high D), (low H, low D)
    ids = torch.where(high_h, torch.where(high_d, 1, 2), torch.where(high_d, 3, 4))
    ids = torch.where(mask, ids, 0).long()
    shares = torch.stack([(ids == i).sum() for i in range(1, 5)]).double() / mask.sum()
    return Quadrants(ids, shares, tau_h, tau_d)


def soft_or_score(entropy: Tensor, divergence: Tensor, mask: Tensor) -> Tensor:
    """TIP's Soft-OR importance: high if the token is uncertain *or* far from the teacher.

    .. math:: h_t = \\frac{H_t - \\min H}{\\max H - \\min H}, \\quad
              d_t = \\frac{D_t - \\min D}{\\max D - \\min D}, \\quad
              u_t = h_t + d_t - h_t d_t = 1 - (1 - h_t)(1 - d_t)

    ============  ==========================================
    argument      shape
    ============  ==========================================
    entropy       ``[B, T]`` float
    divergence    ``[B, T]`` float
    mask          ``[B, T]`` bool
    returns       ``[B, T]`` float64 in [0, 1], 0 off the mask
    ============  ==========================================

    Min and max are over the valid tokens of the whole batch (per-batch normalisation); an axis that
    is constant over them maps to 0. u is a probabilistic OR of the two normalised axes, so a Q3
    token (h ≈ 0, d ≈ 1) scores as high as a Q1 one. TIP, arXiv 2604.14084, Eqs. (5)–(7) as quoted
    by a secondary source (docs/formulas.md, MED-HIGH); verl/TRL: none. Notebook 10_token_importance_tip.
    """
    mask = _mask(mask)
    h = _minmax(_values("entropy", entropy, mask), mask)
    d = _minmax(_values("divergence", divergence, mask), mask)
    return h + d - h * d


def sampling_weights(entropy: Tensor, mask: Tensor, divergence: Tensor | None = None, alpha: float = 1.0,
                     gamma: float = 0.0, vocab_size: int | None = None) -> Tensor:
    """Weights of the OPD repository's entropy-weighted sampler (``entropy_weighted_sample``).

    .. math:: w_t = \\max(\\hat H_t, 10^{-8})^{\\alpha}\\,\\max(\\hat D_t, 10^{-8})^{\\gamma}, \\qquad
              \\hat H_t = H_t / \\ln|V|, \\quad \\hat D_t = \\mathrm{JSD}_t / \\ln 2

    ============  ==========================================
    argument      shape
    ============  ==========================================
    entropy       ``[B, T]`` float (student entropy, full vocabulary)
    mask          ``[B, T]`` bool
    divergence    ``[B, T]`` float or None; the repo uses JSD (β = ½): ``token_axes(..., divergence="jsd")``
    returns       ``[B, T]`` float64 > 0 on the mask, 0 off it
    ============  ==========================================

    γ = 0 (default) is pure entropy sampling, the rule TIP's abstract reports (50% of tokens match
    all-token training); the repo's ``entropy_alpha`` has no default, α = 1 here. The normalisations
    only matter through the 1e-8 floor (a constant factor cancels in the draw), so ``vocab_size=None``
    skips the ln|V| division; the repo's ``jsd_scale`` cancels the same way and is left out.
    HJSang/OPSD_OnPolicyDistillation ``src/opd/losses.py`` (docs/formulas.md, HIGH). Notebook
    10_token_importance_tip.
    """
    mask = _mask(mask)
    h = _values("entropy", entropy, mask)
    if vocab_size is not None:
        h = h / math.log(_checks.integer("vocab_size", vocab_size, 2))
    # exponents beyond 10 underflow the 1e-8 floor to 0 in float64 (1e-80 is the smallest weight)
    alpha, gamma = _checks.finite("alpha", alpha, 0.0, 10.0), _checks.finite("gamma", gamma, 0.0, 10.0)
    w = h.clamp(min=1e-8).pow(alpha)
    if gamma != 0.0:
        if divergence is None:
            raise ValueError("`divergence` is required when `gamma` != 0")
        d = _values("divergence", divergence, mask) / math.log(2.0)
        w = w * d.clamp(min=1e-8).pow(gamma)
    return torch.where(mask, w, torch.zeros((), dtype=w.dtype))


# ----- selection rules ----------------------------------------------------------------------
def select_entropy_top(entropy: Tensor, mask: Tensor, ratio: float, scope: str = "batch") -> Tensor:
    """Keep the k = max(1, ⌊ρN⌋) highest-entropy valid tokens (``[B, T]`` → bool ``[B, T]``).

    The forking-token rule (Beyond the 80/20 Rule, arXiv 2506.01939) used as a TIP baseline; unlike
    :func:`forklab.regularizers.entropy_top_mask` (TRL's ``top_entropy_quantile``, ties kept) it keeps
    exactly k tokens. By construction it never picks Q3 tokens first. Notebook 10_token_importance_tip.
    """
    mask = _mask(mask)
    return _top(_values("entropy", entropy, mask), mask, _ratio(ratio), scope)


def select_entropy_sampling(entropy: Tensor, mask: Tensor, ratio: float, divergence: Tensor | None = None,
                            alpha: float = 1.0, gamma: float = 0.0, vocab_size: int | None = None,
                            generator: torch.Generator | None = None, scope: str = "batch") -> Tensor:
    """Draw k = max(1, ⌊ρN⌋) tokens without replacement, with probability ∝ :func:`sampling_weights`.

    ``torch.multinomial(w, k, replacement=False, generator=generator)`` as in the repo's
    ``entropy_weighted_sample`` (HIGH); pass a seeded ``torch.Generator`` for reproducible draws.
    Shapes ``[B, T]`` → bool ``[B, T]``. TIP (arXiv 2604.14084): 50% of tokens by entropy-based sampling
    match or beat all-token OPD. Notebook 10_token_importance_tip.
    """
    mask = _mask(mask)
    ratio = _ratio(ratio)
    w = sampling_weights(entropy, mask, divergence, alpha, gamma, vocab_size).flatten()
    picked = []
    for idx in _groups(mask, scope):
        picked.append(idx[torch.multinomial(w[idx], _count(idx.numel(), ratio), replacement=False,
                                            generator=generator)])
    return _as_mask(mask, picked)


def select_q3(entropy: Tensor, divergence: Tensor, mask: Tensor, ratio: float | None = None,
              entropy_threshold: float | None = None, divergence_threshold: float | None = None,
              quantile: float = 0.5, scope: str = "batch") -> Tensor:
    """Q3-only selection: the low-entropy, high-divergence ("overconfident and wrong") tokens.

    ``ratio=None``: exactly the Q3 tokens of :func:`quadrants` (same threshold arguments).
    With a ratio: the k = max(1, ⌊ρN⌋) most Q3-like tokens, ranked by

    .. math:: \\mathrm{score}_t = [t \\in Q3] + d_t (1 - h_t)

    (h, d min-max normalised as in :func:`soft_or_score`): Q3 tokens first, ordered by the soft AND
    of "low entropy" and "high divergence"; if Q3 holds fewer than k tokens the rest are the most
    Q3-like others (a choice made here: the paper's rule at a fixed ratio was not found, LOW).
    Shapes ``[B, T]`` → bool ``[B, T]``. TIP (arXiv 2604.14084): Q3-only with <20% of tokens beats
    full-token OPD on DeepPlanning. Notebook 10_token_importance_tip.
    """
    quads = quadrants(entropy, divergence, mask, entropy_threshold, divergence_threshold, quantile)
    in_q3 = quads.ids == 3
    if ratio is None:
        return in_q3
    mask = _mask(mask)
    h = _minmax(_values("entropy", entropy, mask), mask)
    d = _minmax(_values("divergence", divergence, mask), mask)
    return _top(in_q3.double() + d * (1 - h), mask, _ratio(ratio), scope)


def select_soft_or(entropy: Tensor, divergence: Tensor, mask: Tensor, ratio: float, scope: str = "batch") -> Tensor:
    """TIP's rule: keep the k = max(1, ⌊ρN⌋) tokens with the highest :func:`soft_or_score`.

    .. math:: \\mathcal{T} = \\mathrm{TopK}(\\{u_t\\}, \\lfloor \\rho m \\rfloor)

    TIP applies TopK per trajectory (``scope="sequence"``) after per-batch normalisation; the loss is
    then the reverse KL averaged over the kept tokens (docs/formulas.md, MED-HIGH). Shapes ``[B, T]`` →
    bool ``[B, T]``. arXiv 2604.14084; notebook 10_token_importance_tip.
    """
    return _top(soft_or_score(entropy, divergence, mask), _mask(mask), _ratio(ratio), scope)


def select_random(mask: Tensor, ratio: float, generator: torch.Generator | None = None,
                  scope: str = "batch") -> Tensor:
    """The control: k = max(1, ⌊ρN⌋) valid tokens chosen uniformly without replacement (``randperm``)."""
    mask = _mask(mask)
    ratio = _ratio(ratio)
    picked = []
    for idx in _groups(mask, scope):
        picked.append(idx[torch.randperm(idx.numel(), generator=generator)[: _count(idx.numel(), ratio)]])
    return _as_mask(mask, picked)


def select_tokens(rule: str, entropy: Tensor, divergence: Tensor | None, mask: Tensor, ratio: float | None,
                  generator: torch.Generator | None = None, scope: str = "batch", **kwargs) -> Tensor:
    """One entry point for every rule in :data:`RULES`; returns bool ``[B, T]`` within ``mask``.

    ``rule``: ``"entropy_top"``, ``"entropy_sample"`` (``kwargs``: ``alpha``, ``gamma``, ``vocab_size``),
    ``"q3"`` (``ratio=None`` allowed; ``kwargs``: thresholds, ``quantile``), ``"soft_or"``, ``"random"``.
    ``divergence`` may be None for rules that do not use it. ``generator`` feeds the random rules.
    """
    _checks.choice("rule", rule, RULES)
    if ratio is None and rule != "q3":
        raise ValueError(f"`ratio` is required for rule {rule!r} (only 'q3' accepts None)")
    needs_divergence = rule in ("q3", "soft_or") or (rule == "entropy_sample" and kwargs.get("gamma", 0.0) != 0.0)
    if needs_divergence and divergence is None:
        raise ValueError(f"`divergence` is required for rule {rule!r}")
    if rule == "entropy_top":
        return select_entropy_top(entropy, mask, ratio, scope, **kwargs)
    if rule == "entropy_sample":
        return select_entropy_sampling(entropy, mask, ratio, divergence, generator=generator, scope=scope, **kwargs)
    if rule == "q3":
        return select_q3(entropy, divergence, mask, ratio, scope=scope, **kwargs)
    if rule == "soft_or":
        return select_soft_or(entropy, divergence, mask, ratio, scope, **kwargs)
    return select_random(mask, ratio, generator, scope, **kwargs)
