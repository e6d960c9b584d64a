"""Per-token policy-gradient surrogates: the GRPO family's ratios, clips and gates.

Introduced in ``notebooks/03_ratios_and_clipping.ipynb``.

Every function returns a per-token *loss to minimise* ``[B, T]``, exactly 0 where ``mask`` is
False; reduce it with :func:`forklab.aggregation.aggregate`. With ``return_metrics=True`` it
returns ``(loss, metrics)`` where ``metrics`` holds what real trainers log (TRL's names where TRL
has one: ``clip_ratio/low_mean``, ``clip_ratio/high_mean``, ``clip_ratio/region_mean``; verl's
``ppo_kl``; ``ratio/mean``), as Python floats over the valid tokens.

Shared inputs:

============  =======================================================================
argument      shape / meaning
============  =======================================================================
logp          ``[B, T]`` float, log π_θ of the sampled tokens (carries the gradient)
old_logp      ``[B, T]`` float, log π_old (the rollout policy); treated as a constant
adv           ``[B]`` (one per response, broadcast) or ``[B, T]`` (per token)
mask          ``[B, T]`` bool, True on response tokens
============  =======================================================================

Ratios: δ = logp − old_logp is clamped to [−20, 20] before exponentiation (as verl does) so that a
far-off-policy token cannot overflow; r = e^δ.

Padding (the rule of every forklab module, docs/reliability.md): values off ``mask`` are ignored,
NaN and ±inf included — they are replaced by 0 before any arithmetic, so they reach neither the
loss nor the gradient; NaN or ±inf on ``mask`` raises ``ValueError`` naming the argument. Clip
widths must be finite and ≥ 0 (``eps_low`` ≤ 1 where the clip is 1 − ε_low on a ratio).
"""

from __future__ import annotations

import torch
from torch import Tensor

from forklab import _checks
from forklab._hapo_entropy import hapo_entropy_stats, hapo_normalized_entropy, hapo_redistribute
from forklab._objective_inputs import (
    _LOG_RATIO_CLAMP,
    _eps,
    _eps_tensor,
    _log_ratio,
    _masked,
    _mean,
    _prepare,
    _share,
    ratio_metrics,
)
from forklab._registry import objective
from forklab.ops import masked_mean

__all__ = [
    "reinforce",
    "ppo_clip",
    "gspo",
    "sapo",
    "cispo",
    "gmpo",
    "dhpo",
    "dhpo_entropy_weight",
    "hapo_entropy_stats",
    "hapo_normalized_entropy",
    "hapo_clip",
    "hapo_redistribute",
    "prefix_log_ratio",
    "minpro",
    "ratio_metrics",
]

def _out(loss, mask, metrics, return_metrics):
    loss = _masked(loss, mask)
    return (loss, metrics) if return_metrics else loss


# -------------------------------------------------------------------------------- surrogates
@objective("reinforce", label="REINFORCE", notebook="01_policy_gradients_and_advantages")
def reinforce(logp: Tensor, adv: Tensor, mask: Tensor, return_metrics: bool = False):
    """Plain policy gradient, no ratio and no clip: ℓ = −A · log π_θ(y_t).

    The on-policy REINFORCE surrogate; its gradient is −A ∇log π. GPG ("GPG: A Simple and Strong
    Reinforcement Learning Baseline", arXiv 2504.02546) uses exactly this. verl:
    ``loss_mode="gpg"``. Shapes: see module docstring; no ``old_logp``.
    """
    logp, _, adv, mask = _prepare(logp, None, adv, mask)
    metrics = {"ratio/mean": 1.0, "clip_ratio/low_mean": 0.0, "clip_ratio/high_mean": 0.0,
               "clip_ratio/region_mean": 0.0}
    return _out(-adv * logp, mask, metrics, return_metrics)


@objective("ppo_clip", label="PPO clip", notebook="03_ratios_and_clipping")
def ppo_clip(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, eps_low=0.2, eps_high=None,
             dual_clip: float | None = None, return_metrics: bool = False):
    """PPO's clipped surrogate with asymmetric clips (DAPO clip-higher) and optional dual-clip.

    .. math::
        r = e^{\\delta},\\;
        \\ell^{clip} = \\max\\big(-A r,\\; -A\\,\\mathrm{clip}(r, 1-\\epsilon_{low}, 1+\\epsilon_{high})\\big),
        \\qquad \\ell = \\min(\\ell^{clip}, -A c) \\text{ if } A < 0 \\text{ and dual-clip } c

    ``eps_high=None`` means ε_high = ε_low (symmetric PPO); DAPO (arXiv 2503.14476) uses 0.2 / 0.28.
    ``eps_low``/``eps_high`` may be floats or ``[B, T]`` tensors (per-token clips, see
    :func:`hapo_clip`). Dual-clip (Ye et al., arXiv 1912.09729) caps the loss of a negative-
    advantage token at c·|A| so that r > c contributes no gradient; c must be > 1.

    A token whose binding clip is active (A > 0 and r > 1+ε_high, or A < 0 and r < 1−ε_low) gets
    zero gradient. verl: ``loss_mode="vanilla"`` (``clip_ratio_low/high``, ``clip_ratio_c=3.0``
    always on); TRL: ``loss_type`` grpo/dapo/bnpo/dr_grpo with ``epsilon``/``epsilon_high`` and
    ``delta`` (≡ dual-clip c when δ ≥ 1+ε_high). Metrics add verl's ``pg_clipfrac_lower`` (share
    of tokens where the dual clip binds) and ``ppo_kl`` (mean −δ).
    """
    logp, old_logp, adv, mask = _prepare(logp, old_logp, adv, mask)
    eps_low = _eps_tensor("eps_low", eps_low, logp, 1.0)
    eps_high = eps_low if eps_high is None else _eps_tensor("eps_high", eps_high, logp, 1e6)
    delta = _log_ratio(logp, old_logp, mask)
    ratio = delta.exp()
    # bounds on the ratio's device: clamp takes no CPU tensor bounds for a CUDA input
    clipped = torch.clamp(ratio, 1 - torch.as_tensor(eps_low, dtype=ratio.dtype, device=ratio.device),
                          1 + torch.as_tensor(eps_high, dtype=ratio.dtype, device=ratio.device))
    loss = torch.maximum(-adv * ratio, -adv * clipped)
    metrics = ratio_metrics(ratio, adv, mask, eps_low, eps_high) if return_metrics else {}
    if dual_clip is not None:
        c = _checks.finite("dual_clip", dual_clip, 1.0, low_open=True)
        capped = torch.minimum(loss, -adv * c)
        if return_metrics:
            metrics["pg_clipfrac_lower"] = _share((adv < 0) & (loss > -adv * c) & mask, mask)
        loss = torch.where(adv < 0, capped, loss)
    if return_metrics:
        metrics["ppo_kl"] = _mean(-delta.detach(), mask)
    return _out(loss, mask, metrics, return_metrics)


def _sequence_log_ratio(delta: Tensor, mask: Tensor) -> Tensor:
    """Per-sequence mean log-ratio ``[B, 1]`` (log of GSPO's length-normalised sequence ratio)."""
    return masked_mean(delta, mask, dim=1)[:, None]


@objective("gspo", label="GSPO", notebook="03_ratios_and_clipping")
def gspo(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, eps_low: float = 3e-4,
         eps_high: float = 4e-4, return_metrics: bool = False):
    """GSPO: clip the length-normalised *sequence* ratio (Zheng et al., arXiv 2507.18071).

    .. math::
        s_i = \\exp\\Big(\\tfrac{1}{|o_i|}\\sum_t \\delta_{i,t}\\Big), \\quad
        s_{i,t} = \\mathrm{sg}[s_i]\\,\\frac{\\pi_\\theta(y_t)}{\\mathrm{sg}[\\pi_\\theta(y_t)]}, \\quad
        \\ell_{i,t} = \\max\\big(-A_{i,t} s_{i,t},\\,
        -A_{i,t}\\,\\mathrm{clip}(s_{i,t}, 1-\\epsilon_l, 1+\\epsilon_h)\\big)

    This is verl's stop-gradient ("GSPO-token") form: every token's value is s_i and its gradient is
    s_i ∇log π(y_t). With a sequence-level advantage and ``seq-mean-token-mean`` aggregation it has
    exactly the value and gradient of the paper's sequence objective (TRL computes s_i directly);
    with a per-token ``adv [B, T]`` it is GSPO-token. Clip ε is ~1e-4-scale (paper: 3e-4 / 4e-4),
    not 0.2. verl: ``loss_mode="gspo"`` (forces seq-mean-token-mean, clamps log s ≤ 10, done here
    too); TRL: ``importance_sampling_level="sequence"``.
    """
    logp, old_logp, adv, mask = _prepare(logp, old_logp, adv, mask)
    eps_low, eps_high = _eps("eps_low", eps_low, 1.0), _eps("eps_high", eps_high)
    delta = _log_ratio(logp, old_logp, mask)
    seq = _sequence_log_ratio(delta, mask)
    log_s = (logp - logp.detach() + seq.detach()).clamp(max=10.0)
    s = torch.where(mask, log_s, torch.zeros((), dtype=log_s.dtype)).exp()
    loss = torch.maximum(-adv * s, -adv * torch.clamp(s, 1 - eps_low, 1 + eps_high))
    metrics = ratio_metrics(s, adv, mask, eps_low, eps_high) if return_metrics else {}
    return _out(loss, mask, metrics, return_metrics)


@objective("sapo", label="SAPO", notebook="03_ratios_and_clipping")
def sapo(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, tau_pos: float = 1.0, tau_neg: float = 1.05,
         return_metrics: bool = False):
    """SAPO's soft gate instead of a hard clip (Soft Adaptive Policy Optimization, arXiv 2511.20347).

    .. math:: f_\\tau(r) = \\frac{4}{\\tau}\\,\\sigma\\big(\\tau (r - 1)\\big), \\qquad \\ell = -f_\\tau(r)\\,A,
              \\qquad \\tau = \\tau_{pos} \\text{ if } A > 0 \\text{ else } \\tau_{neg}

    The gradient is −f'_τ(r)·r·A∇log π with f'_τ = 4σ(1−σ): the weight c(r) = 4σ(1−σ)·r equals 1 at
    r = 1 (the on-policy gradient), *rises above 1* for r > 1 (for τ = 1 it peaks at c ≈ 1.57 near
    r ≈ 2.06 and falls back to 1 only near r ≈ 3.47), and decays to 0 only far out; below r = 1 it
    shrinks smoothly. Nothing is cut, unlike a hard clip. τ_neg > τ_pos because negative
    updates spread mass to many unsampled tokens. verl ``loss_mode="sapo"`` and TRL
    ``loss_type="sapo"`` agree (``tau_pos``/``tau_neg``; TRL ``sapo_temperature_pos/neg``), both with
    seq-mean-token-mean aggregation. Metrics: ``ratio/mean`` and ``sapo/gate_slope_mean`` (mean f').
    """
    logp, old_logp, adv, mask = _prepare(logp, old_logp, adv, mask)
    tau_pos, tau_neg = _checks.positive("tau_pos", tau_pos), _checks.positive("tau_neg", tau_neg)
    ratio = _log_ratio(logp, old_logp, mask).exp()
    tau = torch.where(adv > 0, torch.as_tensor(tau_pos, dtype=ratio.dtype), torch.as_tensor(tau_neg, dtype=ratio.dtype))
    gate = torch.sigmoid(tau * (ratio - 1))
    loss = -(4 / tau) * gate * adv
    metrics = {}
    if return_metrics:
        g = gate.detach()
        metrics = {"ratio/mean": _mean(ratio.detach(), mask), "sapo/gate_slope_mean": _mean(4 * g * (1 - g), mask)}
    return _out(loss, mask, metrics, return_metrics)


@objective("cispo", label="CISPO", notebook="03_ratios_and_clipping")
def cispo(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, eps_low: float = 0.2,
          eps_high: float | None = None, convention: str = "verl", return_metrics: bool = False):
    """CISPO: clip the importance-sampling *weight*, never the gradient (MiniMax-M1, arXiv 2506.13585).

    .. math:: \\ell = -\\,\\mathrm{sg}[w(r)]\\; A \\,\\log\\pi_\\theta(y_t)

    ``convention="verl"``: w = clip(r, 1 − ε_low, 1 + ε_high), two-sided, ε_high defaults to ε_low
    (verl ``loss_mode="cispo"``; a ScaleRL-like setting there is ε_low = 1, ε_high = 4).
    ``convention="trl"``: w = min(r, ε_high) with ε_high an *absolute* cap, default 5.0 (TRL
    ``loss_type="cispo"``, ScaleRL's recommendation; TRL's own default ε_high = ε = 0.2 caps every
    weight at 0.2 if forgotten). Unlike PPO, clipped tokens keep a gradient: −sg[w]·A·∇log π.

    Metric ``cispo_clip_ratio`` follows TRL (``GRPOTrainer._compute_loss``: ``(coef_1 > epsilon_high)
    & (advantages > 0)``, a mean over the valid tokens): the share of tokens whose weight hits the
    *upper* cap while A > 0, i.e. the tokens whose push up is damped. The upper cap is 1 + ε_high
    (verl) or ε_high (trl); tokens held at the lower bound, or with A ≤ 0, are not counted.
    """
    _checks.choice("convention", convention, {"verl", "trl"})
    logp, old_logp, adv, mask = _prepare(logp, old_logp, adv, mask)
    ratio = _log_ratio(logp, old_logp, mask).exp().detach()
    if convention == "verl":
        eps_low = _eps("eps_low", eps_low, 1.0)
        eps_high = eps_low if eps_high is None else _eps("eps_high", eps_high)
        weight = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
        cap = 1 + eps_high
    else:
        eps_high = 5.0 if eps_high is None else _checks.positive("eps_high", eps_high)
        weight = torch.clamp(ratio, max=eps_high)
        cap = eps_high
    loss = -weight * adv * logp
    metrics = {}
    if return_metrics:
        # TRL's definition: share of valid tokens whose weight is capped from above *and* whose A > 0
        clipped = (ratio > cap) & (adv > 0) & mask
        metrics = {"ratio/mean": _mean(ratio, mask), "cispo_clip_ratio": float(clipped.sum() / mask.sum())}
    return _out(loss, mask, metrics, return_metrics)


@objective("gmpo", label="GMPO", notebook="03_ratios_and_clipping")
def gmpo(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, eps_low: float = 0.4, eps_high: float = 0.4,
         return_metrics: bool = False):
    """GMPO: maximise the *geometric* mean of token ratios, clipped per token in log space (arXiv 2507.20673).

    .. math::
        \\tilde\\delta_t = \\mathrm{sgn}(A)\\,\\min\\big(\\mathrm{sgn}(A)\\,\\delta_t,\\;
        \\mathrm{sgn}(A)\\,\\mathrm{clamp}(\\delta_t, -\\epsilon_l, \\epsilon_h)\\big), \\quad
        \\rho_i = \\exp\\Big(\\tfrac{1}{|o_i|}\\sum_t \\tilde\\delta_t\\Big), \\quad
        \\ell_i = -\\bar A_i\\,\\rho_i

    A sequence-level loss: every valid token of sequence i carries the value ℓ_i, so
    ``aggregate(..., "seq-mean-token-mean")`` gives verl's plain mean over sequences (verl
    ``loss_mode="geo_mean"`` ignores ``loss_agg_mode``). Ā_i is the masked mean of ``adv``.

    ε are *log-space* bounds: default ±0.4, i.e. token ratios in (e^−0.4, e^0.4) = (0.670, 1.492), as
    in the official scripts (``CLIPRANGE=0.4``) and verl's example (``clip_ratio_low = clip_ratio_high
    = 0.4`` with ``loss_mode=geo_mean``). HIGH: paper, official code and verl agree. Notebook 03.
    """
    logp, old_logp, adv, mask = _prepare(logp, old_logp, adv, mask)
    eps_low, eps_high = _eps("eps_low", eps_low, _LOG_RATIO_CLAMP), _eps("eps_high", eps_high, _LOG_RATIO_CLAMP)
    delta = _log_ratio(logp, old_logp, mask)
    seq_adv = masked_mean(adv, mask, dim=1)
    sign = torch.sign(seq_adv)[:, None]
    clipped = sign * torch.minimum(sign * delta, sign * delta.clamp(-eps_low, eps_high))
    rho = torch.exp(masked_mean(clipped, mask, dim=1))
    loss = (-seq_adv * rho)[:, None].expand_as(logp)
    metrics = {}
    if return_metrics:
        metrics = ratio_metrics(delta.exp(), adv, mask, 1 - torch.exp(torch.tensor(-eps_low)).item(),
                                torch.exp(torch.tensor(eps_high)).item() - 1)
        metrics["gmpo/seq_ratio_mean"] = float(rho.detach().mean())
    return _out(loss, mask, metrics, return_metrics)


def dhpo_entropy_weight(entropy: Tensor, mask: Tensor) -> Tensor:
    """Entropy-guided mixing weight for :func:`dhpo`: batch min–max normalised token entropy in [0, 1].

    LOW confidence reconstruction (docs/formulas.md, Notebook 03): high-entropy (forking) tokens lean on their own
    token ratio, low-entropy tokens on the sequence ratio. ``entropy``, ``mask``: ``[B, T]``.
    """
    mask = _checks.bool_mask("mask", mask)
    _checks.same_shape("entropy", _checks.as_tensor("entropy", entropy), "mask", mask)
    entropy = _checks.masked("entropy", entropy, mask)
    valid = entropy[mask]
    if valid.numel() == 0:
        raise ValueError("`mask` is empty")
    lo, hi = valid.min(), valid.max()
    w = (entropy - lo) / (hi - lo) if hi > lo else torch.full_like(entropy, 0.5)
    return _masked(w.clamp(0, 1), mask)


@objective("dhpo", label="DHPO (LOW)", notebook="03_ratios_and_clipping")
def dhpo(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, weight=0.5, eps_token: float = 0.2,
         eps_seq: float = 0.2, return_metrics: bool = False):
    """DHPO: mix the token ratio and the sequence ratio, each clipped in its own range (arXiv 2601.05607).

    **LOW confidence — a reconstruction from the abstract** (docs/formulas.md, Notebook 03; the code was "to be
    released"). Implemented as documented there, PPO-style pessimistic:

    .. math::
        \\tilde\\rho = w\\, r_{i,t} + (1-w)\\, s_i, \\quad
        \\hat\\rho = w\\,\\mathrm{clip}(r_{i,t}, 1\\pm\\epsilon_{tok})
        + (1-w)\\,\\mathrm{clip}(s_i, 1\\pm\\epsilon_{seq}),
        \\quad \\ell = \\max(-A\\tilde\\rho,\\; -A\\hat\\rho)

    with s_i = exp(mean_t δ) carrying its gradient through every token (TRL's GSPO form).
    ``weight``: 0.5 for the "averaged" variant, or a ``[B, T]`` tensor in [0, 1] for the
    "entropy-guided" one (:func:`dhpo_entropy_weight`). w = 1 is PPO-clip, w = 0 is GSPO with
    sequence ratios. Not in verl/TRL.
    """
    logp, old_logp, adv, mask = _prepare(logp, old_logp, adv, mask)
    eps_token, eps_seq = _eps("eps_token", eps_token, 1.0), _eps("eps_seq", eps_seq, 1.0)
    w = _checks.masked("weight", weight, mask) if isinstance(weight, Tensor) and weight.dim() else \
        torch.as_tensor(_checks.finite("weight", weight), dtype=logp.dtype)
    w = w.to(logp.dtype)
    if ((w < 0) | (w > 1)).any():
        raise ValueError("`weight` must lie in [0, 1]")
    delta = _log_ratio(logp, old_logp, mask)
    r = delta.exp()
    s = _sequence_log_ratio(delta, mask).exp().expand_as(r)
    mixed = w * r + (1 - w) * s
    mixed_clipped = w * r.clamp(1 - eps_token, 1 + eps_token) + (1 - w) * s.clamp(1 - eps_seq, 1 + eps_seq)
    loss = torch.maximum(-adv * mixed, -adv * mixed_clipped)
    metrics = ratio_metrics(mixed, adv, mask, eps_token, eps_token) if return_metrics else {}
    return _out(loss, mask, metrics, return_metrics)


@objective("hapo_clip", needs=("entropy",), label="HAPO clip", notebook="03_ratios_and_clipping")
def hapo_clip(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, entropy: Tensor, eps_low: float = 0.2,
              eps_high: float = 0.2, alpha: float = 1.0, dual_clip: float | None = 3.0, pivot: float = 0.8,
              return_metrics: bool = False):
    """HAPO's Asymmetric Adaptive Clipping: per-token clip ranges from normalised entropy (arXiv 2509.16591).

    .. math::
        \\hat h_t \\le 0:\\; \\epsilon_{low,t} = \\epsilon_{low}(1 - \\alpha \\hat h_t),\\;
        \\epsilon_{high,t} = \\epsilon_{high};
        \\qquad \\hat h_t > 0:\\; \\epsilon_{high,t} = \\epsilon_{high}(1 + \\alpha \\hat h_t),\\;
        \\epsilon_{low,t} = \\epsilon_{low}

    Low-entropy (confident, possibly noisy) tokens may drop further; high-entropy tokens may rise
    further. ĥ from :func:`hapo_normalized_entropy`; then :func:`ppo_clip` with per-token ε and
    dual-clip (HAPO's loss is "the usual dual-clip PPO"; c = 3.0 as verl). HIGH as implemented in
    the HAPO repository (docs/formulas.md, Notebook 03). ``entropy``: ``[B, T]`` of the rollout policy.
    """
    eps_low, eps_high = _eps("eps_low", eps_low, 1.0), _eps("eps_high", eps_high)
    alpha = _checks.finite("alpha", alpha, 0.0, 1e6)
    h_hat = hapo_normalized_entropy(entropy, mask, pivot)
    e_low = torch.where(h_hat <= 0, eps_low * (1 - alpha * h_hat), torch.full_like(h_hat, eps_low))
    e_high = torch.where(h_hat > 0, eps_high * (1 + alpha * h_hat), torch.full_like(h_hat, eps_high))
    e_low = e_low.clamp(max=1.0)  # a ratio cannot fall below 0, so 1 − ε_low stops at 0
    return ppo_clip(logp, old_logp, adv, mask, e_low.to(torch.as_tensor(logp).dtype),
                    e_high.to(torch.as_tensor(logp).dtype), dual_clip=dual_clip, return_metrics=return_metrics)


def prefix_log_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor) -> Tensor:
    """Log of the prefix importance ratio Π_{t' ≤ t} r_{t'} (cumulative sum of δ over the response).

    The ratio of the probabilities of the whole prefix y_{≤t} under π_θ and π_old — the correct
    importance weight for the state reached at step t, which token-level PPO ignores. Used by the
    prefix-ratio (MinPRO) objective; ``[B, T] -> [B, T]``, 0 off the mask. Differentiable.
    """
    mask = _checks.bool_mask("mask", mask)
    logp = _checks.masked("logp", logp, mask)
    old_logp = _checks.masked("old_logp", old_logp, mask).to(logp.dtype)
    delta = torch.where(mask, logp - old_logp.detach(), torch.zeros((), dtype=logp.dtype))
    return _masked(delta.cumsum(1), mask)


@objective("minpro", label="MinPRO (LOW)", notebook="03_ratios_and_clipping")
def minpro(logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, eps_low: float = 0.2,
           eps_high: float | None = None, include_current: bool = False, return_metrics: bool = False):
    """MinPRO: weight each token's clipped loss by the smallest token ratio of its prefix (arXiv 2601.22718).

    **LOW confidence — reconstructed from the abstract** ("A Step Back: Prefix Importance Ratio
    Stabilizes Policy Optimization", Lei, Cheng, Tao): the correct importance weight of the state at
    step t is the prefix ratio Π_{i<t} r_i (:func:`prefix_log_ratio`), which explodes or vanishes
    with length; MinPRO replaces it by a non-cumulative surrogate, the minimum token ratio seen in
    the preceding prefix:

    .. math:: w_t = \\mathrm{sg}\\big[\\min_{i<t} r_i\\big] \\;(w_1 = 1), \\qquad
              \\ell_t = w_t\\cdot\\ell^{\\mathrm{ppo\\_clip}}_t

    Unconfirmed details, chosen here and easy to change: the current token is excluded
    (``include_current=False``), the weight is not capped at 1, and it is detached. Shapes as in
    the module docstring. Not in verl/TRL. Metrics add ``minpro/weight_mean``.
    """
    logp, old_logp, adv, mask = _prepare(logp, old_logp, adv, mask)
    delta = _log_ratio(logp, old_logp, mask).detach()
    big = torch.full_like(delta, torch.finfo(delta.dtype).max)
    running_min = torch.where(mask, delta, big).cummin(dim=1).values
    if not include_current:
        # shift right: w_t uses tokens before t; the first token's (empty) prefix has weight e^0 = 1
        running_min = torch.cat([torch.zeros_like(running_min[:, :1]), running_min[:, :-1]], dim=1)
    weight = torch.where(mask, running_min.clamp(max=_LOG_RATIO_CLAMP).exp(), torch.zeros_like(delta))
    base = ppo_clip(logp, old_logp, adv, mask, eps_low, eps_high, return_metrics=return_metrics)
    loss, metrics = base if return_metrics else (base, {})
    if return_metrics:
        metrics["minpro/weight_mean"] = _mean(weight, mask)
    return _out(weight * loss, mask, metrics, return_metrics)
