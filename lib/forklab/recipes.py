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

Presets by name (:func:`get`; defined in :mod:`forklab.presets`, or in any module with
:func:`preset`): ``grpo``, ``dr_grpo``, ``dapo``, ``gspo``, ``sapo``, ``cispo``,
``ba``, ``forking20``, ``clip_cov``, ``kl_cov``, ``hapo``, ``steer``, ``lp_reg``. Each preset's
docstring lists the paper's defaults; where a preset deliberately differs (e.g. no KL term by
default) it says so. ``get("dapo", kl_coef=0.01)`` overrides any field.

Padding: :meth:`Recipe.loss` validates the whole :class:`Batch` first, with forklab's one rule
(docs/reliability.md): values off ``mask`` are ignored (NaN and ±inf included) and get exactly 0
gradient; NaN or ±inf on it, a wrong shape or dtype raise ``ValueError`` naming the field.
"""

from forklab._recipe import *  # noqa: F403 - Batch, Recipe, get, PRESETS, preset, the registry decorators
from forklab._recipe import __all__ as _recipe_all
from forklab._recipe import preset  # noqa: F401 - the decorator a module uses to add a preset (not a formula)
from forklab.presets import *  # noqa: F403 - the preset functions: recipes.grpo(), recipes.dapo(), ...
from forklab.presets import __all__ as _presets_all

__all__ = [*_recipe_all, *_presets_all]
from forklab import thr_reweighting as _thr_reweighting  # noqa: E402, F401 - registers presets
