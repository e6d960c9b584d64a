"""Entropy interventions and token masks that change *which* tokens learn, and how much.

Introduced in ``notebooks/05_entropy_interventions.ipynb`` and ``06_forking_tokens.ipynb`` (planned).

Each function is pure: masks and weights are ``[B, T]`` tensors (0/False off ``mask``), losses are
per-token ``[B, T]`` like :mod:`forklab.surrogates`, reduced later with
:func:`forklab.aggregation.aggregate`. Randomised selections take an explicit ``generator``.
Padding follows forklab's one rule (docs/reliability.md): values off ``mask`` are ignored (NaN
and ±inf included), NaN or ±inf on it raises ``ValueError``; ratios and counts (``clip_ratio``,
``kl_ratio``, ``neg_ratio``, ``top_ratio``) must lie in [0, 1].
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from forklab import _checks
from forklab._objective_inputs import _log_ratio, _masked, _mean, _prepare, _share
from forklab._registry import objective
from forklab.aggregation import aggregate
from forklab.ops import _topk_indices, masked_mean
from forklab.surrogates import ppo_clip

__all__ = [
    "entropy_top_mask",
    "entropy_bonus",
    "token_covariance",
    "clip_cov",
    "kl_cov",
    "minp_proxy_logprobs",
    "lp_reg",
    "steer_weights",
    "gtpo_conflict_weights",
    "gtpo_entropy_filter",
]


def _entropy_and_mask(entropy, mask) -> tuple[Tensor, Tensor]:
    mask = _checks.bool_mask("mask", mask)
    _checks.same_shape("entropy", _checks.as_tensor("entropy", entropy), "mask", mask)
    return _checks.masked("entropy", entropy, mask), mask


def entropy_top_mask(entropy: Tensor, mask: Tensor, top_ratio: float = 0.2, method: str = "quantile") -> Tensor:
    """Keep the high-entropy "forking" tokens: the 80/20 rule (Beyond the 80/20 Rule, arXiv 2506.01939).

    ``method="quantile"`` (TRL ``top_entropy_quantile``): θ = quantile(H of valid tokens, 1 − ρ)
    with linear interpolation, keep H ≥ θ (ties kept). ρ = 1 keeps every valid token, ρ = 0 only
    the maximum. ``method="count"`` (the paper's verl code): keep the top ⌈ρ·N⌉ tokens by entropy
    (computed as int(N·ρ + 0.9999)), ties at the boundary kept.

    ============  ===============================================
    argument      shape
    ============  ===============================================
    entropy       ``[B, T]`` float, current-policy token entropy
    mask          ``[B, T]`` bool
    returns       ``[B, T]`` bool, a subset of ``mask``
    ============  ===============================================

    An all-False ``mask`` gives an all-False result (TRL does the same): there is nothing to keep.
    The statistics are over the tensor passed in — the paper and TRL use the (micro-)batch.
    """
    entropy, mask = _entropy_and_mask(entropy, mask)
    _checks.choice("method", method, {"quantile", "count"})
    rho = _checks.finite("top_ratio", top_ratio, 0.0, 1.0)
    if not mask.any():
        return torch.zeros_like(mask)
    valid = entropy[mask].double()
    if method == "quantile":
        threshold = torch.quantile(valid, 1.0 - rho)
    else:
        k = max(int(valid.numel() * rho + 0.9999), 1)
        threshold = valid.topk(k).values.min()
    return mask & (entropy.double() >= threshold)


def entropy_bonus(entropy: Tensor, mask: Tensor, coef: float = 0.01, mode: str = "token-mean",
                  **aggregate_kwargs) -> Tensor:
    """The entropy-bonus loss term −c · agg(H) (add it to the policy loss; c > 0 raises entropy).

    ``entropy`` must carry gradient (computed from logits with :func:`forklab.ops.entropy_from_logits`).
    verl aggregates it with ``loss_agg_mode`` (``entropy_coeff``, default 0); TRL always uses the
    token mean (``entropy_coef``). ``aggregate_kwargs`` (``adv``, ``group``, ``norm_len``) go to
    :func:`forklab.aggregation.aggregate`. Returns a scalar.
    """
    entropy, mask = _entropy_and_mask(entropy, mask)
    return -_checks.finite("coef", coef) * aggregate(entropy, mask, mode, **aggregate_kwargs)


def token_covariance(logp: Tensor, adv: Tensor, mask: Tensor) -> Tensor:
    """Centred per-token covariance term used by Clip-Cov and KL-Cov (The Entropy Mechanism, arXiv 2505.22617).

    .. math:: \\mathrm{Cov}_t = (\\log\\pi_\\theta(y_t) - \\overline{\\log\\pi}) \\cdot (A_t - \\bar A)

    with both means over the valid tokens of the batch; detached. ``logp [B, T]``, ``adv [B]`` or
    ``[B, T]``, ``mask [B, T]`` → ``[B, T]`` (0 off the mask). Its mean is the batch covariance whose
    sign predicts the entropy change (docs/formulas.md, HIGH).
    """
    logp, _, adv, mask = _prepare(logp, None, adv, mask)
    lp, a = logp.detach(), adv.detach()
    lp_mean, a_mean = masked_mean(lp, mask), masked_mean(a, mask)
    return _masked((lp - lp_mean) * (a - a_mean), mask)


@objective("clip_cov", label="Clip-Cov", notebook="05_entropy_interventions")
def clip_cov(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, eps_low: float = 0.2,
             eps_high: float | None = None, clip_ratio: float = 2e-4, cov_lb: float = 1.0, cov_ub: float = 5.0,
             generator: torch.Generator | None = None, return_metrics: bool = False):
    """Clip-Cov: detach the gradient of a few random high-covariance tokens (arXiv 2505.22617, §4.4 HIGH).

    Per-token loss = PPO clipped surrogate (no dual-clip) × c_t, with c_t = 0 for
    n = max(1, ⌊clip_ratio·N⌋) tokens drawn uniformly at random from the candidates
    {t : cov_lb < Cov_t < cov_ub, not already clipped by PPO}, else 1. Defaults are the paper's
    (2e-4, 1, 5); its scripts set ε_low = ε_high = 1 (PPO clip effectively off). verl:
    ``loss_mode="clip_cov"`` (``clip_cov_ratio``, ``clip_cov_lb``, ``clip_cov_ub``).
    Metrics add ``clip_cov/frac`` (share of tokens zeroed).
    """
    logp, old_logp, adv, mask = _prepare(logp, old_logp, adv, mask)
    eps_low = _checks.finite("eps_low", eps_low, 0.0, 1.0)
    eps_high = eps_low if eps_high is None else _checks.finite("eps_high", eps_high, 0.0, 1e6)
    clip_ratio = _checks.finite("clip_ratio", clip_ratio, 0.0, 1.0)
    cov_lb, cov_ub = _checks.finite("cov_lb", cov_lb), _checks.finite("cov_ub", cov_ub)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"`generator` must be a torch.Generator or None, got {type(generator).__name__}")
    loss, metrics = ppo_clip(logp, old_logp, adv, mask, eps_low, eps_high, return_metrics=True)
    ratio = _log_ratio(logp, old_logp, mask).exp().detach()
    ppo_clipped = ((adv > 0) & (ratio > 1 + eps_high)) | ((adv < 0) & (ratio < 1 - eps_low))
    cov = token_covariance(logp, adv, mask)
    candidates = torch.nonzero((mask & ~ppo_clipped & (cov > cov_lb) & (cov < cov_ub)).flatten()).flatten()
    n_clip = max(int(clip_ratio * int(mask.sum())), 1)
    keep = torch.ones(mask.numel(), dtype=loss.dtype, device=loss.device)
    if candidates.numel():
        chosen = candidates[torch.randperm(candidates.numel(), generator=generator)[:n_clip].to(candidates.device)]
        keep[chosen] = 0.0
    keep = keep.reshape(mask.shape)
    metrics["clip_cov/frac"] = _share((keep == 0) & mask, mask)
    loss = loss * keep
    return (loss, metrics) if return_metrics else loss


@objective("kl_cov", label="KL-Cov", notebook="05_entropy_interventions")
def kl_cov(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, kl_ratio: float = 2e-3, kl_coef: float = 1.0,
           return_metrics: bool = False):
    """KL-Cov: a |log-ratio| penalty on the top-covariance tokens, no PPO clipping (arXiv 2505.22617, §4.5).

    .. math:: \\ell_t = -A_t r_t
              + \\kappa\\,|\\log\\pi_\\theta(y_t) - \\log\\pi_{old}(y_t)|\\,[t \\in \\mathrm{top}_k(\\mathrm{Cov})]

    k = max(1, ⌊kl_ratio·N⌋). Paper scripts: ``k_percent`` 0.2 (7B) → 2e-3 (the default here) or
    0.02 (32B) → 2e-4, κ = ``ppo_kl_coef`` = 1. verl: ``loss_mode="kl_cov"`` (``kl_cov_ratio`` default
    2e-4). No clip on any token, as in the code. Metrics add ``kl_cov/frac`` and ``ppo_kl`` (mean |δ|).
    """
    logp, old_logp, adv, mask = _prepare(logp, old_logp, adv, mask)
    kl_ratio = _checks.finite("kl_ratio", kl_ratio, 0.0, 1.0)
    kl_coef = _checks.finite("kl_coef", kl_coef, 0.0)
    delta = _log_ratio(logp, old_logp, mask)
    ratio = delta.exp()
    cov = token_covariance(logp, adv, mask)
    k = max(int(kl_ratio * int(mask.sum())), 1)
    flat = torch.where(mask, cov, torch.full_like(cov, -math.inf)).flatten()
    selected = torch.zeros(mask.numel(), dtype=torch.bool, device=mask.device)
    selected[_topk_indices(flat, k)] = True
    selected = selected.reshape(mask.shape) & mask
    # |δ| below float noise counts as 0 (zero gradient): at ratio 1 verl's δ is exactly 0, whose |·| has
    # zero gradient; here the sampler's and the trainer's log-probs differ by rounding, and the sign of
    # that rounding (which differs between CPU kernel sets) would otherwise set the gradient to ±κ.
    noise = 1e3 * torch.finfo(delta.dtype).eps
    abs_delta = torch.where(delta.abs() > noise, delta.abs(), torch.zeros_like(delta))
    loss = -adv * ratio + kl_coef * abs_delta * selected
    metrics = {"kl_cov/frac": _share(selected, mask), "ppo_kl": _mean(delta.detach().abs(), mask)}
    loss = _masked(loss, mask)
    return (loss, metrics) if return_metrics else loss


def minp_proxy_logprobs(logits: Tensor, tokens: Tensor, kappa: float = 0.02, temperature: float = 1.0) -> Tensor:
    """Log-probability of each sampled token under Lp-Reg's min-p proxy distribution.

    .. math:: \\pi_{proxy}(v) \\propto \\pi(v)\\,[\\pi(v) \\ge \\kappa \\max_u \\pi(u)]

    Filtered tokens get logit −1e4 as in the reference code, so their proxy log-prob is about
    −1e4 (never −inf). ``logits [B, T, V]`` (the old policy's, per the released runs), ``tokens [B, T]``
    → ``[B, T]``. Lp-Reg (arXiv 2510.03222): κ = ``minp_p_threshold`` = 0.02.
    """
    logits = _checks.logits("logits", logits)
    if logits.dim() != 3:
        raise ValueError(f"`logits` must have shape [B, T, V], got {list(logits.shape)}")
    kappa = _checks.finite("kappa", kappa, 0.0, 1.0)
    z = logits.double() / _checks.positive("temperature", temperature)
    p = torch.softmax(z, -1)
    keep = p >= kappa * p.amax(-1, keepdim=True)
    filtered = torch.where(keep, z, torch.full_like(z, -1e4))
    tokens = _checks.as_tensor("tokens", tokens)
    if tokens.shape != logits.shape[:-1]:
        raise ValueError(f"`tokens` must have shape {list(logits.shape[:-1])}, got {list(tokens.shape)}")
    if tokens.is_floating_point() or tokens.dtype == torch.bool or tokens.is_complex():
        raise ValueError(f"`tokens` must be integer ids, got dtype {tokens.dtype}")
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= logits.shape[-1]):
        raise ValueError(f"`tokens` must lie in [0, {logits.shape[-1]})")
    return torch.log_softmax(filtered, -1).gather(-1, tokens.long()[..., None])[..., 0].to(logits.dtype)


@objective("lp_reg", needs=("proxy_logp",), label="Lp-Reg", notebook="05_entropy_interventions")
def lp_reg(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, proxy_logp: Tensor, neg_ratio: float = 0.01,
           beta: float = 1.0, eps_low: float = 1.0, eps_high: float = 9.0, return_metrics: bool = False):
    """Lp-Reg: protect rare but plausible tokens of negative samples (arXiv 2510.03222; docs/formulas.md, HIGH code).

    Among valid tokens with A < 0, take the lowest-probability ⌈ρ·N⁻⌉ (ρ = ``neg_ratio``; 1% for
    Qwen3-14B, 0.5% for Qwen2.5-32B); those with π_θ(y_t) < π_proxy(y_t) (i.e. not filtered out as
    noise by the min-p proxy, :func:`minp_proxy_logprobs`) are regularised:

    .. math:: \\ell_t = -A_t r_t + \\beta\\,k_3, \\quad
              k_3 = \\frac{\\pi_{proxy}}{\\pi_\\theta} - \\log\\frac{\\pi_{proxy}}{\\pi_\\theta} - 1

    every other token uses the clipped surrogate with the scripts' clip range (ε_low = 1, ε_high = 9).
    ``proxy_logp`` ``[B, T]``. Metrics add ``lp_reg/frac``.
    """
    logp, old_logp, adv, mask = _prepare(logp, old_logp, adv, mask)
    proxy_logp = _checks.masked("proxy_logp", proxy_logp, mask).to(logp.dtype)
    neg_ratio = _checks.finite("neg_ratio", neg_ratio, 0.0, 1.0)
    beta = _checks.finite("beta", beta, 0.0)
    base = ppo_clip(logp, old_logp, adv, mask, eps_low, eps_high)
    negative = mask & (adv < 0)
    selected = torch.zeros(mask.shape, dtype=torch.bool, device=mask.device)  # contiguous, whatever mask is
    n_neg = int(negative.sum())
    if n_neg:
        k = max(math.ceil(neg_ratio * n_neg), 1)
        flat = torch.where(negative, logp.detach(), torch.full_like(logp, math.inf)).flatten()
        idx = _topk_indices(-flat, k)
        selected.view(-1)[idx] = True
        selected &= negative & (logp.detach() < proxy_logp)
    ratio = _log_ratio(logp, old_logp, mask).exp()
    log_q_over_p = (proxy_logp - logp).clamp(max=20.0)
    k3 = log_q_over_p.exp() - log_q_over_p - 1
    regularised = -adv * ratio + beta * k3
    loss = _masked(torch.where(selected, regularised, base), mask)
    if return_metrics:
        return loss, {"lp_reg/frac": _share(selected, mask)}
    return loss


def steer_weights(adv: Tensor, logp: Tensor, old_logp: Tensor, entropy: Tensor, mask: Tensor,
                  lambda_min: float = 0.8, variant: str = "exp") -> Tensor:
    """STEER's per-token weights from the estimated entropy change Ω (arXiv 2510.10150; docs/formulas.md, HIGH code).

    .. math:: \\Omega_t = \\frac{A_t}{\\pi_{old}(y_t)}\\,\\pi_\\theta(y_t)(1-\\pi_\\theta(y_t))
              \\,(\\log\\pi_\\theta(y_t) + H_t)

    ``variant="exp"``: λ = clip(exp(−k|Ω|), λ_min, 1), k = −ln λ_min / max(max|Ω|, 0.02);
    ``variant="linear"``: |Ω| mapped linearly onto [λ_min, 2 − λ_min] = [0.8, 1.2], larger |Ω|
    getting the smaller weight. Multiply the DAPO dual-clip per-token loss by λ (clip 0.2/0.28,
    c = 10, token-mean). All inputs ``[B, T]`` (``adv`` may be ``[B]``); returns detached ``[B, T]``,
    0 off the mask.
    """
    _checks.choice("variant", variant, {"exp", "linear"})
    logp, old_logp, adv, mask = _prepare(logp, old_logp, adv, mask)
    entropy = _checks.masked("entropy", entropy, mask).to(logp.dtype)
    lambda_min = _checks.finite("lambda_min", lambda_min, 0.0, 1.0, low_open=True)
    if lambda_min == 1.0:
        raise ValueError(f"`lambda_min` must lie in (0, 1), got {lambda_min}")
    lp = logp.detach().double()
    p = lp.exp()
    # A/π_old · π_θ as A·e^(log π_θ − log π_old) in float64: 1/π_old alone overflows fp32 below log π_old ≈ −88
    # (and adv/exp(old_logp) gave inf·0 = NaN); exp stays finite up to δ ≈ 709
    weight = (lp - old_logp.detach().double()).clamp(max=700.0).exp()
    omega = _masked(adv.double() * weight * (1 - p) * (lp + entropy.detach().double()), mask).abs()
    peak = omega.max()
    if variant == "exp":
        k = -math.log(lambda_min) / max(float(peak), 0.02)
        lam = torch.exp(-k * omega).clamp(lambda_min, 1.0)
    else:
        scale = omega / peak if peak > 0 else torch.zeros_like(omega)
        lam = (2 - lambda_min) - 2 * (1 - lambda_min) * scale
    return _masked(lam.to(logp.dtype), mask)


def _leading_run(conflict: Tensor, valid: Tensor) -> Tensor:
    """Keep only the leading contiguous run of True along dim 1 (over valid positions)."""
    return torch.cumprod((conflict | ~valid).long(), dim=1).bool() & valid


def gtpo_conflict_weights(tokens: Tensor, mask: Tensor, adv: Tensor, group: Tensor, w_raw: float = 2.0) -> Tensor:
    """GTPO's conflict-token weights (arXiv 2508.03772; read from its code, HIGH as implemented).

    A token *conflicts* if the same token id sits at the same position in at least one positive-
    and at least one negative-advantage response of its group (A = 0 responses are ignored); only
    the leading contiguous run of conflicts counts (in practice the shared prefix). The check is
    repeated with responses aligned at their ends (the shared suffix, e.g. format tokens). Weight
    per direction: 1 for non-conflict tokens, ``w_raw`` (2) for conflict tokens of positive
    responses (amplified), 0 for conflict tokens of negative responses (their update is skipped);
    the result is the product of the forward and backward weights.

    ``tokens [B, T]`` long, ``mask [B, T]``, ``adv [B]``, ``group [B]`` → float ``[B, T]`` (0 off mask).
    (The reference code also divides each response's loss by its number of conflict tokens; that
    normalisation is left to the caller.)
    """
    mask = _checks.bool_mask("mask", mask)
    tokens = _checks.as_tensor("tokens", tokens)
    _checks.same_shape("mask", mask, "tokens", tokens)
    w_raw = _checks.finite("w_raw", w_raw, 0.0)
    adv = _checks.floating("adv", adv)
    if adv.shape != (mask.shape[0],):
        raise ValueError(f"`adv` must have shape [{mask.shape[0]}] (one per response), got {list(adv.shape)}")
    if tokens.is_floating_point() or tokens.is_complex():
        raise ValueError(f"`tokens` must be integer ids, got dtype {tokens.dtype}")
    tokens = tokens.long()
    group = _checks.group_ids("group", group, mask.shape[0])

    def one_direction(tok: Tensor, valid: Tensor) -> Tensor:
        pos, neg = adv > 0, adv < 0
        same_group = group[:, None] == group[None, :]  # [B, B]
        same_token = (tok[:, None, :] == tok[None, :, :]) & valid[:, None, :] & valid[None, :, :]  # [B, B, T]
        opposite = (pos[:, None] & neg[None, :]) | (neg[:, None] & pos[None, :])
        conflict = (same_token & (same_group & opposite)[:, :, None]).any(1)
        conflict = _leading_run(conflict, valid)
        weight = torch.ones(mask.shape, dtype=torch.float64, device=mask.device)
        weight = torch.where(conflict & pos[:, None], torch.full_like(weight, float(w_raw)), weight)
        return torch.where(conflict & neg[:, None], torch.zeros_like(weight), weight)

    forward = one_direction(tokens, mask)
    # end-aligned: reverse each response's valid tokens so that position 0 is its last token
    lengths = mask.sum(1)
    t = torch.arange(mask.shape[1], device=mask.device)
    rev_index = (lengths[:, None] - 1 - t[None, :]).clamp(min=0)
    rev_tokens = tokens.gather(1, rev_index)
    rev_valid = t[None, :] < lengths[:, None]
    backward_rev = one_direction(rev_tokens, rev_valid)
    backward = backward_rev.gather(1, rev_index)  # position p <-> reversed position L-1-p (an involution)
    return _masked(forward * backward, mask)


def gtpo_entropy_filter(adv: Tensor, seq_entropy: Tensor, threshold: float = 0.7, scale: float = 0.1) -> Tensor:
    """GTPO's entropy control: drop high-entropy responses, penalise the rest (arXiv 2508.03772 code).

    A_i ← 0 if H̄_i > threshold else A_i − scale·H̄_i, with H̄_i the mean token entropy of response i.
    Defaults 0.7 / 0.1 (``ent_threshold``, ``ent_scale``). ``adv``, ``seq_entropy``: ``[B]``.
    """
    adv = _checks.floating("adv", adv)
    seq_entropy = _checks.floating("seq_entropy", seq_entropy).to(adv.dtype)
    _checks.same_shape("adv", adv, "seq_entropy", seq_entropy)
    threshold, scale = _checks.finite("threshold", threshold), _checks.finite("scale", scale)
    return torch.where(seq_entropy > threshold, torch.zeros_like(adv), adv - scale * seq_entropy)
