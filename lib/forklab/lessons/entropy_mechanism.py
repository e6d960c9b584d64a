"""Experiments and widget callback of ``notebooks/04_entropy_mechanism.ipynb``.

Plain functions returning DataFrames, tensors or figures; the notebook prints, plots and asserts,
pytest drives them (``tests/test_lessons_04.py``). The formulas live in
:mod:`forklab.diagnostics.dynamics` (ΔH predictions, S*, STEER's Ω, the entropy law) and
:mod:`forklab.regularizers` (Clip-Cov, KL-Cov); everything here measures them:

====================================  ================================================================
function                              what it measures
====================================  ================================================================
``step_size_sweep``                   exact vs predicted ΔH of one PG / natural-PG step, over η
``error_slope``                       the log-log slope of |error| against η (2 for an O(η²) error)
``grpo_covariance_run``               expected GRPO on a bandit: Cov(log π, Ā), ΔH, entropy per step
``discriminator_comparison``          S*, STEER's Ω-form and −Cov against the exact ΔH of token steps
``bandit_cov_runs``                   sampled GRPO vs Clip-Cov vs KL-Cov on a bandit, many seeds
``lm_runs``                           the same on the tiny LM (float64), with an entropy split by sample sign
``entropy_law_points``                (H, R) windows of LM runs, for ``dynamics.fit_entropy_law``
``entropy_step_explorer``             widget: step size and advantage shape → predicted vs measured ΔH
====================================  ================================================================
"""

from __future__ import annotations

import matplotlib.figure
import numpy as np
import pandas as pd
import torch
from torch import Tensor

from forklab import _checks
from forklab.diagnostics import dynamics as dyn
from forklab.envs.bandit import Bandit, expected_advantages, policy_gradient
from forklab.plots import PALETTE, use_style
from forklab.progress import progress

__all__ = [
    "default_bandit",
    "step_size_sweep",
    "error_slope",
    "grpo_covariance_run",
    "discriminator_comparison",
    "bandit_cov_runs",
    "lm_runs",
    "entropy_law_points",
    "ADVANTAGE_SHAPES",
    "shaped_advantage",
    "entropy_step_explorer",
    "dynamics_figure",
    "interventions_figure",
]


def default_bandit(num_arms: int = 10, seed: int = 0) -> Bandit:
    """Bernoulli arms with success rates spread over [0.05, 0.9] (one clearly best arm)."""
    gen = torch.Generator().manual_seed(seed)
    p = torch.linspace(0.05, 0.9, num_arms, dtype=torch.float64)[torch.randperm(num_arms, generator=gen)]
    return Bandit.bernoulli(p)


def _random_logits(num: int, num_arms: int, scale: float, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(num, num_arms, generator=gen, dtype=torch.float64)


def step_size_sweep(lrs=None, num_policies: int = 32, num_arms: int = 10, group_size: int = 8,
                    init_scale: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """Exact ΔH of one PG and one natural-PG step against the first-order prediction, for each η.

    ``num_policies`` random softmax policies on :func:`default_bandit`, each with GRPO's exact
    expected advantages Ā (E_π Ā = 0). Rows: update, lr, policy, exact, predicted, abs_error.
    """
    lrs = np.logspace(-3, 0, 13) if lrs is None else np.asarray(lrs, dtype=float)
    bandit = default_bandit(num_arms, seed)
    logits = _random_logits(num_policies, num_arms, init_scale, seed)
    adv = expected_advantages(bandit, torch.softmax(logits, -1), "grpo", group_size)
    rows = []
    for lr in lrs:
        for update, step, predict in (("PG", dyn.pg_logit_step, dyn.pg_entropy_change),
                                      ("natural PG", dyn.npg_logit_step, dyn.npg_entropy_change)):
            exact = dyn.exact_entropy_change(logits, step(logits, adv, float(lr)))
            pred = predict(logits, adv, float(lr))
            rows += [dict(update=update, lr=float(lr), policy=i, exact=float(e), predicted=float(p),
                          abs_error=float(abs(e - p))) for i, (e, p) in enumerate(zip(exact, pred, strict=True))]
    return pd.DataFrame(rows)


def error_slope(sweep: pd.DataFrame, max_lr: float = 0.1) -> pd.DataFrame:
    """Least-squares slope of log|error| on log η (η ≤ ``max_lr``), per update, pooled over policies.

    Each policy gets its own intercept (its error constant), so the slope is estimated from the
    within-policy change only. Returns update, slope, slope_se, n.
    """
    rows = []
    for update, d in sweep[sweep["lr"] <= max_lr].groupby("update", sort=False):
        x, y = np.log(d["lr"].to_numpy()), np.log(d["abs_error"].to_numpy())
        pol = d["policy"].to_numpy()
        xc = x - pd.Series(x).groupby(pol).transform("mean").to_numpy()
        yc = y - pd.Series(y).groupby(pol).transform("mean").to_numpy()
        slope = float(xc @ yc / (xc @ xc))
        dof = len(x) - len(np.unique(pol)) - 1
        s2 = float(((yc - slope * xc) ** 2).sum() / dof)
        rows.append(dict(update=update, slope=slope, slope_se=float(np.sqrt(s2 / (xc @ xc))), n=len(x)))
    return pd.DataFrame(rows)


def grpo_covariance_run(bandit: Bandit | None = None, steps: int = 60, lr: float = 0.5, update: str = "npg",
                        num_seeds: int = 32, group_size: int = 8, init_scale: float = 0.0,
                        seed: int = 0) -> pd.DataFrame:
    """Expected (exact) GRPO steps on a bandit, recording the entropy mechanism at every step.

    Rows per (step, seed): entropy H, covariance = Cov_π(log π, Δz/η) (the natural-PG form Cov(log π, Ā)
    or the PG form Cov(log π, π(Ā − E_πĀ))), predicted = −η·cov, exact ΔH, reward,
    ``ordered`` (the logits are sorted like Ā: the condition of Chebyshev's sum inequality) and
    ``likeliest_is_best`` (the most likely arm has the largest Ā).
    ``init_scale = 0`` starts every seed at the uniform policy.
    """
    _checks.choice("update", update, {"pg", "npg"})
    bandit = default_bandit() if bandit is None else bandit
    z = _random_logits(num_seeds, bandit.num_arms, init_scale, seed)
    rows = []
    for t in range(int(steps)):
        p = torch.softmax(z, -1)
        adv = expected_advantages(bandit, p, "grpo", group_size)
        dz = lr * (adv if update == "npg" else policy_gradient(p, adv))
        exact = dyn.exact_entropy_change(z, dz)
        pred = dyn.first_order_entropy_change(z, dz)
        # sorted alike: no pair of arms whose logits and advantages are ordered oppositely
        opposed = ((z[:, :, None] - z[:, None, :]) * (adv[:, :, None] - adv[:, None, :]) < -1e-12).any(-1).any(-1)
        h = -(p * torch.log_softmax(z, -1)).sum(-1)
        best = p.argmax(-1) == adv.argmax(-1)
        for s in range(num_seeds):
            rows.append(dict(step=t, seed=s, entropy=float(h[s]), covariance=float(-pred[s] / lr),
                             predicted=float(pred[s]), exact=float(exact[s]), reward=float(p[s] @ bandit.mean),
                             ordered=not bool(opposed[s]), likeliest_is_best=bool(best[s])))
        z = z + dz
    return pd.DataFrame(rows)


def discriminator_comparison(num: int = 400, vocab: int = 16, coef: float = 0.05, logit_scale: float = 2.0,
                             seed: int = 0) -> pd.DataFrame:
    """Every ΔH estimate of one sampled-token step Δz = c(e_k − p), next to the exact value.

    ``num`` random distributions over ``vocab`` tokens; k ~ p; c = ±``coef`` (a positive or negative
    advantage times η). Columns: the keys of
    :func:`~forklab.diagnostics.dynamics.compare_entropy_estimates` plus p_k and c.
    """
    gen = torch.Generator().manual_seed(seed)
    z = logit_scale * torch.randn(num, vocab, generator=gen, dtype=torch.float64)
    k = torch.multinomial(torch.softmax(z, -1), 1, generator=gen)[:, 0]
    c = coef * (2 * torch.randint(0, 2, (num,), generator=gen) - 1).double()
    est = dyn.compare_entropy_estimates(z, k, c)
    df = pd.DataFrame({key: v.numpy() for key, v in est.items()})
    df["p_k"] = torch.softmax(z, -1).gather(-1, k[:, None])[:, 0].numpy()
    df["c"] = c.numpy()
    return df


# ------------------------------------------------------------------------------- interventions
def _bandit_loss(method: str, logp: Tensor, old_logp: Tensor, adv: Tensor, gen: torch.Generator, **kw) -> Tensor:
    from forklab import regularizers as reg
    from forklab import surrogates as sur

    mask = torch.ones_like(logp, dtype=torch.bool)
    if method == "grpo":
        per_token = sur.ppo_clip(logp, old_logp, adv, mask, eps_low=1.0, eps_high=1.0)
    elif method == "clip_cov":
        per_token = reg.clip_cov(logp, old_logp, adv, mask, eps_low=1.0, eps_high=1.0, generator=gen, **kw)
    else:
        per_token = reg.kl_cov(logp, old_logp, adv, mask, **kw)
    return per_token.mean()


def bandit_cov_runs(methods=None, bandit: Bandit | None = None, steps: int = 60, lr: float = 2.0,
                    num_seeds: int = 8, num_groups: int = 8, group_size: int = 8, inner_steps: int = 2,
                    init_scale: float = 1.0, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Sampled GRPO on a bandit, one sampled batch per step and ``inner_steps`` gradient steps on it.

    ``methods``: name → keyword arguments of :func:`forklab.regularizers.clip_cov` /
    :func:`~forklab.regularizers.kl_cov` (``"grpo"`` is the plain surrogate with the clip off, as
    in the Clip-Cov scripts). Each arm pull is one "token", so Cov_t = (log π(a) − mean)(A − mean)
    over the batch of ``num_groups × group_size`` pulls of one seed. Same seeds, same initial
    logits for every method. Returns method → {"entropy", "accuracy"} arrays ``[steps + 1, seeds]``.
    """
    methods = methods or {"grpo": {}, "clip_cov": {}, "kl_cov": {}}
    bandit = default_bandit() if bandit is None else bandit
    from forklab.advantages import grpo

    init = _random_logits(num_seeds, bandit.num_arms, init_scale, seed)
    group = torch.arange(num_groups).repeat_interleave(group_size)
    out = {}
    for method, kw in methods.items():
        name = method.split(":")[0]
        _checks.choice("methods", name, {"grpo", "clip_cov", "kl_cov"})
        gen = torch.Generator().manual_seed(seed)
        hist_h, hist_acc = [], []
        z = init.clone()
        for _ in range(int(steps) + 1):
            p = torch.softmax(z, -1)
            hist_h.append((-(p * torch.log_softmax(z, -1)).sum(-1)).numpy())
            hist_acc.append((p @ bandit.success).numpy())
            if len(hist_h) > steps:
                break
            for s in range(num_seeds):
                arms = torch.multinomial(p[s], num_groups * group_size, replacement=True, generator=gen)
                adv = grpo(bandit.sample_rewards(arms, gen), group)
                old = torch.log_softmax(z[s], -1)[arms].detach()[:, None]
                theta = z[s].clone().requires_grad_(True)
                for _ in range(int(inner_steps)):
                    logp = torch.log_softmax(theta, -1)[arms][:, None]
                    loss = _bandit_loss(name, logp, old, adv, gen, **kw)
                    (grad,) = torch.autograd.grad(loss, theta)
                    theta = (theta - lr * grad).detach().requires_grad_(True)
                z[s] = theta.detach()
        out[method] = {"entropy": np.stack(hist_h), "accuracy": np.stack(hist_acc)}
    return out


# ------------------------------------------------------------------------------------ tiny LM
def _entropy_split(trainer, rollout: dict) -> dict[str, float]:
    """Per-token entropy change of one update at the rollout's own positions, split by sample."""
    from forklab.lm.trainer import policy_forward
    from forklab.ops import entropy_from_logits

    with torch.no_grad():
        logits, _, _ = policy_forward(trainer.model, rollout["prompt_ids"], rollout["prompt_mask"],
                                      rollout["tokens"], rollout["mask"], trainer.config.temperature)
        delta = entropy_from_logits(logits).double() - rollout["entropy"].double()
    mask = rollout["mask"]
    rewards = rollout["rewards"].reshape(-1, trainer.config.group_size)
    mixed = (rewards.amax(1) > rewards.amin(1)).repeat_interleave(trainer.config.group_size)
    correct = rollout["correct"]
    out = {"dH/all_sum": float(delta[mask].sum()), "tokens/all": int(mask.sum())}
    for name, rows in (("pos", mixed & correct), ("neg", mixed & ~correct), ("flat", ~mixed)):
        m = mask & rows[:, None]
        out[f"dH/{name}_sum"], out[f"tokens/{name}"] = float(delta[m].sum()), int(m.sum())
    last = mask & ~torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], 1)  # the final token (";")
    out["dH/last_sum"], out["tokens/last"] = float(delta[last].sum()), int(last.sum())
    return out


def lm_runs(specs, steps: int = 30, prompts_per_step: int = 16, group_size: int = 8, minibatches: int = 2,
            entropy_split: bool = False, model_name: str = "student-addition") -> pd.DataFrame:
    """GRPO-family runs of the tiny LM in float64, one row per (run, step).

    ``specs``: dicts with ``method`` (a recipe preset), ``lr``, ``seed`` and optional
    ``surrogate_kwargs`` (merged into the preset's). ``minibatches`` AdamW steps per rollout: the
    later ones see ratios ≠ 1, where KL-Cov's |log ratio| penalty acts (on-policy it has no
    gradient). ``entropy_split`` re-scores each rollout after its update and logs the entropy change
    of its tokens split by positive / negative / all-equal-reward samples and for the final token.
    Columns: run, method, lr, seed, step, entropy, accuracy, covariance, clip/KL shares, dH/*.
    """
    import forklab
    from forklab import recipes
    from forklab.lm.models import load_tiny
    from forklab.lm.trainer import RLConfig, RLTrainer

    rows = []
    for spec in progress(specs, desc="tiny-LM runs"):
        forklab.seed_everything(spec["seed"])
        model, tokenizer = load_tiny(model_name, dtype="float64")
        recipe = recipes.get(spec["method"])
        if spec.get("surrogate_kwargs"):
            recipe = recipe.replace(surrogate_kwargs={**recipe.surrogate_kwargs, **spec["surrogate_kwargs"]})
        config = RLConfig(prompts_per_step=prompts_per_step, group_size=group_size, lr=spec["lr"],
                          minibatches=minibatches, eval_every=0, seed=spec["seed"], dtype="float64")
        stash: dict = {}
        trainer = RLTrainer(model, tokenizer, recipe, config, hooks=[lambda tr, r, stash=stash: stash.update(r) or {}])
        run = spec.get("label") or f"{spec['method']} lr={spec['lr']:g} seed={spec['seed']}"
        for step in range(int(steps)):
            m = trainer.step()
            row = dict(run=run, method=spec["method"], lr=spec["lr"], seed=spec["seed"], step=step,
                       entropy=m["entropy"], accuracy=m["accuracy"], covariance=m["covariance"],
                       clip_cov_frac=m.get("clip_cov/frac", 0.0), kl_cov_frac=m.get("kl_cov/frac", 0.0))
            if entropy_split:
                row |= _entropy_split(trainer, stash)
            rows.append(row)
    return pd.DataFrame(rows)


def entropy_law_points(runs: pd.DataFrame, window: int = 5) -> pd.DataFrame:
    """Mean entropy H and accuracy R over consecutive windows of ``window`` steps of each run.

    R is the on-policy sampled accuracy of the step's fresh training prompts (each step draws new
    problems, so it is an unbiased estimate of the policy's sampled accuracy at that step).
    """
    runs = runs.assign(window=runs["step"] // int(window))
    points = runs.groupby(["run", "lr", "seed", "window"], sort=False)[["entropy", "accuracy"]].mean()
    return points.reset_index()


# ------------------------------------------------------------------------------------- widget
ADVANTAGE_SHAPES = ("GRPO (expected)", "likely arms good", "rare arm rewarded", "random")


def shaped_advantage(shape: str, logits: Tensor, seed: int = 0) -> Tensor:
    """Per-arm advantages of a named shape, centred so that E_π A = 0 (``logits [V]`` → ``[V]``).

    ``"GRPO (expected)"``: Ā of :func:`default_bandit`; ``"likely arms good"``: A ∝ log π (the
    covariance is as positive as it gets); ``"rare arm rewarded"``: +1 on the least likely arm only;
    ``"random"``: Gaussian.
    """
    _checks.choice("advantage", shape, ADVANTAGE_SHAPES)
    z = _checks.floating("logits", logits).double()
    p = torch.softmax(z, -1)
    if shape == "GRPO (expected)":
        adv = expected_advantages(default_bandit(z.numel(), seed), p[None], "grpo", 8)[0]
    elif shape == "likely arms good":
        adv = torch.log_softmax(z, -1)
    elif shape == "rare arm rewarded":
        adv = torch.nn.functional.one_hot(p.argmin(), z.numel()).double()
    else:
        adv = torch.randn(z.numel(), generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    adv = adv - (p * adv).sum()
    return adv / adv.abs().max().clamp_min(1e-12)


def entropy_step_explorer(lr: float = 0.5, advantage: str = "GRPO (expected)", update: str = "natural PG",
                          num_arms: int = 8, seed: int = 0) -> matplotlib.figure.Figure:
    """Widget callback: one step of size ``lr`` on a random policy; exact vs predicted ΔH over η.

    Left: the policy and the advantage of each arm. Right: the exact entropy change of a step of
    size η ∈ [0, 2·lr] (curve) and its first-order prediction −η·Cov (line), the chosen η marked.
    """
    _checks.choice("update", update, {"PG", "natural PG"})
    lr = _checks.positive("lr", lr)
    z = _random_logits(1, int(num_arms), 1.0, seed)[0]
    adv = shaped_advantage(advantage, z, seed)
    step = dyn.pg_logit_step if update == "PG" else dyn.npg_logit_step
    etas = torch.linspace(0, 2 * lr, 41, dtype=torch.float64)
    exact = torch.stack([dyn.exact_entropy_change(z, step(z, adv, float(e))) for e in etas])
    slope = dyn.first_order_entropy_change(z, step(z, adv, 1.0))
    at_exact = float(dyn.exact_entropy_change(z, step(z, adv, lr)))
    use_style()
    fig = matplotlib.figure.Figure(figsize=(10, 3.8), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    order = torch.argsort(z, descending=True)
    x = np.arange(int(num_arms))
    ax1.bar(x - 0.2, torch.softmax(z, -1)[order].numpy(), 0.4, color=PALETTE[0], label="π(a)")
    ax1.bar(x + 0.2, adv[order].numpy(), 0.4, color=PALETTE[1], label="advantage A(a)")
    ax1.axhline(0, color="0.4", lw=0.8)
    ax1.set(xlabel="arm (most likely first)", title=f"policy and advantage: {advantage}")
    ax1.legend(fontsize=9)
    ax2.plot(etas.numpy(), exact.numpy(), color=PALETTE[0], lw=2, label="measured ΔH (exact)")
    ax2.plot(etas.numpy(), (etas * slope).numpy(), color=PALETTE[3], lw=1.5, ls="--", label="predicted −η·Cov")
    ax2.axvline(lr, color="0.5", lw=0.8)
    ax2.set(xlabel="step size η", ylabel="entropy change ΔH (nats)",
            title=f"{update}, η = {lr:.2f}: measured {at_exact:+.3f}, predicted {lr * float(slope):+.3f}")
    ax2.legend(fontsize=9)
    return fig


# ------------------------------------------------------------------------------------ figures
def dynamics_figure(sweep: pd.DataFrame, slopes: pd.DataFrame, cov_run: pd.DataFrame,
                    disc: pd.DataFrame) -> matplotlib.figure.Figure:
    """(a) predicted vs measured ΔH; (b) |error| vs η; (c) GRPO covariance and entropy; (d) S*, Ω vs exact."""
    use_style()
    fig = matplotlib.figure.Figure(figsize=(11, 8.5), layout="constrained")
    (ax_a, ax_b), (ax_c, ax_d) = fig.subplots(2, 2)
    for i, (update, d) in enumerate(sweep[sweep["lr"] <= 0.3].groupby("update", sort=False)):
        ax_a.scatter(d["predicted"], d["exact"], s=10, alpha=0.6, color=PALETTE[i], label=update)
    lim = np.abs(sweep[sweep["lr"] <= 0.3][["predicted", "exact"]].to_numpy()).max() * 1.05
    ax_a.plot([-lim, lim], [-lim, lim], color="0.4", lw=0.8)
    ax_a.set(xlabel="predicted ΔH = −η·Cov", ylabel="measured ΔH (exact)",
             title="(a) one step, 32 policies, η ≤ 0.3")
    ax_a.legend(fontsize=10)
    for i, (update, d) in enumerate(sweep.groupby("update", sort=False)):
        med = d.groupby("lr")["abs_error"].median()
        s = slopes.set_index("update").loc[update, "slope"]
        ax_b.loglog(med.index, med.to_numpy(), marker="o", color=PALETTE[i], label=f"{update}: slope {s:.2f}")
    ax_b.set(xlabel="step size η", ylabel="|measured − predicted| (median)", title="(b) the error is O(η²)")
    ax_b.legend(fontsize=10)
    g = cov_run.groupby("step")
    ax_c.plot(g["covariance"].mean().index, g["covariance"].mean(), color=PALETTE[1], lw=2, label="Cov(log π, Ā)")
    ax_c.fill_between(g["covariance"].mean().index, g["covariance"].min(), g["covariance"].max(),
                      color=PALETTE[1], alpha=0.2, lw=0)
    ax_c.plot(g["entropy"].mean().index, g["entropy"].mean(), color=PALETTE[0], lw=2, label="entropy H")
    ax_c.axhline(0, color="0.4", lw=0.8)
    ax_c.set(xlabel="expected GRPO step (natural PG)", ylabel="nats", title="(c) the covariance stays ≥ 0, H falls")
    ax_c.legend(fontsize=10)
    for i, (key, label) in enumerate((("first_order", "−Cov (first order)"), ("steer", "STEER's Ω form"),
                                      ("s_star", "−c·S* (single logit)"))):
        ax_d.scatter(disc["exact"], disc[key], s=8, alpha=0.6, color=PALETTE[i], label=label)
    lim = np.abs(disc[["exact", "steer", "s_star"]].to_numpy()).max() * 1.05
    ax_d.plot([-lim, lim], [-lim, lim], color="0.4", lw=0.8)
    ax_d.set(xlabel="measured ΔH of a sampled-token step", ylabel="estimate", title="(d) S* and Ω vs the exact change")
    ax_d.legend(fontsize=10)
    return fig


def _band(ax, x, runs: np.ndarray, label: str, color) -> None:
    ax.plot(x, runs.mean(1), color=color, lw=2, label=label)
    ax.fill_between(x, runs.min(1), runs.max(1), color=color, alpha=0.18, lw=0)


def interventions_figure(bandit_runs: dict, lm: pd.DataFrame, points: pd.DataFrame, fit) -> matplotlib.figure.Figure:
    """(a) bandit entropy per method; (b) tiny-LM entropy per method (mean, min–max over seeds);
    (c) accuracy against entropy of the tiny-LM runs with the fitted law R = −a·e^H + b."""
    use_style()
    fig = matplotlib.figure.Figure(figsize=(13, 4.2), layout="constrained")
    ax_a, ax_b, ax_c = fig.subplots(1, 3)
    for i, (method, h) in enumerate(bandit_runs.items()):
        _band(ax_a, np.arange(len(h["entropy"])), h["entropy"], method, PALETTE[i])
    ax_a.set(xlabel="step", ylabel="policy entropy (nats)", title="(a) bandit: mean, min–max of 8 seeds")
    ax_a.legend(fontsize=10)
    for i, (method, d) in enumerate(lm.groupby("method", sort=False)):
        wide = d.pivot_table(index="step", columns="seed", values="entropy")
        smooth = wide.rolling(5, min_periods=1).mean().to_numpy()
        _band(ax_b, wide.index.to_numpy(), smooth, method, PALETTE[i])
    ax_b.set(xlabel="step", ylabel="token entropy (5-step mean)", title="(b) tiny LM: mean, min–max of 3 seeds")
    ax_b.legend(fontsize=10)
    for i, (lr, d) in enumerate(points.groupby("lr")):
        ax_c.scatter(d["entropy"], d["accuracy"], s=22, color=PALETTE[i], label=f"GRPO lr {lr:g}")
    h = torch.linspace(float(points["entropy"].min()) - 0.02, float(points["entropy"].max()) + 0.02, 50,
                       dtype=torch.float64)
    ax_c.plot(h.numpy(), fit.predict(h).numpy(), color="0.2", lw=1.5,
              label=f"R = −{fit.a:.2f}·e^H + {fit.b:.2f}")
    ax_c.set(xlabel="token entropy H (5-step window)", ylabel="sampled accuracy R", title="(c) the entropy law")
    ax_c.legend(fontsize=10, loc="lower left")
    return fig
