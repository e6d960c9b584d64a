"""Advantages that re-weight groups and tokens: BNPO, DGPO ("Harder Is Better") and D³S.

Introduced in ``notebooks/01_policy_gradients_and_advantages.ipynb`` (section 6). Same conventions as
:mod:`forklab.advantages`: ``rewards [B]`` float, ``group [B]`` integer prompt id, at least two
responses per group, result ``[B]`` in the rewards' dtype, computed in float64; a group whose rewards
are all equal gets exactly 0. Token-level selections take ``[B, T]`` tensors and a ``mask [B, T]``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from forklab import _checks
from forklab._registry import advantage_estimator
from forklab.advantages import _group_stats, _group_sum, _prepare

_NB1 = "01_policy_gradients_and_advantages"

__all__ = ["bnpo_beta_parameters", "bnpo", "dgpo", "dgpo_question_weights", "d3s_sample_subset", "d3s_token_mask"]


def _pass_rates(rewards, group, r_min: float, r_max: float) -> tuple[Tensor, Tensor, Tensor, Tensor, torch.dtype]:
    """Scaled rewards s [B], per-group pass rate p_x [n_groups], dense index [B], sizes, dtype."""
    if not r_max > r_min:
        raise ValueError(f"`r_max` ({r_max}) must be greater than `r_min` ({r_min})")
    r, index, sizes, dtype = _prepare(rewards, group)
    s = (r - r_min) / (r_max - r_min)
    p = _group_sum(s, index, len(sizes)) / sizes.double()
    return s, p, index, sizes, dtype


def bnpo_beta_parameters(pass_rates: Tensor) -> tuple[float, float]:
    """BNPO's Beta(α, β), fitted to the batch's per-prompt pass rates by the method of moments.

    .. math::
        \\mu = \\overline{p_x},\\quad v = \\mathrm{Var}_x(p_x)\\ (\\text{unbiased}),\\quad
        a = \\Big(\\tfrac{\\mu(1-\\mu)}{v} - 1\\Big)\\mu,\\quad b = \\Big(\\tfrac{\\mu(1-\\mu)}{v} - 1\\Big)(1-\\mu),

        \\alpha = \\max(1 + a/3,\\ 1),\\qquad \\beta = \\max(1 + b/3,\\ 1)

    ``pass_rates`` is ``[n_prompts]`` in [0, 1], at least 2 prompts. The "1 + a/3" shrinkage is read
    from the official code (``compute_bnpo_outcome_advantage``), not derived. When the pass rates
    do not vary (v = 0) the moment fit is undefined and α = β = 1 is returned (plain r − p).
    Returns python floats ``(alpha, beta)``. BNPO, arXiv 2506.02864; not in verl/TRL. Notebook 01.
    """
    p = _checks.floating("pass_rates", pass_rates).double().reshape(-1)
    if p.numel() < 2:
        raise ValueError("`pass_rates` needs at least 2 prompts to fit a Beta distribution")
    if ((p < 0) | (p > 1)).any():
        raise ValueError("`pass_rates` must lie in [0, 1]")
    mu, v = p.mean().item(), p.var().item()
    if v <= 0 or mu <= 0 or mu >= 1:
        return 1.0, 1.0
    common = mu * (1 - mu) / v - 1
    return max(1 + common * mu / 3, 1.0), max(1 + common * (1 - mu) / 3, 1.0)


def _beta_pdf(p: Tensor, alpha: float, beta: float) -> Tensor:
    log_norm = math.lgamma(alpha) + math.lgamma(beta) - math.lgamma(alpha + beta)
    # x**0 = 1 also at x = 0 (α = 1 or β = 1), which xlogy gives as 0·log 0 = 0
    log_pdf = torch.xlogy(torch.tensor(alpha - 1.0, dtype=p.dtype), p) + \
        torch.xlogy(torch.tensor(beta - 1.0, dtype=p.dtype), 1 - p) - log_norm
    return log_pdf.exp()


@advantage_estimator("bnpo", label="BNPO", notebook=_NB1)
def bnpo(rewards: Tensor, group: Tensor, r_min: float = 0.0, r_max: float = 1.0,
         alpha: float | None = None, beta: float | None = None, max_weight: float = 1e6) -> Tensor:
    """BNPO's Beta-normalised advantage.

    .. math::
        s_i = \\frac{R_i - r_{\\min}}{r_{\\max}-r_{\\min}},\\quad p_x = \\overline{s}_{g(i)},\\quad
        \\hat A_i = \\min\\!\\Big(\\frac{1}{\\mathrm{Beta}(p_x;\\alpha,\\beta)},\\ 10^6\\Big)\\,(s_i - p_x)

    α, β from :func:`bnpo_beta_parameters` over the batch's prompts unless given. Special cases
    (checked in the tests): α = β = 1 gives s − p (REINFORCE with the group-mean baseline);
    α = β = 3/2 gives (π/8)·(s − p)/√(p(1−p)), GRPO with the *population* std times B(3/2, 3/2) = π/8.
    The fit makes the normaliser follow the batch's spread of difficulty instead of each group's std.

    ============  ===========================
    argument      shape
    ============  ===========================
    rewards       ``[B]`` float
    group         ``[B]`` integer prompt id
    returns       ``[B]``
    ============  ===========================

    Paper: "BNPO: Beta Normalization Policy Optimization" (Xiao, Zhang, Cao), arXiv 2506.02864.
    verl/TRL: not in either (the authors' verl fork: ``compute_bnpo_outcome_advantage``; TRL's
    ``loss_type="bnpo"`` is an unrelated token-mean aggregation). Confidence: HIGH for the formula
    (official code, and the α = β identities hold exactly); the "advantage decomposition" option
    (one Â per reward component, averaged) is not implemented. Notebook 01.
    """
    max_weight = _checks.positive("max_weight", max_weight)
    s, p, index, _, dtype = _pass_rates(rewards, group, r_min, r_max)
    if (alpha is None) != (beta is None):
        raise ValueError("give both `alpha` and `beta`, or neither (then they are fitted to the batch)")
    if alpha is None:
        alpha, beta = bnpo_beta_parameters(p.clamp(0, 1))
    alpha, beta = _checks.positive("alpha", alpha), _checks.positive("beta", beta)
    weight = (1 / _beta_pdf(p, alpha, beta)).clamp(0, max_weight)[index]
    _, _, constant = _group_stats(s, index, torch.bincount(index))
    adv = weight * (s - p[index])
    return torch.where(constant, torch.zeros_like(adv), adv).to(dtype)


def dgpo_question_weights(pass_rates: Tensor, informative: Tensor, temperature: float = 2.0) -> Tensor:
    """DGPO's difficulty-aware question weights (DQW), ``[n_prompts]``.

    .. math:: w_x = K_v \\cdot \\operatorname{softmax}_{x \\in \\text{informative}}(-p_x / T), \\qquad w_x = 1
              \\text{ otherwise}

    with K_v the number of informative (non-degenerate) prompts, so the weights average 1 over them
    and harder prompts (lower mean reward p_x) weigh more. ``informative`` is bool ``[n_prompts]``.
    Official default T = 2 (``dgpo_dqw_temp``). Paper and confidence as in :func:`dgpo`.
    """
    p = _checks.floating("pass_rates", pass_rates).double().reshape(-1)
    informative = _checks.bool_mask("informative", informative).reshape(-1)
    _checks.same_shape("pass_rates", p, "informative", informative)
    temperature = _checks.positive("temperature", temperature)
    weights = torch.ones_like(p)
    k_v = int(informative.sum())
    if k_v:
        weights[informative] = k_v * torch.softmax(-p[informative] / temperature, dim=0)
    return weights


@advantage_estimator("dgpo", label="DGPO (Harder Is Better)", notebook=_NB1)
def dgpo(rewards: Tensor, group: Tensor, temperature: float = 2.0, question_weights: bool = True,
         eps: float = 1e-4) -> Tensor:
    """DGPO ("Harder Is Better"): mean-absolute-deviation advantages (DGAE) times question weights (DQW).

    .. math::
        \\text{DGAE:}\\ \\hat A_i = \\frac{|g|\\,(R_i - \\mu_g)}{\\sum_{j\\in g}|R_j-\\mu_g| + \\epsilon}
        \\;\\Rightarrow\\; \\sum_{i\\in g}|\\hat A_i| = |g| \\text{ for every non-degenerate group;}
        \\qquad \\text{DQW:}\\ \\hat A_i \\leftarrow w_{g(i)} \\hat A_i

    GRPO's Σ|Â| is 2G√(p(1−p)) with 0/1 rewards (population std), which shrinks for very easy and
    very hard prompts; DGAE gives every informative prompt the same total, and DQW
    (:func:`dgpo_question_weights`, p_x = group mean reward) then tilts it towards hard prompts.

    ============  ===========================
    argument      shape
    ============  ===========================
    rewards       ``[B]`` float
    group         ``[B]`` integer prompt id
    returns       ``[B]``
    ============  ===========================

    Not implemented: the official code's two loss-side rescalings (undoing the dilution of the token
    mean by zero-advantage groups, and across processes); they belong to loss aggregation.
    Paper: "Harder Is Better: Boosting Mathematical Reasoning via Difficulty-Aware GRPO and
    Multi-Aspect Question Reformulation" (Dai et al.), arXiv 2601.20614. Official code: a TRL 0.20
    fork (``enable_dgpo``, ``enable_dgpo_dqw``, ``dgpo_dqw_temp=2.0``, eps 1e-4); not in verl/TRL
    proper. Confidence: HIGH (official code). Notebook 01.
    """
    eps = _checks.non_negative("eps", eps)
    r, index, sizes, dtype = _prepare(rewards, group)
    mean, _, constant = _group_stats(r, index, sizes)
    dev = r - mean
    mad_sum = _group_sum(dev.abs(), index, len(sizes))[index]
    adv = sizes.double()[index] * dev / (mad_sum + eps)
    if question_weights:
        group_mean = _group_sum(r, index, len(sizes)) / sizes.double()
        informative = torch.zeros(len(sizes), dtype=torch.bool).index_fill_(0, index[~constant], True)
        adv = adv * dgpo_question_weights(group_mean, informative, temperature)[index]
    return torch.where(constant, torch.zeros_like(adv), adv).to(dtype)


def d3s_sample_subset(advantages: Tensor, num_keep: int) -> Tensor:
    """D³S sample level: the ``num_keep`` responses whose advantages have the largest variance.

    .. math:: \\hat S = \\arg\\max_{|S| = N} \\mathrm{Var}(\\hat A_S), \\quad \\text{searched over }
              S = \\text{top-}m \\cup \\text{bottom-}(N-m),\\ m = 0..N

    A subset maximising the variance consists of extremes (the tests check this against every
    subset of small batches), so only N + 1 candidates are compared (population variance; ties go
    to the smaller m). ``advantages`` is ``[B]`` (any group-relative Â over the whole batch);
    returns bool ``[B]``. Paper: "Learning More with Less: A Dynamic Dual-Level Down-Sampling
    Framework for Efficient Policy Optimization" (Wang et al.), arXiv 2509.22115. Not in verl/TRL.
    Confidence: LOW — reconstructed from the abstract and secondary notes; official code not found.
    The paper's schedule for N (and its intra-group variant) is not reproduced. Notebook 01.
    """
    a = _checks.floating("advantages", advantages).double()
    if a.dim() != 1:
        raise ValueError(f"`advantages` must have shape [B], got {list(a.shape)}")
    n = _checks.integer("num_keep", num_keep, 1, a.shape[0])
    order = torch.argsort(a, descending=True, stable=True)
    best_m, best_var = 0, -1.0
    for m in range(n + 1):
        chosen = torch.cat([order[:m], order[a.shape[0] - (n - m):]]) if n - m else order[:m]
        var = a[chosen].var(unbiased=False).item() if n > 1 else 0.0
        if var > best_var + 1e-12:
            best_m, best_var = m, var
    keep = torch.zeros(a.shape[0], dtype=torch.bool)
    keep[order[:best_m]] = True
    if n - best_m:
        keep[order[a.shape[0] - (n - best_m):]] = True
    return keep


def d3s_token_mask(advantages: Tensor, entropy: Tensor, mask: Tensor, keep_fraction: float = 0.2) -> Tensor:
    """D³S token level: keep the top ``keep_fraction`` of response tokens by |Â_{i,t}|·H_{i,t}.

    .. math:: M_{i,t} = 1\\big[\\,|\\hat A_{i,t}|\\,H_{i,t} \\text{ is among the top } \\lceil K\\cdot
              n_{\\text{tokens}}\\rceil \\text{ of the batch}\\,\\big]

    ============  ==========================================================
    argument      shape
    ============  ==========================================================
    advantages    ``[B]`` (broadcast over tokens) or ``[B, T]`` float
    entropy       ``[B, T]`` float, H of the sampling distribution per token
    mask          ``[B, T]`` bool, response tokens
    returns       ``[B, T]`` bool, a subset of ``mask``
    ============  ==========================================================

    Ties at the threshold are broken by position (first in row-major order). The loss then runs on
    the kept tokens only. Paper, code and confidence (LOW) as in :func:`d3s_sample_subset`; the
    paper's K schedule is not reproduced. Notebook 01.
    """
    h = _checks.floating("entropy", entropy).double()
    mask = _checks.bool_mask("mask", mask)
    _checks.same_shape("entropy", h, "mask", mask)
    a = _checks.floating("advantages", advantages).double()
    if a.dim() == 1:
        if a.shape[0] != h.shape[0]:
            raise ValueError(f"`advantages` has {a.shape[0]} rows, `entropy` {h.shape[0]}")
        a = a[:, None].expand_as(h)
    _checks.same_shape("advantages", a, "entropy", h)
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"`keep_fraction` must lie in (0, 1], got {keep_fraction}")
    n_tokens = int(mask.sum())
    keep = torch.zeros_like(mask)
    if n_tokens == 0:
        return keep
    k = math.ceil(keep_fraction * n_tokens - 1e-9)
    score = torch.where(mask, a.abs() * h, torch.full_like(h, -torch.inf)).reshape(-1)
    order = torch.argsort(score, descending=True, stable=True)[:k]
    keep.view(-1)[order] = True
    return keep & mask
