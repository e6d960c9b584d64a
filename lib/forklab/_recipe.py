"""The :class:`Recipe` and :class:`Batch` dataclasses, the preset list and :func:`get`.

The public face is :mod:`forklab.recipes`, which also re-exports the presets.
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
    entropy (80/20); ``entropy_keep``: ``"top"`` (default) keeps that share, ``"bottom"`` keeps the
    other tokens instead (the paper's bottom-80% ablation); ``token_weighting``: ``None``, ``"steer"``
    or ``"gtpo"``; ``hapo_redistribution``:
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
    entropy_keep: str = "top"
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
        _checks.choice("entropy_keep", self.entropy_keep, {"top", "bottom"})
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
        top = reg.entropy_top_mask(batch.entropy.detach(), keep, self.entropy_top_ratio)
        keep = keep & (top if self.entropy_keep == "top" else ~top)
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
PRESETS: dict[str, Callable[[], Recipe]] = {}


def preset(fn: Callable[[], Recipe]) -> Callable[[], Recipe]:
    """Decorator: list a zero-argument preset function in :data:`PRESETS` under its name (modules
    outside this file add theirs the same way; they are imported at the end of this module)."""
    if fn.__name__ in PRESETS:
        raise ValueError(f"preset {fn.__name__!r} is already defined (by {PRESETS[fn.__name__].__module__})")
    PRESETS[fn.__name__] = fn
    return fn


def registered(kind: str) -> dict[str, Entry]:
    """The registry: ``kind`` (``"advantage"``, ``"surrogate"`` or ``"aggregation"``) → name → :class:`Entry`."""
    return registry.entries(kind)


def get(name: str, **overrides) -> Recipe:
    """A preset by name, with any field overridden: ``get("dapo", kl_coef=0.01)``."""
    recipe = PRESETS[_checks.choice("name", name, PRESETS.keys())]()
    return recipe.replace(**overrides) if overrides else recipe

