"""The presets: published recipes as zero-argument functions, listed in :data:`forklab.recipes.PRESETS`.

``forklab.recipes.get(name, **overrides)`` builds one. A new preset is a function here (or in any module
imported at the end of :mod:`forklab.recipes`) decorated with :func:`forklab.recipes.preset`.
"""

from __future__ import annotations

from forklab._recipe import Recipe, preset

__all__ = ["grpo", "dr_grpo", "dapo", "gspo", "sapo", "cispo", "ba", "forking20", "clip_cov", "kl_cov",
           "hapo", "steer", "lp_reg"]


@preset
def grpo() -> Recipe:
    """GRPO (DeepSeekMath, arXiv 2402.03300): group-normalised advantage, PPO clip ε = 0.2,
    per-sequence token mean (seq-mean-token-mean). The paper adds β = 0.04 · k3 KL to a reference
    model; like TRL (``beta=0.0``) this preset has no KL term — ``get("grpo", kl_coef=0.04)`` restores it."""
    return Recipe("grpo", "grpo", {}, "ppo_clip", {"eps_low": 0.2}, "seq-mean-token-mean")


@preset
def dr_grpo() -> Recipe:
    """Dr. GRPO (arXiv 2503.20783): no std in the advantage, ÷ (B · max length) aggregation
    (seq-mean-token-sum-norm), clip 0.2, no KL.

    The divisor is a constant, the generation budget (the paper's MAX_TOKENS, TRL's
    ``max_completion_length``), never the padded width of a batch, which would make the loss depend
    on padding. ``norm_len=None`` here means exactly that budget: :class:`~forklab.lm.trainer.RLTrainer`
    sets it to ``config.max_new_tokens``; a direct :meth:`Recipe.loss` call needs
    ``get("dr_grpo", norm_len=budget)`` (it refuses ``None``)."""
    return Recipe("dr_grpo", "dr_grpo", {}, "ppo_clip", {"eps_low": 0.2}, "seq-mean-token-sum-norm")


@preset
def dapo() -> Recipe:
    """DAPO (arXiv 2503.14476): clip-higher ε_low = 0.2 / ε_high = 0.28, token-mean, no KL, and, in
    :class:`~forklab.lm.trainer.RLTrainer`: dynamic sampling (extra rollouts until the batch holds
    ``prompts_per_step`` groups with mixed rewards, degenerate groups dropped, at most
    ``RLConfig.dynamic_sampling_max_extra`` extra rollouts) and soft overlong punishment added to the
    rewards (:func:`overlong_penalty`, L_buf = 0.2 · L_max as in the paper's 4096 / 20480, f = 1,
    L_max = the trainer's ``max_new_tokens``). The paper's G = 16 is a trainer setting
    (``RLConfig(group_size=16)``); the preset does not change the group size."""
    return Recipe("dapo", "grpo", {}, "ppo_clip", {"eps_low": 0.2, "eps_high": 0.28}, "token-mean",
                  dynamic_sampling=True, overlong_buffer=0.2, overlong_factor=1.0)


@preset
def gspo() -> Recipe:
    """GSPO (arXiv 2507.18071): sequence ratio, clip 3e-4 / 4e-4, seq-mean-token-mean, no KL."""
    return Recipe("gspo", "grpo", {}, "gspo", {"eps_low": 3e-4, "eps_high": 4e-4}, "seq-mean-token-mean")


@preset
def sapo() -> Recipe:
    """SAPO (arXiv 2511.20347): soft gate τ_pos = 1.0, τ_neg = 1.05, seq-mean-token-mean."""
    return Recipe("sapo", "grpo", {}, "sapo", {"tau_pos": 1.0, "tau_neg": 1.05}, "seq-mean-token-mean")


@preset
def cispo() -> Recipe:
    """CISPO (MiniMax-M1, arXiv 2506.13585): stop-gradient IS weight with an upper cap only; here
    TRL/ScaleRL's convention, cap ε_high = 5.0 on r; token-mean."""
    return Recipe("cispo", "grpo", {}, "cispo", {"convention": "trl", "eps_high": 5.0}, "token-mean")


@preset
def ba() -> Recipe:
    """Balanced Aggregation (arXiv 2605.04077): GRPO advantage and clip (0.2), token means inside
    the positive and negative subsets weighted k/G and (G−k)/G (``balanced`` aggregation)."""
    return Recipe("ba", "grpo", {}, "ppo_clip", {"eps_low": 0.2}, "balanced")


@preset
def forking20() -> Recipe:
    """Beyond the 80/20 Rule (arXiv 2506.01939): DAPO (0.2 / 0.28, token-mean, dynamic sampling,
    overlong punishment) with gradients only through the top ρ = 20% tokens by entropy in the batch."""
    return dapo().replace(name="forking20", entropy_top_ratio=0.2)


@preset
def clip_cov() -> Recipe:
    """Clip-Cov (The Entropy Mechanism, arXiv 2505.22617): clip_ratio 2e-4, Cov bounds (1, 5),
    the released scripts' PPO clip ε_low = ε_high = 1 (effectively off), token-mean, no KL."""
    return Recipe("clip_cov", "grpo", {}, "clip_cov",
                  {"clip_ratio": 2e-4, "cov_lb": 1.0, "cov_ub": 5.0, "eps_low": 1.0, "eps_high": 1.0}, "token-mean")


@preset
def kl_cov() -> Recipe:
    """KL-Cov (arXiv 2505.22617): |δ| penalty κ = 1 on the top 0.2% (k = 2e-3, 7B script) tokens
    by covariance, no PPO clip, token-mean."""
    return Recipe("kl_cov", "grpo", {}, "kl_cov", {"kl_ratio": 2e-3, "kl_coef": 1.0}, "token-mean")


@preset
def hapo() -> Recipe:
    """HAPO (arXiv 2509.16591): token-level group average advantage, differential advantage
    redistribution β = 1, asymmetric adaptive clipping α = 1 around ε = 0.2 with dual-clip c = 3,
    token-mean (adaptive-temperature sampling, τ = 0.05, is a sampler setting)."""
    return Recipe("hapo", "hapo", {}, "hapo_clip", {"eps_low": 0.2, "eps_high": 0.2, "alpha": 1.0, "dual_clip": 3.0},
                  "token-mean", hapo_redistribution=1.0)


@preset
def steer() -> Recipe:
    """STEER (arXiv 2510.10150): DAPO dual-clip loss (0.2 / 0.28, c = 10) × λ from the estimated
    per-token entropy change Ω (exponential variant, λ_min = 0.8), token-mean."""
    return Recipe("steer", "grpo", {}, "ppo_clip", {"eps_low": 0.2, "eps_high": 0.28, "dual_clip": 10.0},
                  "token-mean", token_weighting="steer", token_weighting_kwargs={"lambda_min": 0.8})


@preset
def lp_reg() -> Recipe:
    """Lp-Reg (arXiv 2510.03222): k3 toward the min-p proxy (κ = 0.02) on the lowest-probability 1%
    of negative tokens, β = 1, clip ε_low = 1 / ε_high = 9 elsewhere, token-mean. Needs
    ``batch.proxy_logp`` (:func:`forklab.regularizers.minp_proxy_logprobs` on the old logits)."""
    return Recipe("lp_reg", "grpo", {}, "lp_reg", {"neg_ratio": 0.01, "beta": 1.0, "eps_low": 1.0, "eps_high": 9.0},
                  "token-mean")
