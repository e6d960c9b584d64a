"""Validation and masking shared by the per-token objectives (:mod:`forklab.surrogates`, :mod:`forklab.regularizers`).

Private: the objectives' public docstrings state the conventions (``logp``, ``old_logp`` ``[B, T]``,
``adv`` ``[B]`` or ``[B, T]``, ``mask`` bool ``[B, T]``); these helpers enforce them in one place.
"""

from __future__ import annotations

import torch
from torch import Tensor

from forklab import _checks
from forklab.ops import masked_mean

#: δ = logp − old_logp is clamped to [−20, 20] before exponentiation (as verl does).
_LOG_RATIO_CLAMP = 20.0


def _prepare(logp, old_logp, adv, mask) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """Validate an objective's inputs; ``adv [B]`` is broadcast to ``[B, T]``; ``old_logp`` may be None."""
    logp = _checks.floating("logp", logp)
    if logp.dim() != 2:
        raise ValueError(f"`logp` must have shape [B, T], got {list(logp.shape)}")
    mask = _checks.bool_mask("mask", mask)
    _checks.same_shape("logp", logp, "mask", mask)
    if old_logp is not None:
        old_logp = _checks.floating("old_logp", old_logp).to(logp.dtype)
        _checks.same_shape("logp", logp, "old_logp", old_logp)
    adv = _checks.floating("adv", adv).to(logp.dtype)
    if adv.dim() == 1 and adv.shape[0] == logp.shape[0]:
        adv = adv[:, None].expand_as(logp)
    elif adv.shape != logp.shape:
        raise ValueError(f"`adv` must have shape [{logp.shape[0]}] or {list(logp.shape)}, got {list(adv.shape)}")
    if not mask.any():
        raise ValueError("`mask` is empty: no token to compute a loss for")
    return logp, old_logp, adv, mask


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
