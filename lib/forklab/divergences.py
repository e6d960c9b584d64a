"""Full-distribution divergences between a student and a teacher, per token.

Introduced in ``notebooks/08_kl_and_divergences.ipynb`` and ``09_on_policy_distillation.ipynb``
(planned). Unlike :mod:`forklab.kl` (sampled-token estimates), these sum over the whole vocabulary.

Conventions: ``student_logits`` and ``teacher_logits`` are ``[..., V]`` (usually ``[B, T, V]``);
both are divided by ``temperature`` before the softmax; results are ``[...]`` in fp32 (fp64 for
fp64 inputs). With ``top_k`` the support is restricted to the teacher's k most likely tokens at each
position and *both* distributions are renormalised over it (a cheap, biased approximation used
when full teacher logits are too large to ship). Masking and aggregation are the caller's.

=====================  =======================  ==========================================
function               value                    role
=====================  =======================  ==========================================
``forward_kl``         KL(t ‖ s)                mode-covering (SFT/KD direction)
``reverse_kl``         KL(s ‖ t)                mode-seeking (on-policy distillation)
``jsd(beta)``          generalised JSD          β = 0 forward, β = 1 reverse (TRL's GKD)
``total_variation``    ½ Σ |s − t|              bounded in [0, 1]
=====================  =======================  ==========================================
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from forklab import _checks
from forklab.ops import _topk_indices

__all__ = ["forward_kl", "reverse_kl", "jsd", "total_variation"]


def _log_probs(student_logits, teacher_logits, temperature: float, top_k: int | None) -> tuple[Tensor, Tensor]:
    s = _checks.as_tensor("student_logits", student_logits)
    t = _checks.as_tensor("teacher_logits", teacher_logits)
    for name, x in (("student_logits", s), ("teacher_logits", t)):
        _checks.logits(name, x)  # −inf allowed (filtered tokens); NaN, +inf, all −inf rows are not
    _checks.same_shape("student_logits", s, "teacher_logits", t)
    temperature = _checks.positive("temperature", temperature)
    dtype = torch.float64 if torch.float64 in (s.dtype, t.dtype) else torch.float32
    s, t = s.to(dtype) / temperature, t.to(dtype) / temperature
    if top_k is not None:
        top_k = _checks.integer("top_k", top_k, 1, s.shape[-1])
        idx = _topk_indices(t, int(top_k), dim=-1)
        s, t = s.gather(-1, idx), t.gather(-1, idx)
    return torch.log_softmax(s, -1), torch.log_softmax(t, -1)


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p ‖ q) = Σ p (log p − log q), with 0·log 0 = 0 (−inf logits allowed in p).

    Where p > 0 and q = 0 (a −inf logit in q only) the divergence is infinite: ``ValueError``.
    """
    p = log_p.exp()
    if ((p > 0) & torch.isinf(log_q)).any():
        raise ValueError("the KL divergence is infinite: `teacher_logits`/`student_logits` give probability 0 "
                         "(a -inf logit) to a token the other distribution samples")
    diff = torch.where(p > 0, log_p - log_q, torch.zeros((), dtype=log_p.dtype))
    return (p * diff).sum(-1)


def forward_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0,
               top_k: int | None = None) -> Tensor:
    """Forward KL, teacher as target: KL(t ‖ s) = Σ_v t_v (log t_v − log s_v).

    Shapes ``[..., V], [..., V] -> [...]``. Mode-covering: the student is penalised wherever the
    teacher has mass it lacks. TRL GKD with ``beta=0``; classic KD (Hinton et al. 2015) up to T².
    """
    log_s, log_t = _log_probs(student_logits, teacher_logits, temperature, top_k)
    return _kl(log_t, log_s)


def reverse_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0,
               top_k: int | None = None) -> Tensor:
    """Reverse KL, student as sampler: KL(s ‖ t) = Σ_v s_v (log s_v − log t_v).

    Shapes ``[..., V], [..., V] -> [...]``. Mode-seeking: the objective of on-policy distillation
    (the student is sampled and pays where the teacher disagrees). TRL GKD ``beta=1`` and the
    ``DistillationTrainer`` default; TIP (arXiv 2604.14084) uses it as its divergence axis.
    """
    log_s, log_t = _log_probs(student_logits, teacher_logits, temperature, top_k)
    return _kl(log_s, log_t)


def jsd(student_logits: Tensor, teacher_logits: Tensor, beta: float = 0.5, temperature: float = 1.0,
        top_k: int | None = None) -> Tensor:
    """Generalised Jensen–Shannon divergence as in TRL's GKD (Agarwal et al., arXiv 2306.13649).

    .. math:: M = (1-\\beta)\\,s + \\beta\\,t, \\qquad
              \\mathrm{JSD}_\\beta = \\beta\\,\\mathrm{KL}(t\\,\\|\\,M) + (1-\\beta)\\,\\mathrm{KL}(s\\,\\|\\,M)

    with TRL's special cases at the endpoints: β = 0 → KL(t ‖ s) (forward), β = 1 → KL(s ‖ t)
    (reverse). These are conventions, not limits: the formula itself tends to 0 as β → 0 or 1.
    β = 0.5 is the symmetric JSD, bounded by log 2. Shapes
    ``[..., V], [..., V] -> [...]``. TRL: ``GKDTrainer.generalized_jsd_loss(beta=...)`` (default 0.5).
    """
    beta = float(beta)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"`beta` must lie in [0, 1], got {beta}")
    log_s, log_t = _log_probs(student_logits, teacher_logits, temperature, top_k)
    if beta == 0.0:
        return _kl(log_t, log_s)
    if beta == 1.0:
        return _kl(log_s, log_t)
    log_m = torch.logsumexp(torch.stack([log_s + math.log(1 - beta), log_t + math.log(beta)]), dim=0)
    return beta * _kl(log_t, log_m) + (1 - beta) * _kl(log_s, log_m)


def total_variation(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0,
                    top_k: int | None = None) -> Tensor:
    """Total variation distance ½ Σ_v |s_v − t_v| ∈ [0, 1]. Shapes ``[..., V], [..., V] -> [...]``."""
    log_s, log_t = _log_probs(student_logits, teacher_logits, temperature, top_k)
    return 0.5 * (log_s.exp() - log_t.exp()).abs().sum(-1)
