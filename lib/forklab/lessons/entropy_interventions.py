"""Experiments of ``notebooks/05_entropy_interventions.ipynb``: twelve entropy interventions, one loop.

The formulas live in :mod:`forklab.entropy_objectives`, :mod:`forklab.entropy_control`,
:mod:`forklab.regularizers` and :mod:`forklab.surrogates`; everything here runs them.

==============================  ====================================================================
function                        what it runs
==============================  ====================================================================
``many_arm_bandit``             K arms, a few plausible (some correct), the rest junk with tiny mass
``hidden_best_bandit``          a likely half-right arm and a rare always-right arm
``rare_correct_bandit``         6 arms, 2 correct with π = 0.40 and 0.05 at the start
``bandit_runs``                 sampled GRPO + one intervention per method, same seeds, per-step curves
``lm_runs``                     the tiny LM (float64) under recipe presets and controller hooks
``curves_figure``               entropy / accuracy / pass@k, one line per intervention
==============================  ====================================================================

Bandit loop, per seed and step (each arm pull is a one-token response; a group is G pulls)::

    p = softmax(θ); record H(p), accuracy = p · success, pass@k = 1 − (1 − accuracy)^k
    arms ~ p (num_groups × G), rewards, Â = GRPO(rewards, group)
    method-specific: controller update, re-sampled batch, mixed advantage, extra loss term
    inner_steps × { θ ← θ − lr · ∇ loss }
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from forklab import _checks
from forklab import entropy_control as ctl
from forklab import entropy_objectives as eo
from forklab import regularizers as reg
from forklab import surrogates as sur
from forklab.advantages import grpo
from forklab.envs.bandit import Bandit
from forklab.progress import progress

__all__ = ["many_arm_bandit", "hidden_best_bandit", "rare_correct_bandit", "BANDIT_METHODS", "bandit_runs",
           "lm_runs", "curves_figure"]

BANDIT_METHODS = ("grpo", "clip_higher", "entropy_bonus", "skywork", "siren", "arbitrary_entropy",
                  "distribution_centric", "safe_official", "safe_intended", "lp_reg", "steer", "progrpo_arm",
                  "agentic_eb_po")


def many_arm_bandit(num_arms: int = 1000, num_plausible: int = 10, num_correct: int = 3, junk_logit: float = -7.0,
                    seed: int = 0) -> tuple[Bandit, Tensor]:
    """(bandit, initial logits ``[K]``): ``num_plausible`` arms with logits ~ N(0, 1), of which the
    first ``num_correct`` are correct, and K − num_plausible junk arms at ``junk_logit`` (wrong).
    Like an LM's vocabulary: a few sensible tokens hold the mass, a long tail holds a little each."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.full((num_arms,), float(junk_logit), dtype=torch.float64)
    logits[:num_plausible] = torch.randn(num_plausible, generator=gen, dtype=torch.float64)
    return Bandit.correct_arms(num_arms, range(num_correct)), logits


def hidden_best_bandit(num_arms: int = 10, p_likely: float = 0.5, rare_logit: float = -3.0) -> tuple[Bandit, Tensor]:
    """(bandit, initial logits): arm 0 is likely (logit 2) and right with probability ``p_likely``;
    arm 1 is rare (``rare_logit``) and always right; the rest are wrong (logit 0). Collapsing early
    locks in arm 0; exploring finds arm 1; too much entropy spreads mass onto wrong arms."""
    p = torch.zeros(num_arms, dtype=torch.float64)
    p[0], p[1] = p_likely, 1.0
    logits = torch.zeros(num_arms, dtype=torch.float64)
    logits[0], logits[1] = 2.0, rare_logit
    return Bandit.bernoulli(p), logits


def rare_correct_bandit(p_rare: float = 1.0) -> tuple[Bandit, Tensor]:
    """(bandit, initial logits): 6 arms, arms 0 and 1 correct with π = 0.40 and 0.05 at the start,
    the rest wrong. Arm 1 passes with probability ``p_rare`` (below 1: a plausible answer that
    sometimes fails, so it also appears in negative samples)."""
    probs = torch.tensor([0.40, 0.05, 0.1375, 0.1375, 0.1375, 0.1375], dtype=torch.float64)
    p = torch.tensor([1.0, float(p_rare), 0, 0, 0, 0], dtype=torch.float64)
    return Bandit.bernoulli(p), probs.log()


def _entropy(theta: Tensor) -> Tensor:
    logp = torch.log_softmax(theta, -1)
    return -(logp.exp() * logp).sum(-1)


def _hot_batch(z, bandit, gen, temperature, num_groups, group_size):
    """Arbitrary-Entropy PO's re-sampled positives of one seed: arms drawn at T whose GRPO Â > 0.05."""
    n = max(num_groups // 4, 1) * group_size
    arms = torch.multinomial(torch.softmax(z / temperature, -1), n, replacement=True, generator=gen)
    adv = grpo(bandit.sample_rewards(arms, gen), torch.arange(n) // group_size)
    return arms[adv > 0.05]


class _State:
    """Controller state of every seed (coefficients, anchors, previous entropy)."""

    def __init__(self, num_seeds: int):
        self.coef = [0.0] * num_seeds
        self.alpha = torch.zeros(num_seeds, dtype=torch.float64)
        self.prev_h = [0.0] * num_seeds
        self.anchor = None
        self.safe = [ctl.SafeController() for _ in range(num_seeds)]


def _temps(kw: dict) -> tuple[float, float]:
    return kw.get("t_high", 1.2), kw.get("t_low", 0.8)


def _per_seed(fn, *tensors):
    """Row-wise call: batch statistics (a quantile, a max, a share) must be taken within one seed."""
    return torch.cat([fn(s, *(t[s : s + 1].T for t in tensors)).T for s in range(tensors[0].shape[0])])


def _loss(method, kw, theta, z, arms, rewards, adv, group, st, ref_logp):
    """The method's loss at logits ``theta [S, K]`` for one batch (``z``: the rollout's logits).

    Row s of ``arms [S, N]`` holds seed s's N pulls; the per-token functions see one seed at a time
    as a batch of N one-token responses (``[N, 1]``) wherever they take batch statistics."""
    num_seeds, n = arms.shape
    mask = torch.ones(n, 1, dtype=torch.bool)
    logp_all = torch.log_softmax(theta, -1)
    logp = logp_all.gather(1, arms)
    old = torch.log_softmax(z, -1).gather(1, arms)
    h = _entropy(theta)
    if method == "lp_reg":
        def one(s, lp, ol, a):
            proxy = reg.minp_proxy_logprobs(z[s].expand(n, 1, -1), arms[s][:, None], kw.get("kappa", 0.02))
            return reg.lp_reg(lp, ol, a[:, 0], mask, proxy, kw.get("neg_ratio", 0.01), eps_low=0.2, eps_high=0.2)
        return _per_seed(one, logp, old, adv).mean(1).sum()
    if method == "steer":
        def one(s, lp, ol, a):
            w = reg.steer_weights(a[:, 0], lp, ol, h[s].detach().expand(n, 1), mask)
            return sur.ppo_clip(lp, ol, a[:, 0], mask, 0.2, 0.28, dual_clip=10.0) * w
        return _per_seed(one, logp, old, adv).mean(1).sum()
    if method == "agentic_eb_po":
        def one(s, lp, ol, a):
            return eo.agentic_entropy_balanced_po(lp, ol, a[:, 0], mask, h[s].detach().expand(n, 1), 0.2, 0.28,
                                                  kw.get("gamma", 0.1))
        return _per_seed(one, logp, old, adv).mean(1).sum()
    if method == "progrpo_arm":
        flat_group = (torch.arange(num_seeds)[:, None] * (int(group.max()) + 1) + group[None, :]).reshape(-1)
        conf = old.reshape(-1)
        prompt_conf = torch.zeros(int(flat_group.max()) + 1, dtype=conf.dtype).index_add_(0, flat_group, conf)
        prompt_conf = prompt_conf / torch.bincount(flat_group).to(conf.dtype)
        adv = eo.arm_advantages(adv.reshape(-1), rewards.reshape(-1), flat_group, conf, prompt_conf[flat_group],
                                kw.get("alpha", 0.5)).reshape(num_seeds, n)
    if method == "distribution_centric":
        def one(s, hot, ol, a, r):
            # the ablation ρ ≡ 1 (no double importance sampling): the hot log-probs are the plain ones
            mixed, _ = eo.distribution_centric_advantages(a[:, 0], r[:, 0] > 0.05, ol if kw.get("no_double_is")
                                                          else hot, ol, mask, st.prev_h[s], kw["target"])
            return mixed
        temps = torch.tensor([ctl.entropy_target_temperature(h_prev, kw["target"], *_temps(kw))
                              for h_prev in st.prev_h], dtype=z.dtype)
        hot = torch.log_softmax(z / temps[:, None], -1).gather(1, arms)
        adv = _per_seed(one, hot, old, adv, rewards)
    full = torch.ones_like(logp, dtype=torch.bool)
    eps_high = kw.get("eps_high", 0.28) if method == "clip_higher" else 0.2
    loss = sur.ppo_clip(logp, old, adv, full, 0.2, eps_high).mean(1).sum()
    if method == "entropy_bonus":
        loss = loss - kw.get("coef", 0.05) * h.sum()
    elif method == "skywork":
        loss = loss - (st.alpha * h).sum()
    elif method == "siren":
        hp = eo.top_p_entropy(theta, kw.get("top_p", 0.8))
        loss = loss + sum(eo.siren_anchor_loss(hp[s], st.anchor[s], kw.get("coef", 0.5)) for s in range(num_seeds))
    elif method in ("safe_official", "safe_intended"):
        loss = loss - 0.01 * h.sum()
        for s, c in enumerate(st.safe):
            if method == "safe_official":  # the code: a Python float from kl.item(), no gradient
                loss = loss + ctl.safe_kl_penalty(c.kl_smooth, c.threshold, float(h[s].detach()), kw.get("coef", 0.1))
            else:  # the exact KL to the reference (the k1 sample mean has zero expected gradient on-policy)
                kl = (logp_all[s].exp() * (logp_all[s] - ref_logp)).sum()
                loss = loss + ctl.safe_kl_penalty(kl, c.threshold, float(h[s].detach()), kw.get("coef", 0.1))
    return loss


def bandit_runs(methods: dict, bandit: Bandit, init_logits: Tensor, steps: int = 200, lr: float = 1.0,
                num_seeds: int = 8, num_groups: int = 2, group_size: int = 8, inner_steps: int = 2,
                pass_k: int = 8, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Sampled GRPO on a bandit under each intervention of ``methods`` (label → (method, kwargs)).

    ``method`` is one of :data:`BANDIT_METHODS`. Every method sees the same seeds (one generator
    seeded ``seed``, draws in the same order while the policies agree) and the same initial logits;
    seeds are trained side by side as rows of ``θ [S, K]``. ``inner_steps`` gradient steps per
    batch (the second one sees ratios ≠ 1, where clips act). Returns label → {"entropy",
    "accuracy", "pass_at_k", "wrong_mass", "tail_mass", "coef", "kl", "arm1_mass"} arrays
    ``[steps + 1, num_seeds]``; ``wrong_mass`` is the probability of arms that are never correct,
    ``tail_mass`` that of the arms outside the 10 most likely at the start (the junk tail), ``coef`` the controller's
    setting (Skywork α, SAFE τ, the Arbitrary-Entropy / Distribution-Centric temperature T),
    ``kl`` KL(π‖π_0) (π_0: the initial policy, SAFE's reference), ``arm1_mass`` π(arm 1) (the rare
    correct arm of :func:`rare_correct_bandit` and :func:`hidden_best_bandit`).
    """
    init = _checks.floating("init_logits", init_logits).double()
    if init.shape != (bandit.num_arms,):
        raise ValueError(f"`init_logits` must have shape [{bandit.num_arms}], got {list(init.shape)}")
    steps = _checks.integer("steps", steps, 0)
    group = torch.arange(num_groups).repeat_interleave(group_size)
    n = num_groups * group_size
    success = bandit.success
    wrong = success == 0
    tail = init < init.topk(min(10, bandit.num_arms)).values[-1]  # outside the 10 most likely arms at the start
    ref_logp = torch.log_softmax(init, -1)
    out = {}
    for label, (method, kw) in methods.items():
        _checks.choice("methods", method, BANDIT_METHODS)
        hist = {k: np.zeros((steps + 1, num_seeds)) for k in ("entropy", "accuracy", "pass_at_k", "wrong_mass",
                                                              "tail_mass", "coef", "kl", "arm1_mass")}
        gen = torch.Generator().manual_seed(seed)
        z, st = init.expand(num_seeds, -1).clone(), _State(num_seeds)
        for t in range(steps + 1):
            p = torch.softmax(z, -1)
            acc = p @ success
            hist["entropy"][t] = _entropy(z).numpy()
            hist["accuracy"][t] = acc.numpy()
            hist["pass_at_k"][t] = (1 - (1 - acc) ** pass_k).numpy()
            hist["wrong_mass"][t] = p[:, wrong].sum(1).numpy()
            hist["tail_mass"][t] = p[:, tail].sum(1).numpy()
            hist["arm1_mass"][t] = p[:, 1].numpy()
            hist["kl"][t] = (p * (torch.log_softmax(z, -1) - ref_logp)).sum(1).numpy()
            if t == steps:
                break
            arms = torch.multinomial(p, n, replacement=True, generator=gen)
            rewards = bandit.sample_rewards(arms, gen)
            adv = torch.stack([grpo(r, group) for r in rewards])
            if method == "arbitrary_entropy":
                for s in range(num_seeds):
                    temp = ctl.entropy_target_temperature(st.prev_h[s], kw["target"], *_temps(kw))
                    hist["coef"][t, s] = temp
                    kept = _hot_batch(z[s], bandit, gen, temp, num_groups, group_size)
                    k = ctl.arbitrary_entropy_sample_count(st.prev_h[s], kw["target"], kept.numel(),
                                                           kw.get("max_samples", 60))
                    arms[s, :k], adv[s, :k], rewards[s, :k] = kept[:k], 1.0, 1.0
            sampled_h = -torch.log_softmax(z, -1).gather(1, arms).mean(1)
            if method == "skywork":
                for s in range(num_seeds):
                    st.coef[s], alpha = ctl.skywork_entropy_coef_update(
                        st.coef[s], float(sampled_h[s]), kw.get("target", 0.2), kw.get("delta", 1e-3), 0.0,
                        kw.get("coef_max", 0.5))
                    st.alpha[s] = alpha
                hist["coef"][t] = st.alpha.numpy()
            if method == "siren" and st.anchor is None:
                st.anchor = [float(x) for x in eo.top_p_entropy(z, kw.get("top_p", 0.8))]
            if method.startswith("safe"):
                hist["coef"][t] = [c.update(hist["kl"][t, s], float(rewards[s].mean())) for s, c in enumerate(st.safe)]
            if method == "distribution_centric":
                hist["coef"][t] = [ctl.entropy_target_temperature(h, kw["target"], *_temps(kw)) for h in st.prev_h]
            theta = z.clone().requires_grad_(True)
            for _ in range(int(inner_steps)):
                loss = _loss(method, kw, theta, z, arms, rewards, adv, group, st, ref_logp)
                (grad,) = torch.autograd.grad(loss, theta)
                theta = (theta - lr * grad).detach().requires_grad_(True)
            z = theta.detach()
            st.prev_h = (-torch.log_softmax(z, -1).gather(1, arms).mean(1)).tolist()  # Ĥ after the actor update
        out[label] = hist
    return out


def lm_runs(specs, steps: int = 20, prompts_per_step: int = 8, group_size: int = 8, minibatches: int = 2,
            lr: float = 1e-3, model_name: str = "student-addition", pass_k: int = 8) -> pd.DataFrame:
    """Tiny-LM runs in float64, one row per (label, seed, step): the rollout's token entropy, accuracy, pass@k.

    ``specs``: dicts with ``label``, ``recipe`` (a :class:`~forklab.recipes.Recipe`), ``seed`` and
    optional ``skywork`` (a dict of :func:`forklab.entropy_control.skywork_entropy_coef_update`
    settings: a hook sets ``recipe.entropy_coef`` before each update from the rollout's
    sampled-token entropy). pass@k is the unbiased estimate from each prompt's G samples
    (k ≤ G), averaged over the step's prompts. ``minibatches`` AdamW steps per rollout (the later
    ones see ratios ≠ 1, where clips act).
    """
    import forklab
    from forklab.lm.models import load_tiny
    from forklab.lm.sampling import pass_at_k as pass_at_k_unbiased
    from forklab.lm.trainer import RLConfig, RLTrainer

    rows = []
    for spec in progress(specs, desc="tiny-LM runs"):
        forklab.seed_everything(spec["seed"])
        model, tokenizer = load_tiny(model_name, dtype="float64")
        config = RLConfig(prompts_per_step=prompts_per_step, group_size=group_size, lr=lr, eval_every=0,
                          minibatches=minibatches, seed=spec["seed"], dtype="float64", log_covariance=False)
        state = {"coef": 0.0, "alpha": 0.0}
        hooks = [_pass_hook(group_size, pass_k, pass_at_k_unbiased)]
        if spec.get("skywork") is not None:
            hooks.append(_skywork_hook(state, spec["skywork"]))
        trainer = RLTrainer(model, tokenizer, spec["recipe"], config, hooks=hooks)
        for step in range(int(steps)):
            m = trainer.step()
            rows.append(dict(label=spec["label"], seed=spec["seed"], step=step, entropy=m["rollout/entropy"],
                             accuracy=m["accuracy"], pass_at_k=m["pass_at_k"], coef=m.get("skywork/alpha", 0.0)))
    return pd.DataFrame(rows)


def _pass_hook(group_size, k, estimator):
    def hook(trainer, rollout):
        correct = rollout["correct"].reshape(-1, group_size).sum(1)
        # the rollout's own token entropy: the trainer's "entropy" metric is replaced by the update's mean
        # entropy when a recipe reads entropy (bonus, STEER, ...), which would compare different things
        return {"pass_at_k": float(estimator(torch.full_like(correct, group_size), correct, k).double().mean()),
                "rollout/entropy": float(rollout["entropy"][rollout["mask"]].double().mean())}
    return hook


def _skywork_hook(state, settings):
    def hook(trainer, rollout):
        sampled_h = float(-rollout["old_logp"][rollout["mask"]].mean())
        state["coef"], alpha = ctl.skywork_entropy_coef_update(state["coef"], sampled_h, **settings)
        trainer.recipe = trainer.recipe.replace(entropy_coef=alpha)
        return {"skywork/alpha": alpha}
    return hook


def curves_figure(curves: dict, keys=("entropy", "accuracy", "pass_at_k"), titles=None, x_label="step",
                  log_keys=()):
    """One panel per key, one line (seed mean, band = min–max over seeds) per label.

    ``curves``: label → {key: array ``[steps, seeds]``}; ``log_keys``: panels drawn on a log y axis
    (entropies near 0 separate there). Thirteen distinct colours, and the line style cycles so that
    lines lying on top of each other stay visible. Returns the figure."""
    import matplotlib.pyplot as plt

    from forklab.plots import use_style
    use_style()
    titles = titles or keys
    palette = list(plt.get_cmap("tab10").colors) + list(plt.get_cmap("Dark2").colors)[:6]
    styles = ("-", "--", "-.", ":")
    fig, axes = plt.subplots(1, len(keys), figsize=(11, 3.8), constrained_layout=True)
    axes = np.atleast_1d(axes)
    for j, (label, c) in enumerate(curves.items()):
        color = palette[j % len(palette)]
        for ax, key in zip(axes, keys, strict=True):
            y = np.asarray(c[key])
            x = np.arange(len(y))
            ax.plot(x, y.mean(1), color=color, label=label, lw=1.8, ls=styles[j % len(styles)])
            ax.fill_between(x, y.min(1), y.max(1), color=color, alpha=0.12, lw=0)
    for ax, key, title in zip(axes, keys, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel(x_label)
        if key in log_keys:
            ax.set_yscale("log")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", fontsize=10)
    return fig
