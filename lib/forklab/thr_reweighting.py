"""THR-reweighted GRPO: a :class:`~forklab.recipes.Recipe` whose token advantages come from Token Hidden Reward.

Introduced in ``notebooks/07_token_hidden_reward.ipynb``. Once per rollout, before the updates, the
trainer scores the sampled responses with the rollout policy (``forklab.lm.trainer.policy_forward``
with ``hidden=True``) and hands the last hidden states and logits to
:meth:`THRRecipe.rollout_advantages`, which turns the recipe's per-response advantage ``[B]`` into a
per-token one ``[B, T]``; every later stage (surrogate, aggregation, …) is the base recipe's::

    adv      = recipe.advantages(rewards, group)                      # GRPO, [B]
    s_t      = g_tᵀ M⁺ h_t                                            # influence on log π(correct), [B, T]
    THR_t    = adv_j · s_t ;  τ = β · min_{i∈P} mean_t s_{i,t}        # per group
    mode thr : adv_t = adv_j · (1 + p·sign(THR_t))  if |THR_t| > τ  else adv_j (0 if thr_only)
    mode nthr: adv_t = adv_j · η                    if j wrong and s_t > τ  else adv_j,  η = 2|0.5 − pass rate|

Papers: "Token Hidden Reward: Steering Exploration-Exploitation in Group Relative Deep Reinforcement
Learning" (arXiv 2510.03669) for ``mode="thr"`` — LOW confidence: the reweighting rule is the
reconstruction of :mod:`forklab.diagnostics.thr` (the paper's method section was not available);
"On the Effect of Negative Gradient in Group Relative Deep Reinforcement Optimization" (NTHR, arXiv
2505.18830) for ``mode="nthr"`` — HIGH (its equations were read). Neither is in verl or TRL.

TRL: :class:`forklab.integrations.trl.ForklabGRPOTrainer` refuses these recipes with a ``ValueError``
(TRL's loss sees neither the rollout policy's hidden states nor its full logits); train them with
``RLTrainer``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from forklab import _checks
from forklab._recipe import Recipe, preset
from forklab.diagnostics import thr as thr_lib

__all__ = ["THRRecipe", "token_advantages", "thr"]

MODES = ("thr", "nthr")


def token_advantages(adv: Tensor, hidden: Tensor, logits: Tensor, tokens: Tensor, mask: Tensor, group: Tensor,
                     correct: Tensor, p: float = 0.5, beta: float = 1.0, only: bool = False,
                     mode: str = "thr", eta: float | None = None) -> Tensor:
    """Per-token advantages ``[B, T]`` (float64, 0 off the mask) from THR (``mode="thr"``) or NTHR (``"nthr"``).

    .. math::
        \\text{thr: } \\hat A_{j,t} = \\hat A_j\\,(1 + p\\,\\mathrm{sign}(\\mathrm{THR}_{j,t}))\\ \\text{if }
        |\\mathrm{THR}_{j,t}| > \\tau,\\ \\text{else } \\hat A_j \\ (0 \\text{ if only}); \\qquad
        \\text{nthr: } \\hat A_{j,t} = \\eta\\,\\hat A_j \\ \\text{if } j \\notin P,\\ s_{j,t} > \\tau

    with s, THR and τ = β·min_{i∈P} s̄⁺_i of :func:`forklab.diagnostics.thr.token_hidden_reward` and
    η = 2|0.5 − pass rate of the group| unless ``eta`` is given.

    ======  =================  ===========================================================
    name    shape              meaning
    ======  =================  ===========================================================
    adv     ``[B]``            per-response advantage (e.g. GRPO's)
    hidden  ``[B, T, d]``      rollout policy's last hidden states (the logits' inputs)
    logits  ``[B, T, V]``      rollout policy's logits at the response positions
    tokens  ``[B, T]``         sampled tokens;  ``mask [B, T]`` bool;  ``group [B]``
    correct ``[B]`` bool       the response is correct (the set P of its group)
    ======  =================  ===========================================================

    Papers: THR, arXiv 2510.03669 (LOW: reconstructed rule, see :mod:`forklab.diagnostics.thr`);
    NTHR, arXiv 2505.18830 (HIGH). Not in verl/TRL. Notebook ``07_token_hidden_reward``.
    """
    _checks.choice("mode", mode, MODES)
    result = thr_lib.token_hidden_reward(hidden, logits, tokens, mask, group, correct, adv, beta=beta)
    mask = _checks.bool_mask("mask", mask)
    adv = _checks.floating("adv", adv).double()
    if mode == "thr":
        return thr_lib.thr_advantages(adv, result, mask, p=p, only=only)
    correct = _checks.bool_mask("correct", correct)
    group = _checks.group_ids("group", group, mask.shape[0])
    pass_rate = torch.zeros(mask.shape[0], dtype=torch.float64)
    for gid in torch.unique(group):
        rows = group == gid
        pass_rate[rows] = correct[rows].double().mean()
    return thr_lib.nthr_advantages(adv, result.influence, result.tau, mask, correct, pass_rate, eta=eta)


@dataclass(frozen=True)
class THRRecipe(Recipe):
    """A :class:`Recipe` whose per-response advantages are reweighted per token by THR or NTHR.

    ``thr_mode``: ``"thr"`` (Â·(1 + p·sign THR) above τ) or ``"nthr"`` (negative tokens with s⁻ > τ
    scaled by η); ``thr_p``: the sign/strength p (p > 0 exploitation, p < 0 exploration, 0 = GRPO);
    ``thr_beta``: β of τ; ``thr_only``: tokens under τ get 0 (the paper's "THR-only" variant);
    ``nthr_eta``: NTHR's η (``None``: 2|0.5 − pass rate|). Trainers call :meth:`rollout_advantages`
    once per rollout (``RLTrainer`` does; ``ForklabGRPOTrainer`` refuses the recipe).
    """

    thr_mode: str = "thr"
    thr_p: float = 0.5
    thr_beta: float = 1.0
    thr_only: bool = False
    nthr_eta: float | None = None

    def __post_init__(self):
        super().__post_init__()
        _checks.choice("thr_mode", self.thr_mode, MODES)
        _checks.finite("thr_p", self.thr_p, -1.0, 1.0)  # |p| ≤ 1 keeps each token's advantage sign
        _checks.finite("thr_beta", self.thr_beta)
        if self.nthr_eta is not None:
            _checks.finite("nthr_eta", self.nthr_eta, 0.0)

    def rollout_advantages(self, adv: Tensor, hidden: Tensor, logits: Tensor, tokens: Tensor, mask: Tensor,
                           group: Tensor, correct: Tensor) -> Tensor:
        """:func:`token_advantages` with this recipe's settings, in ``adv``'s dtype and device: ``[B, T]``."""
        out = token_advantages(adv.detach().cpu(), hidden.detach().cpu(), logits.detach().cpu(), tokens.cpu(),
                               mask.cpu(), group.cpu(), correct.cpu(), p=self.thr_p, beta=self.thr_beta,
                               only=self.thr_only, mode=self.thr_mode, eta=self.nthr_eta)
        return out.to(device=adv.device, dtype=adv.dtype)


@preset
def thr() -> THRRecipe:
    """THR-reweighted GRPO (arXiv 2510.03669, LOW): GRPO advantage, PPO clip 0.2, token-mean, p = 0.5, β = 1.

    p = 0.5 (exploitation, for greedy accuracy) is forklab's choice: the paper tunes p per model and
    its values were not available; ``recipes.get("thr", thr_p=-0.5)`` is the exploration side.
    """
    return THRRecipe(name="thr", advantage="grpo", surrogate="ppo_clip", surrogate_kwargs={"eps_low": 0.2},
                     aggregation="token-mean", thr_mode="thr", thr_p=0.5, thr_beta=1.0)
