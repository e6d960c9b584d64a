"""Experiments and widget callbacks of ``notebooks/02_loss_aggregation.ipynb``.

Plain functions returning DataFrames, tensors or figures: the notebook prints, plots and asserts;
pytest drives the widget callback (:func:`length_gap_explorer`). The aggregation modes themselves
live in :mod:`forklab.aggregation`; nothing here re-implements them.

Vocabulary. A group has G responses with advantages A_i and lengths |o_i|. Every mode turns the
per-token loss ℓ_{i,t} = −A_i·(ratio term) into one number with per-token weights w_{i,t}
(``aggregation.token_weights``), so one token's share of the gradient is w_{i,t}·|A_i|. The
*push* of a side (positive: A > 0, negative: A < 0) is Σ_{i in side} Σ_t w_{i,t}·|A_i|.
"""

from __future__ import annotations

import itertools

import matplotlib.figure
import numpy as np
import pandas as pd
import torch

from forklab.advantages import grpo
from forklab.aggregation import token_weights
from forklab.envs import seqpolicy as sp
from forklab.plots import PALETTE, use_style

__all__ = [
    "MAIN_MODES",
    "MODE_LABELS",
    "ragged_mask",
    "token_shares",
    "side_push",
    "exact_side_push",
    "sign_balance_table",
    "length_gap_explorer",
    "lm_mode_runs",
    "aggregation_figure",
]

# the four modes the papers compare (token-sum and seq-mean-token-sum only rescale these)
MAIN_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm", "balanced")
MODE_LABELS = {"token-mean": "token-mean (DAPO)", "seq-mean-token-mean": "seq-mean (GRPO)",
               "seq-mean-token-sum-norm": "Dr. GRPO", "balanced": "Balanced Aggregation"}
# Dr. GRPO draws on top of token-mean and BA on top of seq-mean in panels (a, b): thick pale under thin
_STYLE = {"token-mean": dict(lw=5, alpha=0.45), "seq-mean-token-mean": dict(lw=5, alpha=0.45),
          "seq-mean-token-sum-norm": dict(lw=1.6), "balanced": dict(lw=1.6)}


def ragged_mask(lengths) -> torch.Tensor:
    """``[B, max(lengths)]`` bool mask with row i true on its first ``lengths[i]`` positions."""
    lengths = torch.as_tensor(lengths, dtype=torch.long)
    if lengths.ndim != 1 or len(lengths) == 0 or (lengths < 1).any():
        raise ValueError(f"`lengths` must be a non-empty 1-D sequence of positive ints, got {lengths.tolist()}")
    return torch.arange(int(lengths.max()))[None, :] < lengths[:, None]


def token_shares(lengths, adv, mode: str, norm_len: float | None = None) -> torch.Tensor:
    """One group: the share of the group's total gradient weight each token carries, ``[G, T]``.

    share_{i,t} = w_{i,t}|A_i| / Σ_{j,s} w_{j,s}|A_j| with w from :func:`aggregation.token_weights`;
    shares sum to 1, so modes that differ only by a constant factor (token-mean, token-sum and, inside
    one group, Dr. GRPO) give identical shares.
    """
    mask = ragged_mask(lengths)
    adv = torch.as_tensor(adv, dtype=torch.float64)
    group = torch.zeros(len(adv), dtype=torch.long)
    w = token_weights(mask, mode, adv, group, norm_len=norm_len).double() * adv.abs()[:, None]
    return w / w.sum()


def side_push(mask: torch.Tensor, adv: torch.Tensor, group: torch.Tensor, mode: str) -> tuple[torch.Tensor, ...]:
    """Per group: (positive push, negative push), each ``[num_groups]``; groups must be labelled 0..n−1."""
    w = token_weights(mask, mode, adv, group).double() * adv.abs().double()[:, None]
    per_response = w.sum(1)
    n = int(group.max()) + 1
    pos = torch.zeros(n, dtype=torch.float64).index_add_(0, group, per_response * (adv > 0))
    neg = torch.zeros(n, dtype=torch.float64).index_add_(0, group, per_response * (adv < 0))
    return pos, neg


def exact_side_push(task: sp.Task, prompt: int, modes=MAIN_MODES, policy: sp.SequencePolicy | None = None,
                    group_size: int = 2) -> pd.DataFrame:
    """E over every group of ``group_size`` responses ~ π of each side's push, by exact enumeration.

    Every ordered G-tuple of the N enumerated responses is one group (N^G groups; G ≤ 3 keeps this
    small), weighted by Π π(y_i | x); GRPO advantages; degenerate groups push nowhere. Returns one row
    per mode with ``pos``, ``neg`` and ``pos_share`` = pos / (pos + neg). ``policy`` defaults to the
    uniform tabular policy.
    """
    if group_size not in (2, 3):
        raise ValueError(f"`group_size` must be 2 or 3 (N^G groups are enumerated), got {group_size}")
    policy = policy or sp.TabularPolicy(task.num_prompts, task.vocab_size, task.max_len)
    responses = sp.enumerate_responses(task.vocab_size, task.max_len)
    with torch.no_grad():
        probs = sp.response_probs(policy)[prompt].double()
    n = len(probs)
    idx = torch.tensor(list(itertools.product(range(n), repeat=group_size)))  # [N^G, G]
    rewards = task.rewards[prompt][idx]  # [N^G, G]
    keep = rewards.amax(1) > rewards.amin(1)
    idx, rewards = idx[keep], rewards[keep]
    weight = probs[idx].prod(1)
    num = len(idx)
    group = torch.arange(num).repeat_interleave(group_size)
    adv = grpo(rewards.reshape(-1), group)
    mask = responses.mask[idx.reshape(-1)]
    rows = []
    for mode in modes:
        pos, neg = side_push(mask, adv, group, mode)
        p, q = float(weight @ pos), float(weight @ neg)
        rows.append(dict(mode=mode, pos=p, neg=q, pos_share=p / (p + q)))
    return pd.DataFrame(rows)


def sign_balance_table(correct_lengths=(1, 2, 3, 4), answers: int = 2, modes=MAIN_MODES,
                       group_size: int = 2) -> pd.DataFrame:
    """Positive share of the push vs the length gap: one single-prompt task per correct length ℓ.

    Task: ``seqpolicy.Task.with_length_gap((ℓ,), (answers,))`` (``answers`` correct responses, all of
    length ℓ, END counted); uniform policy; exact expectation over groups. Columns: ``correct_length``,
    ``length_gap`` (E[len | correct] − E[len | wrong]), then one ``pos_share`` column per mode.
    """
    rows = []
    for ell in correct_lengths:
        task = sp.Task.with_length_gap((int(ell),), (int(answers),))
        gap = float(sp.length_gap(sp.TabularPolicy(1, task.vocab_size, task.max_len), task)[0])
        push = exact_side_push(task, 0, modes, group_size=group_size).set_index("mode")["pos_share"]
        rows.append(dict(correct_length=int(ell), length_gap=gap, **push.to_dict()))
    return pd.DataFrame(rows)


def length_gap_explorer(correct_length: int = 2, answers: int = 2, group_size: int = 2) -> matplotlib.figure.Figure:
    """Widget callback: how each mode splits the push between correct and wrong responses.

    One prompt whose ``answers`` correct responses (capped at the 3^(ℓ−1) responses of that length)
    all have length ``correct_length`` (so the wrong
    ones are on average longer when it is short, shorter when it is long); uniform policy; exact over
    every group of ``group_size``. Bars: each mode's positive and negative push, normalised to sum 1;
    0.5/0.5 means the sign balance does not depend on lengths.
    """
    max_count = 3 ** (int(correct_length) - 1)  # responses of that length: V^(ℓ−1)
    if int(answers) < 1:
        raise ValueError(f"`answers` must be >= 1, got {answers}")
    answers = min(int(answers), max_count)  # the widget's slider can ask for more than exist; cap, and say so
    task = sp.Task.with_length_gap((int(correct_length),), (answers,))
    gap = float(sp.length_gap(sp.TabularPolicy(1, task.vocab_size, task.max_len), task)[0])
    table = exact_side_push(task, 0, group_size=group_size)
    use_style()
    fig = matplotlib.figure.Figure(figsize=(7.5, 3.4), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(table))
    ax.bar(x - 0.18, table["pos_share"], 0.36, color=PALETTE[2], label="correct (A > 0)")
    ax.bar(x + 0.18, 1 - table["pos_share"], 0.36, color=PALETTE[3], label="wrong (A < 0)")
    ax.axhline(0.5, color="0.4", lw=0.8, ls="--")
    ax.set_xticks(x, [MODE_LABELS[m] for m in table["mode"]])
    ax.set(ylim=(0, 1), ylabel="share of the gradient push",
           title=f"{answers} correct of length {correct_length}: wrong responses are {abs(gap):.2f} tokens "
                 f"{'longer' if gap < 0 else 'shorter'} (G = {group_size})")
    ax.legend(loc="upper right", fontsize=10)
    return fig


def lm_mode_runs(modes=MAIN_MODES, steps: int = 150, lr: float = 3e-4, seed: int = 0,
                 model_name: str = "student-graph", task_kwargs: dict | None = None,
                 max_new_tokens: int = 7, eval_size: int = 128, dtype: str | None = "float64",
                 progress: bool = True):
    """Tiny-LM GRPO runs, one per aggregation mode, same checkpoint, seed and data order.

    The ``grpo`` preset with only ``aggregation`` changed; the shipped graph student on
    ``graph_path(shortest=True)`` (its wrong answers are longer than its correct ones). ``dtype``:
    the model's and trainer's dtype (float64 by default, so that CPU kernel rounding cannot flip a
    sampled token and change the run); ``progress``: a tqdm bar per run (off under tests and CI,
    see :mod:`forklab.progress`). Returns ``(histories: {mode: [step dicts]}, summary: DataFrame)``
    with held-out accuracy before and after.
    """
    import forklab
    from forklab import recipes
    from forklab.lm.models import load_tiny
    from forklab.lm.trainer import RLConfig, RLTrainer

    task_kwargs = {"shortest": True} if task_kwargs is None else task_kwargs
    histories, rows = {}, []
    for mode in modes:
        forklab.seed_everything(seed)
        model, tokenizer = load_tiny(model_name, dtype=dtype or "float32")
        recipe = recipes.get("grpo", aggregation=mode).replace(name=mode)
        config = RLConfig(task="graph_path", task_kwargs=task_kwargs, max_new_tokens=max_new_tokens, lr=lr,
                          eval_every=0, eval_size=eval_size, seed=seed, dtype=dtype)
        trainer = RLTrainer(model, tokenizer, recipe, config)
        start = trainer.evaluate()
        history = trainer.train(steps=steps, progress=progress)
        end = trainer.evaluate()
        histories[mode] = history
        first, last = history[:20], history[-20:]
        mean = lambda rows_, key: float(np.mean([r[key] for r in rows_]))  # noqa: E731
        rows.append(dict(mode=mode, sampled_start=start["eval/sampled_accuracy"],
                         sampled_end=end["eval/sampled_accuracy"], greedy_end=end["eval/greedy_accuracy"],
                         pass8_end=end["eval/pass@8"], length_first20=mean(first, "completion_length"),
                         length_last20=mean(last, "completion_length"), entropy_first20=mean(first, "entropy"),
                         entropy_last20=mean(last, "entropy")))
    return histories, pd.DataFrame(rows)


def aggregation_figure(lengths, adv, balance: pd.DataFrame, histories: dict) -> matplotlib.figure.Figure:
    """The notebook's figure: (a) one token's share vs its response length per mode, for one group;
    (b) positive share of the push vs length gap (exact, sequence policy); (c–e) tiny-LM curves."""
    use_style()
    fig = matplotlib.figure.Figure(figsize=(13, 6.4), layout="constrained")
    grid = fig.add_gridspec(2, 6)
    ax_w, ax_b = fig.add_subplot(grid[0, :3]), fig.add_subplot(grid[0, 3:])
    ax_lm = [fig.add_subplot(grid[1, 2 * i : 2 * i + 2]) for i in range(3)]
    lengths_t = torch.as_tensor(lengths)
    adv_t = torch.as_tensor(adv, dtype=torch.float64)
    for color, mode in zip(PALETTE, MAIN_MODES, strict=False):
        share = token_shares(lengths_t, adv_t, mode)[:, 0]
        for sign, marker, ls in ((1, "^", "-"), (-1, "v", "--")):
            rows = torch.nonzero(torch.sign(adv_t) == sign).flatten()
            order = rows[lengths_t[rows].argsort()]
            ax_w.plot(lengths_t[order], share[order], marker=marker, ls=ls, color=color,
                      label=MODE_LABELS[mode] if sign > 0 else None, **_STYLE[mode])
    ax_w.set(xlabel="response length |o| (tokens)", ylabel="share of the group's gradient per token",
             title="(a) one group: seq-mean weighs a token 1/|o|;\nthe other modes a flat weight per side")
    ax_w.legend(fontsize=10, title="solid ▲ correct, dashed ▼ wrong", title_fontsize=10)
    for color, mode in zip(PALETTE, MAIN_MODES, strict=False):
        ax_b.plot(balance["length_gap"], balance[mode], marker="o", color=color, label=MODE_LABELS[mode],
                  **_STYLE[mode])
    ax_b.axhline(0.5, color="0.4", lw=0.8, ls="--")
    ax_b.legend(fontsize=10, title="Dr. GRPO = token-mean; BA = seq-mean here", title_fontsize=10)
    ax_b.set(xlabel="length gap E[len | correct] − E[len | wrong]", ylabel="positive share of the push",
             title="(b) only token-mean ties the sign balance\nto the length gap")
    smooth = lambda xs: np.convolve(xs, np.ones(15) / 15, mode="valid")  # noqa: E731
    for key, ax, label in (("accuracy", ax_lm[0], "rollout accuracy"), ("completion_length", ax_lm[1], "length"),
                           ("entropy", ax_lm[2], "token entropy (nats)")):
        for color, (mode, history) in zip(PALETTE, histories.items(), strict=False):
            ax.plot(np.arange(15, len(history) + 1), smooth([h[key] for h in history]), color=color,
                    label=MODE_LABELS.get(mode, mode))
        ax.set(xlabel="GRPO step", ylabel=f"{label} (15-step mean)")
    ax_lm[0].set_title("(c) tiny LM, graph paths (shortest only)")
    ax_lm[1].set_title("(d) responses get shorter")
    ax_lm[2].set_title("(e) entropy falls in every mode")
    ax_lm[0].legend(fontsize=10)
    return fig
