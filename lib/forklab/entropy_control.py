"""Entropy *controllers*: rules that change a coefficient, a temperature or a threshold between steps.

Introduced in ``notebooks/05_entropy_interventions.ipynb``. Formulas: ``docs/formulas.md`` (section 05).

A controller reads a statistic of the last rollout (the sampled-token entropy estimate
Ĥ = −mean log π(o_t), a KL, a mean reward) and returns the setting of the next update. None of
them changes a loss by itself; the loss terms they drive are :func:`forklab.regularizers.entropy_bonus`
(Skywork-OR1), re-sampling at temperature T (Arbitrary-Entropy PO, Distribution-Centric PO) and
:func:`safe_kl_penalty` (SAFE). They are plain functions of scalars plus, for SAFE, a small
state object, so a trainer hook can call them once per step (the notebook shows how).

=====================================  ==========================================================
function                               paper
=====================================  ==========================================================
:func:`skywork_entropy_coef_update`    Skywork-OR1 adaptive entropy control (arXiv 2505.22312)
:func:`entropy_target_temperature`     Arbitrary-Entropy PO (2510.08141), Distribution-Centric PO
                                       (2601.12730): the bang-bang temperature switch
:func:`arbitrary_entropy_sample_count` Arbitrary-Entropy PO: how many hot positives replace
                                       GRPO samples
:class:`SafeController`                SAFE: the PID-adapted KL threshold
:func:`safe_kl_penalty`                SAFE: the entropy-gated KL penalty
=====================================  ==========================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from forklab import _checks

__all__ = ["skywork_entropy_coef_update", "entropy_target_temperature", "arbitrary_entropy_sample_count",
           "SafeController", "safe_kl_penalty"]


def skywork_entropy_coef_update(coef: float, sampled_entropy: float, target: float = 0.2, delta: float = 1e-4,
                                coef_min: float = 0.0, coef_max: float = 0.005) -> tuple[float, float]:
    """Skywork-OR1's adaptive entropy coefficient: one step of a bang-bang integral controller.

    .. math::
        c_{k+1} = \\mathrm{clip}\\big(c_k + \\Delta\\,\\mathrm{sign}(\\mathrm{tgt} - \\hat e_k),\\,
                  c_{min}, c_{max}\\big), \\qquad
        \\alpha_{k+1} = c_{k+1}\\,\\mathbb{1}[\\hat e_k < \\mathrm{tgt}]

    and the loss of the next update is L_PG − α_{k+1} · token-mean(H_t) (full-vocabulary entropy).
    ê_k is the sampled-token entropy estimate −mean log π_old(o_t) of the rollout batch. The bonus is
    *off* whenever the batch is above target, whatever c is; c itself integrates the sign error.

    ==================  ==================================================
    argument            meaning
    ==================  ==================================================
    coef                c_k, the controller state (float ≥ 0)
    sampled_entropy     ê_k (float)
    target, delta       tgt, Δ (scripts: 0.2, 1e-4; yaml: Δ = 1e-3)
    coef_min, coef_max  c_min, c_max (scripts: 0, 0.005; yaml c_max 0.5)
    returns             (c_{k+1}, α_{k+1}) floats
    ==================  ==================================================

    Paper: "Skywork Open Reasoner 1 Technical Report" (He et al., arXiv 2505.22312). verl/TRL: not in
    either (Skywork's verl fork: ``EntController`` in ``core_algos.py``, ``entropy_coeff`` set each step).
    Confidence HIGH: read from the official code. Notebook: 05_entropy_interventions.
    """
    coef = _checks.finite("coef", coef, 0.0)
    e = _checks.finite("sampled_entropy", sampled_entropy)
    target = _checks.finite("target", target)
    delta = _checks.finite("delta", delta, 0.0)
    coef_min = _checks.finite("coef_min", coef_min, 0.0)
    coef_max = _checks.finite("coef_max", coef_max, coef_min)
    step = delta if e < target else -delta  # sign(0) = 0 never happens in the code: ê ≥ tgt steps down
    new = min(max(coef + step, coef_min), coef_max)
    return new, (new if e < target else 0.0)


def entropy_target_temperature(prev_entropy: float, target: float, t_high: float = 1.2,
                               t_low: float = 0.8) -> float:
    """The bang-bang temperature switch of Arbitrary-Entropy PO and Distribution-Centric PO.

    .. math:: T_k = T_{high} \\text{ if } \\hat H_{k-1} \\le H_0 \\text{ else } T_{low}

    Ĥ_{k−1} is the sampled-token entropy estimate of the previous actor update (0 before the first
    one, so the first step samples hot). Samples from π^T with T > 1 favour rare tokens, so
    reinforcing them raises entropy; T < 1 lowers it. Returns T (float).

    Papers: "Arbitrary Entropy Policy Optimization: Entropy Is Controllable in Reinforcement
    Fine-tuning" (Wang et al., arXiv 2510.08141) and "Distribution-Centric Policy Optimization
    Dominates Exploration-Exploitation Trade-off" (Li, Wang et al., arXiv 2601.12730). verl/TRL: not in
    either. Confidence HIGH: official code (T_high = 1.2, T_low = 0.8, H₀ = 0.5 in the scripts).
    Notebook: 05_entropy_interventions.
    """
    prev = _checks.finite("prev_entropy", prev_entropy)
    target = _checks.finite("target", target)
    t_high = _checks.finite("t_high", t_high, 0.0, low_open=True)
    t_low = _checks.finite("t_low", t_low, 0.0, low_open=True)
    return t_high if prev <= target else t_low


def arbitrary_entropy_sample_count(prev_entropy: float, target: float, num_kept: int, max_samples: int = 60) -> int:
    """Arbitrary-Entropy PO: how many re-sampled positives S replace GRPO samples in the batch.

    .. math:: S = \\min(S_{max}, n_{kept}) \\text{ if } \\hat H \\le H_0, \\text{ else }
              \\lfloor \\min(S_{max}, n_{kept}) / 2 \\rfloor

    ``num_kept``: the responses drawn at temperature T whose GRPO advantage exceeded 0.05 (their
    advantage is then set to 1); the batch becomes ``concat(kept[:S], grpo_batch[S:])``, size
    unchanged. Returns S (int). Paper and confidence: as :func:`entropy_target_temperature`
    (``reinforce_sample_num`` = 60 in the official code). Notebook: 05_entropy_interventions.
    """
    prev = _checks.finite("prev_entropy", prev_entropy)
    target = _checks.finite("target", target)
    num_kept = _checks.integer("num_kept", num_kept, 0)
    cap = min(_checks.integer("max_samples", max_samples, 0), num_kept)
    return cap if prev <= target else cap // 2


_PHASE_FACTOR = {"warmup": 1.5, "climbing": 1.2, "plateau": 0.8, "converged": 1.0}


@dataclass
class SafeController:
    """SAFE's PID-adapted KL threshold τ (and the smoothed KL it is compared with).

    Per call of :meth:`update` (SAFE calls it once per epoch, twice per batch)::

        kl_s ← 0.9·kl_s + 0.1·kl ;  R̄ ← 0.95·R̄ + 0.05·mean reward
        e = (R̄_new − R̄_old) − 0.001 ;  I ← clip(I + e, −1, 1)
        u = 0.3 e + 0.01 I + 0.05 (e − e_prev)
        τ = clip((0.3 + u) · φ, 0.1, 0.6)
        φ = 1.5 warm-up (< 50 updates) | 1.0 converged (std of last 50 rewards < 0.02 and mean > 0.7)
          | 1.2 climbing (mean of last 50 > mean of the 50 before + 0.01) | 0.8 plateau

    ``update(kl, reward)`` takes floats and returns τ; the state (``kl_smooth``, ``reward_smooth``,
    ``integral``, ``prev_error``, ``rewards``) is public so a test can script it. The order in which
    the phases are checked (warm-up, converged, climbing, plateau) is this library's reading.

    Paper: "SAFE: Stable Alignment Finetuning with Entropy-Aware Predictive Control for RLHF" (arXiv id
    not found). verl/TRL: not in either. Confidence: HIGH for these constants (official code,
    ``safe/controllers/{entropy_aware,pid}.py``), MED for the phase order. Notebook: 05_entropy_interventions.
    """

    kl_smooth: float = 0.0
    reward_smooth: float = 0.0
    integral: float = 0.0
    prev_error: float = 0.0
    rewards: list = field(default_factory=list)
    threshold: float = 0.3

    def phase(self) -> str:
        h = self.rewards
        if len(h) < 50:
            return "warmup"
        last = torch.tensor(h[-50:], dtype=torch.float64)
        if float(last.std(unbiased=False)) < 0.02 and float(last.mean()) > 0.7:
            return "converged"
        if len(h) >= 100 and float(last.mean()) > float(torch.tensor(h[-100:-50], dtype=torch.float64).mean()) + 0.01:
            return "climbing"
        return "plateau"

    def update(self, kl: float, reward: float) -> float:
        kl = _checks.finite("kl", kl)
        reward = _checks.finite("reward", reward)
        self.kl_smooth = 0.9 * self.kl_smooth + 0.1 * kl
        old = self.reward_smooth
        self.reward_smooth = 0.95 * old + 0.05 * reward
        self.rewards.append(reward)
        error = (self.reward_smooth - old) - 0.001
        self.integral = min(max(self.integral + error, -1.0), 1.0)
        u = 0.3 * error + 0.01 * self.integral + 0.05 * (error - self.prev_error)
        self.prev_error = error
        self.threshold = min(max((0.3 + u) * _PHASE_FACTOR[self.phase()], 0.1), 0.6)
        return self.threshold


def safe_kl_penalty(kl, threshold: float, mean_entropy: float, coef: float = 0.1):
    """SAFE's entropy-gated KL penalty: quadratic above the threshold, stronger when entropy is low.

    .. math:: P = c\\,(\\mathrm{kl} - \\tau)^2 \\cdot \\max\\big(0.5,\\ 2 / (\\bar H + 0.1)\\big)
              \\ \\text{ if } \\mathrm{kl} > \\tau, \\text{ else } 0

    ``kl``: a float (the official code: the smoothed ``kl_s``, built from ``kl.item()``, so P is a
    Python number with **zero gradient**: the gate and the PID only change the logged loss) or a
    0-dim tensor carrying gradient (the paper's intent, this library's reading, LOW: kl =
    mean_t (log π_θ − log π_ref)(o_t), the k1 estimate). ``threshold``: τ from :class:`SafeController`;
    ``mean_entropy``: H̄, the rollout's mean full-vocabulary entropy (a constant). Returns a float
    for a float ``kl`` and a 0-dim tensor for a tensor.

    Paper, verl/TRL: as :class:`SafeController`. Confidence: HIGH (code) for the formula, LOW for
    the differentiable reading. Notebook: 05_entropy_interventions.
    """
    tau = _checks.finite("threshold", threshold)
    h = _checks.finite("mean_entropy", mean_entropy, 0.0)
    coef = _checks.finite("coef", coef, 0.0)
    gate = max(0.5, 2.0 / (h + 0.1))
    if isinstance(kl, Tensor):
        if kl.dim() != 0 or not kl.is_floating_point() or not torch.isfinite(kl):
            raise ValueError(f"`kl` must be a finite 0-dim float tensor or a float, got {kl!r}")
        return torch.where(kl > tau, coef * gate * (kl - tau) ** 2, torch.zeros_like(kl))
    kl = _checks.finite("kl", kl)
    return coef * gate * (kl - tau) ** 2 if kl > tau else 0.0

