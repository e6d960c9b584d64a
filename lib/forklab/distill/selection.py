"""Token selection and weighting rules for distillation beside TIP's: Prune-OPD's drift pruning and
TSD-KD's entropy-gap weights.

Introduced in ``notebooks/10_token_importance_tip.ipynb``. TIP's rules (entropy top-ρ, entropy sampling,
Q3, soft-OR, random) live in :mod:`forklab.diagnostics.tip`; these rules return float weights ``[B, T]``
(0 off ``mask``) that the trainer multiplies into the per-token loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

import forklab.distill._inputs as _inputs
from forklab import _checks
from forklab.distill._registry import distill_rule
from forklab.ops import _topk_indices, entropy_from_logits

__all__ = ["topk_overlap", "prune_opd_drift", "prune_opd_weights", "tsd_token_weights"]

_NB10 = "10_token_importance_tip"


def topk_overlap(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, k: int = 5) -> Tensor:
    """Prune-OPD's local compatibility: the share of the teacher's top-k tokens in the student's top-k.

    .. math:: c_t = |\\mathrm{TopK}(p_{S,t}) \\cap \\mathrm{TopK}(p_{T,t})| / K

    Ties are broken by the lower token id (deterministic). Shapes ``[B, T, V], [B, T, V], [B, T] -> [B, T]``
    (values in {0, 1/K, …, 1}, 0 off ``mask``). Paper: Yang et al., "Prune-OPD: Efficient and Reliable
    On-Policy Distillation for Long-Horizon Reasoning", arXiv 2605.07804 ("Top-K overlap ratio at every
    token"). Not in verl/TRL. Confidence LOW (abstract and a blog; K unknown). Notebook 10.
    """
    mask = _inputs.mask_2d(mask)
    s = _inputs.logits("student_logits", student_logits, mask)
    t = _inputs.logits("teacher_logits", teacher_logits, mask)
    _checks.same_shape("student_logits", s, "teacher_logits", t)
    k = _checks.integer("k", k, 1, s.shape[-1])
    hit_s = torch.zeros(s.shape, dtype=torch.bool).scatter_(-1, _topk_indices(s.detach().cpu(), k), True)
    hit_t = torch.zeros(t.shape, dtype=torch.bool).scatter_(-1, _topk_indices(t.detach().cpu(), k), True)
    overlap = (hit_s & hit_t).sum(-1).double() / k
    return torch.where(mask.cpu(), overlap, torch.zeros((), dtype=torch.float64)).to(s.device)


def prune_opd_drift(overlap: Tensor, mask: Tensor, threshold: float = 0.5, window: int = 4) -> Tensor:
    """The first response position τ* where the trailing moving average of ``overlap`` drops below ``threshold``.

    .. math:: \\tau^* = \\min\\{t : \\tfrac{1}{\\min(W, t)}\\sum_{u=t-W+1}^{t} c_u < \\kappa\\}

    (the average covers the valid tokens so far, at most W of them). Returns ``[B]`` long: the index of τ*
    among the row's valid tokens (0-based), or the row's length when no drift is detected. Shapes
    ``[B, T], [B, T] -> [B]``. Paper: Prune-OPD, arXiv 2605.07804. Confidence LOW (κ, W and the averaging
    are guesses; the paper's window also expands while compatibility stays high). Not in verl/TRL. Notebook 10.
    """
    mask = _inputs.mask_2d(mask)
    c = _inputs.token("overlap", overlap, mask).double().cpu()
    threshold = _checks.finite("threshold", threshold)
    window = _checks.integer("window", window, 1)
    out = torch.zeros(mask.shape[0], dtype=torch.long)
    for i in range(mask.shape[0]):
        values = c[i][mask[i].cpu()]
        csum = torch.cat([torch.zeros(1, dtype=torch.float64), values.cumsum(0)])
        t = torch.arange(1, values.numel() + 1)
        start = (t - window).clamp(min=0)
        average = (csum[t] - csum[start]) / (t - start).double()
        below = torch.nonzero(average < threshold)
        out[i] = int(below[0]) if below.numel() else values.numel()
    return out


@distill_rule("token_weighting", "prune_opd", label="Prune-OPD drift decay", paper="Prune-OPD, arXiv 2605.07804",
              confidence="LOW", notebook=_NB10)
def prune_opd_weights(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, k: int = 5,
                      threshold: float = 0.5, window: int = 4, decay: float = 0.5,
                      truncate_after: int | None = None) -> Tensor:
    """Prune-OPD's token weights: 1 before the detected prefix drift τ*, then a geometric decay.

    .. math:: \\omega_t = 1 \\;(t < \\tau^*), \\qquad \\omega_t = \\gamma^{\\,t-\\tau^*} \\;(t \\ge \\tau^*),
              \\qquad \\omega_t = 0 \\;(t > \\tau^* + \\Delta \\text{ with truncation})

    τ* from :func:`prune_opd_drift` on :func:`topk_overlap`. After a drift the student has left the region
    where the teacher's next-token judgements are reliable, so its OPD reward is down-weighted. With
    ``truncate_after=Δ`` the tokens past τ* + Δ get weight 0 (the paper stops generating there; this
    function marks them, it does not save their sampling cost).

    ==============  ==============================================
    argument        shape
    ==============  ==============================================
    student_logits  ``[B, T, V]`` float
    teacher_logits  ``[B, T, V]`` float
    mask            ``[B, T]`` bool
    returns         ``[B, T]`` float64 in [0, 1], 0 off ``mask``
    ==============  ==============================================

    Paper: arXiv 2605.07804 (repo yangzhch6/Prune-OPD not readable here). Not in verl/TRL. Confidence LOW:
    K, κ, W, γ, Δ and the exact decay are reconstructions from the abstract ("monotonically down-weighted").
    Notebook 10.
    """
    mask = _inputs.mask_2d(mask)
    decay = _checks.finite("decay", decay, 0.0, 1.0)
    overlap = topk_overlap(student_logits, teacher_logits, mask, k)
    tau = prune_opd_drift(overlap, mask, threshold, window)
    position = torch.cumsum(mask.long().cpu(), 1) - 1  # index among the row's valid tokens
    steps = (position - tau[:, None]).clamp(min=0).double()
    w = torch.where(position < tau[:, None], torch.ones((), dtype=torch.float64), decay ** steps)
    if truncate_after is not None:
        truncate_after = _checks.integer("truncate_after", truncate_after, 0)
        w = torch.where(position > tau[:, None] + truncate_after, torch.zeros((), dtype=torch.float64), w)
    return torch.where(mask.cpu(), w, torch.zeros((), dtype=torch.float64)).to(overlap.device)


@distill_rule("token_weighting", "tsd_kd", label="TSD-KD entropy-gap weights σ(H_S − H_T)",
              paper="Explain in Your Own Words (TSD-KD), ICLR 2026", confidence="HIGH", notebook=_NB10)
def tsd_token_weights(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor) -> Tensor:
    """TSD-KD's token weights: more weight where the student is less sure than the teacher.

    .. math:: w_t = \\mathrm{sg}[\\sigma(H_{S,t} - H_{T,t})]

    w_t > ½ exactly where H_S > H_T. Shapes ``[B, T, V], [B, T, V], [B, T] -> [B, T]`` (float, in (0, 1),
    0 off ``mask``). Paper: Kim et al., "Explain in Your Own Words: Improving Reasoning via Token-Selective
    Dual Knowledge Distillation", ICLR 2026 (OpenReview zph7e5JaXc; arXiv id not found); code
    kmswin1/TSD-KD (``generalized_jsd_loss``). Not in verl/TRL. Confidence HIGH (read in code). Notebook 10.
    """
    mask = _inputs.mask_2d(mask)
    s = _inputs.logits("student_logits", student_logits, mask).detach()
    t = _inputs.logits("teacher_logits", teacher_logits, mask).detach()
    _checks.same_shape("student_logits", s, "teacher_logits", t)
    dtype = _inputs.dtype_of(s, t)
    w = torch.sigmoid(entropy_from_logits(s.to(dtype)) - entropy_from_logits(t.to(dtype)))
    return _inputs.zero_off(w, mask.to(w.device))
