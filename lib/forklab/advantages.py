"""Outcome advantage estimators for group-sampled RL: one scalar per response, from its group.

Introduced in ``notebooks/01_policy_gradients_and_advantages.ipynb``.

Conventions: ``rewards`` is float ``[B]`` (``[B, K]`` for several reward components), ``group`` is
an integer ``[B]`` prompt id (any values; responses sharing an id form a group), the result is
``[B]`` and is broadcast over a response's tokens by the losses. Every estimator needs at least
two responses per group (a group of one has no baseline; verl silently returns A = R there, we
refuse), rejects NaN rewards, and returns exactly 0 for every member of a group whose rewards are
all equal (a "degenerate" group carries no learning signal).

Group statistics are computed with ``index_add`` over the whole batch at once (no Python loop over
groups), in float64, and returned in the rewards' dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from forklab import _checks
from forklab._registry import advantage_estimator

_NB1 = "01_policy_gradients_and_advantages"

__all__ = [
    "grpo",
    "dr_grpo",
    "rloo",
    "median",
    "median_pivot",
    "token_group_average",
    "multi_reward",
    "ESTIMATORS",
    "get_estimator",
]


def _prepare(rewards, group) -> tuple[Tensor, Tensor, Tensor, torch.dtype]:
    """Validate, and return float64 rewards, dense group index ``[B]``, group sizes ``[n_groups]``."""
    rewards = _checks.floating("rewards", rewards)
    if rewards.dim() != 1:
        raise ValueError(f"`rewards` must have shape [B], got {list(rewards.shape)}")
    if rewards.shape[0] == 0:
        raise ValueError("`rewards` is empty: there is no group to compute an advantage for")
    if torch.isinf(rewards).any():
        raise ValueError("`rewards` contains inf")
    group = _checks.group_ids("group", group, rewards.shape[0])
    _, index = torch.unique(group, return_inverse=True)
    sizes = torch.bincount(index)
    if (sizes < 2).any():
        lonely = torch.unique(group)[sizes < 2][:5].tolist()
        raise ValueError(
            f"`group` has groups with a single response (ids {lonely}); group-relative advantages need "
            "at least 2 responses per prompt"
        )
    return rewards.double(), index, sizes, rewards.dtype


def _group_sum(x: Tensor, index: Tensor, n_groups: int) -> Tensor:
    return torch.zeros(n_groups, dtype=x.dtype, device=x.device).index_add_(0, index, x)


def _group_stats(r: Tensor, index: Tensor, sizes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-response group mean, unbiased group std and a 'group is constant' flag, all ``[B]``."""
    n = sizes.double()
    mean = _group_sum(r, index, len(sizes)) / n
    dev = r - mean[index]
    var = _group_sum(dev * dev, index, len(sizes)) / (n - 1)
    r_max = torch.full_like(mean, -torch.inf).scatter_reduce(0, index, r, "amax")
    r_min = torch.full_like(mean, torch.inf).scatter_reduce(0, index, r, "amin")
    return mean[index], var.sqrt()[index], (r_max == r_min)[index]


@advantage_estimator("grpo", label="GRPO", notebook=_NB1)
def grpo(rewards: Tensor, group: Tensor, scale: str = "group", eps: float = 1e-6) -> Tensor:
    """GRPO's group-relative advantage.

    .. math::
        \\hat A_i = \\frac{R_i - \\mu_{g(i)}}{\\sigma + \\epsilon}, \\quad
        \\mu_g = \\frac{1}{|g|}\\sum_{j \\in g} R_j, \\quad
        \\sigma_g = \\sqrt{\\tfrac{1}{|g|-1}\\sum_{j\\in g}(R_j-\\mu_g)^2}

    ``scale`` picks σ: ``"group"`` uses σ_g (GRPO, DeepSeekMath arXiv 2402.03300); ``"batch"`` uses
    the unbiased std of all rewards in the batch with the group mean kept as baseline (TRL
    ``scale_rewards="batch"``, "PPO-Lite"); ``"none"`` divides by nothing (Dr. GRPO, arXiv
    2503.20783: the std division is what makes too-easy and too-hard prompts count more).

    ============  ===========================
    argument      shape
    ============  ===========================
    rewards       ``[B]`` float
    group         ``[B]`` integer prompt id
    returns       ``[B]``
    ============  ===========================

    ``eps``: verl uses 1e-6 (the default here), TRL 1e-4, OpenRLHF 1e-9; all use the unbiased
    (N−1) std. A constant group gets exactly 0 (not ``1e-17/eps``). verl:
    ``adv_estimator="grpo"`` (``norm_adv_by_std_in_grpo``); TRL: ``GRPOTrainer`` with
    ``scale_rewards``. Notebook 01.
    """
    _checks.choice("scale", scale, {"group", "batch", "none"})
    eps = _checks.non_negative("eps", eps)
    r, index, sizes, dtype = _prepare(rewards, group)
    mean, std, constant = _group_stats(r, index, sizes)
    adv = r - mean
    if scale == "group":
        constant = constant | (std + eps == 0)  # spread below float resolution (e.g. 1e-308): no signal
        adv = adv / (std + eps)
    elif scale == "batch":
        adv = adv / (r.std() + eps)
    return torch.where(constant, torch.zeros_like(adv), adv).to(dtype)


@advantage_estimator("dr_grpo", label="Dr. GRPO", notebook=_NB1)
def dr_grpo(rewards: Tensor, group: Tensor, eps: float = 1e-6) -> Tensor:
    """Dr. GRPO's advantage: the group-mean baseline without the std division, :func:`grpo` with ``scale="none"``.

    .. math:: \\hat A_i = R_i - \\mu_{g(i)}

    Shapes as :func:`grpo` (``rewards [B]``, ``group [B]`` → ``[B]``). "Understanding R1-Zero-Like
    Training: A Critical Perspective" (arXiv 2503.20783). verl: ``norm_adv_by_std_in_grpo=False``; TRL:
    ``scale_rewards="none"``. HIGH (a one-line change of GRPO, identical in verl and TRL). The ``dr_grpo``
    advantage of :mod:`forklab.recipes`; notebook 01.
    """
    return grpo(rewards, group, scale="none", eps=eps)


@advantage_estimator("rloo", label="RLOO", notebook=_NB1)
def rloo(rewards: Tensor, group: Tensor) -> Tensor:
    """REINFORCE leave-one-out: the baseline of each response is the mean of the *others*.

    .. math:: \\hat A_i = R_i - \\frac{1}{|g|-1}\\sum_{j\\in g, j\\ne i} R_j
              = \\frac{|g|}{|g|-1}\\,(R_i - \\mu_g)

    Because the baseline does not depend on R_i, the policy gradient stays unbiased (Kool et al.,
    "Buy 4 REINFORCE Samples, Get a Baseline for Free!", 2019; Ahmadian et al., arXiv 2402.14740).
    Shapes as in :func:`grpo`. verl/OpenRLHF: ``rloo``. Notebook 01.
    """
    r, index, sizes, dtype = _prepare(rewards, group)
    total = _group_sum(r, index, len(sizes))[index]
    n = sizes.double()[index]
    return (r - (total - r) / (n - 1)).to(dtype)


def _group_median(r: Tensor, index: Tensor, sizes: Tensor) -> Tensor:
    """Per-group median (mean of the two middle values for even sizes), ``[n_groups]``."""
    n_groups = len(sizes)
    # Sort by (group, reward) with one stable sort: sort by reward, then stably by group.
    order = torch.argsort(r, stable=True)
    order = order[torch.argsort(index[order], stable=True)]
    sorted_r = r[order]
    starts = torch.cumsum(sizes, 0) - sizes
    lo = starts + (sizes - 1) // 2
    hi = starts + sizes // 2
    return (sorted_r[lo] + sorted_r[hi]) / 2 if n_groups else sorted_r[:0]


@advantage_estimator("median", label="median (MC-GRPO)", notebook=_NB1)
def median(rewards: Tensor, group: Tensor, scale: str = "group", eps: float = 1e-6) -> Tensor:
    """MC-GRPO's median-centred advantage.

    .. math:: \\hat A_i = \\frac{R_i - \\operatorname{median}_{j\\in g} R_j}{\\sigma_g + \\epsilon}

    MC-GRPO ("MC-GRPO: Median-Centered Group Relative Policy Optimization for Small-Rollout
    Reinforcement Learning", Kim, arXiv 2601.22582)
    replaces the mean baseline by the median, which is far less moved by one outlier reward, so
    fewer responses get the wrong advantage sign when G is small. With an odd group (the paper
    samples G+1) exactly one response, the pivot, sits at the median and gets 0; the paper drops
    it from the backward pass: :func:`median_pivot` marks it. For even groups the median is the mean
    of the two middle rewards.

    Confidence: MED/LOW — the abstract states the median baseline and the G+1 pivot; whether the
    paper keeps GRPO's std division is not stated there. We keep it (``scale="group"``, same σ_g as
    :func:`grpo`) so MC-GRPO differs from GRPO only in the baseline; ``scale="none"`` gives the
    plain median-centred reward. A constant group gets 0. Shapes as in :func:`grpo`. Not in
    verl/TRL. Notebook 01.
    """
    _checks.choice("scale", scale, {"group", "none"})
    eps = _checks.non_negative("eps", eps)
    r, index, sizes, dtype = _prepare(rewards, group)
    _, std, constant = _group_stats(r, index, sizes)
    adv = r - _group_median(r, index, sizes)[index]
    if scale == "group":
        constant = constant | (std + eps == 0)
        adv = adv / (std + eps)
    return torch.where(constant, torch.zeros_like(adv), adv).to(dtype)


def median_pivot(rewards: Tensor, group: Tensor) -> Tensor:
    """Bool ``[B]``: True for the one response per odd-sized group that is MC-GRPO's pivot.

    The pivot is the first response (in batch order) whose reward equals its group's median; it
    has advantage 0 under :func:`median` and MC-GRPO excludes it from the loss so that G+1
    samples cost the backward pass of G. Even-sized groups have no pivot (all False).
    """
    r, index, sizes, _ = _prepare(rewards, group)
    med = _group_median(r, index, sizes)
    at_median = (r == med[index]) & (sizes[index] % 2 == 1)
    positions = torch.arange(r.shape[0], device=r.device)
    first = torch.full((len(sizes),), r.shape[0], dtype=torch.long, device=r.device)
    first = first.scatter_reduce(0, index[at_median], positions[at_median], "amin")
    pivot = torch.zeros(r.shape[0], dtype=torch.bool, device=r.device)
    pivot[first[first < r.shape[0]]] = True
    return pivot


@advantage_estimator("hapo", needs=("lengths",), label="HAPO token-level average", notebook=_NB1)
def token_group_average(
    rewards: Tensor, group: Tensor, lengths: Tensor, eps: float = 1e-6, fallback_threshold: float = 5.0
) -> Tensor:
    """HAPO's Token Level Group Average: group statistics over *tokens*, not responses.

    .. math::
        \\mu_g = \\frac{\\sum_i |o_i| R_i}{\\sum_i |o_i|}, \\quad
        \\sigma_g = \\sqrt{\\frac{\\sum_i |o_i| (R_i-\\mu_g)^2}{\\sum_i |o_i|}}, \\quad
        \\hat A_i = \\frac{R_i - \\mu_g}{\\sigma_g + \\epsilon}

    Each response's reward counts once per token, matching the token-mean loss it is paired with.
    Safeguard from the reference code: a group where any |Â| ≥ ``fallback_threshold`` (5) falls
    back to the ordinary GRPO advantage (:func:`grpo`, ``scale="group"``, same ``eps``).

    ============  ===========================
    argument      shape
    ============  ===========================
    rewards       ``[B]`` float
    group         ``[B]`` integer prompt id
    lengths       ``[B]`` response lengths |o_i| ≥ 0
    returns       ``[B]``
    ============  ===========================

    HAPO, "From Uniform to Heterogeneous: Tailoring Policy Optimization to Every Token's Nature"
    (arXiv 2509.16591), ``adv_estimator=hapo`` in its verl fork; HIGH as implemented there
    (docs/formulas.md). σ_g is the token-weighted *population* std, as in that code. Notebook 01/02.
    """
    eps = _checks.non_negative("eps", eps)
    fallback_threshold = _checks.positive("fallback_threshold", fallback_threshold)
    r, index, sizes, dtype = _prepare(rewards, group)
    lengths = _checks.floating("lengths", lengths).double()
    _checks.same_shape("rewards", r, "lengths", lengths)
    if (lengths < 0).any():
        raise ValueError("`lengths` must be non-negative")
    n_groups = len(sizes)
    tokens = _group_sum(lengths, index, n_groups)
    if (tokens == 0).any():
        raise ValueError("`lengths` sums to 0 in some group: a token-weighted mean needs at least one token")
    mu = (_group_sum(lengths * r, index, n_groups) / tokens)[index]
    var = (_group_sum(lengths * (r - mu) ** 2, index, n_groups) / tokens)[index]
    adv = (r - mu) / (var.sqrt() + eps)
    _, _, constant = _group_stats(r, index, sizes)
    adv = torch.where(constant, torch.zeros_like(adv), adv)
    too_big = _group_sum((adv.abs() >= fallback_threshold).double(), index, n_groups)[index] > 0
    return torch.where(too_big, grpo(r, index, "group", eps).double(), adv).to(dtype)


def _whiten(x: Tensor, eps: float) -> Tensor:
    if x.shape[0] < 2:
        raise ValueError("`rewards` needs at least 2 responses for a batch z-score")
    return (x - x.mean()) / (x.std() + eps)


@advantage_estimator("gdpo", label="GDPO multi-reward", notebook=_NB1)
def multi_reward(
    rewards: Tensor,
    group: Tensor,
    weights: Tensor | None = None,
    mode: str = "normalize_then_sum",
    eps: float = 1e-6,
) -> Tensor:
    """Advantages from several reward components: GDPO's decoupled normalisation vs GRPO's sum.

    .. math::
        \\text{sum\\_then\\_normalize:}\\quad \\hat A = \\mathrm{GRPO}\\Big(\\sum_k w_k R_{\\cdot k}\\Big)

        \\text{normalize\\_then\\_sum (GDPO):}\\quad
        \\hat A = \\mathrm{whiten}_{\\text{batch}}\\Big(\\sum_k w_k\\, \\mathrm{GRPO}(R_{\\cdot k})\\Big)

    Summing first lets reward combinations collapse: with two 0/1 components, responses scoring
    (1, 0) and (0, 1) get the same advantage whatever the group looks like. GDPO
    ("Group reward-Decoupled Normalization Policy Optimization", arXiv 2601.05242) z-scores each
    component within its group first, so a component on which the group rarely succeeds weighs
    more; a final batch whitening, (x − mean)/(std + eps) with the unbiased std, restores the scale.

    ============  ===================================
    argument      shape
    ============  ===================================
    rewards       ``[B, K]`` float, K components
    group         ``[B]`` integer prompt id
    weights       ``[K]`` float, default all ones
    returns       ``[B]``
    ============  ===================================

    verl: ``adv_estimator="gdpo"`` (masked_whiten at the end); TRL:
    ``multi_objective_aggregation="normalize_then_sum"`` vs ``"sum_then_normalize"`` (default; eps
    1e-4 there). Notebook 01.
    """
    _checks.choice("mode", mode, {"normalize_then_sum", "sum_then_normalize"})
    eps = _checks.non_negative("eps", eps)
    rewards = _checks.floating("rewards", rewards)
    if rewards.dim() != 2 or rewards.shape[1] == 0:
        raise ValueError(f"`rewards` must have shape [B, K] with K >= 1 components, got {list(rewards.shape)}")
    k = rewards.shape[1]
    if weights is None:
        weights = torch.ones(k, dtype=torch.float64)
    weights = _checks.floating("weights", weights).double()
    if weights.shape != (k,):
        raise ValueError(f"`weights` must have shape [{k}] (one per reward component), got {list(weights.shape)}")
    r = rewards.double()
    if mode == "sum_then_normalize":
        return grpo(r @ weights, group, "group", eps).to(rewards.dtype)
    per_component = torch.stack([grpo(r[:, j], group, "group", eps) for j in range(k)], dim=1)
    return _whiten(per_component @ weights, eps).to(rewards.dtype)


def _reinforce(rewards: Tensor, group: Tensor) -> Tensor:
    """Plain REINFORCE: the advantage is the reward itself (no baseline)."""
    r, _, _, dtype = _prepare(rewards, group)
    return r.to(dtype)


#: Group-local estimators by name, each ``f(rewards [B], group [B]) -> [B]``. "Group-local" means a
#: group's advantages depend on that group's rewards only, which is what the bandit needs to run
#: many independent seeds in one batch.
ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "reinforce": _reinforce,
    "mean": lambda r, g: grpo(r, g, scale="none"),
    "grpo": lambda r, g: grpo(r, g, scale="group"),
    "rloo": rloo,
    "median": lambda r, g: median(r, g, scale="none"),
    "median_std": lambda r, g: median(r, g, scale="group"),
}


def get_estimator(estimator: str | Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """Resolve an estimator name from :data:`ESTIMATORS` (or pass a callable through)."""
    if callable(estimator):
        return estimator
    return ESTIMATORS[_checks.choice("estimator", estimator, ESTIMATORS.keys())]
