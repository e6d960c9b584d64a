"""Experiments and widget callbacks of ``notebooks/01_policy_gradients_and_advantages.ipynb``.

Everything here is a plain function returning data (a DataFrame or tensors) or a figure; the
notebook prints/plots them and asserts the claims, pytest drives the widget callback.
"""

from __future__ import annotations

import math

import matplotlib.figure
import numpy as np
import pandas as pd
import torch

from forklab import advantages as adv
from forklab.envs import bandit as bd
from forklab.plots import PALETTE, band, use_style

__all__ = [
    "binary_group_table",
    "binary_advantage_summary",
    "sign_flip_rates",
    "gradient_estimator_table",
    "estimator_runs",
    "advantage_explorer",
    "advantage_figure",
]


def binary_group_table(group_size: int, estimator: str = "grpo") -> pd.DataFrame:
    """Every outcome of a 0/1-reward group of size G: k correct, and the advantages each side gets.

    Columns: ``k``, ``adv_correct``, ``adv_wrong`` (NaN when that side is absent), ``mean_abs``
    (mean |A| over the G responses). Computed by running ``estimator`` on the actual group.
    """
    fn = adv.get_estimator(estimator)
    g = int(group_size)
    rows = []
    for k in range(g + 1):
        rewards = torch.tensor([1.0] * k + [0.0] * (g - k), dtype=torch.float64)
        a = fn(rewards, torch.zeros(g, dtype=torch.long)).double()
        rows.append(dict(k=k, adv_correct=a[0].item() if k else math.nan,
                         adv_wrong=a[-1].item() if k < g else math.nan, mean_abs=a.abs().mean().item()))
    return pd.DataFrame(rows)


def binary_advantage_summary(group_size: int, pass_rates, estimator: str = "grpo") -> pd.DataFrame:
    """Exact expectations over k ~ Binomial(G, p): mean |A| and the degenerate-group probability.

    ``degenerate`` is P(k = 0 or k = G), the share of groups in which every response gets A = 0,
    enumerated (not from the closed form, which the notebook checks against).
    """
    table = binary_group_table(group_size, estimator)
    g = int(group_size)
    rows = []
    for p in np.asarray(pass_rates, dtype=float):
        weights = np.array([math.comb(g, k) * p**k * (1 - p) ** (g - k) for k in range(g + 1)])
        rows.append(dict(pass_rate=p, group_size=g, mean_abs_adv=float(weights @ table["mean_abs"].to_numpy()),
                         degenerate=float(weights[0] + weights[-1])))
    return pd.DataFrame(rows)


def sign_flip_rates(bandit: bd.Bandit, group_sizes, estimators=("mean", "median"), num_groups: int = 20_000,
                    seed: int = 0) -> pd.DataFrame:
    """How often a sampled baseline gives a response the wrong advantage sign (MC-GRPO's diagnosis).

    Under the uniform policy, draw ``num_groups`` groups of G arms and their noisy rewards. The
    right sign of response i is sign(r_i − J), J = the true expected reward; a flip is
    sign(A_i) = −sign(r_i − J), counted among responses with r_i ≠ J and A_i ≠ 0 (a zero
    advantage, like MC-GRPO's pivot or a degenerate group, pushes nowhere: no flip, not counted).
    Returns one row per (estimator, G), with ``zero_share`` the share of responses with A_i = 0.
    """
    pi = torch.full((bandit.num_arms,), 1.0 / bandit.num_arms, dtype=torch.float64)
    true_baseline = float(pi @ bandit.mean)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for g in group_sizes:
        arms = torch.multinomial(pi.expand(num_groups, -1), int(g), replacement=True, generator=gen)
        rewards = bandit.sample_rewards(arms, gen).reshape(-1)
        ids = torch.arange(num_groups).repeat_interleave(int(g))
        truth = torch.sign(rewards - true_baseline)
        for name in estimators:
            a = adv.get_estimator(name)(rewards, ids)
            informative = (truth != 0) & (a != 0)
            flips = (torch.sign(a) == -truth) & informative
            rows.append(dict(estimator=name, group_size=int(g),
                             flip_rate=flips.sum().item() / informative.sum().item(),
                             zero_share=(a == 0).double().mean().item()))
    return pd.DataFrame(rows)


def gradient_estimator_table(bandit: bd.Bandit, logits, group_size: int, estimators, num_samples: int = 20_000,
                             seed: int = 0) -> pd.DataFrame:
    """Bias and noise of each estimator's policy-gradient estimate at one policy.

    ``exact_scale``: the exact expected update projected on the true gradient ∇J (autograd), divided
    by |∇J|² (1 = unbiased, (G−1)/G for the mean baseline that includes the response itself);
    ``cosine``: cosine between the expected update and ∇J; ``noise``: mean squared distance of a
    single group's update from the expected update, divided by |∇J|² (Monte Carlo over
    ``num_samples`` groups; every estimator is compared on the same scale).
    """
    logits = torch.as_tensor(logits, dtype=torch.float64)
    theta = logits.clone().requires_grad_(True)
    (true,) = torch.autograd.grad((torch.softmax(theta, -1) * bandit.mean).sum(), theta)
    pi = torch.softmax(logits, -1)
    rows = []
    for name in estimators:
        expected = bd.policy_gradient(pi, bd.expected_advantages(bandit, pi[None], name, group_size)[0])
        single = bd.train(bandit, steps=1, lr=1.0, group_size=group_size, num_seeds=num_samples,
                          estimator=name, init_logits=logits, seed=seed).logits - logits
        rows.append(dict(
            estimator=name,
            exact_scale=float(expected @ true / (true @ true)),
            cosine=float(expected @ true / (expected.norm() * true.norm())),
            noise=float(((single - expected) ** 2).sum(1).mean() / (true @ true)),
        ))
    return pd.DataFrame(rows)


def estimator_runs(bandit: bd.Bandit, estimators, *, steps: int = 60, lr: float = 1.0, group_size: int = 4,
                   num_seeds: int = 200, seed: int = 0) -> dict[str, bd.BanditRun]:
    """One sampled GRPO-style training run per estimator, same seeds (common random numbers)."""
    return {name: bd.train(bandit, steps=steps, lr=lr, group_size=group_size, num_seeds=num_seeds,
                           estimator=name, seed=seed) for name in estimators}


def advantage_explorer(group_size: int = 8, pass_rate: float = 0.3, estimator: str = "grpo"):
    """Widget callback: what a 0/1-reward group of size G at pass rate p gives each response.

    Left: the advantage of a correct (▲) and a wrong (▼) response for every number k of correct
    responses, bars showing P(k). Right: mean |A| vs pass rate with the chosen p marked.
    Returns a ``matplotlib.figure.Figure`` (not registered with pyplot, so it is drawn once).
    """
    use_style()
    table = binary_group_table(group_size, estimator)
    g = int(group_size)
    pk = np.array([math.comb(g, k) * pass_rate**k * (1 - pass_rate) ** (g - k) for k in range(g + 1)])
    fig = matplotlib.figure.Figure(figsize=(9.5, 3.4), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    twin = ax.twinx()
    twin.bar(table["k"], pk, color="0.85", zorder=0, label="P(k correct)")
    twin.set_ylabel("P(k correct)")
    twin.grid(False)
    ax.set_zorder(twin.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.plot(table["k"], table["adv_correct"], "^-", color=PALETTE[2], label="correct response")
    ax.plot(table["k"], table["adv_wrong"], "v-", color=PALETTE[3], label="wrong response")
    ax.axhline(0, color="0.3", lw=0.8)
    degenerate = pk[0] + pk[-1]
    ax.set(xlabel="k correct responses in the group", ylabel="advantage",
           title=f"{estimator}, G={g}, p={pass_rate:.2f}: {degenerate:.0%} of groups give no signal")
    ax.legend(loc="upper right")
    grid = np.linspace(0.0, 1.0, 101)
    summary = binary_advantage_summary(g, grid, estimator)
    ax2.plot(grid, summary["mean_abs_adv"], color=PALETTE[0])
    here = binary_advantage_summary(g, [pass_rate], estimator)["mean_abs_adv"].item()
    ax2.plot([pass_rate], [here], "o", color=PALETTE[1])
    ax2.set(xlabel="pass rate p", ylabel="E[mean |A|]", title="signal per group vs difficulty")
    return fig


def advantage_figure(group_sizes, runs: dict[str, bd.BanditRun], estimator: str = "grpo"):
    """The notebook's paper-style figure: |A| and degenerate rate vs pass rate, and learning curves."""
    import matplotlib.pyplot as plt

    use_style()
    grid = np.linspace(0.0, 1.0, 101)
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.8), layout="constrained")
    for color, g in zip(PALETTE, group_sizes, strict=False):
        summary = binary_advantage_summary(g, grid, estimator)
        axes[0].plot(grid, summary["mean_abs_adv"], color=color, label=f"G = {g}")
        axes[1].plot(grid, summary["degenerate"], color=color, label=f"G = {g}")
    axes[0].axvline(0.5, color="0.5", ls=":", lw=1)
    axes[0].set(xlabel="pass rate p of the prompt", ylabel="expected mean |advantage|",
                title="(a) GRPO's signal peaks at p = 0.5")
    axes[1].set(xlabel="pass rate p of the prompt", ylabel="P(all rewards equal)",
                title="(b) degenerate groups: $p^G + (1-p)^G$")
    axes[0].legend()
    axes[1].legend()
    for color, (name, run) in zip(PALETTE, runs.items(), strict=False):
        steps = np.arange(run.history["reward"].shape[0])
        band(axes[2], steps, run.history["reward"].numpy(), label=name, color=color)
    g = next(iter(runs.values())).config["group_size"]
    axes[2].set(xlabel="training step", ylabel="expected reward of the policy",
                title=f"(c) bandit training, sampled groups of G = {g}")
    axes[2].legend(title="estimator")
    return fig
