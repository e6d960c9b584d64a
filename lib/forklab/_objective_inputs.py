"""Validation, masking and ratio metrics shared by the per-token objectives (:mod:`forklab.surrogates`,
:mod:`forklab.regularizers`, :mod:`forklab.adaptive_clipping`).

Private: the objectives' public docstrings state the conventions (``logp``, ``old_logp`` ``[B, T]``,
``adv`` ``[B]`` or ``[B, T]``, ``mask`` bool ``[B, T]``); these helpers enforce them in one place.
:func:`ratio_metrics` is public through :mod:`forklab.surrogates`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from forklab import _checks
from forklab.ops import masked_mean

#: δ = logp − old_logp is clamped to [−20, 20] before exponentiation (as verl does).
_LOG_RATIO_CLAMP = 20.0


def _prepare(logp, old_logp, adv, mask) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """Validate an objective's inputs; ``adv [B]`` is broadcast to ``[B, T]``; ``old_logp`` may be None.

    One padding rule: values off the mask are ignored (even NaN/inf) and come back as 0; NaN/inf on
    the mask raise a ``ValueError`` naming the argument (``_checks.masked``).
    """
    logp = _checks.as_tensor("logp", logp)
    if logp.dim() != 2:
        raise ValueError(f"`logp` must have shape [B, T], got {list(logp.shape)}")
    mask = _checks.bool_mask("mask", mask)
    _checks.same_shape("logp", logp, "mask", mask)
    logp = _checks.masked("logp", logp, mask)
    if old_logp is not None:
        old_logp = _checks.as_tensor("old_logp", old_logp)
        _checks.same_shape("logp", logp, "old_logp", old_logp)
        old_logp = _checks.masked("old_logp", old_logp, mask).to(logp.dtype)
    adv = _checks.as_tensor("adv", adv)
    if adv.dim() == 1 and adv.shape[0] == logp.shape[0]:
        adv = adv[:, None].expand_as(logp)
    elif adv.shape != logp.shape:
        raise ValueError(f"`adv` must have shape [{logp.shape[0]}] or {list(logp.shape)}, got {list(adv.shape)}")
    adv = _checks.masked("adv", adv, mask).to(logp.dtype)
    if not mask.any():
        raise ValueError("`mask` is empty: no token to compute a loss for")
    return logp, old_logp, adv, mask


def _eps(name: str, value, high: float = 1e6) -> float:
    """A clip width: finite, in [0, high] (``eps_low`` of a ratio clip must stay ≤ 1: r ≥ 0 already)."""
    return _checks.finite(name, value, 0.0, high)


def _eps_tensor(name: str, value, like: Tensor, high: float):
    """A clip width that may also be a per-token tensor (HAPO, DCPO): float or ``like``-shaped, in [0, high]."""
    if isinstance(value, Tensor):
        value = _checks.floating(name, value).to(like.dtype)
        if value.dim() and value.shape != like.shape:
            raise ValueError(f"`{name}` must be a number or have shape {list(like.shape)}, got {list(value.shape)}")
        if ((value < 0) | (value > high)).any():
            raise ValueError(f"`{name}` must lie in [0, {high}]")
        return value
    return _eps(name, value, high)


def _masked(loss: Tensor, mask: Tensor) -> Tensor:
    """``loss`` with exact zeros off the mask (``torch.where``, so NaN/inf padding cannot leak)."""
    return torch.where(mask, loss, torch.zeros((), dtype=loss.dtype))


def _log_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor) -> Tensor:
    """δ = logp − sg[old_logp], 0 off the mask, clamped to ±``_LOG_RATIO_CLAMP``."""
    # off-mask positions get δ = 0 so that garbage there cannot produce inf·0 = NaN gradients
    delta = torch.where(mask, logp - old_logp.detach(), torch.zeros((), dtype=logp.dtype))
    return delta.clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)


def _mean(x: Tensor, mask: Tensor) -> float:
    """A metric: the mean of ``x`` over the valid tokens, as a Python float."""
    return float(masked_mean(x, mask))


def _share(flags: Tensor, mask: Tensor) -> float:
    """A metric: the share of valid tokens where the bool ``flags`` hold (float32, like ``flags.sum() / n``)."""
    return float(masked_mean(flags.float(), mask))


def ratio_metrics(ratio: Tensor, adv: Tensor, mask: Tensor, eps_low=0.2, eps_high=0.2) -> dict[str, float]:
    """What TRL/verl log about a clipped ratio, over the valid tokens.

    ``clip_ratio/low_mean``: share with r < 1 − ε_low and A < 0 (the lower clip binds);
    ``clip_ratio/high_mean``: share with r > 1 + ε_high and A > 0 (the upper clip binds);
    ``clip_ratio/region_mean``: their union (TRL's names; verl calls the union ``pg_clipfrac``);
    ``ratio/mean``: mean r. ``ratio``, ``adv``, ``mask`` are ``[B, T]``; ``eps_*`` floats or ``[B, T]``.
    """
    mask = _checks.bool_mask("mask", mask)
    r = _checks.masked("ratio", _checks.as_tensor("ratio", ratio).detach(), mask)
    adv = _checks.as_tensor("adv", adv)
    if adv.dim() == 1 and adv.shape[0] == r.shape[0]:
        adv = adv[:, None].expand_as(r)
    adv = _checks.masked("adv", adv, mask)
    if not mask.any():
        raise ValueError("`mask` is empty: no token to compute metrics over")
    eps_low, eps_high = _eps_tensor("eps_low", eps_low, r, 1e6), _eps_tensor("eps_high", eps_high, r, 1e6)
    low = (r < 1 - eps_low) & (adv < 0) & mask
    high = (r > 1 + eps_high) & (adv > 0) & mask
    return {
        "ratio/mean": _mean(r, mask),
        "clip_ratio/low_mean": _share(low, mask),
        "clip_ratio/high_mean": _share(high, mask),
        "clip_ratio/region_mean": _share(low | high, mask),
    }
