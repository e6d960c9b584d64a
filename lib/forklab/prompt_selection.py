"""Which prompts to train on, and with which baseline: SPO's single-stream tracker and prompt replay.

Introduced in ``notebooks/01_policy_gradients_and_advantages.ipynb`` (section 6). Both keep state
across training steps (per-prompt statistics), so they are small classes; everything they return
is a new tensor or list, and their inputs are never modified.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from forklab import _checks

__all__ = ["SingleStreamBaseline", "spo_rho", "PromptReplay"]


def spo_rho(divergence: Tensor, rho_min: float = 0.875, rho_max: float = 0.96, half_life: float = 0.06) -> Tensor:
    """SPO's adaptive forgetting factor: ρ_x = clip(2^(−D_x / 0.06), ρ_min, ρ_max).

    ``divergence`` ``[n]`` ≥ 0 is D_x, the token-mean |log π_then − log π_now| of the prompt's last
    stored response: the more the policy moved, the faster the old statistics are forgotten.
    Returns ``[n]``. Paper (arXiv 2509.13232), verl name (``recipe/spo``, ``_get_spo_rho``) and confidence
    (HIGH) as in :class:`SingleStreamBaseline`. Notebook 01.
    """
    d = _checks.floating("divergence", divergence).double()
    if (d < 0).any():
        raise ValueError("`divergence` must be non-negative")
    if not 0 < rho_min <= rho_max < 1:
        raise ValueError(f"need 0 < `rho_min` <= `rho_max` < 1, got {rho_min}, {rho_max}")
    half_life = _checks.positive("half_life", half_life)
    return torch.pow(2.0, -d / half_life).clamp(rho_min, rho_max)


class SingleStreamBaseline:
    """SPO's persistent per-prompt value tracker: a discounted Beta posterior of each prompt's pass rate.

    Pseudocode (one response per prompt and step, no groups)::

        init   N0 = 1/(1 − ρ_min);  α_x = N0 (k_x + ½)/(N_x + 1),  β_x = N0 (N_x − k_x + ½)/(N_x + 1)
               (k_x successes in N_x offline samples; α = β = ½ without them)
        p̂_x   = α_x / (α_x + β_x)                                   # the baseline
        A_i    = r_i − p̂_{x_i};   Â_i = (A_i − mean_batch A)/(std_batch A + 1e-8)
        update α_x ← ρ α_x + r_i,   β_x ← ρ β_x + (1 − r_i)          # after the policy step
        sample prompts ∝ √(p̂_x (1 − p̂_x)) + 0.05                     # priority near p̂ = ½

    With a constant ρ the effective count α + β tends to 1/(1 − ρ) (8 for ρ = 0.875) and, for a fixed
    pass rate p, E[p̂] tends to p. Rewards are 0/1 (``r ∈ [0, 1]``). The batch std is the unbiased one.

    ============  ==================================================
    argument      shape
    ============  ==================================================
    prompt_ids    ``[B]`` long in [0, num_prompts), repeats allowed
    rewards       ``[B]`` float in [0, 1]
    advantages    returns ``[B]`` float64
    alpha, beta   state, ``[num_prompts]`` float64
    ============  ==================================================

    Paper: "Single-stream Policy Optimization" (Xu, Ding), arXiv 2509.13232. verl: ``recipe/spo``
    (``spo_ray_trainer.py``); not in TRL. Confidence: HIGH (official code). ``offline_N`` and the
    candidate-batch size of the official recipe are not modelled. Notebook 01.
    """

    def __init__(self, num_prompts: int, rho_min: float = 0.875, offline_successes=None, offline_trials=None):
        self.num_prompts = _checks.integer("num_prompts", num_prompts, 1)
        if not 0 < rho_min < 1:
            raise ValueError(f"`rho_min` must lie in (0, 1), got {rho_min}")
        self.rho_min = float(rho_min)
        if (offline_successes is None) != (offline_trials is None):
            raise ValueError("give both `offline_successes` and `offline_trials`, or neither")
        if offline_trials is None:
            self.alpha = torch.full((self.num_prompts,), 0.5, dtype=torch.float64)
            self.beta = torch.full((self.num_prompts,), 0.5, dtype=torch.float64)
        else:
            k = _checks.floating("offline_successes", offline_successes).double().reshape(-1)
            n = _checks.floating("offline_trials", offline_trials).double().reshape(-1)
            if k.shape != (self.num_prompts,) or n.shape != k.shape or ((k < 0) | (k > n)).any():
                raise ValueError(f"`offline_successes` and `offline_trials` must be [{self.num_prompts}] "
                                 "with 0 <= successes <= trials")
            n0 = 1 / (1 - self.rho_min)
            self.alpha = n0 * (k + 0.5) / (n + 1)
            self.beta = n0 * (n - k + 0.5) / (n + 1)

    @property
    def pass_rate(self) -> Tensor:
        """p̂_x = α_x / (α_x + β_x), ``[num_prompts]`` (a copy)."""
        return self.alpha / (self.alpha + self.beta)

    def sampling_weights(self) -> Tensor:
        """Prompt priorities √(p̂(1 − p̂)) + 0.05, ``[num_prompts]`` (unnormalised)."""
        p = self.pass_rate
        return (p * (1 - p)).sqrt() + 0.05

    def _check(self, prompt_ids, rewards) -> tuple[Tensor, Tensor]:
        ids = _checks.as_tensor("prompt_ids", prompt_ids).long().reshape(-1)
        r = _checks.floating("rewards", rewards).double().reshape(-1)
        _checks.same_shape("prompt_ids", ids, "rewards", r)
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.num_prompts):
            raise ValueError(f"`prompt_ids` must lie in [0, {self.num_prompts})")
        if ((r < 0) | (r > 1)).any():
            raise ValueError("`rewards` must lie in [0, 1]")
        return ids, r

    def advantages(self, prompt_ids, rewards, normalize: bool = True) -> Tensor:
        """A_i = r_i − p̂_{x_i}, z-scored over the batch when ``normalize`` (``[B]``, float64)."""
        ids, r = self._check(prompt_ids, rewards)
        a = r - self.pass_rate[ids]
        if normalize:
            if a.numel() < 2:
                raise ValueError("`rewards` needs at least 2 responses for the batch normalisation")
            a = (a - a.mean()) / (a.std() + 1e-8)
        return a

    def update(self, prompt_ids, rewards, rho=None) -> None:
        """α ← ρα + r, β ← ρβ + (1 − r) for each (prompt, reward) in order; ``rho`` float or ``[B]``
        (default ``rho_min``, the official "constant" mode; see :func:`spo_rho` for the adaptive one)."""
        ids, r = self._check(prompt_ids, rewards)
        if rho is None or isinstance(rho, (int, float)):
            return self._update_constant(ids, r, self.rho_min if rho is None else float(rho))
        rho = _checks.floating("rho", rho).double().expand_as(r)
        if ((rho <= 0) | (rho >= 1)).any():
            raise ValueError("`rho` must lie in (0, 1)")
        alpha, beta = self.alpha.clone(), self.beta.clone()
        for x, reward, decay in zip(ids.tolist(), r.tolist(), rho.tolist(), strict=True):
            alpha[x] = decay * alpha[x] + reward
            beta[x] = decay * beta[x] + 1 - reward
        self.alpha, self.beta = alpha, beta

    def _update_constant(self, ids: Tensor, r: Tensor, rho: float) -> None:
        """The same recursion in closed form: a prompt seen m times gets ρ^m α + Σ_j ρ^(m−1−c_j) r_j,
        c_j = how many earlier entries of the batch had the same prompt."""
        if not 0 < rho < 1:
            raise ValueError(f"`rho` must lie in (0, 1), got {rho}")
        order = torch.argsort(ids, stable=True)
        sorted_ids = ids[order]
        counts = torch.bincount(ids, minlength=self.num_prompts).double()
        starts = torch.cumsum(counts, 0) - counts
        occurrence = torch.empty_like(r)
        occurrence[order] = torch.arange(len(ids), dtype=torch.float64) - starts[sorted_ids]
        decay = torch.pow(rho, counts[ids] - 1 - occurrence)
        keep = torch.pow(rho, counts)
        self.alpha = keep * self.alpha + torch.zeros_like(self.alpha).index_add_(0, ids, decay * r)
        self.beta = keep * self.beta + torch.zeros_like(self.beta).index_add_(0, ids, decay * (1 - r))


class PromptReplay:
    """Prompt replay: reuse prompts whose last pass rate was near ½ (prompts only, never trajectories).

    Pseudocode::

        after each step, for every prompt x with pass rate p_x:
            if p_min ≤ p_x ≤ p_max and reuse_x < max_reuse: push x with priority (|p_x − ½|, −p_x, reuse_x)
        next step: budget = ⌊prompts_per_step · fraction⌋ slots; for each slot pop the best candidate that is
            past its cooldown (step − last_step_x ≥ cooldown); the other slots get fresh prompts

    A replayed prompt is sampled again with the current policy, so training stays on-policy; only the
    choice of prompts changes. Defaults are the authors' run script: fraction ½, cooldown 5,
    max_reuse 5, window [0.24, 0.7]. ``observe`` takes prompt ids and their pass rates (two sequences of
    equal length); ``select`` returns a list of ``prompts_per_step`` ids.

    Paper: "Prompt replay: speeding up GRPO with on-policy reuse of high-signal prompts" (Baroian,
    Berger), arXiv 2603.21177. Not in verl/TRL (the authors' open-instruct fork,
    ``ENABLE_PROMPT_REPLAY``). Confidence: MED — read from the authors' documentation of their code,
    not from the paper text. Notebook 01.
    """

    def __init__(self, fraction: float = 0.5, cooldown: int = 5, max_reuse: int = 5, p_min: float = 0.24,
                 p_max: float = 0.7):
        if not 0 <= fraction <= 1:
            raise ValueError(f"`fraction` must lie in [0, 1], got {fraction}")
        if not 0 <= p_min <= p_max <= 1:
            raise ValueError(f"need 0 <= `p_min` <= `p_max` <= 1, got {p_min}, {p_max}")
        self.fraction, self.p_min, self.p_max = float(fraction), float(p_min), float(p_max)
        self.cooldown = _checks.integer("cooldown", cooldown, 0)
        self.max_reuse = _checks.integer("max_reuse", max_reuse, 0)
        self._heap: list[tuple[float, float, int, int]] = []  # (|p − ½|, −p, reuse, prompt)
        self._entry: dict[int, tuple[float, float, int, int]] = {}  # the live heap entry of each prompt
        self.reuse: dict[int, int] = {}
        self.last_step: dict[int, int] = {}

    def observe(self, step: int, prompt_ids: Iterable[int], pass_rates: Iterable[float]) -> None:
        """Record the pass rates measured at ``step`` for the prompts trained on at that step."""
        for x, p in zip(list(prompt_ids), list(pass_rates), strict=True):
            x, p = int(x), float(p)
            if not 0 <= p <= 1 or math.isnan(p):
                raise ValueError(f"`pass_rates` must lie in [0, 1], got {p}")
            self.last_step[x] = int(step)
            self._entry.pop(x, None)  # an older entry of x is stale from now on
            if self.p_min <= p <= self.p_max and self.reuse.get(x, 0) < self.max_reuse:
                entry = (abs(p - 0.5), -p, self.reuse.get(x, 0), x)
                self._entry[x] = entry
                heapq.heappush(self._heap, entry)

    def select(self, step: int, prompts_per_step: int, fresh: Callable[[int], list[int]]) -> tuple[list[int], int]:
        """Prompts for ``step``: up to ⌊n · fraction⌋ replayed, the rest from ``fresh(k)`` (k new ids).

        Returns ``(prompt_ids, n_replayed)``; replayed prompts come first.
        """
        n = _checks.integer("prompts_per_step", prompts_per_step, 1)
        budget, chosen, waiting = math.floor(n * self.fraction), [], []
        while self._heap and len(chosen) < budget:
            entry = heapq.heappop(self._heap)
            x = entry[3]
            if self._entry.get(x) != entry:
                continue  # stale: x was observed again (or replayed) since this entry was pushed
            if int(step) - self.last_step[x] < self.cooldown:
                waiting.append(entry)
                continue
            del self._entry[x]
            self.reuse[x] = self.reuse.get(x, 0) + 1
            chosen.append(x)
        for entry in waiting:
            heapq.heappush(self._heap, entry)
        replayed = len(chosen)
        new = list(fresh(n - replayed)) if n - replayed else []
        if len(new) != n - replayed:
            raise ValueError(f"`fresh({n - replayed})` returned {len(new)} prompt ids")
        return chosen + [int(x) for x in new], replayed
