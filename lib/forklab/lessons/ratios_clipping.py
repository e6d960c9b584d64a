"""Experiments and widget callbacks of ``notebooks/03_ratios_and_clipping.ipynb``.

Plain functions returning DataFrames, tensors or figures; the notebook prints, plots and asserts,
pytest drives the widget callback (:func:`weight_explorer`). The objectives themselves live in
:mod:`forklab.surrogates`; everything here measures them through autograd.

*Effective gradient weight.* For a per-token loss ℓ_t(logp_t) the policy-gradient form is
−∂ℓ/∂logp_t = c_t · A, and c_t is the weight: 1 for REINFORCE at any ratio, r_t for an unclipped
importance-sampled token, 0 where PPO clips. :func:`gradient_weights` reads c_t off autograd.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import matplotlib.figure
import numpy as np
import pandas as pd
import torch
from torch import Tensor

from forklab import adaptive_clipping as ac  # noqa: F401 - also registers DCPO, BAPO, ETR
from forklab import recipes
from forklab import surrogates as sur
from forklab.aggregation import aggregate
from forklab.envs import seqpolicy as sp
from forklab.plots import PALETTE, use_style

__all__ = [
    "objectives",
    "gradient_weights",
    "weight_curves",
    "one_off_policy_token",
    "staleness_bias",
    "weight_explorer",
    "lm_objective_runs",
    "clipping_figure",
]


def objectives(eps: float = 0.2, eps_high: float = 0.28, dual_clip: float = 3.0, tau_pos: float = 1.0,
               tau_neg: float = 1.05, gspo_eps: tuple[float, float] = (3e-4, 4e-4), gmpo_eps: float = 0.4,
               dcpo_q: float = 0.05) -> dict[str, Callable]:
    """Label → ``f(logp, old_logp, adv, mask) -> per-token loss [B, T]``: every registered clipping rule.

    Read from the registry: each surrogate registered for notebook 03 that needs nothing beyond
    ``(logp, old_logp, adv, mask)``, in registration order, under its label. The lesson's settings
    reach the rules that take them (below); a newly registered rule appears with its own defaults.
    PPO clip is also shown as clip-higher and dual-clip, and GSPO as GSPO-token (GSPO fed a
    per-token advantage ``[B, T]``, its documented switch). GMPO uses its official log-space clip
    ±``gmpo_eps``; CISPO here is verl's two-sided clip(r, 1 − ε, 1 + ε_high). DCPO's bounds depend
    on the old probability, so its curve is drawn for a token with π_old = ``dcpo_q`` (the ratio is
    unchanged by the shift of both log-probabilities). ETR's bounds depend on |A| relative to the
    batch: on these single-advantage batches |A| = max |A|. BAPO (bounds searched on the whole batch)
    and HAPO (entropy-dependent bounds) need a batch, not a ratio curve: notebook 03, §6.
    """
    log_q = math.log(dcpo_q)
    settings = {"ppo_clip": dict(eps_low=eps), "gspo": dict(eps_low=gspo_eps[0], eps_high=gspo_eps[1]),
                "sapo": dict(tau_pos=tau_pos, tau_neg=tau_neg), "cispo": dict(eps_low=eps, eps_high=eps_high),
                "gmpo": dict(eps_low=gmpo_eps, eps_high=gmpo_eps), "dhpo": dict(eps_token=eps, eps_seq=eps),
                "minpro": dict(eps_low=eps), "dcpo": dict(eps_low=eps, eps_high=eps_high),
                "etr": dict(eps_low=eps, eps_high=eps_high)}
    shifts = {"dcpo": log_q}  # log π_old of the token the curve is drawn for
    batch_level = {"bapo"}
    variants = {
        "ppo_clip": {"clip-higher (DAPO)": lambda lp, old, a, m: sur.ppo_clip(lp, old, a, m, eps_low=eps,
                                                                             eps_high=eps_high),
                     "dual-clip": lambda lp, old, a, m: sur.ppo_clip(lp, old, a, m, eps_low=eps, dual_clip=dual_clip)},
        "gspo": {"GSPO-token": lambda lp, old, a, m: sur.gspo(lp, old, a[:, None].expand_as(lp).clone(), m,
                                                              *gspo_eps)},
    }
    out: dict[str, Callable] = {}
    for name, entry in recipes.registered("surrogate").items():
        if entry.notebook != "03_ratios_and_clipping" or entry.needs or name in batch_level:
            continue
        kw, q = settings.get(name, {}), shifts.get(name, 0.0)
        out[entry.label] = lambda lp, old, a, m, fn=entry.fn, kw=kw, q=q: fn(lp + q, old + q, a, m, **kw)
        out |= variants.get(name, {})
    return out


def gradient_weights(fn: Callable, log_ratio: Tensor, adv: Tensor, mask: Tensor | None = None) -> Tensor:
    """c_t = −(∂L/∂logp_t) / A for ``L = token-sum of fn(logp, old, adv, mask)``; ``[B, T]``, 0 off the mask.

    ``log_ratio`` ``[B, T]`` is logp − old_logp (old_logp = 0 here); token-sum keeps each token's own
    weight visible (any other aggregation only multiplies it by that mode's w_{i,t}).
    """
    log_ratio = torch.as_tensor(log_ratio, dtype=torch.float64)
    mask = torch.ones_like(log_ratio, dtype=torch.bool) if mask is None else mask
    adv = torch.as_tensor(adv, dtype=torch.float64)
    logp = log_ratio.clone().requires_grad_(True)
    loss = aggregate(fn(logp, torch.zeros_like(log_ratio), adv, mask), mask, "token-sum")
    (grad,) = torch.autograd.grad(loss, logp)
    return torch.where(mask, -grad / adv[:, None], torch.zeros((), dtype=torch.float64)) + 0.0  # no −0.0


def weight_curves(ratios=None, **objective_kwargs) -> pd.DataFrame:
    """Single-token sequences: weight c vs ratio r for A = +1 and A = −1, every objective.

    With one token the sequence ratio equals the token ratio, so sequence-level objectives (GSPO,
    GMPO) are comparable with token-level ones. Columns: ``objective``, ``adv``, ``ratio``, ``weight``.
    """
    ratios = torch.linspace(0.3, 3.5, 321, dtype=torch.float64) if ratios is None else \
        torch.as_tensor(ratios, dtype=torch.float64)
    if (ratios <= 0).any():
        raise ValueError("`ratios` must be positive")
    rows = []
    for name, fn in objectives(**objective_kwargs).items():
        for a in (1.0, -1.0):
            c = gradient_weights(fn, ratios.log()[:, None], torch.full((len(ratios),), a))[:, 0]
            rows += [dict(objective=name, adv=a, ratio=float(r), weight=float(w))
                     for r, w in zip(ratios, c, strict=True)]
    return pd.DataFrame(rows)


def one_off_policy_token(ratio: float = 5.0, length: int = 8, position: int = 3, adv: float = 1.0,
                         **objective_kwargs) -> pd.DataFrame:
    """One sequence, every token on-policy (r = 1) except one at ``position`` with r = ``ratio``.

    Returns per objective: the weight of the off-policy token, the mean weight of the other tokens
    and how many tokens get exactly zero gradient.
    """
    if not 0 <= position < length:
        raise ValueError(f"`position` must be in 0..{length - 1}, got {position}")
    log_ratio = torch.zeros(1, length, dtype=torch.float64)
    log_ratio[0, position] = float(np.log(ratio))
    rows = []
    for name, fn in objectives(**objective_kwargs).items():
        c = gradient_weights(fn, log_ratio, torch.tensor([adv]))[0]
        others = torch.cat([c[:position], c[position + 1 :]])
        rows.append(dict(objective=name, off_policy_token=float(c[position]), other_tokens_mean=float(others.mean()),
                         tokens_silenced=int((c == 0).sum())))
    return pd.DataFrame(rows)


def _expected_surrogate_grad(policy: sp.SequencePolicy, task: sp.Task, old_logp_tok: Tensor, old_seq_prob: Tensor,
                             adv: Tensor, kind: str, eps: float) -> tuple[Tensor, ...]:
    """E_{y ~ π_old}[gradient of the surrogate at θ], exactly over every response of every prompt."""
    enum = sp.enumerate_responses(task.vocab_size, task.max_len)
    p, n = task.num_prompts, len(enum.tokens)
    ids = torch.arange(p).repeat_interleave(n)
    tokens, mask = enum.tokens.repeat(p, 1), enum.mask.repeat(p, 1)
    logp = policy.token_logprobs(ids, tokens, mask)
    weight = old_seq_prob.reshape(-1) / p  # π_old(y | x) · uniform prompt
    if kind == "sequence IS (exact)":
        rho = (logp - old_logp_tok).masked_fill(~mask, 0).sum(1).exp()
        per_seq = -(rho * adv)  # ∇ρ = ρ ∇log π(y): the exact sequence-level policy gradient
    else:
        fns = {"token IS (no clip)": lambda lp, o, a, m: -torch.exp(lp - o) * a[:, None],
               "PPO clip": lambda lp, o, a, m: sur.ppo_clip(lp, o, a, m, eps_low=eps),
               "CISPO": lambda lp, o, a, m: sur.cispo(lp, o, a, m, eps_low=eps, eps_high=eps),
               "MinPRO (LOW)": lambda lp, o, a, m: sur.minpro(lp, o, a, m, eps_low=eps)}
        per_seq = fns[kind](logp, old_logp_tok, adv, mask).masked_fill(~mask, 0).sum(1)
    loss = (weight * per_seq).sum()
    return torch.autograd.grad(loss, list(policy.parameters()))


def staleness_bias(inner_steps: int = 8, lr: float = 2.0, eps: float = 0.2, seed: int = 0,
                   kinds=("sequence IS (exact)", "token IS (no clip)", "PPO clip", "CISPO", "MinPRO (LOW)"),
                   init_scale: float = 0.5) -> pd.DataFrame:
    """Surrogate bias vs staleness on the sequence policy, exactly (no sampling anywhere).

    θ_old = a random tabular policy (``init_scale``); A(y) = R(y) − J(θ_old) per prompt. The policy
    then takes ``inner_steps`` exact steps on the token-IS surrogate expected under the *fixed*
    π_old data (μ inner epochs on one batch, in expectation). At each θ_s, for every surrogate:
    its expected gradient g_s, the true gradient ∇J(θ_s) (``seqpolicy.exact_gradient``), the
    relative error ‖g_s − ∇J‖ / ‖∇J‖, the cosine, and KL(π_old ‖ π_θ) as the staleness.
    """
    task = sp.default_task()
    policy = sp.TabularPolicy(task.num_prompts, task.vocab_size, task.max_len, init_scale=init_scale, seed=seed)
    enum = sp.enumerate_responses(task.vocab_size, task.max_len)
    p, n = task.num_prompts, len(enum.tokens)
    ids = torch.arange(p).repeat_interleave(n)
    with torch.no_grad():
        old_tok = policy.token_logprobs(ids, enum.tokens.repeat(p, 1), enum.mask.repeat(p, 1)).detach()
        old_prob = sp.response_probs(policy).detach()
        baseline = (old_prob * task.rewards).sum(1, keepdim=True)
    adv = (task.rewards - baseline).reshape(-1)
    params = list(policy.parameters())
    rows = []
    for step in range(inner_steps + 1):
        true = sp.exact_gradient(policy, task)
        g_true = torch.cat([true[name].reshape(-1) for name, _ in policy.named_parameters()])
        with torch.no_grad():
            new_prob = sp.response_probs(policy)
            kl = float((old_prob * (old_prob.clamp_min(1e-300).log() - new_prob.clamp_min(1e-300).log())).sum(1).mean())
        grads = {kind: _expected_surrogate_grad(policy, task, old_tok, old_prob, adv, kind, eps) for kind in kinds}
        for kind, grad in grads.items():
            g = -torch.cat([x.reshape(-1) for x in grad])  # a loss gradient; ascent direction
            rows.append(dict(step=step, kl=kl, surrogate=kind,
                             rel_error=float((g - g_true).norm() / g_true.norm()),
                             cosine=float(g @ g_true / (g.norm() * g_true.norm()))))
        if step == inner_steps:
            break
        step_grad = grads["token IS (no clip)"] if "token IS (no clip)" in grads else \
            _expected_surrogate_grad(policy, task, old_tok, old_prob, adv, "token IS (no clip)", eps)
        with torch.no_grad():
            for param, grad in zip(params, step_grad, strict=True):
                param -= lr * grad
    return pd.DataFrame(rows)


def weight_explorer(eps: float = 0.2, eps_high: float = 0.28, tau_pos: float = 1.0, tau_neg: float = 1.05,
                    objective: str = "all") -> matplotlib.figure.Figure:
    """Widget callback: gradient weight vs ratio for A > 0 and A < 0, at the chosen ε and SAPO τ."""
    if not 0 < eps < 1 or eps_high <= 0:
        raise ValueError(f"`eps` must be in (0, 1) and `eps_high` > 0, got {eps}, {eps_high}")
    curves = weight_curves(eps=eps, eps_high=eps_high, tau_pos=tau_pos, tau_neg=tau_neg)
    names = list(dict.fromkeys(curves["objective"]))
    if objective != "all":
        if objective not in names:
            raise ValueError(f"`objective` must be 'all' or one of {names}, got {objective!r}")
        names = [objective]
    use_style()
    fig = matplotlib.figure.Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, a in zip(axes, (1.0, -1.0), strict=True):
        for i, name in enumerate(names):
            d = curves[(curves["objective"] == name) & (curves["adv"] == a)]
            ax.plot(d["ratio"], d["weight"], color=PALETTE[i % len(PALETTE)], lw=1.6, label=name,
                    ls="-" if i < len(PALETTE) else "--")
        ax.axvline(1.0, color="0.5", lw=0.7)
        ax.set(xlabel="ratio r = π/π_old", title=f"A {'> 0' if a > 0 else '< 0'}: weight c(r) of −A∇log π")
    axes[0].set_ylabel("gradient weight c")
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(f"ε = {eps}, ε_high = {eps_high}, SAPO τ+ = {tau_pos}, τ− = {tau_neg}", fontsize=10)
    return fig


def lm_objective_runs(presets=("grpo", "dapo_clip", "gspo", "sapo", "cispo"), steps: int = 80, lr: float = 1e-4,
                      inner_epochs: int = 2, minibatches: int = 2, seed: int = 0, dtype: str = "float64",
                      progress: bool = True):
    """Tiny-LM GRPO runs with several off-policy updates per rollout, one per objective.

    The shipped addition student; ``inner_epochs`` × ``minibatches`` optimizer steps per rollout, so
    later minibatches see ratios away from 1 and clipping acts. ``dapo_clip`` is the ``grpo`` preset
    with DAPO's clip-higher (0.2 / 0.28) only, so it differs from ``grpo`` in one thing. ``dtype``:
    the model's and trainer's dtype; float64 (the default here) makes a run reproduce on any CPU,
    since a chaotic run amplifies fp32 rounding differences between CPU kernel sets into a flipped
    sampled token. ``progress``: the trainer's bar (off under tests and CI anyway). Returns
    ``(histories, summary DataFrame)``.
    """
    import forklab
    from forklab.lm.models import load_tiny
    from forklab.lm.trainer import RLConfig, RLTrainer

    histories, rows = {}, []
    for name in presets:
        forklab.seed_everything(seed)
        model, tokenizer = load_tiny("student-addition", dtype=dtype)
        recipe = recipes.get("grpo", surrogate_kwargs={"eps_low": 0.2, "eps_high": 0.28}).replace(name=name) \
            if name == "dapo_clip" else recipes.get(name)
        config = RLConfig(lr=lr, inner_epochs=inner_epochs, minibatches=minibatches, eval_every=0, eval_size=128,
                          seed=seed, dtype=dtype)
        trainer = RLTrainer(model, tokenizer, recipe, config)
        start = trainer.evaluate()
        history = trainer.train(steps=steps, progress=progress)
        end = trainer.evaluate()
        histories[name] = history
        rows.append(dict(objective=name, sampled_start=start["eval/sampled_accuracy"],
                         sampled_end=end["eval/sampled_accuracy"],
                         clip_low=_mean(history, "clip_ratio/low_mean"),
                         clip_high=_mean(history, "clip_ratio/high_mean"),
                         cispo_clipped=_mean(history, "cispo_clip_ratio"), ratio_mean=_mean(history, "ratio/mean"),
                         entropy_first10=_mean(history[:10], "entropy"),
                         entropy_last10=_mean(history[-10:], "entropy")))
    return histories, pd.DataFrame(rows)


def _mean(history: list[dict], key: str) -> float:
    """Mean of ``key`` over the steps that logged it; NaN when none did (e.g. SAPO has no hard clip)."""
    values = [h[key] for h in history if key in h]
    return float(np.mean(values)) if values else float("nan")


FIGURE_OBJECTIVES = ("PPO clip", "clip-higher (DAPO)", "dual-clip", "GSPO", "SAPO", "CISPO", "GMPO", "DCPO",
                     "ETR (LOW)")


def clipping_figure(curves: pd.DataFrame, bias: pd.DataFrame, histories: dict,
                    names=FIGURE_OBJECTIVES) -> matplotlib.figure.Figure:
    """The notebook's figure: (a) one small panel per objective, weight c(r) for A > 0 and A < 0 drawn
    exactly (no offsets; on one token DHPO and MinPRO draw PPO's curve and GSPO-token GSPO's, so
    they are left out); (b) surrogate bias vs staleness; (c) tiny-LM entropy per objective."""
    use_style()
    fig = matplotlib.figure.Figure(figsize=(11, 10.5), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.35, 1])
    cols = 5
    axes = top.subplots(2, cols, sharex=True, sharey=True).ravel()
    top.suptitle("(a) gradient weight c(r) in −c·A·∇log π, one-token sequences (A > 0: solid, A < 0: dashed)",
                 fontsize=11, fontweight="bold")
    ymax = float(curves[curves["objective"].isin(names)]["weight"].clip(upper=4.0).max())
    for ax, name in zip(axes, names, strict=False):
        for a, ls, color in ((1.0, "-", PALETTE[0]), (-1.0, "--", PALETTE[3])):
            d = curves[(curves["objective"] == name) & (curves["adv"] == a)]
            ax.plot(d["ratio"], d["weight"], color=color, lw=2.0, ls=ls, label="A > 0" if a > 0 else "A < 0")
        ax.axvline(1.0, color="0.6", lw=0.7)
        ax.set_title(name, fontsize=10.5)
        ax.set_ylim(-0.1, ymax + 0.2)
        ax.tick_params(labelsize=10)
    for ax in axes[cols:]:
        ax.set_xlabel("ratio r", fontsize=10.5)
    for ax in axes[::cols]:
        ax.set_ylabel("weight c", fontsize=10.5)
    for ax in axes[len(names):]:
        ax.axis("off")
    if len(names) < len(axes):
        handles, labels = axes[0].get_legend_handles_labels()
        axes[len(names)].legend(handles, labels, loc="center", fontsize=10.5,
                                title="DCPO: π_old = 0.05\nETR: |A| = max |A|", title_fontsize=10)
    ax_bias, ax_lm = bottom.subplots(1, 2)
    for i, (kind, d) in enumerate(bias.groupby("surrogate", sort=False)):
        ax_bias.plot(d["kl"], d["rel_error"], marker="o", ms=4, color=PALETTE[i], label=kind)
    ax_bias.set(xlabel="staleness: KL(π_old ‖ π_θ)", ylabel="‖E[ĝ] − ∇J‖ / ‖∇J‖",
                title="(b) surrogate bias vs staleness (exact)")
    ax_bias.legend(fontsize=9.5)
    window = max(1, min([9, *(len(h) for h in histories.values())]))
    for i, (name, history) in enumerate(histories.items()):
        smoothed = np.convolve([h["entropy"] for h in history], np.ones(window) / window, mode="valid")
        ax_lm.plot(np.arange(window, len(history) + 1), smoothed, color=PALETTE[i], label=name)
    ax_lm.set(xlabel="GRPO step (2 epochs × 2 minibatches each)", ylabel=f"token entropy ({window}-step mean)",
              title="(c) tiny LM: entropy per objective")
    ax_lm.legend(fontsize=9.5)
    for ax in (ax_bias, ax_lm):
        ax.tick_params(labelsize=10)
        ax.xaxis.label.set_size(10.5)
        ax.yaxis.label.set_size(10.5)
    return fig
