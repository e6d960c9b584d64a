"""Entropy interventions that change the loss: SIREN, Distribution-Centric PO, ProGRPO/ARM, Agentic EB-PO.

Introduced in ``notebooks/05_entropy_interventions.ipynb``. Formulas: ``docs/formulas.md`` (section 05).
The controllers that set their coefficients or temperatures between steps live in
:mod:`forklab.entropy_control`.

Two acronyms are taken twice in the literature, so the names here spell them out:
*Distribution-Centric* PO (arXiv 2601.12730) is :func:`distribution_centric_advantages`, not the
*Dynamic Clipping* DCPO of :mod:`forklab.adaptive_clipping`; *Agentic Entropy-Balanced* PO (arXiv
2510.14545) is :func:`agentic_entropy_balanced_po`, not *Arbitrary-Entropy* PO (arXiv 2510.08141,
:func:`forklab.entropy_control.entropy_target_temperature`).

Shapes: ``logp``/``old_logp``/``entropy``/``mask`` ``[B, T]``, ``adv`` ``[B]`` or ``[B, T]``, ``logits``
``[..., V]``. Losses are per-token ``[B, T]`` (0 off ``mask``) like :mod:`forklab.surrogates`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from forklab import _checks
from forklab._objective_inputs import _log_ratio, _masked, _mean, _prepare, _share
from forklab._recipe import Recipe, preset
from forklab._registry import objective
from forklab.ops import masked_mean
from forklab.surrogates import ppo_clip

__all__ = ["top_p_entropy", "siren_position_mask", "siren_selected_entropy", "siren_anchor_loss",
           "distribution_centric_advantages", "low_probability_confidence", "arm_advantages", "arm_po",
           "agentic_entropy_balanced_po"]


# ------------------------------------------------------------------------------------------- SIREN
def top_p_entropy(logits: Tensor, top_p: float = 0.8) -> Tensor:
    """SIREN's masked entropy: the entropy of π renormalised on its top-p nucleus N_t.

    .. math::
        N_t = \\{v : \\textstyle\\sum_{u \\succeq v} \\pi(u) < p\\}, \\quad
        q_t(v) = \\frac{\\pi(v)\\,\\mathbb{1}[v \\in N_t]}{\\sum_{u \\in N_t} \\pi(u)}, \\quad
        H^p_t = -\\sum_v q_t(v) \\log q_t(v)

    (tokens sorted by probability, ``u ⪰ v`` = u ranks at or above v): the token whose cumulative
    mass crosses p is *excluded*, so N_t = ∅ and H^p_t = 0 when the top token alone has π ≥ p.
    The gradient flows through π. ``logits [..., V]`` → ``[...]``. Rare junk tokens outside the
    nucleus get no entropy push at all: that is what stops the explosion of a plain bonus over
    a large vocabulary.

    Paper: "Rethinking Entropy Regularization in Large Reasoning Models" (SIREN, arXiv 2509.25133).
    verl/TRL: not in either (SIREN's verl fork: ``efficient_top_p_sampling``, k = 10000, p = 0.8).
    Confidence HIGH: official code. Notebook: 05_entropy_interventions.
    """
    logits = _checks.logits("logits", logits)
    top_p = _checks.finite("top_p", top_p, 0.0, 1.0, low_open=True)
    probs = torch.softmax(logits, -1)
    sorted_p, order = probs.sort(-1, descending=True)
    inside_sorted = sorted_p.detach().cumsum(-1) < top_p
    inside = torch.zeros_like(inside_sorted).scatter(-1, order, inside_sorted)
    kept = torch.where(inside, probs, torch.zeros((), dtype=probs.dtype))
    total = kept.sum(-1, keepdim=True)
    q = kept / total.clamp_min(torch.finfo(probs.dtype).tiny)
    plogq = torch.where(inside, q * torch.log(q.clamp_min(torch.finfo(probs.dtype).tiny)), torch.zeros_like(q))
    return -plogq.sum(-1)


def siren_position_mask(entropy: Tensor, mask: Tensor, quantile: float = 0.8) -> Tensor:
    """SIREN's peak-entropy mask: per response, the positions whose H^p is above its 80% quantile.

    .. math:: m_{i,t} = \\mathbb{1}\\big[H^p_{i,t} > \\mathrm{quantile}_q(\\{H^p_{i,s}\\}_{s})\\big]

    (strictly above, linear-interpolation quantile over the response's own valid positions), so
    about 1 − q of each response's tokens are kept. ``entropy``, ``mask`` ``[B, T]`` → bool ``[B, T]``.
    Paper, confidence: as :func:`top_p_entropy` (``mask_by_quantile(H^p, mask, 1, 0.8)``).
    Notebook: 05_entropy_interventions.
    """
    mask = _checks.bool_mask("mask", mask)
    entropy = _checks.masked("entropy", entropy, mask).detach()
    q = _checks.finite("quantile", quantile, 0.0, 1.0)
    out = torch.zeros_like(mask)
    for i in range(mask.shape[0]):
        values = entropy[i][mask[i]]
        if values.numel():
            out[i] = mask[i] & (entropy[i] > torch.quantile(values.double(), q).to(entropy.dtype))
    return out


def siren_selected_entropy(entropy: Tensor, keep: Tensor) -> Tensor:
    """H̄_sel: the mean over responses of the mean H^p over each response's kept positions (0-dim).

    .. math:: \\bar H_{sel} = \\mathrm{mean}_i \\frac{\\sum_t m_{i,t} H^p_{i,t}}{\\sum_t m_{i,t}}

    ("seq-mean-token-mean"; responses with no kept position are left out; 0 if none is kept).
    ``entropy`` carries the gradient, ``keep`` is :func:`siren_position_mask`. Notebook: 05.
    """
    keep = _checks.bool_mask("keep", keep)
    entropy = _checks.masked("entropy", entropy, keep)
    counts = keep.sum(1)
    rows = counts > 0
    if not rows.any():
        return entropy.sum() * 0
    return (entropy.sum(1)[rows] / counts[rows]).mean()


def siren_anchor_loss(selected_entropy: Tensor, anchor: float, coef: float = 0.005) -> Tensor:
    """SIREN's self-anchored regulariser β(H̄_sel(θ) − H_anchor)², added to the policy loss.

    H_anchor is H̄_sel measured once on the first batch (old policy) and then held fixed, so the
    term pulls the masked entropy back from *both* sides (a bonus only pushes it up). β =
    ``entropy_coeff`` = 0.005 in the scripts. Returns a 0-dim tensor. Paper, confidence: as
    :func:`top_p_entropy`. Notebook: 05_entropy_interventions.
    """
    anchor = _checks.finite("anchor", anchor)
    coef = _checks.finite("coef", coef, 0.0)
    h = _checks.floating("selected_entropy", selected_entropy)
    return coef * (h - anchor) ** 2


# ---------------------------------------------------------------------- Distribution-Centric PO
def distribution_centric_advantages(adv: Tensor, correct: Tensor, old_logp_hot: Tensor, old_logp: Tensor,
                                    mask: Tensor, prev_entropy: float, target: float,
                                    cap: float = 0.1) -> tuple[Tensor, float]:
    """Distribution-Centric PO's mixed advantage: GRPO plus an importance-weighted REINFORCE toward π^T.

    .. math::
        \\rho_{i,t} = \\frac{\\pi^T_{old}(o_{i,t})}{\\pi_{old}(o_{i,t})},\\quad
        p_c = \\mathrm{mean}_i\\, b_i,\\quad a = \\frac{\\min(|H_0 - \\hat H_{k-1}|, \\mathrm{cap})}{p_c},\\quad
        \\alpha = \\frac{a}{a+1},\\quad
        \\tilde A_{i,t} = (1-\\alpha)\\hat A_i + \\alpha\\, b_i\\, \\rho_{i,t}

    b_i = 1 for a correct response. T comes from :func:`forklab.entropy_control.entropy_target_temperature`
    (T = 1.2 below target H₀, 0.8 above), and ``old_logp_hot`` = log π_old at temperature T of the
    same sampled tokens. At ratio 1, E_{o∼π}[ρ ∇log π] = E_{o∼π^T}[∇log π]: no extra samples.

    **Official code vs intent**: the code divides by p_c, so a batch with no correct answer gives
    a = ∞ and α = NaN, which poisons the loss. Here p_c = 0 gives α = 0 (Ã = Â): with no correct
    response the REINFORCE term b_i ρ is 0 for every row anyway, and GRPO's own Â stays unscaled.

    ======================  ================================================
    argument                shape / meaning
    ======================  ================================================
    adv                     ``[B]`` or ``[B, T]`` GRPO advantages
    correct                 ``[B]`` bool, b_i (the code: reward > 0.05)
    old_logp_hot, old_logp  ``[B, T]`` log π_old at T and at 1
    prev_entropy, target    Ĥ_{k−1}, H₀ (floats)
    returns                 (Ã ``[B, T]`` 0 off mask, α float)
    ======================  ================================================

    Paper: "Distribution-Centric Policy Optimization Dominates Exploration-Exploitation Trade-off"
    (Li, Wang et al., arXiv 2601.12730). verl/TRL: not in either. Confidence HIGH: official code
    (``ray_trainer.py::fit``, alg "DCPO"); the p_c = 0 guard is this library's. Notebook: 05.
    """
    mask = _checks.bool_mask("mask", mask)
    old_logp = _checks.masked("old_logp", old_logp, mask).detach()
    old_logp_hot = _checks.masked("old_logp_hot", old_logp_hot, mask).detach()
    adv = _checks.floating("adv", adv).detach()
    if adv.shape not in (mask.shape[:1], mask.shape):
        raise ValueError(f"`adv` must have shape [B] or [B, T] = {list(mask.shape)}, got {list(adv.shape)}")
    correct = _checks.as_tensor("correct", correct)
    if correct.dtype != torch.bool or correct.shape != mask.shape[:1]:
        raise ValueError(f"`correct` must be a bool tensor of shape [B] = [{mask.shape[0]}]")
    gap = abs(_checks.finite("target", target) - _checks.finite("prev_entropy", prev_entropy))
    cap = _checks.finite("cap", cap, 0.0)
    share = float(correct.double().mean()) if correct.numel() else 0.0
    if share == 0.0:
        alpha = 0.0
    else:
        a = min(gap, cap) / share
        alpha = a / (a + 1)
    rho = (old_logp_hot - old_logp).clamp(-20.0, 20.0).exp()
    adv_t = adv[:, None].expand(mask.shape) if adv.dim() == 1 else adv
    mixed = (1 - alpha) * adv_t.to(rho.dtype) + alpha * correct[:, None].to(rho.dtype) * rho
    return _masked(mixed, mask), alpha


# --------------------------------------------------------------------------------- ProGRPO / ARM
def low_probability_confidence(logp: Tensor, mask: Tensor, fraction: float = 0.2) -> Tensor:
    """ARM's answer confidence c(o): the mean log π over the ⌈fraction·|o|⌉ least likely tokens of o.

    ``logp``, ``mask`` ``[B, T]`` → ``[B]`` (0 for an empty response). LOW: the paper's
    "low-probability token length normalisation", read from summaries only. Notebook: 05.
    """
    mask = _checks.bool_mask("mask", mask)
    logp = _checks.masked("logp", logp, mask).detach()
    fraction = _checks.finite("fraction", fraction, 0.0, 1.0, low_open=True)
    out = torch.zeros(mask.shape[0], dtype=logp.dtype)
    for i in range(mask.shape[0]):
        values = logp[i][mask[i]]
        if values.numel():
            k = max(int(torch.ceil(torch.tensor(fraction * values.numel())).item()), 1)
            out[i] = values.sort().values[:k].mean()
    return out


def arm_advantages(adv: Tensor, rewards: Tensor, group: Tensor, answer_conf: Tensor, prompt_conf: Tensor,
                   alpha: float = 0.5) -> Tensor:
    """ProGRPO's Advantage Re-weighting Mechanism (ARM): a confidence gap added where a group scored.

    .. math:: \\tilde A_i = \\hat A_i \\text{ if } \\textstyle\\sum_{k \\in g(i)} r_k = 0,
              \\text{ else } \\hat A_i + \\alpha\\,(c_\\theta(x) - c_\\theta(o_i \\mid x))

    An over-confident answer (c(o) above the prompt's confidence) gets a smaller advantage, which
    moves mass toward correct answers the policy has not yet made likely. ``adv``, ``rewards``,
    ``answer_conf`` (c(o_i), e.g. :func:`low_probability_confidence`), ``prompt_conf`` (c(x) of each
    row's prompt) ``[B]``, ``group`` ``[B]`` ids → ``[B]``.

    Paper: "Back to Basics: Revisiting Exploration in Reinforcement Learning for LLM Reasoning via
    Generative Probabilities" (Li et al., arXiv 2602.05281). verl/TRL: not in either; no official
    code found. Confidence: MED for the form (a paper review), LOW for c_θ and α (not found; α = 0.5
    is this library's choice). Notebook: 05_entropy_interventions.
    """
    adv = _checks.floating("adv", adv).detach()
    if adv.dim() != 1:
        raise ValueError(f"`adv` must have shape [B], got {list(adv.shape)}")
    n = adv.shape[0]
    rewards = _checks.floating("rewards", rewards)
    answer_conf = _checks.floating("answer_conf", answer_conf).detach()
    prompt_conf = _checks.floating("prompt_conf", prompt_conf).detach()
    for name, x in (("rewards", rewards), ("answer_conf", answer_conf), ("prompt_conf", prompt_conf)):
        if x.shape != (n,):
            raise ValueError(f"`{name}` must have shape [B] = [{n}], got {list(x.shape)}")
    group = _checks.group_ids("group", group, n)
    alpha = _checks.finite("alpha", alpha)
    _, inverse = torch.unique(group, return_inverse=True)
    scored = torch.zeros(int(inverse.max()) + 1 if n else 0, dtype=rewards.dtype).index_add_(0, inverse, rewards) != 0
    gap = alpha * (prompt_conf - answer_conf).to(adv.dtype)
    return torch.where(scored[inverse], adv + gap, adv)


@objective("arm_po", needs=("rewards", "group"), label="ProGRPO / ARM (LOW)", notebook="05_entropy_interventions")
def arm_po(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, rewards: Tensor, group: Tensor,
           alpha: float = 0.5, fraction: float = 0.2, eps_low: float = 0.2, eps_high: float | None = None,
           return_metrics: bool = False):
    """PPO-clip with ProGRPO/ARM advantages, for a :class:`~forklab.recipes.Recipe` (surrogate ``"arm_po"``).

    c(o_i) = :func:`low_probability_confidence` of the rollout's log π_old; c(x) = the mean of c(o)
    over the prompt's group (a stand-in for the prompt's own perplexity, which a recipe does not
    see; LOW). Then Ã = :func:`arm_advantages` and the clipped surrogate of
    :func:`forklab.surrogates.ppo_clip`. ``adv`` must be per response ``[B]``. Paper and
    confidence: as :func:`arm_advantages`. Metrics add ``arm/gap_mean`` (mean |Ã − Â|).
    """
    if _checks.as_tensor("adv", adv).dim() != 1:
        raise ValueError("`adv` must have shape [B] (per-response advantages) for arm_po")
    logp, old_logp, _, mask = _prepare(logp, old_logp, adv, mask)
    adv = _checks.floating("adv", adv).to(logp.dtype)
    conf = low_probability_confidence(old_logp, mask, fraction)
    group = _checks.group_ids("group", group, adv.shape[0])
    _, inverse = torch.unique(group, return_inverse=True)
    sums = torch.zeros(int(inverse.max()) + 1, dtype=conf.dtype).index_add_(0, inverse, conf)
    counts = torch.bincount(inverse).to(conf.dtype)
    new_adv = arm_advantages(adv, rewards, group, conf, (sums / counts)[inverse], alpha)
    out = ppo_clip(logp, old_logp, new_adv, mask, eps_low, eps_high, return_metrics=return_metrics)
    if return_metrics:
        loss, metrics = out
        return loss, metrics | {"arm/gap_mean": float((new_adv - adv).abs().mean())}
    return out


# ------------------------------------------------------------------------------- Agentic EB-PO
@objective("agentic_entropy_balanced_po", needs=("entropy",), label="Agentic EB-PO (LOW)",
           notebook="05_entropy_interventions")
def agentic_entropy_balanced_po(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, entropy: Tensor,
                                eps_low: float = 0.2, eps_high: float = 0.28, gamma: float = 0.1,
                                return_metrics: bool = False):
    """Agentic Entropy-Balanced PO's update: gradient-preserving clip on high-entropy tokens, entropy-aware Â.

    .. math::
        \\tilde A_t = \\hat A \\cdot \\max\\big(0,\\ 1 + \\gamma\\,\\tfrac{H_t - \\bar H}{\\sigma_H}\\big),
        \\qquad
        \\ell_t = -\\,\\mathrm{sg}\\Big[\\tfrac{1+\\epsilon_h}{r_t}\\Big]\\, r_t\\, \\tilde A_t
        \\ \\text{ if } \\tilde A_t > 0,\\ r_t > 1+\\epsilon_h,\\ H_t \\ge \\bar H

    and the PPO clip everywhere else (H̄, σ_H: mean and std of H over the valid tokens). The
    stop-gradient keeps the clipped *value* but gives the token the gradient (1+ε_h)·Ã·∇log π
    where PPO gives 0, so high-entropy exploratory tokens keep learning after they cross the clip.

    Paper: "Agentic Entropy-Balanced Policy Optimization" (Dong et al., arXiv 2510.14545); its
    entropy-balanced *rollout* (tree branching budget) is not reproduced. verl/TRL: not in either;
    no official code found. Confidence LOW: reconstructed from the abstract's "stop-gradient in
    the high-entropy clipping term" (the same trick as GPPO/CE-GPPO); γ, the normalisation and the
    high-entropy rule (H_t ≥ mean) are this library's guesses. Notebook: 05_entropy_interventions.
    Metrics add ``eb_po/preserved_frac`` (share of tokens whose gradient the stop-gradient kept).
    """
    logp, old_logp, adv, mask = _prepare(logp, old_logp, adv, mask)
    entropy = _checks.masked("entropy", entropy, mask).detach().to(logp.dtype)
    eps_high = _checks.finite("eps_high", eps_high, 0.0)
    gamma = _checks.finite("gamma", gamma, 0.0)
    mean_h = masked_mean(entropy, mask) if mask.any() else torch.zeros((), dtype=logp.dtype)
    std_h = masked_mean((entropy - mean_h) ** 2, mask).sqrt() if mask.any() else torch.zeros((), dtype=logp.dtype)
    adv_t = adv * (1 + gamma * (entropy - mean_h) / (std_h + 1e-6)).clamp_min(0.0)
    base = ppo_clip(logp, old_logp, adv_t, mask, eps_low, eps_high)
    ratio = _log_ratio(logp, old_logp, mask).exp()
    preserve = mask & (adv_t > 0) & (ratio.detach() > 1 + eps_high) & (entropy >= mean_h)
    kept = -((1 + eps_high) / ratio).detach() * ratio * adv_t
    loss = _masked(torch.where(preserve, kept, base), mask)
    if return_metrics:
        return loss, {"eb_po/preserved_frac": _share(preserve, mask), "ratio/mean": _mean(ratio.detach(), mask)}
    return loss


# ------------------------------------------------------------------------------------- presets
@preset
def progrpo_arm() -> Recipe:
    """ProGRPO / ARM (arXiv 2602.05281, LOW): GRPO advantages re-weighted by the confidence gap
    (α = 0.5, c(o) over the lowest-probability 20% of tokens), PPO clip 0.2, token-mean."""
    return Recipe("progrpo_arm", "grpo", {}, "arm_po", {"alpha": 0.5, "fraction": 0.2, "eps_low": 0.2}, "token-mean")


@preset
def agentic_eb_po() -> Recipe:
    """Agentic Entropy-Balanced PO's update (arXiv 2510.14545, LOW): gradient-preserving clip-higher
    (0.2 / 0.28) on high-entropy tokens and an entropy-aware advantage (γ = 0.1), token-mean."""
    return Recipe("agentic_eb_po", "grpo", {}, "agentic_entropy_balanced_po",
                  {"eps_low": 0.2, "eps_high": 0.28, "gamma": 0.1}, "token-mean")


@preset
def gtpo() -> Recipe:
    """GTPO's conflict-token weights (arXiv 2508.03772; w_raw = 2) on PPO clip 0.2, token-mean. Its
    response-level entropy filter (:func:`forklab.regularizers.gtpo_entropy_filter`) is not part of
    this preset."""
    return Recipe("gtpo", "grpo", {}, "ppo_clip", {"eps_low": 0.2}, "token-mean", token_weighting="gtpo",
                  token_weighting_kwargs={"w_raw": 2.0})
