"""Experiments of ``notebooks/07_token_hidden_reward.ipynb``.

Plain functions returning DataFrames or figures; the notebook prints, plots and asserts. The formulas
live in :mod:`forklab.diagnostics.thr` (influence s, THR, τ, the THR/NTHR advantages),
:mod:`forklab.thr_reweighting` (the ``thr`` recipe) and :mod:`forklab.diagnostics.lld` (Δ of a
response's log-likelihood); everything here measures them:

==========================  ========================================================================
function                    what it measures
==========================  ========================================================================
``finite_difference_check`` THR of every token of sampled groups (shared-parameter sequence policy)
                            against the exact change of Σ log π(correct) after one small step on it
``lm_token_table``          THR of every token of one tiny-LM rollout, with its character/position
``top_share``               the share of Σ|THR| carried by the top fraction of tokens
``reweighting_runs``        tiny-LM runs of the ``thr`` recipe for several p and seeds: greedy, pass@k
``displacement_runs``       tiny-LM GRPO vs NTHR: Δ log π of every response after each update (LLD)
==========================  ========================================================================
"""

from __future__ import annotations

import copy

import matplotlib.figure
import numpy as np
import pandas as pd
import torch

from forklab.advantages import grpo
from forklab.diagnostics import lld
from forklab.diagnostics import thr as thr_lib
from forklab.envs import seqpolicy as sp
from forklab.plots import PALETTE, use_style
from forklab.progress import progress

__all__ = ["DISPLACEMENT_MODES", "finite_difference_check", "lm_token_table", "top_share", "reweighting_runs",
           "displacement_runs", "validation_figure", "distribution_figure", "runs_figure"]


# ------------------------------------------------------------------ sequence policy: exact ground truth
def _correct_loglik(policy, prompt_ids, tokens, mask, correct):
    return policy.token_logprobs(prompt_ids, tokens, mask)[correct].sum()


def _step_change(policy, prompt_ids, tokens, mask, correct, adv, j, k, eta, unembed_only):
    """Exact change of Σ_{i∈P} log π(y_i) after one ascent step of size η on Â_j · log π(y_{j,k}) alone."""
    moved = copy.deepcopy(policy)
    params = [moved.unembed.weight] if unembed_only else list(moved.parameters())
    logp = moved.token_logprobs(prompt_ids[j:j + 1], tokens[j:j + 1], mask[j:j + 1])[0, k]
    grads = torch.autograd.grad(adv[j] * logp, params)
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p += eta * g
        return float(_correct_loglik(moved, prompt_ids, tokens, mask, correct)
                     - _correct_loglik(policy, prompt_ids, tokens, mask, correct))


def finite_difference_check(seeds=range(4), group_size: int = 12, eta_unembed: float = 1e-6,
                            eta_all: float = 1e-5) -> pd.DataFrame:
    """THR against exact finite differences on the shared-parameter sequence policy (float64).

    For each seed: a fresh ``SharedPolicy(seed=seed)``, ``group_size`` sampled responses to each prompt
    of the default task, GRPO advantages; groups without both a correct and a wrong response are
    dropped. For every response token (END at the forced last position excluded: it has no gradient)
    the exact change of Σ log π(correct) after a step of size η on that token alone, divided by η,
    moving the unembedding W only (``fd_unembed``: THR is its exact first-order term) or every
    parameter (``fd_all``: THR ignores how the hidden states move). One row per token.
    """
    task = sp.default_task()
    rows = []
    for seed in seeds:
        policy = sp.SharedPolicy(init_scale=1.0, seed=seed)
        roll = policy.sample(group_size=group_size, generator=torch.Generator().manual_seed(seed))
        rewards = task.reward(roll.prompt_ids, roll.tokens, roll.mask)
        for gid in torch.unique(roll.group):
            rows_g = torch.nonzero(roll.group == gid).flatten()
            r = rewards[rows_g]
            if r.min() == r.max():
                continue
            ids, tokens, mask = roll.prompt_ids[rows_g], roll.tokens[rows_g], roll.mask[rows_g]
            correct = r > 0
            group = torch.zeros(len(rows_g), dtype=torch.long)
            adv = grpo(r, group)
            with torch.no_grad():
                _, hidden = policy.forward_with_hidden(ids, tokens)
                logits = policy.next_token_logits(ids, tokens)  # END forced at the last position
            res = thr_lib.token_hidden_reward(hidden, logits, tokens, mask, group, correct, adv,
                                              restrict_vocab=False)
            for j, k in torch.nonzero(mask).tolist():
                if k == policy.max_len - 1:
                    continue
                rows.append(dict(seed=seed, prompt=int(ids[0]), response=j, position=k, correct=bool(correct[j]),
                                 adv=float(adv[j]), thr=float(res.thr[j, k]),
                                 fd_unembed=_step_change(policy, ids, tokens, mask, correct, adv, j, k,
                                                         eta_unembed, True) / eta_unembed,
                                 fd_all=_step_change(policy, ids, tokens, mask, correct, adv, j, k,
                                                     eta_all, False) / eta_all))
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ tiny LM
def _load(seed: int, model_name: str = "student-addition"):
    import forklab
    from forklab.lm.models import load_tiny

    forklab.seed_everything(seed)
    return load_tiny(model_name, dtype="float64")


def lm_token_table(seed: int = 0, prompts: int = 32, group_size: int = 8) -> pd.DataFrame:
    """THR of every response token of one rollout of the tiny LM (float64), one row per token.

    Columns: response, group, position, char, correct, adv (GRPO), influence s, thr, tau (the group's
    τ), above (|THR| > τ). Hidden states and logits come from a teacher-forced pass of the rollout
    policy (the same weights that sampled).
    """
    from forklab import recipes
    from forklab.lm.trainer import RLConfig, RLTrainer, policy_forward

    model, tokenizer = _load(seed)
    trainer = RLTrainer(model, tokenizer, recipes.get("grpo"), RLConfig(prompts_per_step=prompts,
                        group_size=group_size, seed=seed, dtype="float64", eval_every=0))
    r = trainer.rollout()
    with torch.no_grad():
        logits, _, hidden = policy_forward(model, r["prompt_ids"], r["prompt_mask"], r["tokens"], r["mask"],
                                           hidden=True)
    adv = grpo(r["rewards"], r["group"])
    res = thr_lib.token_hidden_reward(hidden, logits, r["tokens"], r["mask"], r["group"], r["correct"], adv)
    rows = []
    for j, k in torch.nonzero(r["mask"]).tolist():
        rows.append(dict(response=j, group=int(r["group"][j]), position=k,
                         char=tokenizer.decode([int(r["tokens"][j, k])]) or "<eos>",
                         correct=bool(r["correct"][j]), adv=float(adv[j]), influence=float(res.influence[j, k]),
                         thr=float(res.thr[j, k]), tau=float(res.tau[j]),
                         above=bool(abs(res.thr[j, k]) > res.tau[j])))
    return pd.DataFrame(rows)


def top_share(values, fraction: float) -> float:
    """Share of Σ|v| carried by the ``fraction`` of entries with the largest |v| (at least one entry)."""
    v = np.sort(np.abs(np.asarray(values, dtype=float)))[::-1]
    if v.size == 0 or v.sum() == 0:
        raise ValueError("`values` must hold at least one non-zero entry")
    n = max(1, int(round(fraction * v.size)))
    return float(v[:n].sum() / v.sum())


def reweighting_runs(ps=(-0.5, 0.0, 0.5), seeds=range(3), steps: int = 15, lr: float = 1e-3, eval_size: int = 256,
                     pass_k: int = 8) -> pd.DataFrame:
    """The ``thr`` recipe with ``thr_p = p`` on the tiny LM (float64), one row per (p, seed).

    p = 0 is GRPO with the same clip and aggregation. After ``steps`` steps (16 prompts × 8 samples,
    one update per rollout): greedy accuracy, sampled accuracy and unbiased pass@k on ``eval_size``
    held-out problems, and the mean token entropy of the last 3 steps.
    """
    from forklab import recipes
    from forklab.lm.trainer import RLConfig, RLTrainer

    rows = []
    for p, seed in progress([(p, s) for p in ps for s in seeds], desc="THR-reweighted runs"):
        model, tokenizer = _load(seed)
        config = RLConfig(lr=lr, seed=seed, dtype="float64", eval_every=0, eval_size=eval_size, pass_k=pass_k)
        trainer = RLTrainer(model, tokenizer, recipes.get("thr", thr_p=p), config)
        hist = trainer.train(steps, progress=False)
        ev = trainer.evaluate()
        rows.append(dict(p=p, seed=seed, greedy=ev["eval/greedy_accuracy"], sampled=ev["eval/sampled_accuracy"],
                         pass_k=ev[f"eval/pass@{pass_k}"], entropy=float(np.mean([h["entropy"] for h in hist[-3:]]))))
    return pd.DataFrame(rows)


DISPLACEMENT_MODES = {"GRPO": {}, "NTHR": {"thr_mode": "nthr"}, "NTHR η=0": {"thr_mode": "nthr", "nthr_eta": 0.0}}


def displacement_runs(modes=tuple(DISPLACEMENT_MODES), seeds=range(6), steps: int = 1, lr: float = 1e-3,
                      prompts: int = 32) -> pd.DataFrame:
    """Δ log π(τ) of every response of each rollout after the update on it (LLD), GRPO vs NTHR.

    ``"GRPO"``: the ``thr`` recipe with p = 0 (plain GRPO, PPO clip, token-mean); ``"NTHR"``: the same
    with ``thr_mode="nthr"`` (negative tokens with s⁻ > τ get η·Â, η = 2|0.5 − pass rate|);
    ``"NTHR η=0"``: those tokens get no gradient at all (NTHR's analysis setting). One update per
    rollout, so Δ is the displacement of that one step. With the same seed every mode draws the same
    first rollout from the same weights, so at step 0 the modes differ only in their advantages: a
    paired comparison, response by response. One row per (mode, seed, step, response).
    """
    from forklab import recipes
    from forklab.lm.trainer import RLConfig, RLTrainer, policy_forward

    rows = []
    for mode, seed in progress([(m, s) for m in modes for s in seeds], desc="displacement runs"):
        model, tokenizer = _load(seed)
        recipe = recipes.get("thr", thr_p=0.0, **DISPLACEMENT_MODES[mode])
        stash: dict = {}
        trainer = RLTrainer(model, tokenizer, recipe, RLConfig(lr=lr, seed=seed, dtype="float64", eval_every=0,
                                                                         prompts_per_step=prompts),
                            hooks=[lambda tr, r, stash=stash: stash.update(r) or {}])
        for step in range(steps):
            trainer.step()
            with torch.no_grad():
                _, new_logp, _ = policy_forward(model, stash["prompt_ids"], stash["prompt_mask"], stash["tokens"],
                                                stash["mask"])
            delta = lld.likelihood_displacement(stash["old_logp"], new_logp, stash["mask"])
            g = stash["correct"].reshape(-1, trainer.config.group_size)
            mixed = (g.any(1) & ~g.all(1)).repeat_interleave(trainer.config.group_size)
            for i in range(len(delta)):
                rows.append(dict(mode=mode, seed=seed, step=step, response=i, delta=float(delta[i]),
                                 correct=bool(stash["correct"][i]), mixed=bool(mixed[i])))
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ figures
def validation_figure(fd: pd.DataFrame) -> matplotlib.figure.Figure:
    """(a) THR against the exact change when only W moves; (b) when every parameter moves."""
    use_style()
    fig = matplotlib.figure.Figure(figsize=(10, 4.3), layout="constrained")
    for ax, col, title in zip(fig.subplots(1, 2), ("fd_unembed", "fd_all"),
                              ("(a) only the unembedding W moves", "(b) every parameter moves"), strict=True):
        for ok, color, label in ((True, PALETTE[0], "token of a correct response"),
                                 (False, PALETTE[1], "token of a wrong response")):
            d = fd[fd["correct"] == ok]
            ax.scatter(d["thr"], d[col], s=14, alpha=0.7, color=color, label=label)
        if col == "fd_unembed":
            lim = float(np.abs(fd[["thr", col]].to_numpy()).max()) * 1.05
            ax.plot([-lim, lim], [-lim, lim], color="0.4", lw=1, ls="--", label="y = x")
        ax.axhline(0, color="0.6", lw=0.8)
        ax.axvline(0, color="0.6", lw=0.8)
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_yscale("symlog", linthresh=0.1)
        ax.set(xlabel="THR (first-order prediction, symlog)", ylabel="exact Δ Σ log π(correct) / η (symlog)",
               title=title)
    fig.axes[0].legend(fontsize=10, loc="upper left")
    return fig


def distribution_figure(tokens: pd.DataFrame) -> matplotlib.figure.Figure:
    """(a) cumulative share of Σ|THR| against the share of tokens (largest first); (b) mean |THR| by
    position, correct vs wrong responses."""
    use_style()
    fig = matplotlib.figure.Figure(figsize=(10, 4.3), layout="constrained")
    ax_a, ax_b = fig.subplots(1, 2)
    v = np.sort(tokens["thr"].abs().to_numpy())[::-1]
    ax_a.plot(np.arange(1, v.size + 1) / v.size, np.cumsum(v) / v.sum(), color=PALETTE[0], lw=2, label="tiny LM")
    ax_a.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1, label="equal shares")
    ax_a.set(xlabel="share of tokens (largest |THR| first)", ylabel="share of Σ|THR|",
             title="(a) a few tokens carry most |THR|")
    ax_a.legend(fontsize=10, loc="lower right")
    by = tokens.assign(abs_thr=tokens["thr"].abs()).pivot_table(index="position", columns="correct",
                                                                 values="abs_thr", aggfunc="mean")
    width = 0.4
    for i, (ok, label) in enumerate(((True, "correct responses"), (False, "wrong responses"))):
        if ok in by.columns:
            ax_b.bar(by.index.to_numpy() + (i - 0.5) * width, by[ok].to_numpy(), width, color=PALETTE[i], label=label)
    ax_b.set_xticks(by.index.to_numpy())
    ax_b.set(xlabel="position in the response (0 = first digit, 3 = mostly ';')", ylabel="mean |THR|",
             title="(b) |THR| by position")
    ax_b.legend(fontsize=10)
    return fig


def runs_figure(rw: pd.DataFrame, disp: pd.DataFrame) -> matplotlib.figure.Figure:
    """(a) greedy accuracy and pass@k per p (every seed, mean ± s.e.); (b) Δ log π of correct responses
    in mixed groups, GRPO vs NTHR."""
    use_style()
    fig = matplotlib.figure.Figure(figsize=(11, 4.3), layout="constrained")
    ax_a, ax_b = fig.subplots(1, 2)
    ps = sorted(rw["p"].unique())
    for i, (col, label) in enumerate((("greedy", "greedy accuracy"), ("pass_k", "pass@8"))):
        stats = rw.groupby("p")[col].agg(["mean", "std", "count"])
        x = np.arange(len(ps)) + (i - 0.5) * 0.2
        ax_a.errorbar(x, stats["mean"], stats["std"] / np.sqrt(stats["count"]), fmt="o", capsize=4, color=PALETTE[i],
                      label=f"{label} (mean ± s.e.)")
        for k, p in enumerate(ps):
            vals = rw.loc[rw["p"] == p, col].to_numpy()
            ax_a.scatter(np.full(vals.size, x[k]) + 0.06, vals, s=12, color=PALETTE[i], alpha=0.5)
    ax_a.set_xticks(np.arange(len(ps)), [f"p = {p:g}" for p in ps])
    ax_a.set(ylabel="held-out accuracy", title="(a) THR reweighting: greedy vs pass@8")
    ax_a.legend(fontsize=10, loc="center", bbox_to_anchor=(0.5, 0.62))
    chosen = disp[disp["correct"] & disp["mixed"]]
    bins = np.linspace(chosen["delta"].quantile(0.01), chosen["delta"].quantile(0.99), 30)
    for i, (mode, d) in enumerate(chosen.groupby("mode", sort=False)):
        ax_b.hist(d["delta"].clip(bins[0], bins[-1]), bins=bins, histtype="step", lw=2, color=PALETTE[i], label=mode)
    ax_b.axvline(0, color="0.3", lw=1)
    ax_b.set(xlabel="Δ log π(correct response) after one update", ylabel="responses",
             title="(b) likelihood displacement of correct responses")
    ax_b.legend(fontsize=10)
    return fig
