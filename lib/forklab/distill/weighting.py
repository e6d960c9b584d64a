"""Sequence and position weights for distillation: PACED's pass-rate weight, SCOPE's dual-path weights,
PW-OPSD's position weights.

Introduced in ``notebooks/09_on_policy_distillation.ipynb`` (PACED) and ``10_token_importance_tip.ipynb``
(SCOPE, position weighting). Sequence weights are ``[B]`` (one per response); token weights are ``[B, T]``
floats, 0 off ``mask``. The trainer multiplies them into the per-token loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

import forklab.distill._inputs as _inputs
from forklab import _checks
from forklab.distill._registry import distill_rule

__all__ = ["pass_rates", "paced_weights", "sequence_mean_logp", "scope_weights", "position_weights"]

_NB09, _NB10 = "09_on_policy_distillation", "10_token_importance_tip"


def pass_rates(rewards: Tensor, group: Tensor, threshold: float = 0.5) -> Tensor:
    """Each response's prompt pass rate p̂ = share of its group's responses with reward ≥ ``threshold``.

    .. math:: \\hat p(x) = \\tfrac1n \\sum_{j=1}^{n} \\mathbf 1[r_j \\ge \\text{threshold}]

    ``rewards [B]`` float, ``group [B]`` integer prompt ids; returns ``[B]`` (the group's p̂ on each of
    its rows). With n = 1 sample per prompt p̂ ∈ {0, 1}. Paper: PACED, arXiv 2603.11178 ("p estimated via
    K rollouts"). Not in verl/TRL. Confidence HIGH (a definition). Notebook 09.
    """
    r = _checks.floating("rewards", rewards)
    if r.dim() != 1:
        raise ValueError(f"`rewards` must have shape [B], got {list(r.shape)}")
    group = _checks.group_ids("group", group, r.shape[0]).to(r.device)
    threshold = _checks.finite("threshold", threshold)
    correct = (r >= threshold).double()
    _, index = torch.unique(group, return_inverse=True)
    n = int(index.max()) + 1 if index.numel() else 0
    hits = torch.zeros(n, dtype=torch.float64, device=r.device).index_add_(0, index, correct)
    sizes = torch.zeros(n, dtype=torch.float64, device=r.device).index_add_(0, index, torch.ones_like(correct))
    return (hits / sizes.clamp(min=1))[index].to(_inputs.dtype_of(r) if r.is_floating_point() else torch.float32)


@distill_rule("sequence_weighting", "paced", label="PACED pass-rate weight p(1−p)", paper="PACED, arXiv 2603.11178",
              confidence="MED", notebook=_NB09)
def paced_weights(pass_rate: Tensor, alpha: float = 1.0, beta: float = 1.0) -> Tensor:
    """PACED's per-problem weight: a Beta kernel of the student's pass rate, largest at the frontier.

    .. math:: w(\\hat p) = \\hat p^{\\alpha}\\,(1-\\hat p)^{\\beta}, \\qquad
              \\alpha = \\beta = 1:\\; w = \\hat p(1-\\hat p)

    Problems the student always (p̂ = 1) or never (p̂ = 0) solves get weight 0: their cross-problem
    gradient signal-to-noise ratio vanishes (the paper's argument); p̂ = ½ gets the most. The loss is
    Σ_x w(p̂(x)) L_distill(x), not renormalised by Σ w (how the paper normalises was not read).

    ==========  =====================================
    argument    shape
    ==========  =====================================
    pass_rate   ``[B]`` float in [0, 1] (:func:`pass_rates`)
    returns     ``[B]`` float in [0, 1]
    ==========  =====================================

    Paper: Xu et al., "PACED: Distillation (and On-Policy Self-Distillation) at the Frontier of Student
    Competence", arXiv 2603.11178. Provenance: the weight is in the paper, **not** in the repository that
    cites it (HJSang/OPSD_OnPolicyDistillation implements only reward-softmax sample weights
    ``softmax(r/β)·n``); this is the paper's form. Not in verl/TRL. Confidence MED (abstract and a glossary;
    α = β = 1 is the v3 abstract's "no hyperparameters"). Notebook 09.
    """
    p = _checks.floating("pass_rate", pass_rate)
    if ((p < 0) | (p > 1)).any():
        raise ValueError("`pass_rate` must lie in [0, 1]")
    alpha = _checks.non_negative("alpha", alpha)
    beta = _checks.non_negative("beta", beta)
    return p.pow(alpha) * (1 - p).pow(beta)


def sequence_mean_logp(logp: Tensor, mask: Tensor) -> Tensor:
    """Mean log-probability of each response's tokens, ``[B, T] -> [B]`` (0 for an empty row); PPL = exp(−it).

    .. math:: \\bar\\ell_i = \\tfrac{1}{|o_i|}\\sum_t \\log\\pi(o_{i,t}), \\qquad \\mathrm{PPL}_i = e^{-\\bar\\ell_i}

    SCOPE's confidence signal (arXiv 2604.10688). verl/TRL: the "seq-mean-token-mean" reduction of log-probs.
    Confidence HIGH (a definition). Notebook 10.
    """
    mask = _inputs.mask_2d(mask)
    logp = _inputs.token("logp", logp, mask)
    return logp.sum(1) / mask.sum(1).clamp(min=1).to(logp.dtype)


def _group_softmax(score: Tensor, index: Tensor, members: Tensor) -> Tensor:
    """|Ω|·softmax over the members of each group (mean 1 within each group); 0 for non-members."""
    out = torch.zeros_like(score)
    for g in torch.unique(index[members]):
        rows = members & (index == g)
        out[rows] = torch.softmax(score[rows], 0) * rows.sum()
    return out


@distill_rule("sequence_weighting", "scope", label="SCOPE dual-path weights", paper="SCOPE, arXiv 2604.10688",
              confidence="HIGH", notebook=_NB10)
def scope_weights(rewards: Tensor, group: Tensor, old_logp: Tensor, teacher_logp: Tensor, mask: Tensor,
                  tau: float = 1.0, convention: str = "paper", threshold: float = 0.5) -> Tensor:
    """SCOPE's dual-path sequence weights, routed by correctness within each prompt group.

    With ℓ̄_S,i, ℓ̄_T,i the mean student/teacher log-probs of response i (PPL = e^{−ℓ̄}), Ω_w the group's
    wrong responses and Ω_c its correct ones:

    .. math:: w_i^{tea} = |\\Omega_w|\\,\\mathrm{softmax}_{j\\in\\Omega_w}(\\bar\\ell_{T,j}/\\tau)_i
              \\;\\propto\\; \\mathrm{PPL}_{T,i}^{-1/\\tau} \\quad (i \\in \\Omega_w)

    .. math:: w_i^{stu} = |\\Omega_c|\\,\\mathrm{softmax}_{j\\in\\Omega_c}(s\\,\\bar\\ell_{S,j}/\\tau)_i, \\quad
              s = -1 \\text{ (paper)},\\; s = +1 \\text{ (code)}

    ``convention="paper"`` (the README and abstract: up-weight the student's *low-confidence* correct
    samples, w ∝ PPL_S^{1/τ}); ``"code"``: the released scripts set ``*_PPL_POSITIVE=True``, which weights
    correct samples by PPL_S^{−1/τ}, the other way. Both use the code's mean-1 normalisation within each
    path of each group (the README's sum-1 form differs by the factor |Ω|; a singleton gets 1).

    ==============  ==============================================
    argument        shape
    ==============  ==============================================
    rewards         ``[B]`` float; correct = reward ≥ ``threshold``
    group           ``[B]`` integer prompt ids
    old_logp        ``[B, T]`` student log-probs of the sampled tokens
    teacher_logp    ``[B, T]`` teacher log-probs of the sampled tokens
    mask            ``[B, T]`` bool
    returns         ``[B]`` float ≥ 0, mean 1 within each path of each group
    ==============  ==============================================

    Use with the ``"scope"`` objective (:func:`forklab.distill.scope_loss`: OPD on wrong responses, MLE on
    correct ones). Paper: Zheng et al., "SCOPE: Signal-Calibrated On-Policy Distillation Enhancement with
    Dual-Path Adaptive Weighting", arXiv 2604.10688; code machine981/SCOPE
    (``_compute_scope_dual_path_weights``). Not in verl/TRL. Confidence HIGH (read in code), with the
    sign caveat above (the paper's intent is the default). Notebook 10.
    """
    _checks.choice("convention", convention, {"paper", "code"})
    tau = _checks.positive("tau", tau)
    mask = _inputs.mask_2d(mask)
    r = _inputs.sequence("rewards", rewards, mask.shape[0])
    group = _checks.group_ids("group", group, mask.shape[0]).to(mask.device)
    student = sequence_mean_logp(old_logp, mask).double()
    teacher = sequence_mean_logp(teacher_logp, mask).double()
    correct = r >= _checks.finite("threshold", threshold)
    _, index = torch.unique(group, return_inverse=True)
    sign = -1.0 if convention == "paper" else 1.0
    w = _group_softmax(teacher / tau, index, ~correct) + _group_softmax(sign * student / tau, index, correct)
    return w.to(_inputs.dtype_of(student, _checks.as_tensor("old_logp", old_logp)))


@distill_rule("token_weighting", "position", label="position weighting (PW-OPSD)",
              paper="When Are Teacher Tokens Reliable? (PW-OPSD), arXiv 2605.21606", confidence="LOW",
              notebook=_NB10)
def position_weights(mask: Tensor, power: float = 1.0, direction: str = "late", normalize: bool = True) -> Tensor:
    """Per-token weights increasing (``"late"``) or decreasing (``"early"``) with the position in the response.

    .. math:: \\omega_t = (t / |o|)^{\\gamma} \\;(\\text{late}), \\qquad \\omega_t = ((|o| - t + 1)/|o|)^{\\gamma}
              \\;(\\text{early}), \\qquad t = 1..|o|

    With ``normalize`` each row's weights are divided by their mean over its tokens, so that the token-mean
    of ω_t ℓ_t over a row equals the paper's Σ ω ℓ / Σ ω. ``"late"`` is PW-OPSD (teacher tokens late in the
    response, after the privileged context has been "used", are the reliable ones: its diagnostic AUROC
    0.83); ``"early"`` is the opposite direction that IW-OPD (arXiv 2606.22600) uses with an external
    teacher. ``power=0`` gives uniform weights.

    ==========  ===========================================
    argument    shape
    ==========  ===========================================
    mask        ``[B, T]`` bool, True on response tokens (|o| = its row count; t counts valid tokens)
    returns     ``[B, T]`` float64, ≥ 0, 0 off ``mask``
    ==========  ===========================================

    Paper: Liu et al., "When Are Teacher Tokens Reliable? Position-Weighted On-Policy Self-Distillation for
    Reasoning", arXiv 2605.21606. Not in verl/TRL. Confidence LOW (abstract-level reconstruction: the form
    of g(t/|o|) is a guess; the direction is the paper's). Notebook 10.
    """
    mask = _inputs.mask_2d(mask)
    power = _checks.non_negative("power", power)
    _checks.choice("direction", direction, {"late", "early"})
    t = torch.cumsum(mask.long(), 1).double()
    length = mask.sum(1, keepdim=True).clamp(min=1).double()
    u = t / length if direction == "late" else (length - t + 1) / length
    w = torch.where(mask, u.clamp(min=0).pow(power), torch.zeros((), dtype=torch.float64))
    if normalize:
        mean = w.sum(1, keepdim=True) / length
        w = torch.where(mask, w / mean.clamp(min=1e-300), torch.zeros((), dtype=torch.float64))
    return w
