"""The off-policy reading of group-relative REINFORCE: a pairwise-consistency loss and its optimum.

Introduced in ``notebooks/01_policy_gradients_and_advantages.ipynb`` (section 6).

The KL-regularised target  max_π E_π[r] − τ KL(π ‖ π_t)  has the optimum π* ∝ π_t exp(r/τ), so every
pair of responses satisfies  r_1 − τ log(π*(y_1)/π_t(y_1)) = r_2 − τ log(π*(y_2)/π_t(y_2)).
Penalising violations of that equality on *any* sampled responses gives a loss whose gradient at
π = π_t is exactly the group-mean REINFORCE gradient, whatever distribution the responses came from.
"""

from __future__ import annotations

import torch
from torch import Tensor

from forklab import _checks

__all__ = ["pairwise_consistency_loss", "kl_regularised_optimum"]


def pairwise_consistency_loss(logp: Tensor, anchor_logp: Tensor, rewards: Tensor, tau: float = 1.0,
                              weights: Tensor | None = None) -> Tensor:
    """Mean squared violation of the pairwise consistency of π* ∝ π_t exp(r/τ), over all pairs of a group.

    .. math::
        a_i = R_i - \\tau\\big(\\log\\pi_\\theta(y_i) - \\log\\pi_t(y_i)\\big),\\qquad
        L(\\theta) = \\frac{1}{4\\tau}\\sum_{i,j} w_i w_j (a_i - a_j)^2

    with w_i = 1/K by default (K responses of one prompt). At θ = θ_t (a_i = R_i):

    .. math:: \\nabla_\\theta L = -\\sum_i w_i (R_i - \\bar R_w)\\,\\nabla_\\theta\\log\\pi_\\theta(y_i),

    the group-mean REINFORCE gradient (a descent step on L is an ascent step of REINFORCE), and the
    identity uses nothing about how y_i was sampled: group-relative REINFORCE is a first-order step on
    an objective whose minimiser over a full-support sample distribution is π* (see
    :func:`kl_regularised_optimum`). ``weights`` (summing to 1) lets an *expected* loss over a
    behaviour distribution μ be written exactly: ``weights = μ``, one entry per distinct response.

    ============  ======================================
    argument      shape
    ============  ======================================
    logp          ``[K]`` log π_θ(y_i), differentiable
    anchor_logp   ``[K]`` log π_t(y_i) (detached inside)
    rewards       ``[K]`` float
    weights       ``[K]`` ≥ 0, sums to 1 (default 1/K)
    returns       scalar
    ============  ======================================

    Paper: "Group-Relative REINFORCE Is Secretly an Off-Policy Algorithm: Demystifying Some Myths About
    GRPO and Its Friends" (Yao, Chen, et al.), arXiv 2509.24203. Not in verl/TRL (the authors' REC
    losses live in Trinity-RFT and are not implemented here). Confidence: MED — the derivation is
    reconstructed from the abstract and notes; the gradient identity itself is exact and tested.
    Notebook 01.
    """
    logp = _checks.floating("logp", logp)
    anchor = _checks.floating("anchor_logp", anchor_logp).detach().to(logp.dtype)
    r = _checks.floating("rewards", rewards).to(logp.dtype)
    if logp.dim() != 1 or logp.shape[0] < 2:
        raise ValueError(f"`logp` must have shape [K] with K >= 2, got {list(logp.shape)}")
    _checks.same_shape("logp", logp, "anchor_logp", anchor)
    _checks.same_shape("logp", logp, "rewards", r)
    tau = _checks.positive("tau", tau)
    if weights is None:
        w = torch.full_like(r, 1.0 / r.shape[0])
    else:
        w = _checks.floating("weights", weights).to(logp.dtype)
        _checks.same_shape("logp", logp, "weights", w)
        if (w < 0).any() or abs(float(w.sum()) - 1) > 1e-9:
            raise ValueError("`weights` must be non-negative and sum to 1")
    a = r - tau * (logp - anchor)
    diff = a[:, None] - a[None, :]
    return (w[:, None] * w[None, :] * diff**2).sum() / (4 * tau)


def kl_regularised_optimum(anchor_probs: Tensor, rewards: Tensor, tau: float = 1.0) -> Tensor:
    """π*(y) = π_t(y) exp(R(y)/τ) / Z, the maximiser of E_π[R] − τ KL(π ‖ π_t) over responses.

    .. math:: \\pi^*(y) = \\frac{\\pi_t(y)\\,e^{R(y)/\\tau}}{\\sum_{y'} \\pi_t(y')\\,e^{R(y')/\\tau}}

    ``anchor_probs [N]`` (sums to 1) and ``rewards [N]`` -> ``[N]`` float64. A standard result (e.g. Korbak
    et al., arXiv 2205.11275); used by arXiv 2509.24203 as the target of :func:`pairwise_consistency_loss`.
    Not in verl/TRL. Confidence: HIGH (closed form, checked against L-BFGS in the tests). Notebook 01.
    """
    p = _checks.floating("anchor_probs", anchor_probs).double()
    r = _checks.floating("rewards", rewards).double()
    _checks.same_shape("anchor_probs", p, "rewards", r)
    if (p < 0).any() or abs(float(p.sum()) - 1) > 1e-9:
        raise ValueError("`anchor_probs` must be non-negative and sum to 1")
    tau = _checks.positive("tau", tau)
    return torch.softmax(torch.where(p > 0, p.log(), torch.full_like(p, -torch.inf)) + r / tau, dim=-1)
