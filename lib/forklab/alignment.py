"""Reference policies of KL-regularised alignment: the tilted optimum, best-of-N, RAPO's reweighted reference.

Introduced in ``notebooks/08_kl_and_divergences.ipynb``. Everything here is exact on a finite set of
responses (the arms of a bandit, or enumerated sequences): distributions are ``[..., K]`` tensors whose
last axis is the response, rewards are ``[..., K]`` (broadcastable), results are float64.

=========================  ==============================================================  ==========
function                   value                                                           confidence
=========================  ==============================================================  ==========
``tilted_optimum``         π*(y) = π_ref(y)·exp(r(y)/β) / Z                                  HIGH
``kl_regularized_value``   J(π) = E_π[r] − β·KL(π‖π_ref)  (= β log Z − β KL(π‖π*))           HIGH
``best_of_n``              π_N(y) = p(y)·(F(y)^N − F⁻(y)^N) / (F(y) − F⁻(y))                 HIGH
``best_of_n_kl_bound``     log N − (N−1)/N                                                   HIGH
``win_rate``               P(r(Y) > r(Y')) + ½ P(r(Y) = r(Y')),  Y ~ π, Y' ~ π_ref           HIGH
``tilt_matching_kl``       φ_λ ∝ p·exp(λ r) with λ chosen so that KL(φ_λ‖p) = Δ              HIGH
``rapo_reference``         π̃_ref ∝ π_ref·exp(r/τ)  (RAPO's reweighted reference, a guess)      LOW
=========================  ==============================================================  ==========
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from forklab import _checks

__all__ = ["tilted_optimum", "kl_regularized_value", "categorical_kl", "best_of_n", "best_of_n_kl_bound",
           "win_rate", "tilt_matching_kl", "rapo_reference"]


def _distribution(name: str, probs) -> Tensor:
    probs = _checks.floating(name, probs).double()
    if probs.dim() < 1 or probs.shape[-1] == 0:
        raise ValueError(f"`{name}` must have a non-empty last axis (the responses), got {list(probs.shape)}")
    if (probs < 0).any():
        raise ValueError(f"`{name}` must be non-negative")
    if not torch.allclose(probs.sum(-1), torch.ones((), dtype=torch.float64), atol=1e-9):
        raise ValueError(f"`{name}` must sum to 1 over its last axis")
    return probs


def _rewards(rewards, probs: Tensor) -> Tensor:
    rewards = _checks.floating("rewards", rewards).double()
    if not torch.isfinite(rewards).all():
        raise ValueError("`rewards` must be finite")
    try:
        torch.broadcast_tensors(rewards, probs)
    except RuntimeError as err:
        raise ValueError(f"`rewards` {list(rewards.shape)} does not broadcast with {list(probs.shape)}") from err
    return rewards


def _log(p: Tensor) -> Tensor:
    return torch.where(p > 0, p.log(), torch.full_like(p, -math.inf))


def categorical_kl(p, q) -> Tensor:
    """KL(p‖q) = Σ_y p(y) log(p(y)/q(y)) over the last axis, with 0·log 0 = 0 (``inf`` if p ≰≪ q).

    Shapes ``[..., K], [..., K] -> [...]``. Rounding can make the sum −1e-16 when p = q; it is clamped at 0.
    Not a paper's formula; the helper every check here uses.
    """
    p, q = _distribution("p", p), _distribution("q", q)
    terms = torch.where(p > 0, p * (_log(p) - _log(q)), torch.zeros((), dtype=torch.float64))
    return terms.sum(-1).clamp_min(0.0)  # KL ≥ 0; the clamp only removes −1e-16 of rounding at p = q


def tilted_optimum(ref_probs, rewards, beta: float) -> Tensor:
    """The maximiser of E_π[r] − β·KL(π‖π_ref): π*(y) = π_ref(y)·exp(r(y)/β) / Z.

    .. math:: \\pi^*(y) = \\frac{\\pi_{ref}(y)\\,e^{r(y)/\\beta}}{Z},\\qquad
              Z = \\sum_y \\pi_{ref}(y)\\,e^{r(y)/\\beta}

    Computed in log space (a softmax of log π_ref + r/β), so r/β = 1000 does not overflow; responses
    with π_ref = 0 keep probability 0 (reverse KL forbids leaving the reference's support).

    ============  ===================================
    argument      shape
    ============  ===================================
    ref_probs     ``[..., K]``, rows sum to 1
    rewards       ``[..., K]`` or broadcastable
    returns       ``[..., K]`` float64
    ============  ===================================

    Paper: "RL with KL penalties is better viewed as Bayesian inference" (Korbak, Perez, Buckley,
    arXiv 2205.11275): π* is a posterior with prior π_ref and evidence exp(r/β), and KL-regularised
    RL is variational inference toward it. verl/TRL: not a function; it is the fixed point their
    ``kl_coef``/``beta`` (with an exact KL) would reach. Confidence HIGH (a standard Lagrangian result;
    checked by gradient ascent in the tests). Notebook 08.
    """
    ref = _distribution("ref_probs", ref_probs)
    r = _rewards(rewards, ref)
    beta = _checks.positive("beta", beta)
    return torch.softmax(_log(ref) + r / beta, dim=-1)


def kl_regularized_value(probs, ref_probs, rewards, beta: float) -> Tensor:
    """J(π) = E_π[r] − β·KL(π‖π_ref), the objective whose maximiser is :func:`tilted_optimum`.

    Identity (Korbak et al., arXiv 2205.11275): J(π) = β·log Z − β·KL(π‖π*), so maximising J is
    minimising the reverse KL to π*. Shapes ``[..., K] × 3 -> [...]``. verl: ``use_kl_loss`` with an
    exact KL; TRL: ``beta``. Confidence HIGH. Notebook 08.
    """
    p = _distribution("probs", probs)
    ref = _distribution("ref_probs", ref_probs)
    r = _rewards(rewards, p)
    beta = _checks.positive("beta", beta)
    return (p * r).sum(-1) - beta * categorical_kl(p, ref)


def _cdfs(ref: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
    """F(r_k) = P(r(Y) ≤ r_k) and F⁻(r_k) = P(r(Y) < r_k) for Y ~ ref, per response k."""
    r = r.expand_as(ref).contiguous()
    sorted_r, order = r.sort(dim=-1)
    cum = torch.cat([torch.zeros_like(ref[..., :1]), ref.gather(-1, order).cumsum(-1)], dim=-1)
    upper = torch.searchsorted(sorted_r, r, right=True)  # number of responses with reward ≤ r_k
    lower = torch.searchsorted(sorted_r, r, right=False)  # number with reward < r_k
    return cum.gather(-1, upper).clamp(max=1.0), cum.gather(-1, lower).clamp(max=1.0)


def best_of_n(ref_probs, rewards, n: int) -> Tensor:
    """The distribution of the best of ``n`` i.i.d. draws from p = ``ref_probs`` (ties broken uniformly).

    .. math:: \\pi_N(y) = p(y)\\,\\frac{F(y)^N - F^-(y)^N}{F(y) - F^-(y)},\\quad
              F(y) = P_p(r \\le r(y)),\\; F^-(y) = P_p(r < r(y))

    F^N − F⁻^N is the probability that the best reward is r(y); within a class of equal rewards the
    chosen draw is any of them with equal chance, so the class's mass splits in proportion to p.
    With distinct rewards this is Beirami et al.'s π_N(y) = F(y)^N − F⁻(y)^N.

    ============  ===================================
    argument      shape
    ============  ===================================
    ref_probs     ``[..., K]``
    rewards       ``[..., K]`` or broadcastable
    n             int ≥ 1
    returns       ``[..., K]`` float64
    ============  ===================================

    Papers: "Theoretical Guarantees on the Best-of-n Alignment Policy" (Beirami et al., arXiv
    2401.01879); "Asymptotics of Language Model Alignment" (Yang et al., arXiv 2404.01730).
    verl/TRL: not in verl/TRL (it is rejection sampling at inference time). Confidence HIGH (exact
    order statistics; tested against Monte Carlo). Notebook 08.
    """
    ref = _distribution("ref_probs", ref_probs)
    r = _rewards(rewards, ref)
    n = _checks.integer("n", n, 1)
    upper, lower = _cdfs(ref, r)
    width = upper - lower
    # relative rounding error of (a^n − b^n)/(a − b) is about 1e-16·a/(a − b): fine unless a class is ~1e-12 of p
    safe = torch.where(width > 0, width, torch.ones((), dtype=torch.float64))
    out = torch.where(width > 0, ref * (upper**n - lower**n) / safe, torch.zeros((), dtype=torch.float64))
    return out / out.sum(-1, keepdim=True)  # only rounding is removed here; the mass is already 1


def best_of_n_kl_bound(n: int) -> float:
    """log N − (N−1)/N: KL(π_N‖p) for a continuous reward, and an upper bound otherwise.

    Papers: Beirami et al. (arXiv 2401.01879) show it is only an upper bound for discrete rewards;
    Yang et al. (arXiv 2404.01730) compare best-of-N with the tilted optimum. Derivation for a
    continuous reward: U = F(r(Y_N)) ~ Beta(N, 1), density N u^(N−1), so KL = E[log(N U^(N−1))] =
    log N + (N−1)·E[log U] = log N − (N−1)/N. Not in verl/TRL. Confidence HIGH. Notebook 08.
    """
    n = _checks.integer("n", n, 1)
    return math.log(n) - (n - 1) / n


def win_rate(probs, ref_probs, rewards) -> Tensor:
    """P(r(Y) > r(Y')) + ½·P(r(Y) = r(Y')) for independent Y ~ ``probs`` and Y' ~ ``ref_probs``.

    Shapes ``[..., K] × 3 -> [...]``. For best-of-N with a continuous reward this is N/(N+1) (the best
    of N+1 draws is the new one with chance 1/(N+1)); ties count ½. Papers: Beirami et al. (arXiv
    2401.01879), Yang et al. (arXiv 2404.01730). Not in verl/TRL. Confidence HIGH. Notebook 08.
    """
    p = _distribution("probs", probs)
    ref = _distribution("ref_probs", ref_probs)
    r = _rewards(rewards, p)
    upper, lower = _cdfs(ref, r)
    return (p * (lower + 0.5 * (upper - lower))).sum(-1)


def tilt_matching_kl(ref_probs, rewards, kl_target: float, tol: float = 1e-12) -> tuple[Tensor, float]:
    """φ_λ ∝ p·exp(λ r) with λ ≥ 0 found by bisection so that KL(φ_λ‖p) = ``kl_target``.

    Yang et al. (arXiv 2404.01730) write the KL-constrained optimum φ_Δ = argmax E_φ[r] s.t.
    KL(φ‖p) ≤ Δ; it is the tilt with λ = 1/β. KL(φ_λ‖p) grows with λ up to −log p(argmax set), so a
    larger ``kl_target`` raises ``ValueError``. Shapes: one distribution ``[K]``; returns ``([K], λ)``.
    Not in verl/TRL. Confidence HIGH. Notebook 08.
    """
    ref = _distribution("ref_probs", ref_probs)
    if ref.dim() != 1:
        raise ValueError(f"`ref_probs` must be one distribution [K], got {list(ref.shape)}")
    r = _rewards(rewards, ref).expand_as(ref)
    target = _checks.non_negative("kl_target", kl_target)
    best = ref[r == r[ref > 0].max()].sum()
    if target >= -math.log(best.item()):
        raise ValueError(f"`kl_target` must be below {-math.log(best.item()):.4g}, the KL of the best-reward set")
    scale = float((r - r.mean()).abs().max()) or 1.0

    def kl_at(lam: float) -> float:
        return float(categorical_kl(torch.softmax(_log(ref) + lam * r, -1), ref))

    lo, hi = 0.0, 1.0 / scale
    while kl_at(hi) < target:
        hi *= 2
    while hi - lo > tol * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if kl_at(mid) < target else (lo, mid)
    lam = 0.5 * (lo + hi)
    return torch.softmax(_log(ref) + lam * r, -1), lam


def rapo_reference(ref_probs, rewards, tau: float) -> Tensor:
    """RAPO's reward-aware reweighted reference, as reconstructed here: π̃_ref ∝ π_ref·exp(r/τ).

    RAPO ("Unlocking Reasoning Capabilities in LLMs via Reinforcement Learning Exploration", Deng et
    al., arXiv 2510.03865) replaces the reverse-KL penalty by a forward KL, KL(π̃_ref‖π_θ), to a reference
    "reweighted" by reward. The abstract names both parts but not the weighting; exp(r/τ) is our guess
    (it equals :func:`tilted_optimum` with β = τ). Shapes ``[..., K] -> [..., K]``. Not in verl/TRL.
    Confidence LOW (abstract only, no official code found). Notebook 08.
    """
    return tilted_optimum(ref_probs, rewards, _checks.positive("tau", tau))
