"""Distillation objectives that also use the task's reward: KDRL, reinforcement-aware KD (TRRD), SCOPE.

Introduced in ``notebooks/09_on_policy_distillation.ipynb`` (KDRL, TRRD) and ``10_token_importance_tip.ipynb``
(SCOPE). Each returns a per-token loss to minimise ``[B, T]``, 0 off ``mask``. Inputs as in
:mod:`forklab.distill.objectives`, plus ``adv`` (the GRPO advantage, ``[B]`` or ``[B, T]``) and ``correct``
(whether the response is right, ``[B]`` or ``[B, T]`` bool).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

import forklab.distill._inputs as _inputs
from forklab import _checks
from forklab.distill._registry import distill_rule
from forklab.kl import kl_estimate
from forklab.surrogates import ppo_clip

__all__ = ["kdrl_loss", "kdrl_beta_schedule", "trrd_loss", "scope_loss"]

_NB09, _NB10 = "09_on_policy_distillation", "10_token_importance_tip"


def _correct_tokens(correct, mask: Tensor) -> Tensor:
    c = _checks.as_tensor("correct", correct)
    if c.dtype != torch.bool:
        raise ValueError(f"`correct` must be a bool tensor ([B] or [B, T]), got dtype {c.dtype}")
    if c.dim() == 1 and c.shape[0] == mask.shape[0]:
        c = c[:, None].expand(mask.shape)
    if c.shape != mask.shape:
        raise ValueError(f"`correct` must have shape [B] = [{mask.shape[0]}] or [B, T] = {list(mask.shape)}, "
                         f"got {list(c.shape)}")
    return c & mask


@distill_rule("objective", "kdrl", label="KDRL (GRPO + β·KL to teacher)", paper="KDRL, arXiv 2506.02208",
              confidence="MED", notebook=_NB09)
def kdrl_loss(logp: Tensor, old_logp: Tensor, teacher_logp: Tensor, adv: Tensor, mask: Tensor,
              correct: Tensor | None = None, kd_coef: float = 1e-3, kl_estimator: str = "k2",
              mask_correct: bool = False, eps_low: float = 0.2, eps_high: float | None = None) -> Tensor:
    """KDRL: GRPO's clipped surrogate plus β (``kd_coef``) times a sampled-token estimate of KL(π_θ ‖ π_T).

    .. math:: \\ell_t = \\ell^{clip}_t(\\hat A) + \\beta\\,k(\\log\\pi_\\theta(o_t) - \\log\\pi_T(o_t)),
              \\qquad k_2(x) = \\tfrac12 x^2

    k2's gradient, (log π_θ − log π_T)·∇log π_θ, is the unbiased on-policy gradient of the reverse KL to the
    teacher (the paper's best estimator); ``"k1"`` has zero expected gradient on-policy, ``"k3"`` is biased
    (the tests show both). ``mask_correct=True`` is the paper's "reward-guided masking": the KD term is
    dropped on responses that are already correct (needs ``correct``). β = ``kd_coef``: the paper anneals it
    from 5e-3 to 1e-3 (:func:`kdrl_beta_schedule`; the trainer's ``schedules={"kd_coef": (5e-3, 1e-3)}``).

    ==============  ==============================================
    argument        shape
    ==============  ==============================================
    logp            ``[B, T]`` float, differentiable
    old_logp        ``[B, T]`` float (the sampling policy)
    teacher_logp    ``[B, T]`` float
    adv             ``[B]`` or ``[B, T]`` GRPO advantages
    mask            ``[B, T]`` bool
    correct         ``[B]`` or ``[B, T]`` bool, or None
    returns         ``[B, T]``, 0 off ``mask``
    ==============  ==============================================

    Paper: Xu et al., "KDRL: Post-Training Reasoning LLMs via Unified Knowledge Distillation and
    Reinforcement Learning", arXiv 2506.02208. Not in verl/TRL (verl's ``use_kl_loss`` is the same estimator
    against a reference model, not a teacher). Confidence MED (the combined form is the abstract's; k2, the
    β schedule and the masking come from secondary reviews, LOW). Notebook 09.
    """
    _checks.choice("kl_estimator", kl_estimator, {"k1", "k2", "k3"})
    kd_coef = _checks.non_negative("kd_coef", kd_coef)
    mask = _inputs.mask_2d(mask)
    pg = ppo_clip(logp, old_logp, adv, mask, eps_low=eps_low, eps_high=eps_high)
    logp_t = _inputs.token("logp", logp, mask)
    teacher = _inputs.token("teacher_logp", teacher_logp, mask)
    kd = kl_estimate(logp_t, teacher, kind=kl_estimator, mask=mask)
    if mask_correct:
        if correct is None:
            raise ValueError("`correct` is required with `mask_correct=True`")
        kd = torch.where(_correct_tokens(correct, mask), torch.zeros((), dtype=kd.dtype), kd)
    return _inputs.zero_off(pg + kd_coef * kd.to(pg.dtype), mask)


def kdrl_beta_schedule(step: int, total_steps: int, beta_start: float = 5e-3, beta_end: float = 1e-3) -> float:
    """KDRL's KD coefficient, annealed linearly from ``beta_start`` to ``beta_end`` over ``total_steps``.

    .. math:: \\beta(s) = \\beta_0 + (\\beta_1-\\beta_0)\\min(s/S, 1)

    Paper: arXiv 2506.02208 (5e-3 → 1e-3 per a secondary review; the shape of the anneal is a guess).
    Not in verl/TRL. Confidence LOW. Notebook 09.
    """
    step = _checks.integer("step", step, 0)
    total_steps = _checks.integer("total_steps", total_steps, 1)
    beta_start = _checks.non_negative("beta_start", beta_start)
    beta_end = _checks.non_negative("beta_end", beta_end)
    return beta_start + (beta_end - beta_start) * min(step / total_steps, 1.0)


@distill_rule("objective", "trrd", label="reinforcement-aware KD (TRRD)", paper="RLAD/TRRD, arXiv 2602.22495",
              confidence="LOW", notebook=_NB09)
def trrd_loss(logp: Tensor, old_logp: Tensor, teacher_logp: Tensor, adv: Tensor, mask: Tensor,
              alpha: float = 0.5, eps: float = 0.2) -> Tensor:
    """Reinforcement-aware KD (trust-region ratio distillation): PPO's clip anchored to a teacher mixture.

    .. math:: \\mu_t = \\alpha\\,\\pi_T(o_t) + (1-\\alpha)\\,\\pi_{old}(o_t), \\qquad
              \\tilde\\rho_t = \\pi_\\theta(o_t)/\\mu_t, \\qquad
              \\ell_t = -\\min\\big(\\tilde\\rho_t \\hat A,\\;
              \\mathrm{clip}(\\tilde\\rho_t, 1-\\epsilon, 1+\\epsilon)\\hat A\\big)

    "Selective imitation": with Â > 0 the update stops once π_θ reaches (1+ε)μ, so a token the teacher
    favours (μ > π_old) gets a wider trust region; with Â < 0 it stops at (1−ε)μ. α = 0 is plain PPO/GRPO.
    μ is mixed in probability space (computed as a log-sum-exp).

    ==============  ==============================================
    argument        shape
    ==============  ==============================================
    logp            ``[B, T]`` float, differentiable
    old_logp        ``[B, T]`` float
    teacher_logp    ``[B, T]`` float
    adv             ``[B]`` or ``[B, T]``
    mask            ``[B, T]`` bool
    returns         ``[B, T]``, 0 off ``mask``
    ==============  ==============================================

    Paper: Zhang et al., "Reinforcement-aware Knowledge Distillation for LLM Reasoning", arXiv 2602.22495.
    Not in verl/TRL. Confidence LOW: a reconstruction from the abstract's "advantage-weighted, ratio-based"
    objective with "teacher log-probabilities within a trust-region update"; the mixture form, α and
    whether a plain GRPO term is kept are guesses. Notebook 09.
    """
    alpha = _checks.finite("alpha", alpha, 0.0, 1.0)
    mask = _inputs.mask_2d(mask)
    old = _inputs.token("old_logp", old_logp, mask)
    teacher = _inputs.token("teacher_logp", teacher_logp, mask)
    if alpha == 0.0:
        anchor = old
    elif alpha == 1.0:
        anchor = teacher
    else:
        anchor = torch.logaddexp(teacher + math.log(alpha), old + math.log(1 - alpha))
    return ppo_clip(logp, anchor.detach(), adv, mask, eps_low=eps, eps_high=eps)


@distill_rule("objective", "scope", label="SCOPE (OPD on wrong, MLE on correct)", paper="SCOPE, arXiv 2604.10688",
              confidence="HIGH", notebook=_NB10, sequence_weighting="scope")
def scope_loss(logp: Tensor, old_logp: Tensor, teacher_logp: Tensor, correct: Tensor, mask: Tensor,
               eps_low: float = 0.2, eps_high: float | None = None) -> Tensor:
    """SCOPE's two paths, per token: OPD on wrong responses, maximum likelihood on correct ones.

    .. math:: \\ell_t = \\ell^{clip}_t\\big(\\hat A_t = \\log\\pi_T(o_t) - \\log\\pi_{old}(o_t)\\big)
              \\;(\\text{wrong}), \\qquad \\ell_t = -\\log\\pi_\\theta(o_t) \\;(\\text{correct})

    The sequence weights w^tea (wrong) and w^stu (correct) of :func:`forklab.distill.scope_weights`
    multiply this loss; the trainer applies them by default with this objective. Unweighted, it is OPD
    on the wrong responses plus SFT on the student's own correct ones.

    ==============  ==============================================
    argument        shape
    ==============  ==============================================
    logp            ``[B, T]`` float, differentiable
    old_logp        ``[B, T]`` float
    teacher_logp    ``[B, T]`` float
    correct         ``[B]`` or ``[B, T]`` bool
    mask            ``[B, T]`` bool
    returns         ``[B, T]``, 0 off ``mask``
    ==============  ==============================================

    Paper: arXiv 2604.10688; code machine981/SCOPE (``compute_advantage``: k1 reward, ``adv_estimator =
    none``, PPO clip; ``dp_actor.py``: the MLE term on correct-sample tokens). Not in verl/TRL. Confidence
    HIGH (read in code). Notebook 10.
    """
    mask = _inputs.mask_2d(mask)
    right = _correct_tokens(correct, mask)
    old = _inputs.token("old_logp", old_logp, mask)
    teacher = _inputs.token("teacher_logp", teacher_logp, mask)
    opd = ppo_clip(logp, old_logp, (teacher - old).detach(), mask, eps_low=eps_low, eps_high=eps_high)
    mle = -_inputs.token("logp", logp, mask)
    return _inputs.zero_off(torch.where(right, mle.to(opd.dtype), opd), mask)
