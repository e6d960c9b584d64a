"""Experiments of notebook 01, section 6: BNPO, DGPO, SPO, prompt replay, D³S and the off-policy reading.

The world is a *set of prompts*, each a two-arm bandit (the answer is right or wrong) with its own
logit θ_x, so π(correct | x) = σ(θ_x) is the prompt's pass rate and ∇_θx log π(y) = y − σ(θ_x). The
policy gradient of a batch is  Δθ_x = lr · (1/N) Σ_{i: x_i = x} Â_i (y_i − σ(θ_x)),  N responses in the
batch (the sequence-mean of a one-token response). Many seeds run side by side; every seed draws its
own batches, and the advantage functions see one seed's batch at a time (BNPO, DGPO and SPO use
batch-wide statistics). D³S runs on the sequence policy of ``forklab.envs.seqpolicy``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from forklab import advantage_weighting as aw
from forklab import advantages as adv
from forklab import offpolicy_reinforce as opr
from forklab.envs import seqpolicy as sp
from forklab.progress import progress
from forklab.prompt_selection import PromptReplay, SingleStreamBaseline

__all__ = ["ESTIMATORS", "gradient_noise", "train_groups", "train_single_stream", "replay_run", "d3s_gradients",
           "offpolicy_demo"]

F64 = torch.float64

#: Advantage functions of one batch, ``f(rewards [N], group [N]) -> [N]``.
ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "reinforce": lambda r, g: r.clone(),
    "mean": lambda r, g: adv.grpo(r, g, scale="none"),
    "grpo": lambda r, g: adv.grpo(r, g),
    "bnpo": lambda r, g: aw.bnpo(r, g),
    "dgpo": lambda r, g: aw.dgpo(r, g),
}


def _logit(p: Tensor) -> Tensor:
    return torch.log(p) - torch.log1p(-p)


def gradient_noise(pass_rates, estimators, group_size: int = 8, num_resamples: int = 500,
                   seed: int = 0) -> pd.DataFrame:
    """Direction and noise of each estimator's batch gradient at fixed per-prompt pass rates.

    One batch = every prompt once with G responses. ``cosine``: cosine between the mean estimate over
    ``num_resamples`` batches and ∇J (J = mean pass rate; ∇_θx J = p_x(1 − p_x)/P); ``relative_noise``:
    E‖ĝ − ḡ‖² / ‖ḡ‖² (scale-free, so estimators with different step sizes compare fairly).
    """
    p = torch.as_tensor(pass_rates, dtype=F64)
    n_prompts, g = len(p), int(group_size)
    gen = torch.Generator().manual_seed(seed)
    draws = (torch.rand(num_resamples, n_prompts, g, generator=gen, dtype=F64) < p[None, :, None]).double()
    group = torch.arange(n_prompts).repeat_interleave(g)
    true = p * (1 - p) / n_prompts
    rows = []
    for name in estimators:
        fn = ESTIMATORS[name]
        a = torch.stack([fn(d.reshape(-1), group) for d in draws]).reshape(num_resamples, n_prompts, g)
        grads = (a * (draws - p[None, :, None])).sum(-1) / (n_prompts * g)  # [R, P]
        mean = grads.mean(0)
        rows.append(dict(estimator=name, cosine=float(mean @ true / (mean.norm() * true.norm())),
                         relative_noise=float(((grads - mean) ** 2).sum(1).mean() / (mean @ mean))))
    return pd.DataFrame(rows)


def dgpo_batched(y: Tensor, temperature: float = 2.0) -> Tensor:
    """DGPO for many seeds at once: ``y [S, k, G]`` rewards, one batch of k groups per seed -> ``[S, k, G]``.

    DGAE is group-local (``aw.dgpo(..., question_weights=False)`` on all groups at once); DQW's softmax
    runs over each seed's informative groups only (the notebook checks this equals ``aw.dgpo`` per seed).
    """
    s, k, g = y.shape
    ids = torch.arange(s * k).repeat_interleave(g)
    a = aw.dgpo(y.reshape(-1), ids, question_weights=False).reshape(s, k, g)
    p = y.mean(-1)
    informative = y.amax(-1) != y.amin(-1)
    logits = torch.where(informative, -p / temperature, torch.full_like(p, -torch.inf))
    k_v = informative.sum(-1, keepdim=True)
    w = torch.where(informative, k_v * torch.softmax(logits, -1).nan_to_num(0.0), torch.ones_like(p))
    return a * w[..., None]


def train_groups(pass_rates, estimator: str, *, steps: int = 100, group_size: int = 8, lr: float = 1.0,
                 prompts_per_step: int | None = None, num_seeds: int = 32, seed: int = 0) -> Tensor:
    """Group training on the prompt set; returns the pass rates ``[steps + 1, num_seeds, P]``.

    ``estimator``: "reinforce", "mean", "grpo" or "dgpo". ``prompts_per_step`` prompts (default: all)
    are drawn uniformly without replacement per step and seed; all seeds are one vectorised batch.
    """
    p0 = torch.as_tensor(pass_rates, dtype=F64)
    n_prompts, g, s = len(p0), int(group_size), int(num_seeds)
    k = n_prompts if prompts_per_step is None else int(prompts_per_step)
    if estimator not in {"reinforce", "mean", "grpo", "dgpo"}:
        raise ValueError(f"`estimator` must be reinforce, mean, grpo or dgpo, got {estimator!r}")
    gen = torch.Generator().manual_seed(seed)
    theta = _logit(p0).repeat(s, 1)
    history = [torch.sigmoid(theta)]
    ids = torch.arange(s * k).repeat_interleave(g)
    for _ in progress(range(steps), desc=estimator):
        prompts = torch.rand(s, n_prompts, generator=gen).argsort(1)[:, :k] if k < n_prompts else \
            torch.arange(n_prompts).expand(s, n_prompts)
        pi = torch.sigmoid(theta).gather(1, prompts)  # [S, k]
        y = (torch.rand(s, k, g, generator=gen, dtype=F64) < pi[..., None]).double()
        a = dgpo_batched(y) if estimator == "dgpo" else ESTIMATORS[estimator](y.reshape(-1), ids).reshape(s, k, g)
        theta = theta.scatter_add(1, prompts, lr * (a * (y - pi[..., None])).sum(-1) / (k * g))
        history.append(torch.sigmoid(theta))
    return torch.stack(history)


def train_single_stream(pass_rates, *, steps: int = 100, batch_size: int = 32, lr: float = 1.0,
                        num_seeds: int = 32, seed: int = 0) -> tuple[Tensor, float]:
    """SPO on the prompt set: ``batch_size`` prompts per step, drawn with replacement ∝ the tracker's
    weights, one response each, A = r − p̂ z-scored over the seed's batch. Returns pass rates
    ``[steps + 1, S, P]`` and the share of responses whose advantage was exactly 0.

    All seeds share one :class:`SingleStreamBaseline` with S·P streams (seed s, prompt x -> s·P + x).
    """
    p0 = torch.as_tensor(pass_rates, dtype=F64)
    n_prompts, s, b = len(p0), int(num_seeds), int(batch_size)
    gen = torch.Generator().manual_seed(seed)
    theta = _logit(p0).repeat(s, 1)
    tracker = SingleStreamBaseline(s * n_prompts)
    history, zeros = [torch.sigmoid(theta)], 0
    offset = (torch.arange(s) * n_prompts)[:, None]
    for _ in progress(range(steps), desc="spo"):
        pi = torch.sigmoid(theta)
        prompts = torch.multinomial(tracker.sampling_weights().reshape(s, n_prompts), b, replacement=True,
                                    generator=gen)  # [S, B]
        y = (torch.rand(s, b, generator=gen, dtype=F64) < pi.gather(1, prompts)).double()
        a = tracker.advantages((prompts + offset).reshape(-1), y.reshape(-1), normalize=False).reshape(s, b)
        a = (a - a.mean(1, keepdim=True)) / (a.std(1, keepdim=True) + 1e-8)
        zeros += int((a == 0).sum())
        theta = theta.scatter_add(1, prompts, lr * a * (y - pi.gather(1, prompts)) / b)
        tracker.update((prompts + offset).reshape(-1), y.reshape(-1))
        history.append(torch.sigmoid(theta))
    return torch.stack(history), zeros / (steps * s * b)


def replay_run(pass_rates, *, replay: bool, steps: int = 50, prompts_per_step: int = 16, group_size: int = 8,
               lr: float = 1.0, num_seeds: int = 8, seed: int = 0) -> pd.DataFrame:
    """GRPO on the prompt set with uniform fresh prompts, or with :class:`PromptReplay` (defaults).

    Fresh prompts are drawn uniformly with replacement. Returns one row per (seed, step): the share of
    degenerate groups, the mean |Â| and the share of replayed prompts.
    """
    p0 = torch.as_tensor(pass_rates, dtype=F64)
    n_prompts, g, k = len(p0), int(group_size), int(prompts_per_step)
    gen = torch.Generator().manual_seed(seed)
    group = torch.arange(k).repeat_interleave(g)
    rows = []
    for s in range(num_seeds):
        theta = _logit(p0).clone()
        sampler = PromptReplay() if replay else None
        fresh = lambda n: torch.randint(0, n_prompts, (n,), generator=gen).tolist()  # noqa: E731
        for step in range(steps):
            prompts, n_replayed = sampler.select(step, k, fresh) if sampler else (fresh(k), 0)
            idx = torch.tensor(prompts)
            pi = torch.sigmoid(theta[idx])
            y = (torch.rand(k, g, generator=gen, dtype=F64) < pi[:, None]).double()
            a = adv.grpo(y.reshape(-1), group).reshape(k, g)
            theta.index_add_(0, idx, lr * (a * (y - pi[:, None])).sum(1) / (k * g))
            if sampler:
                sampler.observe(step, prompts, y.mean(1).tolist())
            rows.append(dict(seed=s, step=step, degenerate=float((y.amax(1) == y.amin(1)).double().mean()),
                             mean_abs_adv=float(a.abs().mean()), replayed=n_replayed / k))
    return pd.DataFrame(rows)


def d3s_gradients(*, num_batches: int = 200, group_size: int = 8, keep_fraction: float = 0.2,
                  keep_samples: int | None = None, seed: int = 0) -> pd.DataFrame:
    """GRPO vs D³S token selection on the sequence policy (``seqpolicy.default_task``, tabular policy
    with random initial logits): per sampled batch, the token-mean surrogate's gradient with all tokens
    and with D³S's kept tokens (optionally after the sample-level subset). Returns one row per method:
    ``tokens_used`` (share of response tokens), ``grad_norm`` (mean ‖ĝ‖), ``cosine`` (mean cosine
    between ĝ and the exact ∇J)."""
    torch.manual_seed(seed)
    task = sp.default_task()
    policy = sp.TabularPolicy(task.num_prompts, task.vocab_size, task.max_len, init_scale=1.0)
    params = [q for q in policy.parameters() if q.requires_grad]
    true = torch.cat([t.reshape(-1) for t in sp.exact_gradient(policy, task).values()])
    gen = torch.Generator().manual_seed(seed)
    out = {"grpo": [], "d3s": []}
    for _ in range(num_batches):
        roll = policy.sample(group_size=group_size, generator=gen)
        rewards = task.reward(roll.prompt_ids, roll.tokens, roll.mask)
        a = adv.grpo(rewards, roll.group)
        with torch.no_grad():
            logpi = policy.log_policy(roll.prompt_ids, roll.tokens)
            h = -(torch.where(torch.isfinite(logpi), logpi.exp() * logpi, 0.0)).sum(-1)
        rows = roll.mask
        if keep_samples is not None:
            rows = roll.mask & aw.d3s_sample_subset(a, keep_samples)[:, None]
        masks = {"grpo": roll.mask, "d3s": aw.d3s_token_mask(a, h, rows, keep_fraction)}
        for name, keep in masks.items():
            logp = policy.token_logprobs(roll.prompt_ids, roll.tokens, roll.mask)
            n = max(int(keep.sum()), 1)
            loss = (a[:, None] * logp * keep).sum() / n  # token-mean over the kept tokens
            grad = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, params)])
            norm = grad.norm().item()
            cos = float(grad @ true / (norm * true.norm())) if norm > 0 else 0.0
            out[name].append((keep.sum().item() / roll.mask.sum().item(), norm, cos))
    return pd.DataFrame([dict(method=name, tokens_used=np.mean([v[0] for v in vals]),
                              grad_norm=np.mean([v[1] for v in vals]), cosine=np.mean([v[2] for v in vals]))
                         for name, vals in out.items()])


def offpolicy_demo(rewards, anchor, behaviours: dict[str, list[float]], tau: float = 0.5, steps: int = 400,
                   lr: float = 1.0) -> pd.DataFrame:
    """The off-policy reading on a bandit: data from a behaviour μ ≠ π_t, exact expectations over μ.

    ``reinforce``: repeat the group-mean REINFORCE step on μ's data, θ += lr·μ ⊙ (r − r̄_μ) − (that sum)·π
    (the expected update), ``steps`` times with no anchor. ``pairwise``: minimise the expected
    pairwise-consistency loss (weights μ, anchor π_t) from θ_t with L-BFGS. Returns the final
    policies next to π* ∝ π_t exp(r/τ).
    """
    r = torch.as_tensor(rewards, dtype=F64)
    anchor = torch.as_tensor(anchor, dtype=F64)
    target = opr.kl_regularised_optimum(anchor, r, tau)
    rows = []
    for label, mu in behaviours.items():
        mu = torch.as_tensor(mu, dtype=F64)
        theta = anchor.log().clone()
        for _ in range(steps):
            pi = torch.softmax(theta, 0)
            weight = mu * (r - mu @ r)
            theta = theta + lr * (weight - pi * weight.sum())
        rows.append(dict(behaviour=label, method="REINFORCE, repeated on μ's data", **_probs(torch.softmax(theta, 0))))
        theta = anchor.log().clone().requires_grad_(True)
        opt = torch.optim.LBFGS([theta], max_iter=100, tolerance_grad=1e-12, tolerance_change=1e-15,
                                line_search_fn="strong_wolfe")

        def closure(mu=mu, theta=theta, opt=opt):
            opt.zero_grad()
            loss = opr.pairwise_consistency_loss(torch.log_softmax(theta, 0), anchor.log(), r, tau, weights=mu)
            loss.backward()
            return loss

        opt.step(closure)
        theta = theta.detach()
        rows.append(dict(behaviour=label, method="pairwise loss, anchored at π_t", **_probs(torch.softmax(theta, 0))))
    rows.append(dict(behaviour="—", method="π* ∝ π_t exp(r/τ)", **_probs(target)))
    return pd.DataFrame(rows)


def _probs(pi: Tensor) -> dict[str, float]:
    return {f"π(arm {k})": float(v) for k, v in enumerate(pi.tolist())}
