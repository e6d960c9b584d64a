"""Experiments and widget callback of ``notebooks/08_kl_and_divergences.ipynb``.

Plain functions returning DataFrames, tensors or figures; the notebook prints, plots and asserts, pytest
drives the widget callback (:func:`explore`). Every quantity is exact (sums over all arms) unless the
name says ``sampled``; sampled runs use float64 and a fixed ``torch.Generator``.

Worlds used here:

- *Drift family*: a reference π_ref over K arms and policies π_d = softmax(log π_ref + d·u) drifting
  away along a fixed direction u; d = 0 is the reference itself.
- *KL bandit*: six arms with Bernoulli rewards, a non-uniform π_ref and the objective
  E_π[r] − β·KL(π‖π_ref), whose optimum is :func:`forklab.alignment.tilted_optimum`.
- *Strategies bandit*: each arm is a solution strategy that solves a fixed subset of a set of problems;
  its training reward is its solve rate, and pass@k is measured over the problems (a collapsed policy
  loses the problems only the other strategies solve).
"""

from __future__ import annotations

import math

import matplotlib.figure
import numpy as np
import pandas as pd
import torch
from torch import Tensor

from forklab import _checks
from forklab import alignment as al
from forklab import fdivergences as fd
from forklab.envs.bandit import Bandit
from forklab.kl import kl_estimate
from forklab.plots import PALETTE, use_style

__all__ = ["drift_family", "estimator_moments", "sampled_estimator_moments", "expected_estimator_gradients",
           "kl_bandit", "kl_weight", "kl_pg_run", "strategies_bandit", "coverage_pass_at_k", "regularized_runs",
           "unimodal_fits", "best_of_n_table", "continuous_best_of_n_kl", "explore", "estimator_figure",
           "divergence_figure", "best_of_n_figure"]

ESTIMATORS = ("k1", "k2", "k3")


# ----- 1 · estimators as the policy drifts ----------------------------------------------------------
def drift_family(num_arms: int = 10, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(ref_logp [K], direction [K])``: π_d = log_softmax(ref_logp + d·direction)."""
    gen = torch.Generator().manual_seed(int(seed))
    ref_logp = torch.log_softmax(torch.randn(int(num_arms), generator=gen, dtype=torch.float64), -1)
    direction = torch.randn(int(num_arms), generator=gen, dtype=torch.float64)
    return ref_logp, direction


def _drifted(ref_logp: Tensor, direction: Tensor, drift: float) -> Tensor:
    return torch.log_softmax(ref_logp + float(drift) * direction, -1)


def estimator_moments(drifts, num_arms: int = 10, seed: int = 0) -> pd.DataFrame:
    """Exact KL(π_d‖π_ref) and the mean and per-sample std of k1, k2, k3 under y ~ π_d, per drift d."""
    ref_logp, direction = drift_family(num_arms, seed)
    rows = []
    for d in drifts:
        logp = _drifted(ref_logp, direction, d)
        p = logp.exp()
        row = {"drift": float(d), "KL": float((p * (logp - ref_logp)).sum())}
        for kind in ESTIMATORS:
            values = kl_estimate(logp, ref_logp, kind)
            mean = (p * values).sum()
            row[f"mean {kind}"] = float(mean)
            row[f"std {kind}"] = float((p * (values - mean) ** 2).sum().sqrt())
        rows.append(row)
    return pd.DataFrame(rows)


def sampled_estimator_moments(drifts, num_samples: int = 4000, num_arms: int = 10, seed: int = 0) -> pd.DataFrame:
    """The same moments from ``num_samples`` draws y ~ π_d per drift, with the standard error of each mean."""
    ref_logp, direction = drift_family(num_arms, seed)
    gen = torch.Generator().manual_seed(int(seed) + 1)
    rows = []
    for d in drifts:
        logp = _drifted(ref_logp, direction, d)
        ys = torch.multinomial(logp.exp(), int(num_samples), replacement=True, generator=gen)
        row = {"drift": float(d)}
        for kind in ESTIMATORS:
            values = kl_estimate(logp[ys], ref_logp[ys], kind)
            row[f"mean {kind}"] = float(values.mean())
            row[f"se {kind}"] = float(values.std() / math.sqrt(num_samples))
            row[f"std {kind}"] = float(values.std())
        rows.append(row)
    return pd.DataFrame(rows)


def expected_estimator_gradients(logits: Tensor, ref_logp: Tensor) -> dict[str, Tensor]:
    """E_{y~π}[∇_θ k(y)] for each estimator used *as a loss* (samples fixed, π_θ = softmax(θ)).

    This is what backpropagating through ``kl_estimate`` on on-policy samples gives on average. Also
    returns the true gradients of KL(π‖π_ref) and of the forward KL(π_ref‖π), by autograd on the
    exact sums. All ``[K]``.
    """
    logits = _checks.floating("logits", logits).double()
    out = {}
    for kind in ("k1", "k2", "k3", "abs"):
        for st in (False, True):
            theta = logits.clone().requires_grad_(True)
            logp = torch.log_softmax(theta, -1)
            loss = (logp.exp().detach() * kl_estimate(logp, ref_logp, kind, straight_through=st)).sum()
            out[kind + ("+" if st else "")] = torch.autograd.grad(loss, theta)[0]
    theta = logits.clone().requires_grad_(True)
    logp = torch.log_softmax(theta, -1)
    out["∇KL(π‖π_ref)"] = torch.autograd.grad((logp.exp() * (logp - ref_logp)).sum(), theta)[0]
    theta = logits.clone().requires_grad_(True)
    logp = torch.log_softmax(theta, -1)
    out["∇KL(π_ref‖π)"] = torch.autograd.grad((ref_logp.exp() * (ref_logp - logp)).sum(), theta)[0]
    return out


# ----- 2 · KL-regularised PG reaches the tilted optimum ---------------------------------------------
def kl_bandit() -> tuple[Bandit, Tensor]:
    """Six Bernoulli arms and a reference that prefers the mediocre ones: ``(bandit, ref_probs [6])``."""
    bandit = Bandit.bernoulli(torch.tensor([0.2, 0.5, 0.9, 0.4, 0.7, 0.1], dtype=torch.float64))
    ref = torch.softmax(torch.tensor([1.0, 1.5, -0.5, 1.0, 0.0, 0.5], dtype=torch.float64), -1)
    return bandit, ref


def kl_weight(x: Tensor, kl: str) -> Tensor:
    """k′(x) = dk/dx for the KL term used as a loss: the per-sample penalty its gradient applies.

    Backpropagating β·k(x), x = log π(y) − log π_ref(y), through log π gives β·k′(x)·∇log π(y), i.e.
    policy gradient with the reward −β·k′(x): k1 → 1 (a constant: no signal), k2 and every
    straight-through "+" → x, k3 → 1 − e^(−x). ``"k1-reward"`` (k1 subtracted from the reward) → x.
    """
    if kl in ("k1-reward", "k2-loss", "k3+-loss"):
        return x
    if kl == "k3-loss":
        return -torch.expm1(-x)
    return torch.ones_like(x)  # "k1-loss"


def kl_pg_run(bandit: Bandit, ref_probs: Tensor, beta: float, kl: str = "k1-reward", mode: str = "exact",
              steps: int = 2000, lr: float = 2.0, group_size: int = 8, num_seeds: int = 64,
              seed: int = 0) -> dict[str, Tensor]:
    """Policy gradient on a softmax bandit with a KL term to ``ref_probs``; returns the trajectory.

    ``kl``: ``"k1-reward"`` subtracts β·k1 (detached) from each sample's reward, as verl's
    ``use_kl_in_reward`` does; ``"k1-loss"`` / ``"k2-loss"`` / ``"k3-loss"`` / ``"k3+-loss"`` add
    β·estimator to the loss, as verl's ``use_kl_loss`` (and TRL's ``beta``) do. Either way the update is
    PG with per-sample advantage Â = A − β·k′(x) (:func:`kl_weight`). ``mode="exact"`` takes the
    expectation over arms (θ += lr·π ⊙ (Â − π·Â)); ``"sampled"`` draws ``group_size`` arms per seed and
    step, samples Bernoulli rewards and uses a leave-one-out baseline (RLOO). Returns ``probs
    [steps+1, S, K]``, ``kl_to_optimum [steps+1, S]`` (KL(π‖π*)) and ``target`` π* ``[K]``.
    """
    _checks.choice("kl", kl, {"k1-reward", "k1-loss", "k2-loss", "k3-loss", "k3+-loss"})
    _checks.choice("mode", mode, {"exact", "sampled"})
    beta = _checks.positive("beta", beta)
    target = al.tilted_optimum(ref_probs, bandit.mean, beta)
    ref_logp = ref_probs.log()
    seeds = 1 if mode == "exact" else int(num_seeds)
    g = int(group_size)
    theta = ref_logp.expand(seeds, -1).clone()
    gen = torch.Generator().manual_seed(int(seed))
    history = [torch.softmax(theta, -1)]
    for _ in range(int(steps)):
        logp = torch.log_softmax(theta, -1)
        pi = logp.exp()
        if mode == "exact":
            adv = bandit.mean - beta * kl_weight(logp - ref_logp, kl)
            adv = adv - (pi * adv).sum(-1, keepdim=True)
            theta = theta + lr * pi * adv
        else:
            arms = torch.multinomial(pi, g, replacement=True, generator=gen)  # [S, G]
            x = logp.gather(1, arms) - ref_logp[arms]
            reward = bandit.sample_rewards(arms, gen)
            if kl == "k1-reward":
                reward = reward - beta * x
            adv = reward - (reward.sum(-1, keepdim=True) - reward) / (g - 1)
            if kl != "k1-reward":
                adv = adv - beta * kl_weight(x, kl)
            counts = torch.zeros_like(pi).scatter_add_(1, arms, adv) / g  # Σ_i Â_i e_{a_i} / G
            theta = theta + lr * (counts - pi * counts.sum(-1, keepdim=True))
        history.append(torch.softmax(theta, -1))
    probs = torch.stack(history)
    return {"probs": probs, "kl_to_optimum": al.categorical_kl(probs, target.expand_as(probs)), "target": target}


# ----- 3 · divergences, mode coverage and pass@k ----------------------------------------------------
def strategies_bandit() -> tuple[Tensor, Tensor, Tensor]:
    """``(solves [K, M] bool, ref_probs [K], rewards [K])``: 8 strategies, 10 problems.

    Strategies 0, 1, 2 solve disjoint sets of 6, 3 and 1 problems; strategies 3–7 solve none. The
    reference tries the correct strategies 30% of the time. The training reward is the solve rate.
    """
    solves = torch.zeros(8, 10, dtype=torch.bool)
    solves[0, :6] = True
    solves[1, 6:9] = True
    solves[2, 9] = True
    ref = torch.tensor([0.15, 0.10, 0.05, 0.14, 0.14, 0.14, 0.14, 0.14], dtype=torch.float64)
    return solves, ref, solves.double().mean(1)


def coverage_pass_at_k(probs: Tensor, solves: Tensor, k: int) -> Tensor:
    """Mean over problems of 1 − (1 − P_π(a strategy that solves it))^k; ``probs [..., K] -> [...]``."""
    solve_prob = probs @ solves.double()  # [..., M]
    return (1 - (1 - solve_prob) ** int(k)).mean(-1)


def regularized_runs(beta: float = 0.1, steps: int = 1000, lr: float = 0.5,
                     divergences=("none", "reverse_kl", "forward_kl", "js"), tau: float = 0.1,
                     world=None) -> dict[str, Tensor]:
    """Exact natural PG on J(π) = E_π[r] − β·D_f(π‖π_0) for each divergence; returns the final π per name.

    ``reverse_kl`` is KL(π‖π_0), ``forward_kl`` is KL(π_0‖π) (DPH-RL's forward), ``js`` is JS(π, π_0);
    ``"rapo"`` is the forward KL to RAPO's reweighted reference π̃_0 ∝ π_0·exp(r/τ) (LOW). The step is
    the natural gradient of J on softmax logits, θ += lr·(r − β·f′(π/π_0)) (the f-DPG pseudo-reward
    plus the task reward); it has the same fixed points as vanilla PG but moves an arm of probability
    1e-6 as fast as any other (each logit moves at most 10·lr per step, which changes no fixed
    point). ``"dph"`` is the forward KL to π_0 restricted to the rewarded responses and renormalised
    (the rehearsal set of DPH-RL: stored π_0 samples that solved their prompt; our reading).
    ``world``: ``(ref_probs [K], rewards [K])``, default
    :func:`strategies_bandit`'s.
    """
    if world is None:
        _, ref, rewards = strategies_bandit()
    else:
        ref, rewards = world
    out = {}
    for name in divergences:
        theta = ref.log().clone()
        anchor = ref
        if name == "rapo":
            anchor = al.rapo_reference(ref, rewards, tau)
        elif name == "dph":
            anchor = torch.where(rewards > 0, ref, torch.zeros_like(ref))
            anchor = anchor / anchor.sum()
        f = "forward_kl" if name in ("rapo", "dph") else name
        for _ in range(int(steps)):
            step = rewards.clone()
            if f != "none":
                # f′(π/p) on the anchor's support; off it π/p = ∞, where forward KL's f′ = −1/t is 0
                pi, support = torch.softmax(theta, -1), anchor > 0
                safe_anchor = torch.where(support, anchor, torch.ones_like(anchor))
                t = torch.where(support, pi / safe_anchor, torch.ones_like(pi))
                step = step - beta * torch.where(support, fd.f_prime(f, t), torch.zeros_like(pi))
            # forward KL's pseudo-reward π_0/π is unbounded on a nearly-dropped arm: cap each logit move
            theta = theta + lr * (step - step.mean()).clamp(-10.0, 10.0)
        out[name] = torch.softmax(theta, -1)
    return out


def unimodal_fits(divergences=("reverse_kl", "js", "forward_kl"), steps: int = 600, lr: float = 0.05,
                  init_mean: float = 1.0, init_std: float = 0.5) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Fit a one-bump family to a two-bump target by minimising D_f(π_θ‖p) (f-DPG's objective).

    Grid x of 61 points in [−4, 4]; target p ∝ 0.6·N(−2, 0.5²) + 0.4·N(2, 0.5²); family
    π_θ ∝ exp(−(x − μ)²/(2σ²)), θ = (μ, log σ), started at (``init_mean``, log ``init_std``). Adam on the exact
    divergence. Returns ``(x [61], p [61], {name: π [61]})``.
    """
    x = torch.linspace(-4, 4, 61, dtype=torch.float64)
    bumps = 0.6 * torch.exp(-((x + 2) ** 2) / 0.5) + 0.4 * torch.exp(-((x - 2) ** 2) / 0.5)
    target = bumps / bumps.sum()
    fits = {}
    for f in divergences:
        params = torch.tensor([float(init_mean), math.log(init_std)], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam([params], lr=lr)
        for _ in range(int(steps)):
            opt.zero_grad()
            pi = torch.softmax(-((x - params[0]) ** 2) / (2 * params[1].exp() ** 2), -1)
            fd.f_divergence(pi, target, f).backward()
            opt.step()
        with torch.no_grad():
            fits[f] = torch.softmax(-((x - params[0]) ** 2) / (2 * params[1].exp() ** 2), -1)
    return x, target, fits


# ----- 4 · best-of-N vs the tilted optimum -----------------------------------------------------------
def continuous_best_of_n_kl(n: int, nodes: int = 200) -> float:
    """KL(π_N‖p) for a continuous reward by Gauss–Legendre quadrature of ∫₀¹ N u^(N−1) log(N u^(N−1)) du.

    u = F(r) is the reward's quantile, uniform under p; under best-of-N it has density N u^(N−1).
    Independent of :func:`forklab.alignment.best_of_n_kl_bound`'s closed form.
    """
    n = _checks.integer("n", n, 1)
    t, w = np.polynomial.legendre.leggauss(int(nodes))
    u = 0.5 * (t + 1)
    log_density = math.log(n) + (n - 1) * np.log(u)
    return float(0.5 * np.sum(w * np.exp(log_density) * log_density))  # exp underflows to 0, never 0·log 0


def best_of_n_table(ref_probs: Tensor, rewards: Tensor, ns=(1, 2, 4, 8, 16, 32, 64)) -> pd.DataFrame:
    """Per N: best-of-N's KL and bound, reward and win rate, and the tilt φ_λ at the same KL."""
    rows = []
    for n in ns:
        bon = al.best_of_n(ref_probs, rewards, n)
        kl = float(al.categorical_kl(bon, ref_probs))
        row = {"N": n, "KL(π_N‖p)": kl, "log N − (N−1)/N": al.best_of_n_kl_bound(n),
               "E r best-of-N": float(bon @ rewards), "win best-of-N": float(al.win_rate(bon, ref_probs, rewards)),
               "N/(N+1)": n / (n + 1)}
        if kl > 1e-12:
            tilt, _ = al.tilt_matching_kl(ref_probs, rewards, kl)
            row |= {"E r tilt": float(tilt @ rewards), "win tilt": float(al.win_rate(tilt, ref_probs, rewards)),
                    "KL(π_N‖φ)": float(al.categorical_kl(bon, tilt))}
        else:
            row |= {"E r tilt": float(ref_probs @ rewards),
                    "win tilt": float(al.win_rate(ref_probs, ref_probs, rewards)), "KL(π_N‖φ)": 0.0}
        rows.append(row)
    return pd.DataFrame(rows)


# ----- figures and the widget --------------------------------------------------------------------------
def estimator_figure(exact: pd.DataFrame, sampled: pd.DataFrame | None = None) -> matplotlib.figure.Figure:
    """Left: E[k] vs the true KL (bias); right: per-sample std (log scale). Sampled points as dots."""
    use_style()
    fig = matplotlib.figure.Figure(figsize=(10, 3.8))
    ax_mean, ax_std = fig.subplots(1, 2)
    ax_mean.plot(exact["drift"], exact["KL"], color="black", lw=2.5, label="KL(π‖π_ref), exact")
    moved = exact[exact["drift"] > 0]  # every std is 0 at d = 0, off a log axis
    for color, kind in zip(PALETTE, ESTIMATORS, strict=False):
        ax_mean.plot(exact["drift"], exact[f"mean {kind}"], color=color, lw=1.5, ls="--", label=f"E[{kind}]")
        ax_std.plot(moved["drift"], moved[f"std {kind}"], color=color, lw=1.8, label=f"std {kind}")
        if sampled is not None:
            ax_mean.errorbar(sampled["drift"], sampled[f"mean {kind}"], yerr=2 * sampled[f"se {kind}"], fmt="o",
                             color=color, ms=4)
            ax_std.plot(sampled["drift"], sampled[f"std {kind}"], "o", color=color, ms=4)
    ax_mean.set(xlabel="drift d", ylabel="value (nats)", title="Bias: E[k] vs the true KL")
    ax_std.set(xlabel="drift d", ylabel="per-sample std (nats)", yscale="log", title="Noise of one sample")
    ax_mean.legend(fontsize=10)
    ax_std.legend(fontsize=10)
    fig.tight_layout()
    return fig


def divergence_figure(x: Tensor, target: Tensor, fits: dict[str, Tensor],
                      passk: pd.DataFrame) -> matplotlib.figure.Figure:
    """Left: one-bump fits to a two-bump target; right: pass@k of the regularised strategies-bandit runs."""
    use_style()
    fig = matplotlib.figure.Figure(figsize=(10, 3.8))
    ax_fit, ax_k = fig.subplots(1, 2)
    ax_fit.fill_between(x.numpy(), target.numpy(), color="0.8", label="target p")
    for color, style, (name, pi) in zip(PALETTE, ("-", "--", "-", ":"), fits.items(), strict=False):
        ax_fit.plot(x.numpy(), pi.numpy(), color=color, lw=2.2, ls=style, label=f"min {name}")
    ax_fit.set(xlabel="x", ylabel="probability", title="One bump fitted to two")
    ax_fit.legend(fontsize=10)
    for color, name in zip(PALETTE, passk.columns, strict=False):
        ax_k.plot(passk.index, passk[name], "o-", color=color, lw=1.8, ms=4, label=name)
    ax_k.set(xscale="log", xlabel="k", ylabel="pass@k over the problems", title="What the regulariser keeps")
    ax_k.set_xticks(list(passk.index), [str(k) for k in passk.index])
    ax_k.minorticks_off()
    ax_k.legend(fontsize=10)
    fig.tight_layout()
    return fig


def best_of_n_figure(table: pd.DataFrame) -> matplotlib.figure.Figure:
    """Left: KL(π_N‖p) vs the bound; right: reward vs KL for best-of-N and the tilt."""
    use_style()
    fig = matplotlib.figure.Figure(figsize=(10, 3.8))
    ax_kl, ax_r = fig.subplots(1, 2)
    ax_kl.plot(table["N"], table["log N − (N−1)/N"], color="black", lw=2.5, label="log N − (N−1)/N")
    ax_kl.plot(table["N"], table["KL(π_N‖p)"], "o--", color=PALETTE[0], label="KL(π_N‖p), exact")
    ax_kl.set(xscale="log", xlabel="N", ylabel="nats", title="Best-of-N's KL")
    ax_kl.legend(fontsize=10)
    ax_r.plot(table["KL(π_N‖p)"], table["E r tilt"], "-", color=PALETTE[1], lw=2, label="tilt φ_λ ∝ p·e^(λr)")
    ax_r.plot(table["KL(π_N‖p)"], table["E r best-of-N"], "o", color=PALETTE[0], label="best-of-N")
    ax_r.set(xlabel="KL to p (nats)", ylabel="expected reward", title="Reward at equal KL")
    ax_r.legend(fontsize=10)
    fig.tight_layout()
    return fig


def explore(drift: float = 1.0, beta: float = 0.5, n: int = 8) -> matplotlib.figure.Figure:
    """Widget callback: estimator values at ``drift``; π_ref vs π* at ``beta``; best-of-``n`` vs the tilt."""
    drift = float(drift)
    beta = _checks.positive("beta", beta)
    n = _checks.integer("n", n, 1)
    use_style()
    fig = matplotlib.figure.Figure(figsize=(11, 3.6))
    axes = fig.subplots(1, 3)
    ref_logp, direction = drift_family()
    logp = _drifted(ref_logp, direction, drift)
    arms = np.arange(len(ref_logp))
    kl_true = float((logp.exp() * (logp - ref_logp)).sum())
    for i, kind in enumerate(ESTIMATORS):
        axes[0].bar(arms + (i - 1) * 0.27, kl_estimate(logp, ref_logp, kind).numpy(), width=0.27,
                    color=PALETTE[i], label=kind)
    axes[0].axhline(kl_true, color="black", lw=1.5, label=f"KL = {kl_true:.2f}")
    axes[0].set(xlabel="sampled arm y", ylabel="estimate", title=f"k per arm, drift {drift:.2f}", xticks=arms)
    axes[0].legend(fontsize=9)
    bandit, ref = kl_bandit()
    optimum = al.tilted_optimum(ref, bandit.mean, beta)
    k = len(ref)
    axes[1].bar(np.arange(k) - 0.2, ref.numpy(), width=0.4, color=PALETTE[7], label="π_ref")
    axes[1].bar(np.arange(k) + 0.2, optimum.numpy(), width=0.4, color=PALETTE[2], label=f"π*, β = {beta:.2f}")
    axes[1].set(xlabel="arm", ylabel="probability", title="π* = π_ref·exp(r/β)/Z", xticks=np.arange(k))
    axes[1].legend(fontsize=9)
    rewards = torch.linspace(0, 1, 40, dtype=torch.float64)
    p = torch.full((40,), 1 / 40, dtype=torch.float64)
    bon = al.best_of_n(p, rewards, n)
    kl = float(al.categorical_kl(bon, p))
    tilt = al.tilt_matching_kl(p, rewards, kl)[0] if kl > 1e-12 else p
    axes[2].plot(rewards.numpy(), bon.numpy(), color=PALETTE[0], lw=2, label=f"best-of-{n}")
    axes[2].plot(rewards.numpy(), tilt.numpy(), color=PALETTE[1], lw=2, ls="--", label="tilt, same KL")
    axes[2].set(xlabel="reward", ylabel="probability", title=f"KL = {kl:.2f} nats")
    axes[2].legend(fontsize=9)
    fig.tight_layout()
    return fig
