"""Experiments and widget callbacks of ``notebooks/00_tour.ipynb``: the lab and its four scales.

Plain functions returning data or figures; the notebook prints, plots and asserts, pytest drives
the widget callback (:func:`bandit_explorer`).
"""

from __future__ import annotations

import importlib
import pkgutil
import re

import matplotlib.figure
import pandas as pd
import torch

import forklab
from forklab.envs import bandit as bd
from forklab.plots import PALETTE, band, use_style

__all__ = ["BANDIT_RECIPES", "METRICS", "FLOORS", "library_map", "library_floors", "metric_glossary",
           "bandit_explorer", "tour_bandit"]

# what the bandit widget's "recipe" means on a bandit: an advantage estimator and an update rule
BANDIT_RECIPES = {
    "grpo": ("grpo", "pg"),
    "dr_grpo (mean baseline)": ("mean", "pg"),
    "rloo": ("rloo", "pg"),
    "median (MC-GRPO)": ("median", "pg"),
    "reinforce (no baseline)": ("reinforce", "pg"),
}

# TRL's metric names (and a few of forklab's own) as RLTrainer logs them, with what to look for
METRICS = {
    "reward": ("mean reward of the step's rollouts", "rises; flat from step 0 means no signal (degenerate groups?)"),
    "accuracy": ("share of rollouts the verifier accepts (0/1 reward)", "rises while entropy falls"),
    "entropy": ("mean token entropy of the rollouts (nats), H_t = −Σ_v π log π",
                "falls under GRPO: entropy collapse (notebook 04)"),
    "completion_length": ("mean response length in tokens", "drifts with the aggregation mode (notebook 02)"),
    "frac_degenerate_groups": ("share of groups whose rewards are all equal (no gradient)", "p^G + (1−p)^G"),
    "clip_ratio/low_mean": ("share of tokens clipped at 1 − ε (A < 0)", "0 on-policy; grows with inner epochs"),
    "clip_ratio/high_mean": ("share of tokens clipped at 1 + ε (A > 0)", "clip-higher lowers it (notebook 03)"),
    "ratio/mean": ("mean π_θ / π_old over tokens", "1 on the first minibatch of each rollout"),
    "kl": ("k3 estimate of KL(π_θ ‖ π_ref) per token (only with a reference model)", "grows slowly from 0"),
    "grad_norm": ("global gradient norm before clipping", "spikes flag instability"),
    "covariance": ("mean Cov(log π, A) over tokens (The Entropy Mechanism)", "positive ⇒ entropy falls"),
}


def library_map() -> pd.DataFrame:
    """Every public module of ``forklab``: its first docstring line and the notebook that introduces it.

    Read from the modules themselves, so the table cannot drift from the code.
    """
    rows = []
    for info in pkgutil.walk_packages(forklab.__path__, "forklab."):
        name = info.name
        if any(part.startswith("_") for part in name.split(".")) or name.startswith("forklab.lessons"):
            continue
        module = importlib.import_module(name)
        doc = (module.__doc__ or "").strip()
        notebooks = sorted(set(re.findall(r"notebooks/(\d\d_[a-z0-9_]+)", doc)))
        rows.append(dict(module=name, what=doc.splitlines()[0] if doc else "", notebook=", ".join(notebooks)))
    return pd.DataFrame(rows)


# the library's floors, bottom to top; a module goes to the floor of its first name after ``forklab.``
FLOORS = {
    "formulas": ("advantages", "advantage_weighting", "prompt_selection", "offpolicy_reinforce", "aggregation",
                 "surrogates", "adaptive_clipping", "regularizers", "kl", "divergences", "fdivergences", "alignment",
                 "ops", "recipes", "distill"),
    "worlds": ("envs",),
    "language models": ("lm", "integrations"),
    "diagnostics": ("diagnostics",),
    "notebook tools": ("plots", "widgets", "progress", "runs", "exercises", "seeding", "paths", "lessons", "doctor"),
}


def library_floors() -> pd.DataFrame:
    """The library on one screen: one row per floor (:data:`FLOORS`), its modules by short name.

    Built from :func:`library_map` (plus ``forklab.lessons``), so a new module appears by itself; a
    package's submodules are listed as ``package.{a, b}``; a module of no known floor goes to ``other``.
    """
    names = [*library_map()["module"], "forklab.lessons"]
    members: dict[str, dict[str, list[str]]] = {floor: {} for floor in [*FLOORS, "other"]}
    for name in names:
        top, *sub = name.split(".")[1:]
        floor = next((f for f, tops in FLOORS.items() if top in tops), "other")
        members[floor].setdefault(top, []).extend(sub[:1])
    rows = []
    for floor, packages in members.items():
        if packages:
            shown = [f"{top}.{{{', '.join(sorted(set(subs)))}}}" if subs else top for top, subs in packages.items()]
            rows.append(dict(floor=floor, modules=", ".join(sorted(shown))))
    return pd.DataFrame(rows)


def metric_glossary(history: list[dict] | None = None) -> pd.DataFrame:
    """The glossary of :data:`METRICS`, with the values of ``history``'s last step when given."""
    last = history[-1] if history else {}
    return pd.DataFrame([dict(metric=k, meaning=v[0], what_to_look_for=v[1],
                              **({"last_step": last.get(k, float("nan"))} if history else {}))
                         for k, v in METRICS.items()])


def tour_bandit() -> bd.Bandit:
    """The tour's bandit: 20 arms ("responses"), 3 of them correct, the rest wrong."""
    probs = torch.zeros(20, dtype=torch.float64)
    probs[[3, 11, 17]] = 1.0
    return bd.Bandit.bernoulli(probs)


def bandit_explorer(lr: float = 0.5, group_size: int = 8, temperature: float = 1.0, recipe: str = "grpo",
                    steps: int = 60, num_seeds: int = 64, seed: int = 0) -> matplotlib.figure.Figure:
    """Widget callback: train the tour bandit and draw expected reward and entropy (mean ± s.e. over seeds).

    ``recipe`` is a key of :data:`BANDIT_RECIPES`. Every seed starts from the uniform policy; the
    curves are exact functions of each seed's policy (no sampling noise in what is drawn).
    """
    if recipe not in BANDIT_RECIPES:
        raise ValueError(f"`recipe` must be one of {list(BANDIT_RECIPES)}, got {recipe!r}")
    estimator, update = BANDIT_RECIPES[recipe]
    run = bd.train(tour_bandit(), steps=steps, lr=lr, group_size=group_size, num_seeds=num_seeds,
                   estimator=estimator, update=update, temperature=temperature, seed=seed)
    use_style()
    fig = matplotlib.figure.Figure(figsize=(9, 3.4), layout="constrained")
    axes = fig.subplots(1, 2)
    x = torch.arange(steps + 1)
    band(axes[0], x, run.history["reward"], color=PALETTE[0], label="expected reward")
    band(axes[0], x, run.history["pass@8"], color=PALETTE[1], label="pass@8")
    band(axes[1], x, run.history["entropy"], color=PALETTE[3], label="entropy")
    axes[0].set(xlabel="step", ylabel="reward", ylim=(0, 1.02),
                title=f"{recipe}: reward {run.mean('reward')[-1].item():.2f} after {steps} steps")
    axes[1].set(xlabel="step", ylabel="policy entropy (nats)",
                title=f"entropy {run.mean('entropy')[0].item():.2f} → {run.mean('entropy')[-1].item():.2f}")
    axes[0].legend(fontsize=10)
    fig.suptitle(f"lr = {lr}, G = {group_size}, T = {temperature}, {num_seeds} seeds", fontsize=11)
    return fig
