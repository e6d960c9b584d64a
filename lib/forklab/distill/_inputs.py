"""Input checks shared by :mod:`forklab.distill` (private).

The padding rule of every forklab module: values off ``mask`` are ignored (NaN and ±inf included) and
never reach a result or a gradient; NaN or ±inf on the mask raises ``ValueError`` naming the argument.
Results are float64 when any float input is float64, float32 otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor

from forklab import _checks


def mask_2d(mask) -> Tensor:
    """A bool ``[B, T]`` mask (may be empty: per-token losses are then all 0)."""
    mask = _checks.bool_mask("mask", mask)
    if mask.dim() != 2:
        raise ValueError(f"`mask` must have shape [B, T], got {list(mask.shape)}")
    return mask


def dtype_of(*xs: Tensor) -> torch.dtype:
    return torch.float64 if any(x.dtype == torch.float64 for x in xs) else torch.float32


def token(name: str, x, mask: Tensor) -> Tensor:
    """A per-token float ``[B, T]`` value, 0 off the mask (keeps the gradient of on-mask values)."""
    return _checks.masked(name, x, mask)


def per_token(name: str, x, mask: Tensor) -> Tensor:
    """A per-sequence ``[B]`` value broadcast to ``[B, T]``, or a per-token ``[B, T]`` one; 0 off the mask."""
    x = _checks.as_tensor(name, x)
    if x.dim() == 1:
        if x.shape[0] != mask.shape[0]:
            raise ValueError(f"`{name}` must have shape [B] = [{mask.shape[0]}] or [B, T] = {list(mask.shape)}, "
                             f"got {list(x.shape)}")
        x = x[:, None].expand(mask.shape)
    elif x.shape != mask.shape:
        raise ValueError(f"`{name}` must have shape [B] = [{mask.shape[0]}] or [B, T] = {list(mask.shape)}, "
                         f"got {list(x.shape)}")
    return _checks.masked(name, x, mask)


def sequence(name: str, x, n: int) -> Tensor:
    """A finite float ``[n]`` tensor, one value per response."""
    x = _checks.floating(name, x)
    if x.dim() != 1 or x.shape[0] != n:
        raise ValueError(f"`{name}` must have shape [{n}] (one value per response), got {list(x.shape)}")
    return x


def logits(name: str, x, mask: Tensor) -> Tensor:
    """Float logits ``[B, T, V]`` matching ``mask``; off-mask rows are replaced by zeros before any check."""
    x = _checks.as_tensor(name, x)
    if not x.is_floating_point():
        raise ValueError(f"`{name}` must be a floating tensor, got dtype {x.dtype}")
    if x.dim() != 3 or x.shape[:2] != mask.shape or x.shape[-1] == 0:
        raise ValueError(f"`{name}` must have shape [B, T, V] with [B, T] = {list(mask.shape)}, got {list(x.shape)}")
    x = torch.where(mask.to(x.device)[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))
    return _checks.logits(name, x)


def zero_off(x: Tensor, mask: Tensor) -> Tensor:
    """``x`` with exactly 0 (value and gradient) off the mask."""
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))
