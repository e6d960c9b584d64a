"""The bandit world: a softmax policy over K arms, trained many seeds at a time.

Introduced in ``notebooks/01_policy_gradients_and_advantages.ipynb``; used for identities,
theorems and widgets throughout the suite (README.md, "Four scales").

A "prompt" is the bandit itself; a "response" is an arm; its reward is drawn from that arm's
discrete reward distribution. All arms share one reward *support* ``values [M]``; arm k has
probabilities ``probs[k] [M]`` over it. That covers Bernoulli (pass/fail) arms, graded and noisy
rewards, and several correct arms, and it is what makes the *exact* expected update computable:
the rewards of a group are i.i.d. draws from a distribution over M values, so all group outcomes
can be enumerated (compositions of G into M parts) instead of sampled.

Policy: logits ``θ [S, K]`` for S independent seeds, ``π = softmax(θ / temperature)``.

Pseudocode of one step (mode ``"sampled"``)::

    for each seed s:                          # vectorised, no loop
        a_1..a_G ~ π_s                        # one group of G arms (num_groups groups if > 1)
        r_i ~ reward distribution of arm a_i
        A_i = estimator(r_1..r_G)             # grpo, rloo, median, ... (group-local)
        PG :  θ_s += lr/T · (1/G) Σ_i A_i (e_{a_i} − π_s)          # ∇ of (1/G) Σ A_i log π(a_i)
        NPG:  θ_s += lr   · (1/G) Σ_i A_i e_{a_i} / π_s(a_i)       # unbiased for Δz = lr · A

Mode ``"exact"`` replaces the sample average by its expectation over everything random (arms,
rewards, and therefore the group statistics) at the same finite G: Ā_k = E[A_1 | a_1 = k], then
PG: θ += lr/T · π ⊙ (Ā − π·Ā), NPG: θ += lr · Ā. This is "the expected GRPO update" that the
entropy-dynamics formulas of notebook 04 talk about, with no Monte-Carlo noise.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from forklab import _checks
from forklab.advantages import get_estimator

__all__ = ["Bandit", "BanditRun", "expected_advantages", "policy_gradient", "train", "pass_at_k"]


@dataclass(frozen=True)
class Bandit:
    """K arms with discrete reward distributions over a shared support.

    ============  ==========================================
    field         shape
    ============  ==========================================
    values        ``[M]`` float, the possible rewards
    probs         ``[K, M]`` float, rows sum to 1
    success_at    a reward ≥ this counts as "correct" (pass@k)
    ============  ==========================================
    """

    values: Tensor
    probs: Tensor
    success_at: float = 1.0

    def __post_init__(self):
        values = _checks.floating("values", self.values).double()
        probs = _checks.floating("probs", self.probs).double()
        if values.dim() != 1 or values.numel() == 0:
            raise ValueError(f"`values` must have shape [M] with M >= 1, got {list(values.shape)}")
        if probs.dim() != 2 or probs.shape[1] != values.shape[0] or probs.shape[0] == 0:
            raise ValueError(f"`probs` must have shape [K, {values.shape[0]}], got {list(probs.shape)}")
        if (probs < 0).any() or not torch.allclose(probs.sum(1), torch.ones(probs.shape[0], dtype=probs.dtype)):
            raise ValueError("`probs` rows must be non-negative and sum to 1")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "probs", probs)

    # ----- constructors -------------------------------------------------------------------
    @classmethod
    def bernoulli(cls, p) -> Bandit:
        """Pass/fail arms: arm k gives reward 1 with probability ``p[k]``, else 0."""
        p = _checks.floating("p", p).double().reshape(-1)
        if ((p < 0) | (p > 1)).any():
            raise ValueError("`p` must lie in [0, 1]")
        return cls(torch.tensor([0.0, 1.0], dtype=torch.float64), torch.stack([1 - p, p], 1))

    @classmethod
    def correct_arms(cls, num_arms: int, correct, p_correct: float = 1.0, p_wrong: float = 0.0) -> Bandit:
        """Several correct answers: arms in ``correct`` pass with ``p_correct``, the rest with ``p_wrong``."""
        if int(num_arms) < 1:
            raise ValueError(f"`num_arms` must be >= 1, got {num_arms}")
        p = torch.full((int(num_arms),), float(p_wrong), dtype=torch.float64)
        idx = torch.as_tensor(list(correct), dtype=torch.long)
        if idx.numel() == 0 or idx.min() < 0 or idx.max() >= num_arms:
            raise ValueError(f"`correct` must name at least one arm in [0, {num_arms})")
        p[idx] = float(p_correct)
        return cls.bernoulli(p)

    @classmethod
    def graded(cls, scores, noise: float = 0.0, noise_prob: float = 0.0, success_at: float = 1.0) -> Bandit:
        """Graded rewards: arm k scores ``scores[k]``; with ``noise_prob`` the reward is off by ±``noise``.

        The noise is symmetric (−noise and +noise each with probability noise_prob/2), so the mean
        reward of arm k is exactly ``scores[k]`` — a verifier that sometimes mis-grades.
        """
        scores = _checks.floating("scores", scores).double().reshape(-1)
        noise = _checks.non_negative("noise", noise)
        q = _checks.non_negative("noise_prob", noise_prob)
        if q > 1:
            raise ValueError(f"`noise_prob` must be <= 1, got {q}")
        offsets = torch.tensor([-noise, 0.0, noise], dtype=torch.float64)
        weights = torch.tensor([q / 2, 1 - q, q / 2], dtype=torch.float64)
        outcomes = scores[:, None] + offsets[None, :]  # [K, 3]
        values = torch.unique(outcomes)
        probs = torch.zeros(len(scores), len(values), dtype=torch.float64)
        for j in range(3):
            where = torch.searchsorted(values, outcomes[:, j : j + 1].contiguous())
            probs.scatter_add_(1, where, weights[j].expand(len(scores), 1))
        return cls(values, probs, success_at)

    # ----- properties ---------------------------------------------------------------------
    @property
    def num_arms(self) -> int:
        return self.probs.shape[0]

    @property
    def mean(self) -> Tensor:
        """Expected reward of each arm, ``[K]``."""
        return self.probs @ self.values

    @property
    def success(self) -> Tensor:
        """Probability that each arm's reward counts as correct (≥ ``success_at``), ``[K]``."""
        return self.probs[:, self.values >= self.success_at - 1e-12].sum(1)

    def sample_rewards(self, arms: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draw one reward per pulled arm; ``arms`` is any integer shape, the result has the same shape."""
        flat = arms.reshape(-1)
        outcome = torch.multinomial(self.probs[flat], 1, generator=generator).squeeze(1)
        return self.values[outcome].reshape(arms.shape)


def policy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    return torch.softmax(logits.double() / temperature, dim=-1)


def entropy(probs: Tensor) -> Tensor:
    """Entropy of each row of ``probs`` (nats), treating 0·log 0 as 0."""
    logp = torch.where(probs > 0, probs.log(), torch.zeros_like(probs))
    return -(probs * logp).sum(-1)


def pass_at_k(success_prob: Tensor, k: int) -> Tensor:
    """Exact pass@k of i.i.d. sampling: P(at least one of k draws is correct) = 1 − (1 − s)^k.

    ``success_prob`` must lie in [0, 1] and ``k`` be an integer ≥ 1 (else ``ValueError``)."""
    s = _checks.floating("success_prob", success_prob)
    if ((s < 0) | (s > 1)).any():
        raise ValueError("`success_prob` must lie in [0, 1] (it is a probability)")
    return 1 - (1 - s) ** _checks.integer("k", k, 1)


def _compositions(n: int, m: int) -> Tensor:
    """All count vectors ``c ∈ ℕ^m`` with Σc = n, as a ``[C, m]`` long tensor (stars and bars)."""
    rows = []
    for bars in itertools.combinations(range(n + m - 1), m - 1):
        edges = (-1, *bars, n + m - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(m)])
    return torch.tensor(rows, dtype=torch.long)


def expected_advantages(
    bandit: Bandit,
    probs: Tensor,
    estimator: str | Callable[[Tensor, Tensor], Tensor] = "grpo",
    group_size: int = 8,
) -> Tensor:
    """Exact Ā_k = E[A_1 | a_1 = k] of a group-local estimator at finite group size G.

    The other G−1 rewards are i.i.d. from the marginal reward distribution under π,
    q_m = Σ_k π_k P(v_m | k), so conditioning on the first response's reward value v_m and on the
    counts c of the others' reward values (multinomial(G−1, q)) fixes the group completely:

    .. math:: \\bar A_k = \\sum_m P(v_m|k) \\sum_{c} \\mathrm{Mult}(c; G-1, q)\\, A_1(v_m, c)

    Cost: M · C(G−1+M−1, M−1) groups of size G, evaluated in one batch (16 for Bernoulli and G=16).

    ============  ===========================
    argument      shape
    ============  ===========================
    probs         ``[S, K]`` policy per seed
    returns       ``[S, K]`` float64
    ============  ===========================
    """
    estimator = get_estimator(estimator)
    g = int(group_size)
    if g < 2:
        raise ValueError(f"`group_size` must be >= 2 for a group-relative estimator, got {group_size}")
    probs = _checks.floating("probs", probs).double()
    if probs.dim() != 2 or probs.shape[1] != bandit.num_arms:
        raise ValueError(f"`probs` must have shape [S, {bandit.num_arms}], got {list(probs.shape)}")
    m = len(bandit.values)
    comps = _compositions(g - 1, m)  # [C, M]
    n_comp = comps.shape[0]
    # Build every group once: first reward = v_j, others = expanded composition c.
    others = torch.repeat_interleave(bandit.values.repeat(n_comp), comps.reshape(-1)).reshape(n_comp, g - 1)
    firsts = bandit.values[:, None, None].expand(m, n_comp, 1)
    groups = torch.cat([firsts, others[None].expand(m, n_comp, g - 1)], dim=2).reshape(-1, g)  # [M*C, G]
    ids = torch.arange(groups.shape[0]).repeat_interleave(g)
    adv = estimator(groups.reshape(-1), ids).reshape(m, n_comp, g)[:, :, 0].double()  # A_1, [M, C]
    # Multinomial probabilities of each composition under every seed's marginal q [S, M].
    q = probs @ bandit.probs
    # multinomial coefficients (G-1)! / Π c_m!, exact integers
    log_coef = torch.tensor([math.log(math.factorial(g - 1)) - sum(math.log(math.factorial(c)) for c in row)
                             for row in comps.tolist()], dtype=torch.float64)  # [C]
    log_q = torch.where(q > 0, q.log(), torch.full_like(q, -math.inf))
    log_pc = log_coef[None, :] + torch.where(comps[None] > 0, comps[None] * log_q[:, None, :], 0.0).sum(-1)
    p_comp = log_pc.exp()  # [S, C]
    adv_given_value = p_comp @ adv.T  # [S, M]: E[A_1 | r_1 = v_m]
    return adv_given_value @ bandit.probs.T  # [S, K]


def policy_gradient(probs: Tensor, adv: Tensor, temperature: float = 1.0) -> Tensor:
    """Expected PG on the logits θ for per-arm advantages: (1/T) · π ⊙ (Ā − π·Ā), ``[S, K]``.

    ``probs`` rows must be distributions (≥ 0, summing to 1 within 1e-6), else ``ValueError``."""
    probs = _checks.floating("probs", probs)
    adv = _checks.floating("adv", adv).to(probs.dtype)
    _checks.same_shape("probs", probs, "adv", adv)
    if probs.dim() < 1 or probs.shape[-1] == 0:
        raise ValueError(f"`probs` must have a non-empty last (arm) dimension, got {list(probs.shape)}")
    if (probs < 0).any() or ((probs.double().sum(-1) - 1).abs() > 1e-6).any():
        raise ValueError("`probs` rows must be probability distributions (>= 0, summing to 1)")
    temperature = _checks.positive("temperature", temperature)
    centred = adv - (probs * adv).sum(-1, keepdim=True)
    return probs * centred / temperature


@dataclass
class BanditRun:
    """History of a training run: every tensor in ``history`` is ``[steps + 1, S]`` (step 0 = init)."""

    history: dict[str, Tensor] = field(default_factory=dict)
    logits: Tensor | None = None
    config: dict = field(default_factory=dict)

    def mean(self, key: str) -> Tensor:
        """Mean over seeds, ``[steps + 1]``."""
        return self.history[key].mean(1)


def _record(run: BanditRun, bandit: Bandit, logits: Tensor, temperature: float, ks) -> None:
    pi = policy(logits, temperature)
    succ = pi @ bandit.success
    rows = {"reward": pi @ bandit.mean, "entropy": entropy(pi), "accuracy": succ}
    rows |= {f"pass@{k}": pass_at_k(succ, k) for k in ks}
    for key, value in rows.items():
        run.history.setdefault(key, []).append(value)


def train(
    bandit: Bandit,
    *,
    steps: int = 100,
    lr: float = 0.5,
    group_size: int = 8,
    num_seeds: int = 64,
    estimator: str | Callable[[Tensor, Tensor], Tensor] = "grpo",
    mode: str = "sampled",
    update: str = "pg",
    temperature: float = 1.0,
    num_groups: int = 1,
    init_logits: Tensor | None = None,
    seed: int = 0,
    pass_k: tuple[int, ...] = (1, 8),
) -> BanditRun:
    """Train ``num_seeds`` independent softmax policies on ``bandit`` and record their curves.

    ``mode``: ``"sampled"`` draws ``num_groups`` groups of ``group_size`` arms per seed and step;
    ``"exact"`` takes the expectation of that update (see :func:`expected_advantages`).
    ``update``: ``"pg"`` (vanilla policy gradient on θ) or ``"npg"`` (natural policy gradient,
    Δθ = lr·A, the step the entropy theorems of The Entropy Mechanism, arXiv 2505.22617, use).
    ``estimator``: a name from :data:`forklab.advantages.ESTIMATORS` or a group-local callable
    ``f(rewards [N], group [N]) -> [N]``; estimators that use batch-wide statistics would mix
    seeds and are not accepted by name.

    Recorded per step (exact, from π, not from samples): ``reward`` (expected reward),
    ``entropy``, ``accuracy`` (P(correct)), ``pass@k`` for each k in ``pass_k``; sampled mode also
    records ``sampled_reward`` (mean reward of the drawn group) and ``degenerate`` (share of groups
    with all-equal rewards).
    """
    _checks.choice("mode", mode, {"sampled", "exact"})
    _checks.choice("update", update, {"pg", "npg"})
    lr = _checks.non_negative("lr", lr)
    temperature = _checks.positive("temperature", temperature)
    estimator_fn = get_estimator(estimator)
    s, k, g, n_groups = int(num_seeds), bandit.num_arms, int(group_size), int(num_groups)
    if s < 1 or g < 2 or n_groups < 1 or int(steps) < 0:
        raise ValueError("`num_seeds` >= 1, `group_size` >= 2, `num_groups` >= 1 and `steps` >= 0 are required")
    gen = torch.Generator().manual_seed(int(seed))
    if init_logits is None:
        logits = torch.zeros(s, k, dtype=torch.float64)
    else:
        logits = _checks.floating("init_logits", init_logits).double()
        if logits.shape == (k,):
            logits = logits.expand(s, k)
        if logits.shape != (s, k):
            raise ValueError(f"`init_logits` must have shape [{k}] or [{s}, {k}], got {list(init_logits.shape)}")
        logits = logits.clone()
    run = BanditRun(config=dict(steps=steps, lr=lr, group_size=g, num_seeds=s, estimator=str(estimator),
                                mode=mode, update=update, temperature=temperature, num_groups=n_groups,
                                seed=seed))
    sampled_reward, degenerate = [], []
    _record(run, bandit, logits, temperature, pass_k)
    ids = torch.arange(s * n_groups).repeat_interleave(g)
    for _ in range(int(steps)):
        pi = policy(logits, temperature)
        if mode == "exact":
            adv = expected_advantages(bandit, pi, estimator_fn, g)
            delta = adv if update == "npg" else policy_gradient(pi, adv, temperature)
        else:
            arms = torch.multinomial(pi.repeat_interleave(n_groups, 0), g, replacement=True, generator=gen)
            rewards = bandit.sample_rewards(arms, gen)  # [S*n_groups, G]
            adv = estimator_fn(rewards.reshape(-1), ids).double().reshape(s, n_groups * g)
            arms = arms.reshape(s, n_groups * g)
            weight = torch.zeros(s, k, dtype=torch.float64).scatter_add_(1, arms, adv) / (n_groups * g)
            if update == "npg":
                delta = weight / pi  # E[weight_k / π_k] = π_k Ā_k / π_k = Ā_k
            else:
                delta = (weight - pi * weight.sum(-1, keepdim=True)) / temperature
            sampled_reward.append(rewards.reshape(s, -1).mean(1))
            flat = rewards.reshape(s, n_groups, g)
            degenerate.append((flat.amax(-1) == flat.amin(-1)).double().mean(1))
        logits = logits + lr * delta
        if not torch.isfinite(logits).all():  # sampled natural PG divides by π: a rare arm can overflow
            raise ValueError(f"`lr` = {lr} is too large for update={update!r}: the logits overflowed at step "
                             f"{len(run.history['reward'])}")
        _record(run, bandit, logits, temperature, pass_k)
    run.history = {key: torch.stack(v) for key, v in run.history.items()}
    if mode == "sampled" and steps:
        run.history["sampled_reward"] = torch.stack(sampled_reward)
        run.history["degenerate"] = torch.stack(degenerate)
    run.logits = logits
    return run
