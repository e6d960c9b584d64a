"""Recipes: one dataclass composing advantage + surrogate + aggregation + masks + regularisers.

Introduced in ``notebooks/00_tour.ipynb``; every trainer and notebook experiment takes a
:class:`Recipe`. A recipe turns a :class:`Batch` of scored rollouts into ``(loss, metrics)``:

    batch = _validated(batch)                                 # padding rule; every field checked
    adv   = recipe.advantages(batch)                          # [B], the registered estimator
    keep  = recipe.token_mask(batch)                          # batch.mask ∧ forking-token mask, if any
    adv   = recipe.token_advantages(batch, adv, old, keep)    # HAPO's redistribution [B, T], if any
    ℓ     = recipe.per_token_loss(batch, adv, old, keep, g)   # [B, T], the registered surrogate
    ℓ     = recipe.weight_tokens(batch, ℓ, adv, old, keep)    # STEER λ / GTPO weights, if any
    L     = recipe.aggregate(ℓ, keep, adv, group)             # the registered aggregation mode
    loss  = recipe.regularise(batch, L, adv, keep)            # L − c_H·agg(H) + β·agg(KL(π‖π_ref))

Estimators, surrogates and modes are looked up by name in one registry (``@objective`` and friends,
re-exported here; :func:`names`, :func:`registered`), so a newly registered part works in a
:class:`Recipe`, the trainers and the lessons without touching this file (``docs/conventions.md``).

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
from forklab import _registry as registry
from forklab import adaptive_clipping as _adaptive_clipping  # noqa: F401 - registers DCPO, BAPO, ETR
from forklab import advantage_weighting as _advantage_weighting  # noqa: F401 - registers bnpo, dgpo
from forklab import advantages as _advantages  # noqa: F401 - registers the estimators
from forklab import regularizers as reg
from forklab import surrogates as sur
from forklab._batch_checks import checked_fields
from forklab._registry import Entry, advantage_estimator, aggregation_mode, names, objective
from forklab._reward_shaping import overlong_penalty
from forklab.aggregation import aggregate
from forklab.kl import kl_estimate

__all__ = ["Batch", "Recipe", "get", "PRESETS", "overlong_penalty", "objective", "advantage_estimator",
           "aggregation_mode", "names", "registered", "Entry"]


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

    @property
    def lengths(self) -> Tensor:
        """``[B]`` long, response lengths ``mask.sum(1)`` (HAPO's token-level advantage reads them)."""
        return self.mask.sum(1)

    def require(self, *names: str, why: str) -> None:
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise ValueError(f"batch field(s) {missing} are required by {why}")


_ADV_INPUTS = ("rewards", "group")
_SUR_INPUTS = ("logp", "old_logp", "adv", "mask", "generator")  # generator: bound by Recipe.loss, not a setting
_AGG_INPUTS = ("mask", "adv", "group", "norm_len")


@dataclass(frozen=True)
class Recipe:
    """A complete GRPO-family objective. See the module docstring for the order of operations.

    ``advantage``: a registered advantage estimator (``names("advantage")``: ``grpo``, ``dr_grpo``,
    ``rloo``, ``median``, ``hapo``, ``gdpo``, ...); ``surrogate``: a registered surrogate
    (``names("surrogate")``: ``reinforce``, ``ppo_clip``, ``gspo``, ``sapo``, ``cispo``, ``gmpo``,
    ``dhpo``, ``hapo_clip``, ``minpro``, ``clip_cov``, ``kl_cov``, ``lp_reg``, ...); ``*_kwargs``: that
    function's keyword settings (checked against its signature); ``aggregation``: a registered mode
    of :mod:`forklab.aggregation`; ``entropy_top_ratio``: keep only that top share of tokens by
    entropy (80/20); ``token_weighting``: ``None``, ``"steer"`` or ``"gtpo"``; ``hapo_redistribution``:
    β of HAPO's differential advantage redistribution (0 = off); ``dynamic_sampling``: for trainers
    (DAPO): resample until the batch holds ``prompts_per_step`` groups whose rewards are not all equal
    (at most ``RLConfig.dynamic_sampling_max_extra`` extra rollouts); ``overlong_buffer``: DAPO's soft
    overlong punishment, L_buf as a fraction of the generation budget L_max (the trainer's
    ``max_new_tokens``; DAPO: 4096 / 20480 = 0.2), ``None`` = off; ``overlong_factor``: its penalty f at
    L_max. See :func:`overlong_penalty`.
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
    overlong_buffer: float | None = None
    overlong_factor: float = 1.0

    def __post_init__(self):
        parts = (("advantage", self.advantage, "advantage_kwargs", self.advantage_kwargs, _ADV_INPUTS),
                 ("surrogate", self.surrogate, "surrogate_kwargs", self.surrogate_kwargs, _SUR_INPUTS))
        for kind, name, arg, settings, inputs in parts:
            entry = registry.lookup(kind, name)
            unknown = set(settings) - registry.settings_of(entry, inputs)
            if unknown:
                raise ValueError(f"`{arg}` has {sorted(unknown)}, which {kind} {name!r} does not take; it takes "
                                 f"{sorted(registry.settings_of(entry, inputs))}")
        registry.lookup("aggregation", self.aggregation)
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
        if self.overlong_buffer is not None:  # a fraction of max_new_tokens
            _checks.finite("overlong_buffer", self.overlong_buffer, 0.0, 1.0, low_open=True)
        _checks.finite("overlong_factor", self.overlong_factor, 0.0)

    def replace(self, **changes) -> Recipe:
        return dataclasses.replace(self, **changes)

    def needs(self) -> set[str]:
        """The optional :class:`Batch` fields this recipe reads (e.g. ``{"entropy"}`` for the 80/20 mask)."""
        fields = set(registry.lookup("advantage", self.advantage).needs) - {"lengths"}
        fields |= set(registry.lookup("surrogate", self.surrogate).needs)
        if self.entropy_coef or self.entropy_top_ratio is not None or self.token_weighting == "steer" \
                or self.hapo_redistribution:
            fields.add("entropy")
        if self.token_weighting == "gtpo":
            fields.add("tokens")
        if self.kl_coef:
            fields.add("ref_logp")
        return fields

    # -- the stages of loss(), in order; each can be called on its own (notebooks show them one by one)
    def advantages(self, batch: Batch) -> Tensor:
        """Stage 1: per-response advantages ``[B]`` from ``batch.rewards`` (or ``batch.adv`` if given)."""
        if batch.adv is not None:
            return batch.adv
        batch.require("rewards", why=f"advantage estimator {self.advantage!r}")
        entry = registry.lookup("advantage", self.advantage)
        inputs = {"rewards": batch.rewards, "group": batch.group}
        try:
            adv, _ = registry.call(entry, inputs, batch, self.advantage_kwargs)
        except ValueError as err:  # the estimator names its own argument (e.g. `lengths` = mask.sum(1))
            raise ValueError(f"`batch` (advantage estimator {self.advantage!r}): {err}") from err
        return adv

    def token_mask(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        """Stage 2: the tokens that learn, ``[B, T]`` bool: the response mask, ∧ the forking-token mask if set."""
        keep = _checks.bool_mask("mask", batch.mask)
        if self.entropy_top_ratio is None:
            return keep, {}
        batch.require("entropy", why="the forking-token mask (entropy_top_ratio)")
        keep = keep & reg.entropy_top_mask(batch.entropy.detach(), keep, self.entropy_top_ratio)
        return keep, {"entropy_mask/kept": float(keep.sum() / batch.mask.sum())}

    def token_advantages(self, batch: Batch, adv: Tensor, old_logp: Tensor, keep: Tensor) -> Tensor:
        """Stage 2b: HAPO's differential advantage redistribution (``[B, T]``) when set, else ``adv`` itself."""
        if not self.hapo_redistribution:
            return adv
        batch.require("entropy", why="HAPO's advantage redistribution")
        return sur.hapo_redistribute(batch.logp, old_logp, adv, keep, batch.entropy.detach(),
                                     beta=self.hapo_redistribution, **_clip_eps(self.surrogate_kwargs))

    def per_token_loss(self, batch: Batch, adv: Tensor, old_logp: Tensor, keep: Tensor,
                       generator: torch.Generator | None = None) -> tuple[Tensor, dict]:
        """Stage 3: the registered surrogate's per-token loss ``[B, T]`` (0 off ``keep``) and its metrics.

        ``generator`` goes to a surrogate that draws at random (one with a ``generator`` parameter, e.g.
        ``clip_cov``), never torch's global RNG; ``None`` gives a fresh generator seeded 0.
        """
        entry = registry.lookup("surrogate", self.surrogate)
        batch.require(*entry.needs, why=f"surrogate {self.surrogate!r}")
        generator = torch.Generator().manual_seed(0) if generator is None else generator
        inputs = {"logp": batch.logp, "old_logp": old_logp, "adv": adv, "mask": keep, "generator": generator}
        return registry.call(entry, inputs, batch, self.surrogate_kwargs)

    def weight_tokens(self, batch: Batch, per_token: Tensor, adv: Tensor, old_logp: Tensor,
                      keep: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Stage 4: per-token weights on the loss: STEER's λ or GTPO's conflict weights, when set."""
        if self.token_weighting == "steer":
            batch.require("entropy", why="STEER weights")
            w = reg.steer_weights(adv, batch.logp, old_logp, batch.entropy.detach(), keep,
                                  **self.token_weighting_kwargs)
            return per_token * w, {"steer/weight_mean": float(w[keep].mean())}
        if self.token_weighting == "gtpo":
            batch.require("tokens", why="GTPO conflict weights")
            w = reg.gtpo_conflict_weights(batch.tokens, keep, adv, batch.group, **self.token_weighting_kwargs)
            return per_token * w.to(per_token.dtype), {}
        return per_token, {}

    def aggregate(self, values: Tensor, keep: Tensor, adv: Tensor, group: Tensor) -> Tensor:
        """Stage 5: a per-token ``[B, T]`` tensor → scalar under the recipe's aggregation mode."""
        return aggregate(values, keep, mode=self.aggregation, adv=adv, group=group, norm_len=self.norm_len)

    def regularise(self, batch: Batch, policy_loss: Tensor, adv: Tensor, keep: Tensor) -> tuple[Tensor, dict]:
        """Stage 6: policy loss − c_H·agg(H) + β·agg(KL(π‖π_ref)), each term when its coefficient is set."""
        total, metrics = policy_loss, {}
        if self.entropy_coef:
            batch.require("entropy", why="the entropy bonus")
            total = total + reg.entropy_bonus(batch.entropy, keep, self.entropy_coef, mode=self.aggregation, adv=adv,
                                              group=batch.group, norm_len=self.norm_len)
        if self.kl_coef:
            batch.require("ref_logp", why="the KL term (kl_coef > 0)")
            kl = self.aggregate(kl_estimate(batch.logp, batch.ref_logp, self.kl_kind, mask=keep), keep, adv,
                                batch.group)
            total = total + self.kl_coef * kl
            metrics["kl"] = float(kl.detach())
        return total, metrics

    def loss(self, batch: Batch, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """Scalar loss to minimise and the metrics trainers log (TRL names where they exist): the stages in order.

        The batch is validated first (:func:`_validated`). ``generator`` drives the random choices of
        ``clip_cov`` (never torch's global RNG); ``None`` uses a fresh generator seeded 0, so one batch
        always gives one loss.
        """
        batch = _validated(batch)
        if self.aggregation == "seq-mean-token-sum-norm" and self.norm_len is None:
            raise ValueError("`norm_len` is required for seq-mean-token-sum-norm (Dr. GRPO divides by a constant, "
                             "the generation budget); RLTrainer sets it to config.max_new_tokens")
        old = batch.logp.detach() if batch.old_logp is None else batch.old_logp
        adv = self.advantages(batch)
        keep, metrics = self.token_mask(batch)
        adv = self.token_advantages(batch, adv, old, keep)
        per_token, surrogate_metrics = self.per_token_loss(batch, adv, old, keep, generator)
        per_token, weight_metrics = self.weight_tokens(batch, per_token, adv, old, keep)
        policy_loss = self.aggregate(per_token, keep, adv, batch.group)
        metrics |= surrogate_metrics | weight_metrics
        metrics["loss/policy"] = float(policy_loss.detach())
        if batch.entropy is not None:
            metrics["entropy"] = float(batch.entropy.detach()[batch.mask].mean())
        total, reg_metrics = self.regularise(batch, policy_loss, adv, keep)
        metrics |= reg_metrics
        a = adv if adv.dim() == 1 else adv[batch.mask]
        metrics["advantages/mean_abs"] = float(a.detach().abs().mean())
        return total, metrics


def _validated(batch: Batch) -> Batch:
    """The batch with every field checked (names in the errors) and off-mask values replaced by 0."""
    if not isinstance(batch, Batch):
        raise ValueError(f"`batch` must be a forklab.recipes.Batch, got {type(batch).__name__}")
    return dataclasses.replace(batch, **checked_fields(batch))


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
    """DAPO (arXiv 2503.14476): clip-higher ε_low = 0.2 / ε_high = 0.28, token-mean, no KL, and, in
    :class:`~forklab.lm.trainer.RLTrainer`: dynamic sampling (extra rollouts until the batch holds
    ``prompts_per_step`` groups with mixed rewards, degenerate groups dropped, at most
    ``RLConfig.dynamic_sampling_max_extra`` extra rollouts) and soft overlong punishment added to the
    rewards (:func:`overlong_penalty`, L_buf = 0.2 · L_max as in the paper's 4096 / 20480, f = 1,
    L_max = the trainer's ``max_new_tokens``). The paper's G = 16 is a trainer setting
    (``RLConfig(group_size=16)``); the preset does not change the group size."""
    return Recipe("dapo", "grpo", {}, "ppo_clip", {"eps_low": 0.2, "eps_high": 0.28}, "token-mean",
                  dynamic_sampling=True, overlong_buffer=0.2, overlong_factor=1.0)


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
    """Beyond the 80/20 Rule (arXiv 2506.01939): DAPO (0.2 / 0.28, token-mean, dynamic sampling,
    overlong punishment) with gradients only through the top ρ = 20% tokens by entropy in the batch."""
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


def registered(kind: str) -> dict[str, Entry]:
    """The registry: ``kind`` (``"advantage"``, ``"surrogate"`` or ``"aggregation"``) → name → :class:`Entry`."""
    return registry.entries(kind)


def get(name: str, **overrides) -> Recipe:
    """A preset by name, with any field overridden: ``get("dapo", kl_coef=0.01)``."""
    recipe = PRESETS[_checks.choice("name", name, PRESETS.keys())]()
    return recipe.replace(**overrides) if overrides else recipe
