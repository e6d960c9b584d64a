"""Recipes: one dataclass composing advantage + surrogate + aggregation + masks + regularisers.

Introduced in ``notebooks/00_tour.ipynb``; every trainer and notebook experiment takes a
:class:`Recipe`. A recipe turns a :class:`Batch` of scored rollouts into ``(loss, metrics)``:

    adv   = recipe.advantages(batch)                    # [B] (or [B, T] for HAPO's redistribution)
    keep  = batch.mask & entropy_top_mask(...)          # forking-token mask, if any
    ℓ     = surrogate(logp, old_logp, adv, keep, ...)   # [B, T] per-token loss
    ℓ     = ℓ · token_weights                           # STEER λ, if any
    loss  = aggregate(ℓ, keep, mode) − c_H·agg(H) + β·agg(KL(π‖π_ref))

Presets by name (:func:`get`): ``grpo``, ``dr_grpo``, ``dapo``, ``gspo``, ``sapo``, ``cispo``,
``ba``, ``forking20``, ``clip_cov``, ``kl_cov``, ``hapo``, ``steer``, ``lp_reg``. Each preset's
docstring lists the paper's defaults; where a preset deliberately differs (e.g. no KL term by
default) it says so. ``get("dapo", kl_coef=0.01)`` overrides any field.

Padding: :meth:`Recipe.loss` validates the whole :class:`Batch` first, with forklab's one rule
(docs/reliability.md): values off ``mask`` are ignored (NaN and ±inf included) and get exactly 0
gradient; NaN or ±inf on it, a wrong shape or dtype raise ``ValueError`` naming the field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from forklab import _checks
from forklab import advantages as adv_lib
from forklab import regularizers as reg
from forklab import surrogates as sur
from forklab.aggregation import aggregate
from forklab.kl import kl_estimate

__all__ = ["Batch", "Recipe", "get", "PRESETS", "overlong_penalty"]


@dataclass
class Batch:
    """Scored rollouts, everything a recipe may need. Only ``logp``, ``mask``, ``group`` and either
    ``rewards`` or ``adv`` are always required; the rest is asked for by specific recipes.

    ============  ===================================================================
    field         shape / meaning
    ============  ===================================================================
    logp          ``[B, T]`` log π_θ of the sampled tokens (carries the gradient)
    mask          ``[B, T]`` bool, response tokens
    group         ``[B]`` prompt id
    rewards       ``[B]`` (or ``[B, K]`` for ``gdpo``)
    old_logp      ``[B, T]`` rollout-policy log-probs (default: ``logp.detach()``)
    ref_logp      ``[B, T]`` reference-model log-probs (KL term)
    entropy       ``[B, T]`` current-policy token entropy (forking mask, HAPO, STEER, bonus)
    tokens        ``[B, T]`` sampled token ids (GTPO)
    proxy_logp    ``[B, T]`` Lp-Reg min-p proxy log-probs of the sampled tokens
    adv           ``[B]`` or ``[B, T]`` precomputed advantages (skips ``recipe.advantages``)
    ============  ===================================================================
    """

    logp: Tensor
    mask: Tensor
    group: Tensor
    rewards: Tensor | None = None
    old_logp: Tensor | None = None
    ref_logp: Tensor | None = None
    entropy: Tensor | None = None
    tokens: Tensor | None = None
    proxy_logp: Tensor | None = None
    adv: Tensor | None = None

    def require(self, *names: str, why: str) -> None:
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise ValueError(f"batch field(s) {missing} are required by {why}")


def overlong_penalty(lengths: Tensor, max_len: int, buffer: int, factor: float = 1.0) -> Tensor:
    """DAPO's soft overlong punishment, added to the reward (arXiv 2503.14476, HIGH).

    .. math:: R_{len}(y) = \\min\\Big(-\\frac{|y| - (L_{max} - L_{buf})}{L_{buf}}\\cdot f,\\; 0\\Big)

    i.e. 0 up to L_max − L_buf, a linear ramp to −f at L_max (and below beyond). Paper: L_max =
    20480, L_buf = 4096. ``lengths [B]`` → ``[B]``.
    """
    lengths = _checks.floating("lengths", lengths)
    max_len = _checks.integer("max_len", max_len, 1)
    buffer = _checks.integer("buffer", buffer, 1, max_len)
    factor = _checks.finite("factor", factor, 0.0)
    return torch.clamp(-(lengths - (max_len - buffer)) / buffer * factor, max=0.0)


_ADVANTAGES: dict[str, Callable] = {
    "grpo": lambda b, **kw: adv_lib.grpo(b.rewards, b.group, **kw),
    "dr_grpo": lambda b, **kw: adv_lib.grpo(b.rewards, b.group, scale="none", **kw),
    "rloo": lambda b, **kw: adv_lib.rloo(b.rewards, b.group),
    "median": lambda b, **kw: adv_lib.median(b.rewards, b.group, **kw),
    "hapo": lambda b, **kw: adv_lib.token_group_average(b.rewards, b.group, b.mask.sum(1), **kw),
    "gdpo": lambda b, **kw: adv_lib.multi_reward(b.rewards, b.group, **kw),
}

_SURROGATES: dict[str, Callable] = {
    "reinforce": lambda b, old, a, m, **kw: sur.reinforce(b.logp, a, m, return_metrics=True),
    "ppo_clip": lambda b, old, a, m, **kw: sur.ppo_clip(b.logp, old, a, m, return_metrics=True, **kw),
    "gspo": lambda b, old, a, m, **kw: sur.gspo(b.logp, old, a, m, return_metrics=True, **kw),
    "sapo": lambda b, old, a, m, **kw: sur.sapo(b.logp, old, a, m, return_metrics=True, **kw),
    "cispo": lambda b, old, a, m, **kw: sur.cispo(b.logp, old, a, m, return_metrics=True, **kw),
    "gmpo": lambda b, old, a, m, **kw: sur.gmpo(b.logp, old, a, m, return_metrics=True, **kw),
    "dhpo": lambda b, old, a, m, **kw: sur.dhpo(b.logp, old, a, m, return_metrics=True, **kw),
    "minpro": lambda b, old, a, m, **kw: sur.minpro(b.logp, old, a, m, return_metrics=True, **kw),
    "hapo_clip": lambda b, old, a, m, **kw: sur.hapo_clip(b.logp, old, a, m, b.entropy.detach(),
                                                          return_metrics=True, **kw),
    "clip_cov": lambda b, old, a, m, generator=None, **kw: reg.clip_cov(b.logp, old, a, m, return_metrics=True,
                                                                         generator=generator, **kw),
    "kl_cov": lambda b, old, a, m, **kw: reg.kl_cov(b.logp, old, a, m, return_metrics=True, **kw),
    "lp_reg": lambda b, old, a, m, **kw: reg.lp_reg(b.logp, old, a, m, b.proxy_logp, return_metrics=True, **kw),
}

_NEEDS = {"hapo_clip": ("entropy",), "lp_reg": ("proxy_logp",)}


@dataclass(frozen=True)
class Recipe:
    """A complete GRPO-family objective. See the module docstring for the order of operations.

    ``advantage``: one of ``grpo``, ``dr_grpo``, ``rloo``, ``median``, ``hapo``, ``gdpo``;
    ``surrogate``: one of ``reinforce``, ``ppo_clip``, ``gspo``, ``sapo``, ``cispo``, ``gmpo``,
    ``dhpo``, ``minpro``, ``hapo_clip``, ``clip_cov``, ``kl_cov``, ``lp_reg``; ``aggregation``: a
    mode of :mod:`forklab.aggregation`; ``entropy_top_ratio``: keep only that top share of tokens
    by entropy (80/20); ``token_weighting``: ``None``, ``"steer"`` or ``"gtpo"``;
    ``hapo_redistribution``: β of HAPO's differential advantage redistribution (0 = off);
    ``dynamic_sampling``: a flag for trainers (DAPO: drop groups whose rewards are all equal).
    """

    name: str = "custom"
    advantage: str = "grpo"
    advantage_kwargs: dict = field(default_factory=dict)
    surrogate: str = "ppo_clip"
    surrogate_kwargs: dict = field(default_factory=dict)
    aggregation: str = "token-mean"
    norm_len: float | None = None
    entropy_top_ratio: float | None = None
    token_weighting: str | None = None
    token_weighting_kwargs: dict = field(default_factory=dict)
    hapo_redistribution: float = 0.0
    entropy_coef: float = 0.0
    kl_coef: float = 0.0
    kl_kind: str = "k3"
    dynamic_sampling: bool = False

    def __post_init__(self):
        _checks.choice("advantage", self.advantage, _ADVANTAGES.keys())
        _checks.choice("surrogate", self.surrogate, _SURROGATES.keys())
        if self.token_weighting is not None:
            _checks.choice("token_weighting", self.token_weighting, {"steer", "gtpo"})
        _checks.choice("kl_kind", self.kl_kind, {"k1", "k2", "k3", "abs"})
        _checks.finite("entropy_coef", self.entropy_coef)
        _checks.finite("kl_coef", self.kl_coef, 0.0)
        _checks.finite("hapo_redistribution", self.hapo_redistribution, 0.0)
        if self.norm_len is not None:
            _checks.positive("norm_len", self.norm_len)
        if self.entropy_top_ratio is not None:
            _checks.finite("entropy_top_ratio", self.entropy_top_ratio, 0.0, 1.0)

    def replace(self, **changes) -> Recipe:
        return dataclasses.replace(self, **changes)

    def advantages(self, batch: Batch) -> Tensor:
        """Per-response advantages ``[B]`` from ``batch.rewards`` (or ``batch.adv`` if given)."""
        if batch.adv is not None:
            return batch.adv
        batch.require("rewards", why=f"advantage estimator {self.advantage!r}")
        try:
            return _ADVANTAGES[self.advantage](batch, **self.advantage_kwargs)
        except ValueError as err:  # the estimator names its own argument (e.g. `lengths` = mask.sum(1))
            raise ValueError(f"`batch` (advantage estimator {self.advantage!r}): {err}") from err

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """Scalar loss to minimise and the metrics trainers log (TRL names where they exist).

        ``generator`` drives the random choices of ``clip_cov`` (never torch's global RNG); ``None``
        uses a fresh generator seeded 0, so one batch always gives one loss.
        """
        batch = _validated(batch)
        if self.aggregation == "seq-mean-token-sum-norm" and self.norm_len is None:
            raise ValueError("`norm_len` is required for seq-mean-token-sum-norm (Dr. GRPO divides by a constant, "
                             "the generation budget); RLTrainer sets it to config.max_new_tokens")
        adv = self.advantages(batch)
        old = batch.logp.detach() if batch.old_logp is None else batch.old_logp
        keep = batch.mask
        metrics: dict[str, float] = {}
        if self.entropy_top_ratio is not None:
            batch.require("entropy", why="the forking-token mask (entropy_top_ratio)")
            keep = keep & reg.entropy_top_mask(batch.entropy.detach(), keep, self.entropy_top_ratio)
            metrics["entropy_mask/kept"] = float(keep.sum() / batch.mask.sum())
        if self.hapo_redistribution:
            batch.require("entropy", why="HAPO's advantage redistribution")
            adv = sur.hapo_redistribute(batch.logp, old, adv, keep, batch.entropy.detach(),
                                        beta=self.hapo_redistribution, **_clip_eps(self.surrogate_kwargs))
        batch.require(*_NEEDS.get(self.surrogate, ()), why=f"surrogate {self.surrogate!r}")
        extra = {}
        if self.surrogate == "clip_cov":
            extra["generator"] = generator if generator is not None else torch.Generator().manual_seed(0)
        per_token, sur_metrics = _SURROGATES[self.surrogate](batch, old, adv, keep, **extra, **self.surrogate_kwargs)
        metrics |= sur_metrics
        if self.token_weighting == "steer":
            batch.require("entropy", why="STEER weights")
            w = reg.steer_weights(adv, batch.logp, old, batch.entropy.detach(), keep, **self.token_weighting_kwargs)
            per_token = per_token * w
            metrics["steer/weight_mean"] = float(w[keep].mean())
        elif self.token_weighting == "gtpo":
            batch.require("tokens", why="GTPO conflict weights")
            w = reg.gtpo_conflict_weights(batch.tokens, keep, adv, batch.group, **self.token_weighting_kwargs)
            per_token = per_token * w.to(per_token.dtype)
        agg = dict(mode=self.aggregation, adv=adv, group=batch.group, norm_len=self.norm_len)
        policy_loss = aggregate(per_token, keep, **agg)
        total = policy_loss
        metrics["loss/policy"] = float(policy_loss.detach())
        if batch.entropy is not None:
            metrics["entropy"] = float(batch.entropy.detach()[batch.mask].mean())
        if self.entropy_coef:
            batch.require("entropy", why="the entropy bonus")
            total = total + reg.entropy_bonus(batch.entropy, keep, self.entropy_coef, **agg)
        if self.kl_coef:
            batch.require("ref_logp", why="the KL term (kl_coef > 0)")
            kl = aggregate(kl_estimate(batch.logp, batch.ref_logp, self.kl_kind, mask=keep), keep, **agg)
            total = total + self.kl_coef * kl
            metrics["kl"] = float(kl.detach())
        a = adv if adv.dim() == 1 else adv[batch.mask]
        metrics["advantages/mean_abs"] = float(a.detach().abs().mean())
        return total, metrics


def _validated(batch: Batch) -> Batch:
    """The batch with every field checked (names in the errors) and off-mask values replaced by 0."""
    if not isinstance(batch, Batch):
        raise ValueError(f"`batch` must be a forklab.recipes.Batch, got {type(batch).__name__}")
    mask = _checks.bool_mask("mask", batch.mask)
    if mask.dim() != 2:
        raise ValueError(f"`mask` must have shape [B, T], got {list(mask.shape)}")
    fields = {"mask": mask, "logp": _checks.masked("logp", batch.logp, mask),
              "group": _checks.group_ids("group", batch.group, mask.shape[0])}
    for name in ("old_logp", "ref_logp", "entropy", "proxy_logp"):
        if getattr(batch, name) is not None:
            fields[name] = _checks.masked(name, getattr(batch, name), mask)
    if batch.rewards is not None:
        fields["rewards"] = _checks.floating("rewards", batch.rewards)
    if batch.tokens is not None:
        tokens = _checks.as_tensor("tokens", batch.tokens)
        if tokens.is_floating_point() or tokens.dtype == torch.bool or tokens.is_complex():
            raise ValueError(f"`tokens` must be integer ids, got dtype {tokens.dtype}")
        _checks.same_shape("mask", mask, "tokens", tokens)
        fields["tokens"] = tokens
    if batch.adv is not None:
        adv = _checks.as_tensor("adv", batch.adv)
        fields["adv"] = _checks.masked("adv", adv, mask) if adv.dim() == 2 else _checks.floating("adv", adv)
    return dataclasses.replace(batch, **fields)


def _clip_eps(kwargs: dict) -> dict:
    low = kwargs.get("eps_low", 0.2)
    return {"eps_low": low, "eps_high": kwargs.get("eps_high", low)}


# ---------------------------------------------------------------------------------------- presets
def grpo() -> Recipe:
    """GRPO (DeepSeekMath, arXiv 2402.03300): group-normalised advantage, PPO clip ε = 0.2,
    per-sequence token mean (seq-mean-token-mean). The paper adds β = 0.04 · k3 KL to a reference
    model; like TRL (``beta=0.0``) this preset has no KL term — ``get("grpo", kl_coef=0.04)`` restores it."""
    return Recipe("grpo", "grpo", {}, "ppo_clip", {"eps_low": 0.2}, "seq-mean-token-mean")


def dr_grpo() -> Recipe:
    """Dr. GRPO (arXiv 2503.20783): no std in the advantage, ÷ (B · max length) aggregation
    (seq-mean-token-sum-norm), clip 0.2, no KL.

    The divisor is a constant, the generation budget (the paper's MAX_TOKENS, TRL's
    ``max_completion_length``), never the padded width of a batch, which would make the loss depend
    on padding. ``norm_len=None`` here means exactly that budget: :class:`~forklab.lm.trainer.RLTrainer`
    sets it to ``config.max_new_tokens``; a direct :meth:`Recipe.loss` call needs
    ``get("dr_grpo", norm_len=budget)`` (it refuses ``None``)."""
    return Recipe("dr_grpo", "dr_grpo", {}, "ppo_clip", {"eps_low": 0.2}, "seq-mean-token-sum-norm")


def dapo() -> Recipe:
    """DAPO (arXiv 2503.14476): clip-higher ε_low = 0.2 / ε_high = 0.28, token-mean, no KL, dynamic
    sampling (resample until groups are mixed; trainers honour ``dynamic_sampling``), overlong
    shaping with L_max 20480 / L_buf 4096 (:func:`overlong_penalty`, applied to rewards), G = 16."""
    return Recipe("dapo", "grpo", {}, "ppo_clip", {"eps_low": 0.2, "eps_high": 0.28}, "token-mean",
                  dynamic_sampling=True)


def gspo() -> Recipe:
    """GSPO (arXiv 2507.18071): sequence ratio, clip 3e-4 / 4e-4, seq-mean-token-mean, no KL."""
    return Recipe("gspo", "grpo", {}, "gspo", {"eps_low": 3e-4, "eps_high": 4e-4}, "seq-mean-token-mean")


def sapo() -> Recipe:
    """SAPO (arXiv 2511.20347): soft gate τ_pos = 1.0, τ_neg = 1.05, seq-mean-token-mean."""
    return Recipe("sapo", "grpo", {}, "sapo", {"tau_pos": 1.0, "tau_neg": 1.05}, "seq-mean-token-mean")


def cispo() -> Recipe:
    """CISPO (MiniMax-M1, arXiv 2506.13585): stop-gradient IS weight with an upper cap only; here
    TRL/ScaleRL's convention, cap ε_high = 5.0 on r; token-mean."""
    return Recipe("cispo", "grpo", {}, "cispo", {"convention": "trl", "eps_high": 5.0}, "token-mean")


def ba() -> Recipe:
    """Balanced Aggregation (arXiv 2605.04077): GRPO advantage and clip (0.2), token means inside
    the positive and negative subsets weighted k/G and (G−k)/G (``balanced`` aggregation)."""
    return Recipe("ba", "grpo", {}, "ppo_clip", {"eps_low": 0.2}, "balanced")


def forking20() -> Recipe:
    """Beyond the 80/20 Rule (arXiv 2506.01939): DAPO (0.2 / 0.28, token-mean, dynamic sampling)
    with gradients only through the top ρ = 20% tokens by entropy in the batch."""
    return dapo().replace(name="forking20", entropy_top_ratio=0.2)


def clip_cov() -> Recipe:
    """Clip-Cov (The Entropy Mechanism, arXiv 2505.22617): clip_ratio 2e-4, Cov bounds (1, 5),
    the released scripts' PPO clip ε_low = ε_high = 1 (effectively off), token-mean, no KL."""
    return Recipe("clip_cov", "grpo", {}, "clip_cov",
                  {"clip_ratio": 2e-4, "cov_lb": 1.0, "cov_ub": 5.0, "eps_low": 1.0, "eps_high": 1.0}, "token-mean")


def kl_cov() -> Recipe:
    """KL-Cov (arXiv 2505.22617): |δ| penalty κ = 1 on the top 0.2% (k = 2e-3, 7B script) tokens
    by covariance, no PPO clip, token-mean."""
    return Recipe("kl_cov", "grpo", {}, "kl_cov", {"kl_ratio": 2e-3, "kl_coef": 1.0}, "token-mean")


def hapo() -> Recipe:
    """HAPO (arXiv 2509.16591): token-level group average advantage, differential advantage
    redistribution β = 1, asymmetric adaptive clipping α = 1 around ε = 0.2 with dual-clip c = 3,
    token-mean (adaptive-temperature sampling, τ = 0.05, is a sampler setting)."""
    return Recipe("hapo", "hapo", {}, "hapo_clip", {"eps_low": 0.2, "eps_high": 0.2, "alpha": 1.0, "dual_clip": 3.0},
                  "token-mean", hapo_redistribution=1.0)


def steer() -> Recipe:
    """STEER (arXiv 2510.10150): DAPO dual-clip loss (0.2 / 0.28, c = 10) × λ from the estimated
    per-token entropy change Ω (exponential variant, λ_min = 0.8), token-mean."""
    return Recipe("steer", "grpo", {}, "ppo_clip", {"eps_low": 0.2, "eps_high": 0.28, "dual_clip": 10.0},
                  "token-mean", token_weighting="steer", token_weighting_kwargs={"lambda_min": 0.8})


def lp_reg() -> Recipe:
    """Lp-Reg (arXiv 2510.03222): k3 toward the min-p proxy (κ = 0.02) on the lowest-probability 1%
    of negative tokens, β = 1, clip ε_low = 1 / ε_high = 9 elsewhere, token-mean. Needs
    ``batch.proxy_logp`` (:func:`forklab.regularizers.minp_proxy_logprobs` on the old logits)."""
    return Recipe("lp_reg", "grpo", {}, "lp_reg", {"neg_ratio": 0.01, "beta": 1.0, "eps_low": 1.0, "eps_high": 9.0},
                  "token-mean")


PRESETS: dict[str, Callable[[], Recipe]] = {
    f.__name__: f for f in (grpo, dr_grpo, dapo, gspo, sapo, cispo, ba, forking20, clip_cov, kl_cov, hapo, steer,
                            lp_reg)
}


def get(name: str, **overrides) -> Recipe:
    """A preset by name, with any field overridden: ``get("dapo", kl_coef=0.01)``."""
    recipe = PRESETS[_checks.choice("name", name, PRESETS.keys())]()
    return recipe.replace(**overrides) if overrides else recipe
