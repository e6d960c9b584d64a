"""Experiments of ``notebooks/03_ratios_and_clipping.ipynb`` §6: adaptive clip bounds on small bandits.

:func:`rare_token_growth` replays one stale batch until the clip stops a rare token's growth (DCPO's
argument); :func:`stale_bandit` trains a prompt bandit on stale batches (each batch reused for several
updates, as in off-policy RL) with fixed and adaptive clips and records entropy, reward and clip
fractions. The objectives are :mod:`forklab.surrogates` and :mod:`forklab.adaptive_clipping` calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd
import torch

from forklab import adaptive_clipping as ac
from forklab import surrogates as sur
from forklab.advantages import grpo
from forklab.aggregation import aggregate
from forklab.progress import progress

__all__ = ["rare_token_growth", "stale_objectives", "stale_bandit"]


def rare_token_growth(q: float = 0.01, lr: float = 0.01, max_steps: int = 2000) -> pd.DataFrame:
    """A two-arm bandit whose sampled arm had old probability ``q`` and advantage +1, replayed until it stops.

    Plain gradient descent on the logits with the one-token batch fixed (π_old frozen). PPO clip
    stops pushing once r > 1 + ε, so p stops near q(1 + ε); DCPO's bound for a rare token is far
    wider. Returns, per objective: the final probability, the final ratio and the steps taken.
    """
    if not 0 < q < 1:
        raise ValueError(f"`q` must lie in (0, 1), got {q}")
    fns = {"PPO clip (0.2)": lambda lp, o, a, m: sur.ppo_clip(lp, o, a, m, eps_low=0.2),
           "clip-higher (0.2/0.28)": lambda lp, o, a, m: sur.ppo_clip(lp, o, a, m, eps_low=0.2, eps_high=0.28),
           "DCPO (0.2/0.28)": lambda lp, o, a, m: ac.dcpo_clip(lp, o, a, m)}
    rows = []
    for name, fn in fns.items():
        logits = torch.tensor([math.log(q), math.log(1 - q)], dtype=torch.float64, requires_grad=True)
        old = torch.log_softmax(logits.detach(), 0)[:1].reshape(1, 1)
        adv, mask = torch.ones(1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.bool)
        steps = 0
        while steps < max_steps:
            logp = torch.log_softmax(logits, 0)[:1].reshape(1, 1)
            (grad,) = torch.autograd.grad(fn(logp, old, adv, mask).sum(), logits)
            if grad.abs().max() == 0:  # the clip binds: this batch can push no further
                break
            steps += 1
            with torch.no_grad():
                logits -= lr * grad
        p = float(torch.softmax(logits.detach(), 0)[0])
        rows.append(dict(objective=name, final_prob=p, final_ratio=p / q, steps=steps))
    return pd.DataFrame(rows)


def stale_objectives() -> dict[str, Callable]:
    """Name → ``f(logp, old_logp, adv, mask, entropy, group_std) -> (loss [B, T], metrics)``."""
    return {
        "PPO clip [0.8, 1.2]": lambda lp, o, a, m, h, s: sur.ppo_clip(lp, o, a, m, 0.2, return_metrics=True),
        "clip-higher [0.8, 1.28]": lambda lp, o, a, m, h, s: sur.ppo_clip(lp, o, a, m, 0.2, 0.28,
                                                                          return_metrics=True),
        "DCPO": lambda lp, o, a, m, h, s: ac.dcpo_clip(lp, o, a, m, return_metrics=True),
        "BAPO": lambda lp, o, a, m, h, s: ac.bapo_clip(lp, o, a, m, return_metrics=True),
        "ETR (LOW)": lambda lp, o, a, m, h, s: ac.etr_clip(lp, o, a, m, group_std=s, return_metrics=True),
        "HAPO clip": lambda lp, o, a, m, h, s: sur.hapo_clip(lp, o, a, m, h, dual_clip=10.0, return_metrics=True),
    }


def stale_bandit(objective: str, steps: int = 40, reuse: int = 4, prompts: int = 16, arms: int = 20,
                 group_size: int = 8, lr: float = 20.0, seed: int = 0, show_progress: bool = True) -> pd.DataFrame:
    """A prompt bandit trained on stale batches with one of :func:`stale_objectives`.

    ``prompts`` independent softmax policies over ``arms`` arms (logits drawn once from N(0, 1.5²)
    with ``seed``); prompt p rewards its ``1 + p % 3`` arms with the lowest initial probability (so
    that the good arms start rare and learning needs rare tokens to grow). Each step samples
    ``group_size`` arms per prompt from π_old, computes GRPO advantages, then takes ``reuse`` plain
    gradient steps of size ``lr`` on the token-mean loss of that same batch: from the second step on
    the data are stale. Returns one row per step: mean entropy (nats), mean expected reward (exact),
    the clip fraction ``clip_ratio/region_mean`` averaged over the reuse steps, and the method's bounds.
    """
    fns = stale_objectives()
    if objective not in fns:
        raise ValueError(f"`objective` must be one of {list(fns)}, got {objective!r}")
    gen = torch.Generator().manual_seed(seed)
    logits = (1.5 * torch.randn(prompts, arms, generator=gen, dtype=torch.float64)).requires_grad_(True)
    rewards = torch.zeros(prompts, arms, dtype=torch.float64)
    order = logits.detach().argsort(dim=1)
    for p in range(prompts):
        rewards[p, order[p, : 1 + p % 3]] = 1.0
    prompt_ids = torch.arange(prompts).repeat_interleave(group_size)
    group = prompt_ids.clone()
    mask = torch.ones(prompts * group_size, 1, dtype=torch.bool)
    rows = []
    for step in progress(range(steps + 1), desc=objective) if show_progress else range(steps + 1):
        with torch.no_grad():
            probs = torch.softmax(logits, 1)
            entropy = -(probs * probs.clamp_min(1e-300).log()).sum(1)
            expected = (probs * rewards).sum(1)
        row = dict(step=step, entropy=float(entropy.mean()), reward=float(expected.mean()))
        if step == steps:
            rows.append(row)
            break
        arm = torch.multinomial(probs, group_size, replacement=True, generator=gen).reshape(-1)
        r = rewards[prompt_ids, arm]
        adv = grpo(r, group)
        group_std = r.reshape(prompts, group_size).std(1).repeat_interleave(group_size)
        old_logp = torch.log_softmax(logits.detach(), 1)[prompt_ids, arm][:, None]
        token_entropy = entropy[prompt_ids][:, None]
        clip, bounds = [], []
        for _ in range(reuse):
            logp = torch.log_softmax(logits, 1)[prompt_ids, arm][:, None]
            loss, metrics = fns[objective](logp, old_logp, adv, mask, token_entropy, group_std)
            (grad,) = torch.autograd.grad(aggregate(loss, mask, "token-mean"), logits)
            with torch.no_grad():
                logits -= lr * grad
            clip.append(metrics["clip_ratio/region_mean"])
            bounds.append((metrics.get("bapo/c_low", float("nan")), metrics.get("bapo/c_high", float("nan"))))
        row.update(clip_fraction=sum(clip) / reuse, c_low=bounds[-1][0], c_high=bounds[-1][1])
        rows.append(row)
    return pd.DataFrame(rows)
