"""Notebook 10 (token importance, TIP): the entropy × divergence plane, planted errors, rules side by side.

Experiments and figures of ``notebooks/10_token_importance_tip.ipynb``. The selection rules themselves live
in :mod:`forklab.diagnostics.tip` and the trainer in :mod:`forklab.lm.distill_trainer`; this module
collects tiny teacher/student rollouts, plants "overconfident and wrong" positions, trains one student per
rule and seed, measures saved-activation memory against the vocabulary size, and draws the figures.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from forklab.diagnostics import tip
from forklab.divergences import reverse_kl
from forklab.lm import sampling
from forklab.lm._rollout import decode_responses, encode_prompts, response_inputs, sample_groups
from forklab.lm.distill_trainer import DistillConfig, DistillTrainer, saved_activation_bytes
from forklab.progress import progress

__all__ = ["QUADRANT_NAMES", "rollout_plane", "plant_overconfident_wrong", "planted_recall", "plane_figure",
           "loss_memory", "RULES", "greedy_eval", "train_rule", "train_rules", "rules_table", "rules_figure",
           "memory_by_vocab", "explore"]

QUADRANT_NAMES = ("Q1 unsure, wrong", "Q2 unsure, right", "Q3 sure, wrong", "Q4 sure, right")
_QUADRANT_COLORS = ("#d62728", "#ff7f0e", "#9467bd", "#7f7f7f")


# ----- §1: the plane on tiny rollouts -------------------------------------------------------
@torch.no_grad()
def rollout_plane(student, teacher, tokenizer, task, num_prompts: int = 96, seed: int = 0,
                  max_new_tokens: int = 6) -> dict[str, Tensor]:
    """Sample one response per prompt from ``student``; return both models' logits on it.

    Returns ``student_logits``/``teacher_logits`` ``[B, T, V]`` at the response positions (teacher-forced on
    the student's own tokens, the on-policy setting), ``tokens`` and ``mask`` ``[B, T]``.
    """
    gen = torch.Generator().manual_seed(seed)
    pool = task.make_split("test", num_prompts, seed=seed)
    _, s = sample_groups(student, tokenizer, pool, num_prompts, 1, gen, max_new_tokens)
    inputs = response_inputs(s.prompt_ids, s.prompt_mask, s.tokens, s.mask)
    lp, t = s.prompt_ids.shape[1], s.tokens.shape[1]
    window = slice(lp - 1, lp - 1 + t)
    return {"student_logits": student(**inputs).logits[:, window],
            "teacher_logits": teacher(**inputs).logits[:, window],
            "tokens": s.tokens, "mask": s.mask, "inputs": inputs, "window": window}


def loss_memory(student, plane: dict, keep: Tensor) -> float:
    """MB saved for backward by one distillation loss on ``plane``'s batch keeping ``keep`` ``[B, T]``.

    The loss of :meth:`DistillTrainer.step`: student body with gradient, ``lm_head`` on the kept positions
    only, reverse KL to the teacher, measured with :class:`saved_activation_bytes`.
    """
    model = copy.deepcopy(student).train()
    with saved_activation_bytes() as mem:
        hidden = model.model(**plane["inputs"]).last_hidden_state[:, plane["window"]]
        loss = reverse_kl(model.lm_head(hidden[keep]), plane["teacher_logits"][keep]).mean()
    del loss
    return mem.bytes / 2**20


def plant_overconfident_wrong(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, entropy: Tensor,
                              divergence: Tensor, count: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Turn ``count`` confident, correct tokens (Q4) into confident, wrong ones; returns ``(logits, planted)``.

    At each chosen position the student's largest logit is swapped with its logit on the token the teacher
    finds least likely. A swap permutes the logits, so the student's entropy there is unchanged (still
    low), while its top choice is now a token the teacher rules out (high divergence). Positions are drawn
    uniformly from the valid tokens with entropy and divergence at or below their medians.
    """
    quads = tip.quadrants(entropy, divergence, mask)
    candidates = (quads.ids == 4).flatten().nonzero().flatten()
    if count > candidates.numel():
        raise ValueError(f"`count` must be at most {candidates.numel()} (the Q4 tokens), got {count}")
    gen = torch.Generator().manual_seed(seed)
    chosen = candidates[torch.randperm(candidates.numel(), generator=gen)[:count]]
    logits = student_logits.clone().reshape(-1, student_logits.shape[-1])
    top = logits[chosen].argmax(-1)
    worst = teacher_logits.reshape(-1, teacher_logits.shape[-1])[chosen].argmin(-1)
    if (top == worst).any():
        raise ValueError("a chosen position's top token is already the teacher's least likely one")
    top_values, worst_values = logits[chosen, top].clone(), logits[chosen, worst].clone()
    logits[chosen, top], logits[chosen, worst] = worst_values, top_values
    planted = torch.zeros(mask.numel(), dtype=torch.bool)
    planted[chosen] = True
    return logits.reshape(student_logits.shape), planted.reshape(mask.shape)


def planted_recall(entropy: Tensor, divergence: Tensor, mask: Tensor, planted: Tensor, ratios=(0.2, 0.5),
                   seed: int = 0) -> pd.DataFrame:
    """Share of the planted positions each rule keeps, at each ratio (rows: rules; columns: ratios)."""
    rows = {}
    for rule in ("entropy_top", "entropy_sample", "random", "soft_or", "q3"):
        rows[rule] = {}
        for ratio in ratios:
            gen = torch.Generator().manual_seed(seed)
            keep = tip.select_tokens(rule, entropy, divergence, mask, ratio, generator=gen)
            rows[rule][f"ρ = {ratio}"] = float((keep & planted).sum() / planted.sum())
    q3_exact = tip.select_q3(entropy, divergence, mask)
    rows["q3 (exactly Q3)"] = {f"ρ = {ratio}": float((q3_exact & planted).sum() / planted.sum()) for ratio in ratios}
    return pd.DataFrame(rows).T


def plane_figure(entropy: Tensor, divergence: Tensor, mask: Tensor, planted: Tensor | None = None):
    """Scatter of the valid tokens in the (entropy, divergence) plane, median lines, quadrant shares."""
    import matplotlib.pyplot as plt

    from forklab.plots import use_style

    use_style()
    quads = tip.quadrants(entropy, divergence, mask)
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    h, d, ids = entropy[mask].numpy(), divergence[mask].numpy(), quads.ids[mask].numpy()
    eps = 1e-4  # log axes: zero-entropy/zero-divergence tokens sit on the floor
    for q in range(1, 5):
        sel = ids == q
        ax.scatter(np.maximum(h[sel], eps), np.maximum(d[sel], eps), s=12, alpha=0.55, color=_QUADRANT_COLORS[q - 1],
                   label=f"{QUADRANT_NAMES[q - 1]}: {quads.shares[q - 1]:.0%}")
    if planted is not None and planted.any():
        ax.scatter(np.maximum(entropy[planted].numpy(), eps), np.maximum(divergence[planted].numpy(), eps), s=70,
                   facecolors="none", edgecolors="black", linewidths=1.3, label="planted (sure and wrong)")
    ax.axvline(max(quads.entropy_threshold, eps), color="black", lw=0.8, ls="--")
    ax.axhline(max(quads.divergence_threshold, eps), color="black", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("student entropy H_t (nats)")
    ax.set_ylabel("reverse KL(student ‖ teacher) D_t (nats)")
    title = "TIP's plane on tiny-LM rollouts"
    if planted is not None and planted.any():
        title += f", {int(planted.sum())} tokens planted"
    ax.set_title(title + " (dashed: medians)")
    ax.legend(loc="lower right", fontsize=10, framealpha=0.9)
    fig.tight_layout()
    return fig


# ----- §2: rules trained side by side -------------------------------------------------------
#: name -> DistillConfig overrides of each rule trained in notebook 10: TIP's selection rules (``selection``,
#: ``ratio``; :mod:`forklab.diagnostics.tip`), then the weighting rules and objectives of :mod:`forklab.distill`
#: (SCOPE, position weighting, TSD-KD, Prune-OPD) at their library defaults. SCOPE draws 16 prompts × 2 answers
#: per step (the same 32 responses) so that its groups can hold a correct and a wrong answer.
RULES = {
    "all tokens": {"selection": None},
    "entropy top 50%": {"selection": "entropy_top", "ratio": 0.5},
    "entropy sampling 50%": {"selection": "entropy_sample", "ratio": 0.5},
    "Q3 only": {"selection": "q3", "ratio": None},
    "soft-OR 50%": {"selection": "soft_or", "ratio": 0.5},
    "random 50%": {"selection": "random", "ratio": 0.5},
    "SCOPE": {"objective": "scope", "prompts_per_step": 16, "samples_per_prompt": 2},
    "position weighting (late)": {"token_weighting": "position",
                                  "token_weighting_kwargs": {"power": 1.0, "direction": "late"}},
    "TSD-KD": {"objective": "tsd_kd"},
    "Prune-OPD": {"token_weighting": "prune_opd"},
}


@torch.no_grad()
def greedy_eval(student, teacher, tokenizer, task, examples, max_new_tokens: int) -> dict[str, float]:
    """Greedy accuracy, and the mean reverse KL(student ‖ teacher) per token on those greedy answers."""
    ids, pmask = encode_prompts(student, tokenizer, examples)
    g = sampling.sample(student, ids, pmask, max_new_tokens, greedy=True, stop_token_id=tokenizer.eos_id,
                        pad_token_id=tokenizer.pad_id)
    texts = decode_responses(tokenizer, g.tokens, g.mask)
    acc = sum(task.reward(e, r) for e, r in zip(examples, texts, strict=True)) / len(examples)
    inputs = response_inputs(ids, pmask, g.tokens, g.mask)
    lp, t = ids.shape[1], g.tokens.shape[1]
    zs = student(**inputs).logits[:, lp - 1 : lp - 1 + t]
    zt = teacher(**inputs).logits[:, lp - 1 : lp - 1 + t]
    return {"greedy accuracy": float(acc), "held-out KL": float(reverse_kl(zs[g.mask], zt[g.mask]).mean())}


def train_rule(student, teacher, tokenizer, overrides: dict, seed: int, steps: int, eval_size: int = 256,
               **config) -> dict:
    """Distil a copy of ``student`` for ``steps`` steps under one rule; return its final metrics.

    ``overrides`` are :class:`DistillConfig` fields (e.g. ``{"selection": "q3", "ratio": None}``), ``config``
    more of them (``prompts_per_step``, ``lr``, …). Returned: greedy accuracy and held-out reverse KL on
    ``eval_size`` test prompts, the mean kept share, and the peak saved-activation bytes over the steps.
    """
    c = DistillConfig(seed=seed, eval_every=0, eval_size=eval_size, dtype="float64", **{**config, **overrides})
    trainer = DistillTrainer(copy.deepcopy(student), teacher, tokenizer, c)
    history = trainer.train(steps)
    final = greedy_eval(trainer.student, teacher, tokenizer, trainer.task, trainer.eval_examples, c.max_new_tokens)
    saved = [h["memory/saved_activations_mb"] for h in history]
    return {**final, "kept share": float(np.mean([h["tokens/kept_share"] for h in history])),
            "mean saved MB": float(np.mean(saved)), "peak saved MB": max(saved)}


def train_rules(student, teacher, tokenizer, rules: dict, seeds=(0, 1), steps: int = 15, **config) -> pd.DataFrame:
    """:func:`train_rule` for every rule and seed; one row per run (columns: rule, seed, metrics)."""
    runs = [(name, seed) for name in rules for seed in seeds]
    rows = []
    for name, seed in progress(runs, desc="rules × seeds"):
        rows.append({"rule": name, "seed": seed, **train_rule(student, teacher, tokenizer, rules[name], seed, steps,
                                                              **config)})
    return pd.DataFrame(rows)


def rules_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds, and the seed spread (max − min) of accuracy, per rule, in the rules' order."""
    order = list(dict.fromkeys(runs["rule"]))
    g = runs.groupby("rule", sort=False)
    table = pd.DataFrame({
        "kept share": g["kept share"].mean(),
        "greedy acc": g["greedy accuracy"].mean(),
        "acc spread": g["greedy accuracy"].max() - g["greedy accuracy"].min(),
        "held-out KL": g["held-out KL"].mean(),
        "mean saved MB": g["mean saved MB"].mean(),
        "peak saved MB": g["peak saved MB"].max(),
    })
    return table.loc[order]


def rules_figure(runs: pd.DataFrame, start: float, teacher_acc: float):
    """Left: greedy accuracy per rule (seeds as dots, mean as a bar). Right: peak saved-activation memory."""
    import matplotlib.pyplot as plt

    from forklab.plots import use_style

    use_style()
    table = rules_table(runs)
    names = list(table.index)
    y = np.arange(len(names))
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10.5, 0.42 * len(names) + 1.8), sharey=True)
    ax.barh(y, table["greedy acc"], color="#9ecae1")
    for i, name in enumerate(names):
        accs = runs.loc[runs["rule"] == name, "greedy accuracy"]
        ax.scatter(accs, [i] * len(accs), color="black", s=18, zorder=3)
    ax.axvline(start, color="#7f7f7f", ls="--", label="student before")
    ax.axvline(teacher_acc, color="#d62728", ls=":", label="teacher")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlim(0.4, 1.0)
    ax.set_xlabel("greedy accuracy (dots: seeds)")
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, fontsize=10, frameon=False)
    bx.barh(y, table["mean saved MB"], color="#fdae6b")
    bx.set_xlabel("saved activations per step (MB, float64)")
    bx.set_xlim(0, table["mean saved MB"].max() * 1.05)
    fig.tight_layout()
    return fig


# ----- §3: memory against the vocabulary size ----------------------------------------------
def memory_by_vocab(vocab_sizes=(18, 4096, 32768), shares=(1.0, 0.5, 0.2), batch: int = 32, length: int = 8,
                    seed: int = 0) -> pd.DataFrame:
    """Saved-activation bytes of one distillation loss (student body + ``lm_head`` on kept tokens + reverse KL).

    A student of notebook 10's size (hidden 64, 2 layers) with a ``vocab_sizes`` vocabulary, random token
    ids and a random teacher; ``shares`` of the tokens kept (the first ⌊share·N⌋ of a random order). Same
    code path as :meth:`DistillTrainer.step`'s loss, measured with :class:`saved_activation_bytes`
    (float64). Rows: vocabulary sizes; columns: shares (MB) and the saving of each share against all tokens.
    """
    from forklab.lm.models import build_tiny

    rows = {}
    for vocab in vocab_sizes:
        model = build_tiny("student", vocab_size=vocab, seed=seed).double().train()
        gen = torch.Generator().manual_seed(seed)
        ids = torch.randint(1, vocab, (batch, length), generator=gen)
        teacher_logits = torch.randn(batch, length, vocab, generator=gen, dtype=torch.float64)
        order = torch.randperm(batch * length, generator=gen)
        row = {}
        for share in shares:
            keep = torch.zeros(batch * length, dtype=torch.bool)
            keep[order[: int(share * batch * length + 1e-9)]] = True
            keep = keep.reshape(batch, length)
            with saved_activation_bytes() as mem:
                hidden = model.model(input_ids=ids).last_hidden_state
                loss = reverse_kl(model.lm_head(hidden[keep]), teacher_logits[keep]).mean()
            del loss
            row[f"{share:.0%} kept (MB)"] = mem.bytes / 2**20
        for share in shares[1:]:
            row[f"saving at {share:.0%}"] = 1 - row[f"{share:.0%} kept (MB)"] / row[f"{shares[0]:.0%} kept (MB)"]
        rows[vocab] = row
    return pd.DataFrame(rows).T.rename_axis("vocabulary")


# ----- widget -------------------------------------------------------------------------------
def explore(axes: dict, rule: str = "soft_or", ratio: float = 0.5, seed: int = 0):
    """Which tokens of the plane a rule keeps at share ``ratio`` (``axes``: entropy, divergence, mask, planted)."""
    import matplotlib.pyplot as plt

    from forklab.plots import use_style

    use_style()
    h, d, mask, planted = axes["entropy"], axes["divergence"], axes["mask"], axes["planted"]
    gen = torch.Generator().manual_seed(seed)
    keep = tip.select_tokens(rule, h, d, mask, None if rule == "q3" and ratio >= 1 else ratio, generator=gen)
    eps = 1e-4
    fig, ax = plt.subplots(figsize=(7, 4.8))
    for sel, color, label in ((mask & ~keep, "#c7c7c7", "dropped"), (keep, "#1f77b4", "kept")):
        ax.scatter(h[sel].clamp(min=eps).numpy(), d[sel].clamp(min=eps).numpy(), s=12, color=color, label=label)
    ax.scatter(h[planted].clamp(min=eps).numpy(), d[planted].clamp(min=eps).numpy(), s=70, facecolors="none",
               edgecolors="black", label="planted")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("student entropy (nats)")
    ax.set_ylabel("reverse KL to teacher (nats)")
    found = int((keep & planted).sum())
    ax.set_title(f"{rule}, ρ = {ratio:.2f}: keeps {int(keep.sum())} of {int(mask.sum())}, "
                 f"{found}/{int(planted.sum())} planted")
    ax.legend(loc="lower right", fontsize=10)
    fig.tight_layout()
    return fig
