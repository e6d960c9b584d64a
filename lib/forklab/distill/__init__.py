"""On-policy distillation: objectives, token/sequence weights and selection rules, by name.

Introduced in ``notebooks/09_on_policy_distillation.ipynb`` (objectives) and
``10_token_importance_tip.ipynb`` (token selection and weighting); formulas in ``docs/formulas.md``.
Every rule is a plain function (usable on its own) registered by name (:func:`distill_rule`), so
:class:`forklab.lm.distill_trainer.DistillTrainer` takes it as ``DistillConfig(objective=<name>,
objective_kwargs=...)``, ``token_weighting=<name>`` or ``sequence_weighting=<name>``, beside TIP's
``selection`` rules (:mod:`forklab.diagnostics.tip`). Shapes: B responses, T response positions, V vocabulary;
per-token results are ``[B, T]`` and exactly 0 off ``mask``.

Objectives (``DistillConfig(objective=...)``; per-token loss to minimise ``[B, T]``). Format:
``name`` → function (confidence): what it computes | inputs; settings.

- ``opd`` → opd_loss (HIGH): −sg[log π_T − log π_S]·log π_S, the dense OPD reward as a policy gradient
  | logp, teacher_logp, mask
- ``reverse_kl`` (HIGH): KL(π_S‖π_T) over the vocabulary | student_logits, teacher_logits, mask
- ``forward_kl`` (HIGH): KL(π_T‖π_S) | student_logits, teacher_logits, mask
- ``total_variation`` (HIGH): ½Σ|π_S − π_T| | student_logits, teacher_logits, mask
- ``gkd`` → gkd_loss (HIGH): GKD's JSD(β), β=0 forward, β=1 reverse | student_logits, teacher_logits, mask; beta
- ``gopd`` → gopd_loss (HIGH): PPO clip with Â = λ(log π_T − log π_ref) − (log π_old − log π_ref); λ=1 is OPD,
  λ>1 goes past the teacher | logp, old_logp, teacher_logp, ref_logp, mask; lam, eps_low, eps_high
- ``opsd`` → opsd_loss (HIGH): JSD(β=0.5) to the student itself reading the answer (teacher_context
  "privileged") | student_logits, teacher_logits, mask; beta, top_k
- ``kdrl`` → kdrl_loss (MED): GRPO clip + kd_coef·k2(log π_S − log π_T), optionally not on correct responses
  | logp, old_logp, teacher_logp, adv, mask, correct; kd_coef, kl_estimator, mask_correct
- ``trrd`` → trrd_loss (LOW): PPO clip anchored at μ = απ_T + (1−α)π_old (reinforcement-aware KD)
  | logp, old_logp, teacher_logp, adv, mask; alpha, eps
- ``scope`` → scope_loss (HIGH): OPD on wrong responses, −log π_S on correct ones (× ``scope`` weights by
  default) | logp, old_logp, teacher_logp, correct, mask
- ``tsd_kd`` → tsd_kd_loss (HIGH): σ(H_S−H_T)·JSD(0.9) + entropy + 0.1·ranking | student_logits, teacher_logits,
  mask; beta, top_k, rank_coef, convention ("paper" | "code")
- ``clipped_forward_kl`` → clipped_forward_kl_loss (LOW): min(KL(π_T‖π_S), clip), PW-OPSD's target
  | student_logits, teacher_logits, mask; clip

Token weighting (``DistillConfig(token_weighting=...)``; float ``[B, T]``, 0 off mask) and sequence weighting
(``DistillConfig(sequence_weighting=...)``; ``[B]``), multiplied into the loss:

- ``position`` → position_weights (LOW): ω_t = (t/|o|)^γ ("late", PW-OPSD) or reversed ("early", IW-OPD),
  mean 1 per row | mask; power, direction, normalize
- ``prune_opd`` → prune_opd_weights (LOW): 1 before the top-k-overlap drift τ*, γ^(t−τ*) after
  | student_logits, teacher_logits, mask; k, threshold, window, decay, truncate_after
- ``tsd_kd`` → tsd_token_weights (HIGH): sg[σ(H_S − H_T)] | student_logits, teacher_logits, mask
- ``paced`` → paced_weights (MED, sequence): p̂^α (1−p̂)^β, p̂ the prompt's pass rate | pass_rate; alpha, beta
- ``scope`` → scope_weights (HIGH, sequence): mean-1 softmax of the teacher's (wrong responses) or student's
  (correct ones) mean log-prob | rewards, group, old_logp, teacher_logp, mask; tau, convention

Helpers: :func:`opd_reward` (the dense reward r_t = log π_T − log π_S), :func:`divergence_loss`,
:func:`jsd_beta_schedule` (β over training; the trainer's ``schedules={"beta": (b0, b1)}``),
:func:`gopd_advantage`, :func:`gopd_target` (π* ∝ π_ref^{1−λ} π_T^λ), :func:`kdrl_beta_schedule`,
:func:`pass_rates`, :func:`sequence_mean_logp`, :func:`topk_overlap`, :func:`prune_opd_drift`,
:func:`tsd_prefix_mask`, :func:`ranking_loss`, :func:`tsd_kd_terms`, :func:`privileged_prompt` (OPSD).
Registry: :func:`distill_rule` (the decorator), :func:`rules`, :func:`rule_names`, :func:`lookup`, and
:func:`call_rule` (call a rule with the named inputs its signature asks for, plus settings; what the
trainer does, usable from other trainers: ``call_rule(lookup("objective", "gopd"), inputs, {"lam": 1.25})``).

Where official code and paper disagree, the default is the paper's intent and the code's variant is an
option: SCOPE's correct-sample weights (``scope_weights(convention="code")``), TSD-KD's ranking order
(``ranking_loss(convention="code")``); PACED's weight is the paper's (the repository that cites PACED
has only reward-softmax weights).
"""

from forklab.distill._registry import DistillRule, distill_rule, lookup, rule_names, rules
from forklab.distill._registry import call as call_rule
from forklab.distill.objectives import (
    clipped_forward_kl_loss,
    divergence_loss,
    gkd_loss,
    gopd_advantage,
    gopd_loss,
    gopd_target,
    jsd_beta_schedule,
    opd_loss,
    opd_reward,
    opsd_loss,
)
from forklab.distill.opsd import PRIVILEGED_TEMPLATES, privileged_prompt
from forklab.distill.reward_aware import kdrl_beta_schedule, kdrl_loss, scope_loss, trrd_loss
from forklab.distill.selection import prune_opd_drift, prune_opd_weights, topk_overlap, tsd_token_weights
from forklab.distill.tsd_kd import ranking_loss, tsd_kd_loss, tsd_kd_terms, tsd_prefix_mask
from forklab.distill.weighting import paced_weights, pass_rates, position_weights, scope_weights, sequence_mean_logp

__all__ = [
    "DistillRule", "distill_rule", "rules", "rule_names", "lookup", "call_rule",
    "opd_reward", "opd_loss", "divergence_loss", "gkd_loss", "jsd_beta_schedule", "gopd_advantage", "gopd_loss",
    "gopd_target", "opsd_loss", "clipped_forward_kl_loss",
    "kdrl_loss", "kdrl_beta_schedule", "trrd_loss", "scope_loss",
    "pass_rates", "paced_weights", "sequence_mean_logp", "scope_weights", "position_weights",
    "topk_overlap", "prune_opd_drift", "prune_opd_weights", "tsd_token_weights",
    "tsd_prefix_mask", "ranking_loss", "tsd_kd_terms", "tsd_kd_loss",
    "privileged_prompt", "PRIVILEGED_TEMPLATES",
]
