"""Experiments of ``notebooks/09_on_policy_distillation.ipynb``: exact toys for on-policy distillation (OPD).

Every toy is small enough to enumerate, so each claim is checked against an exact sum, not a sample:

- an *enumerable sequence space* (all V^L token sequences, a tabular autoregressive policy with one
  logit vector per prefix) for OPD as dense KL-regularised RL and for the gradient-alignment view;
- a *bandit* (one step, K arms = K whole responses) for JSD(β) against a bimodal teacher, for G-OPD's
  reward extrapolation and for KDRL;
- the shipped tiny LMs (``teacher-addition`` → ``student-addition``) through
  :class:`forklab.lm.distill_trainer.DistillTrainer` for real distillation runs.

The gradient-alignment score is **LOW** confidence: "Unmasking On-Policy Distillation" (arXiv
2605.10889) was read as an abstract only; the per-node estimator below is our reconstruction.
"""

from __future__ import annotations

import math

import matplotlib.figure
import matplotlib.pyplot as plt
import pandas as pd
import torch
from torch import Tensor

from forklab import divergences as dv
from forklab.plots import PALETTE, use_style

__all__ = ["sequence_space", "token_log_probs", "node_conditionals", "success_values", "gradient_alignment",
           "rollout_alignment", "gaussian_arms", "fit_gaussian_student", "bimodal_teacher",
           "gopd_bandit_run",
           "kdrl_bandit_run", "student_rewards", "distill_runs", "gap_closed", "bandit_figure", "curves_figure",
           "explore"]


# ----- enumerable sequences -------------------------------------------------------------------------
def sequence_space(vocab: int, length: int) -> tuple[Tensor, Tensor, int]:
    """All sequences of ``length`` tokens over ``vocab`` and the prefix (node) of each position.

    Returns ``(seqs [V^L, L] long, nodes [V^L, L] long, num_nodes)``; ``nodes[i, t]`` indexes the prefix
    ``seqs[i, :t]`` among all prefixes of length 0..L−1 (the root is node 0).
    """
    if vocab < 2 or length < 1:
        raise ValueError(f"`vocab` must be >= 2 and `length` >= 1, got {vocab}, {length}")
    seqs = torch.cartesian_prod(*[torch.arange(vocab)] * length).reshape(-1, length)
    nodes = torch.zeros_like(seqs)
    for t in range(1, length):
        offset = (vocab**t - 1) // (vocab - 1)
        code = torch.zeros(len(seqs), dtype=torch.long)
        for j in range(t):
            code = code * vocab + seqs[:, j]
        nodes[:, t] = offset + code
    return seqs, nodes, (vocab**length - 1) // (vocab - 1)


def token_log_probs(node_logits: Tensor, seqs: Tensor, nodes: Tensor) -> Tensor:
    """log π(y_t | y_<t) of every sequence at every position, ``[V^L, L]``, for ``node_logits [num_nodes, V]``."""
    log_p = torch.log_softmax(node_logits, -1)
    return log_p[nodes, seqs]


def node_conditionals(seq_probs: Tensor, seqs: Tensor, nodes: Tensor, num_nodes: int, vocab: int) -> Tensor:
    """The autoregressive conditionals p(v | s) of a distribution over whole sequences, ``[num_nodes, V]``.

    Prefixes of probability 0 get the uniform distribution (they are never visited).
    """
    mass = torch.zeros(num_nodes, vocab, dtype=seq_probs.dtype)
    for t in range(seqs.shape[1]):
        mass.index_put_((nodes[:, t], seqs[:, t]), seq_probs, accumulate=True)
    total = mass.sum(-1, keepdim=True)
    return torch.where(total > 0, mass / total.clamp_min(1e-300), torch.full_like(mass, 1.0 / vocab))


def success_values(node_logits: Tensor, seqs: Tensor, nodes: Tensor, success: Tensor) -> Tensor:
    """V(s, v) = P_π(success | prefix s, next token v), ``[num_nodes, V]`` (exact, by enumeration)."""
    num_nodes, vocab = node_logits.shape
    lp = token_log_probs(node_logits, seqs, nodes)
    value = torch.zeros(num_nodes, vocab, dtype=node_logits.dtype)
    for t in range(seqs.shape[1]):
        future = lp[:, t + 1 :].sum(-1).exp()  # P(rest of the sequence | s_t, y_t)
        value.index_put_((nodes[:, t], seqs[:, t]), future * success.to(future.dtype), accumulate=True)
    return value


def gradient_alignment(student_logits: Tensor, teacher_logits: Tensor, values: Tensor, tol: float = 1e-12) -> Tensor:
    """GAS per node (LOW confidence): cos(g*, −g_distill) over the node's own logits, ``[num_nodes]``.

    g* = ∇_z Σ_v π(v|s) V(s, v) = π ⊙ (V − π·V), the update that most raises P(success | s);
    g_distill = ∇_z KL(π(·|s) ‖ π_T(·|s)) = π ⊙ (ℓ − π·ℓ) with ℓ = log π − log π_T. NaN where either
    gradient is below ``tol`` (nothing to align: the node's choice does not change success, or the
    student already equals the teacher there).
    """
    pi = torch.softmax(student_logits, -1)
    ideal = pi * (values - (pi * values).sum(-1, keepdim=True))
    ell = torch.log_softmax(student_logits, -1) - torch.log_softmax(teacher_logits, -1)
    distill = pi * (ell - (pi * ell).sum(-1, keepdim=True))
    cos = torch.nn.functional.cosine_similarity(ideal, -distill, dim=-1)
    small = (ideal.norm(dim=-1) < tol) | (distill.norm(dim=-1) < tol)
    return torch.where(small, torch.full_like(cos, math.nan), cos)


def rollout_alignment(gas: Tensor, nodes: Tensor, seq_probs: Tensor, success: Tensor) -> dict[str, float]:
    """Mean GAS over the defined nodes of each rollout, averaged under π over correct and incorrect rollouts."""
    per_node = gas[nodes]  # [N, L]
    defined = ~torch.isnan(per_node)
    per_seq = torch.where(defined, per_node, 0.0).sum(-1) / defined.sum(-1).clamp_min(1)
    keep = defined.any(-1)
    out = {}
    for name, mask in (("correct", success & keep), ("incorrect", ~success & keep)):
        w = seq_probs * mask
        out[name] = float((w * per_seq).sum() / w.sum())
    return out


# ----- bandit: JSD(β) against a bimodal teacher ------------------------------------------------------
def gaussian_arms(mean: Tensor, log_std: Tensor, num_arms: int) -> Tensor:
    """A capacity-limited student: arm logits −(k − μ)²/(2σ²) for arms k = 0..K−1, ``[K]``."""
    k = torch.arange(num_arms, dtype=torch.float64)
    return -((k - mean) ** 2) / (2 * torch.exp(2 * log_std))


def bimodal_teacher(num_arms: int = 21) -> Tensor:
    """Teacher logits ``[K]``: two modes, 60% of the mass around arm 5 and 40% around arm 15."""
    k = torch.arange(num_arms, dtype=torch.float64)
    p = 0.6 * torch.exp(-((k - 5) ** 2) / 4) + 0.4 * torch.exp(-((k - 15) ** 2) / 4)
    return torch.log(p / p.sum())


def fit_gaussian_student(teacher_logits: Tensor, beta: float, num_means: int = 201,
                         num_stds: int = 81) -> Tensor:
    """The (μ, σ) student minimising ``forklab.divergences.jsd(student, teacher, beta)``; returns its log-probs ``[K]``.

    β = 0 is the forward KL(t‖s), β = 1 the reverse KL(s‖t) (TRL's GKD convention). A grid search
    (μ ∈ [0, K−1] in steps of (K−1)/(num_means−1), σ log-spaced in [0.5, 8]) finds the *global* optimum,
    where a gradient method would stop at whichever mode it started next to.
    """
    k = len(teacher_logits)
    means = torch.linspace(0, k - 1, num_means, dtype=torch.float64)
    log_stds = torch.linspace(math.log(0.5), math.log(8.0), num_stds, dtype=torch.float64)
    mu, log_sd = torch.meshgrid(means, log_stds, indexing="ij")
    students = gaussian_arms(mu.reshape(-1, 1), log_sd.reshape(-1, 1), k)  # [G, K]
    values = dv.jsd(students, teacher_logits.expand_as(students), beta=beta)
    return torch.log_softmax(students[values.argmin()], -1)


# ----- bandit: G-OPD and KDRL ------------------------------------------------------------------------
def gopd_bandit_run(ref_probs: Tensor, teacher_probs: Tensor, lam: float, steps: int = 3000, lr: float = 1.0) -> Tensor:
    """Exact expected G-OPD policy gradient on softmax logits, started at π_ref; returns the final π ``[K]``.

    Per-arm advantage (G-OPD's code, one token): Â = λ(log π_T − log π_ref) − (log π − log π_ref), the
    expected PG step θ += lr·π ⊙ (Â − π·Â).
    """
    theta = ref_probs.log().clone()
    for _ in range(int(steps)):
        pi = torch.softmax(theta, -1)
        adv = lam * (teacher_probs.log() - ref_probs.log()) - (pi.log() - ref_probs.log())
        theta = theta + lr * pi * (adv - (pi * adv).sum())
    return torch.softmax(theta, -1)


def kdrl_bandit_run(bandit, start_logits: Tensor, teacher_probs: Tensor, kd_coef: float, steps: int,
                    lr: float = 1.0, group_size: int = 8, mask_correct: bool = False, rl: bool = True) -> pd.DataFrame:
    """Exact expected KDRL update on a bandit: GRPO's expected advantage minus kd_coef × k2's gradient weight.

    Per arm k: Â_k = [rl]·E[A_GRPO | a = k] − kd_coef·[k wrong, if ``mask_correct``]·ℓ_k with
    ℓ = log π − log π_T (k2 = ½ℓ² as a loss has gradient ℓ·∇log π, so its expected gradient is
    ∇KL(π‖π_T)); step θ += lr·π ⊙ (Â − π·Â). Returns one row per step: P(correct) and KL(π‖π_T).
    """
    from forklab.envs.bandit import expected_advantages, policy_gradient

    correct = bandit.success >= 0.5
    theta = start_logits.clone()
    rows = []
    for step in range(int(steps) + 1):
        pi = torch.softmax(theta, -1)
        ell = pi.log() - teacher_probs.log()
        rows.append({"step": step, "P(correct)": float(pi[correct].sum()), "KL(π‖π_T)": float((pi * ell).sum())})
        if step == steps:
            break
        adv = expected_advantages(bandit, pi[None], "grpo", group_size)[0] if rl else torch.zeros_like(pi)
        kd = kd_coef * ell * ((~correct).double() if mask_correct else 1.0)
        theta = theta + lr * policy_gradient(pi[None], (adv - kd)[None])[0]
    return pd.DataFrame(rows)


def student_rewards(num_prompts: int = 64, samples: int = 8, seed: int = 0) -> Tensor:
    """0/1 rewards of the shipped ``student-addition`` (float64, T = 1), ``samples`` answers per prompt: ``[P, n]``."""
    from forklab.envs import tasks as task_lib
    from forklab.lm._rollout import decode_responses, sample_groups
    from forklab.lm.models import load_tiny

    student, tokenizer = load_tiny("student-addition", dtype="float64")
    task = task_lib.get_task("addition")
    pool = task.make_split("train", 4000, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        examples, s = sample_groups(student, tokenizer, pool, num_prompts, samples, generator, 6)
    texts = decode_responses(tokenizer, s.tokens, s.mask)
    ok = torch.tensor([task.reward(examples[i // samples], t) for i, t in enumerate(texts)], dtype=torch.float64)
    return ok.reshape(num_prompts, samples)


# ----- tiny LMs ------------------------------------------------------------------------------------
def distill_runs(schedules: dict[str, list[tuple]], seeds, config_kwargs: dict,
                 progress_bar: bool = False) -> pd.DataFrame:
    """Distil ``teacher-addition`` into a fresh ``student-addition`` (float64) for each schedule and seed.

    A schedule is a list of stages run one after the other: ``(divergence, steps)`` uses the trainer's
    ``divergence`` (switched between stages, e.g. forward KL then reverse KL), ``(objective, steps, kwargs)``
    a :mod:`forklab.distill` objective (one stage only: the objective is fixed when the trainer is built).
    Returns one row per evaluation (step 0 included): ``schedule, seed, step, sampled_accuracy,
    greedy_accuracy, teacher_sampled`` (the teacher's sampled accuracy on the same prompts).
    """
    from forklab.lm.distill_trainer import DistillConfig, DistillTrainer
    from forklab.lm.models import load_tiny
    from forklab.progress import progress

    teacher, tokenizer = load_tiny("teacher-addition", dtype="float64")
    jobs = [(name, seed) for name in schedules for seed in seeds]
    rows, teacher_acc = [], {}
    for name, seed in progress(jobs, desc="distillation runs") if progress_bar else jobs:
        stages = schedules[name]
        objective = {"objective": stages[0][0], "objective_kwargs": stages[0][2]} if len(stages[0]) == 3 else {}
        if objective and len(stages) > 1:
            raise ValueError(f"schedule {name!r}: an objective stage must be the only stage")
        student, _ = load_tiny("student-addition", dtype="float64")
        trainer = DistillTrainer(student, teacher, tokenizer,
                                 DistillConfig(dtype="float64", seed=seed, divergence=stages[0][0] if not objective
                                               else "reverse_kl", **objective, **config_kwargs))
        c = trainer.config
        if seed not in teacher_acc:
            teacher_acc[seed] = _evaluate(teacher, trainer, 10_000 + seed)["eval/sampled_accuracy"]
        start = _evaluate(student, trainer, c.seed + 1)
        rows.append({"schedule": name, "seed": seed, "step": 0, "sampled_accuracy": start["eval/sampled_accuracy"],
                     "greedy_accuracy": start["eval/greedy_accuracy"], "teacher_sampled": teacher_acc[seed]})
        for stage in stages:
            if not objective:
                c.divergence = stage[0]
            for _ in range(int(stage[1])):
                metrics = trainer.step()
                if "eval/sampled_accuracy" in metrics:
                    rows.append({"schedule": name, "seed": seed, "step": trainer.step_count,
                                 "sampled_accuracy": metrics["eval/sampled_accuracy"],
                                 "greedy_accuracy": metrics["eval/greedy_accuracy"],
                                 "teacher_sampled": teacher_acc[seed]})
    return pd.DataFrame(rows)


def _evaluate(model, trainer, generator_seed: int) -> dict[str, float]:
    from forklab.lm.trainer import evaluate

    c = trainer.config
    return evaluate(model, trainer.tokenizer, trainer.task, trainer.eval_examples, c.max_new_tokens, c.pass_k,
                    c.temperature, torch.Generator().manual_seed(generator_seed))


def gap_closed(runs: pd.DataFrame) -> pd.DataFrame:
    """Share of the teacher–student gap closed at the last evaluation, per schedule and seed (in ``runs``' order).

    gap closed = (acc_final − acc_start) / (acc_teacher − acc_start), sampled accuracy at T = 1.
    """
    keys = ["schedule", "seed"]
    first = runs[runs.step == 0].set_index(keys)
    last = runs.sort_values("step", kind="stable").groupby(keys, sort=False).last().reindex(first.index)
    share = (last.sampled_accuracy - first.sampled_accuracy) / (first.teacher_sampled - first.sampled_accuracy)
    return share.rename("gap closed").reset_index()


# ----- figures and widget ---------------------------------------------------------------------------
def bandit_figure(teacher_logits: Tensor, fits: dict[str, Tensor], ref: Tensor, gopd: dict[float, Tensor],
                  correct: Tensor) -> matplotlib.figure.Figure:
    """Left: one-bump students fitted to the bimodal teacher (``{label: log-probs}``); right: G-OPD's optimum per λ."""
    use_style()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 4.0))
    arms = torch.arange(len(teacher_logits))
    left.bar(arms, teacher_logits.exp(), color="0.8", label="teacher")
    for i, (label, logits) in enumerate(fits.items()):
        left.plot(arms, logits.exp(), marker="o", ms=3, color=PALETTE[i], label=label)
    top = max(float(teacher_logits.exp().max()), *(float(v.exp().max()) for v in fits.values()))
    left.set(xlabel="arm (response)", ylabel="probability", title="student fit by JSD(β)", ylim=(0, 1.45 * top))
    left.legend(loc="upper right")
    k = torch.arange(len(ref))
    width = 0.8 / (len(gopd) + 1)
    right.bar(k - 0.4 + width / 2, ref, width, color="0.6", label="π_ref (student at start)")
    for i, (lam, pi) in enumerate(gopd.items()):
        right.bar(k - 0.4 + width * (i + 1.5), pi, width, color=PALETTE[i], label=f"G-OPD λ = {lam:g}")
    right.set_xticks(k.tolist(), [f"{int(a)} ✓" if ok else str(int(a)) for a, ok in zip(k, correct, strict=True)])
    right.set(xlabel="arm (✓ = correct)", ylabel="probability", title="G-OPD: π_ref^(1−λ) π_T^λ")
    right.legend(loc="upper left")
    fig.tight_layout()
    return fig


def curves_figure(runs: pd.DataFrame) -> matplotlib.figure.Figure:
    """Sampled accuracy vs step per schedule (mean over seeds, band = min..max), teacher as a dashed line."""
    use_style()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for i, (name, group) in enumerate(runs.groupby("schedule", sort=False)):
        stats = group.groupby("step").sampled_accuracy.agg(["mean", "min", "max"])
        ax.plot(stats.index, stats["mean"], marker="o", ms=4, color=PALETTE[i], label=name)
        ax.fill_between(stats.index, stats["min"], stats["max"], color=PALETTE[i], alpha=0.15)
    ax.axhline(runs.teacher_sampled.mean(), ls="--", color="0.3", label="teacher")
    ax.set(xlabel="distillation step", ylabel="sampled accuracy (T = 1)",
           title="tiny teacher → tiny student, on-policy")
    ax.set_ylim(min(0.4, float(runs.sampled_accuracy.min()) - 0.05), 1.08)
    ax.legend(loc="upper left", ncol=3)
    fig.tight_layout()
    return fig


def explore(beta: float = 0.5, lam: float = 1.0) -> matplotlib.figure.Figure:
    """Widget callback: the JSD(β) fit to the bimodal teacher and G-OPD's optimum at λ on a 6-arm bandit."""
    beta, lam = float(beta), float(lam)
    if not 0 <= beta <= 1:
        raise ValueError(f"`beta` must lie in [0, 1], got {beta}")
    teacher = bimodal_teacher()
    fit = fit_gaussian_student(teacher, beta)
    ref = torch.tensor([0.3, 0.25, 0.2, 0.1, 0.1, 0.05], dtype=torch.float64)
    reward = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    tilted = ref * torch.exp(2 * reward)
    pi_t = tilted / tilted.sum()
    geo = ref ** (1 - lam) * pi_t**lam
    return bandit_figure(teacher, {f"β = {beta:g}": fit}, ref, {lam: geo / geo.sum()}, reward > 0)
