"""Input validation shared by every public function.

The contract (README.md, docs/reliability.md): bad input raises ``ValueError`` whose message names
the argument, never a silently wrong number. These helpers keep that one-liner at each call site.

The padding rule, one for every module: values *off* the mask are ignored, whatever they hold
(NaN and ±inf included: padding often holds garbage), and never reach a result or a gradient;
NaN or ±inf *on* the mask is an error naming the argument (:func:`masked`). An input without a mask
is all "on the mask" (:func:`floating` rejects NaN and ±inf). Logits may hold −inf (filtered
tokens) but not NaN, +inf, or a row that is −inf everywhere (:func:`logits`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def as_tensor(name: str, x) -> Tensor:
    """Return ``x`` as a tensor, or raise naming ``name`` if it cannot be one."""
    if isinstance(x, Tensor):
        if x.device.type == "meta":
            raise ValueError(f"`{name}` is on the meta device (it holds no values)")
        return x
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:
        raise ValueError(f"`{name}` must be a tensor or array-like, got {type(x).__name__}") from err


def floating(name: str, x, allow_inf: bool = False) -> Tensor:
    """A floating-point tensor (integers are promoted to float32); NaN and (unless allowed) ±inf are rejected."""
    x = as_tensor(name, x)
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"`{name}` must be a real-valued tensor, got dtype {x.dtype}")
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    if torch.isnan(x).any():
        raise ValueError(f"`{name}` contains NaN")
    if not allow_inf and torch.isinf(x).any():
        raise ValueError(f"`{name}` contains inf")
    return x


def masked(name: str, x, mask: Tensor) -> Tensor:
    """``x`` (float, the shape of ``mask``) with every off-mask value replaced by 0.

    NaN or ±inf on the mask raises; off it they are ignored. ``torch.where`` (not a product) keeps
    the gradient of the on-mask values and gives exactly 0 gradient off the mask.
    """
    x = as_tensor(name, x)
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"`{name}` must be a real-valued tensor, got dtype {x.dtype}")
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    if x.shape != mask.shape:
        raise ValueError(f"`{name}` must have the same shape as `mask` ({list(mask.shape)}), got {list(x.shape)}")
    if x.device != mask.device:
        mask = mask.to(x.device)
    on = x[mask]
    if torch.isnan(on).any():
        raise ValueError(f"`{name}` contains NaN inside `mask`")
    if torch.isinf(on).any():
        raise ValueError(f"`{name}` contains inf inside `mask`")
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


def logits(name: str, x, min_dim: int = 1) -> Tensor:
    """Float logits ``[..., V]``: −inf allowed (a filtered token), NaN, +inf and all −inf rows are not."""
    x = as_tensor(name, x)
    if not x.is_floating_point():
        raise ValueError(f"`{name}` must be a floating tensor, got dtype {x.dtype}")
    if x.dim() < min_dim or x.shape[-1] == 0:
        raise ValueError(f"`{name}` must have a non-empty last (vocabulary) dimension, got {list(x.shape)}")
    if torch.isnan(x).any():
        raise ValueError(f"`{name}` contains NaN")
    if (x == float("inf")).any():
        raise ValueError(f"`{name}` contains +inf")
    if x.numel() and (x == float("-inf")).all(-1).any():
        raise ValueError(f"`{name}` has a row that is -inf everywhere (no token has any probability)")
    return x


def finite(name: str, value, low: float = -float("inf"), high: float = float("inf"),
           low_open: bool = False) -> float:
    """A finite real number in [low, high] (or (low, high] with ``low_open``)."""
    try:
        value = float(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"`{name}` must be a number, got {value!r}") from err
    ok = math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bounds = f"{'(' if low_open else '['}{low}, {high}]"
        raise ValueError(f"`{name}` must be a finite number in {bounds}, got {value}")
    return value


def bool_mask(name: str, mask) -> Tensor:
    """A boolean mask; 0/1 integer tensors are accepted, anything else is an error."""
    mask = as_tensor(name, mask)
    if mask.dtype == torch.bool:
        return mask
    if mask.is_floating_point() or mask.is_complex():
        raise ValueError(f"`{name}` must be a bool tensor (True on response tokens), got dtype {mask.dtype}")
    if ((mask != 0) & (mask != 1)).any():
        raise ValueError(f"`{name}` must hold only 0/1 (or be bool), got other integers")
    return mask.bool()


def group_ids(name: str, group, n: int) -> Tensor:
    """An integer ``[n]`` tensor of group (prompt) ids."""
    group = as_tensor(name, group)
    if group.is_floating_point() or group.dtype == torch.bool or group.is_complex():
        raise ValueError(f"`{name}` must be an integer tensor of prompt ids, got dtype {group.dtype}")
    if group.dim() != 1 or group.shape[0] != n:
        raise ValueError(f"`{name}` must have shape [{n}] (one id per response), got {list(group.shape)}")
    return group.long()


def same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"`{name_b}` must have the same shape as `{name_a}` ({list(a.shape)}), got {list(b.shape)}"
        )


def positive(name: str, value: float) -> float:
    value = finite(name, value) if not isinstance(value, int | float) else float(value)
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"`{name}` must be a positive finite number, got {value}")
    return value


def non_negative(name: str, value: float) -> float:
    value = finite(name, value) if not isinstance(value, int | float) else float(value)
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"`{name}` must be a non-negative finite number, got {value}")
    return value


def choice(name: str, value: str, options) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"`{name}` must be one of {sorted(options)}, got {value!r}")
    return value


def integer(name: str, value, low: int, high: float = float("inf")) -> int:
    """An integer in [low, high] (3.0 is accepted; 3.5, "3" and True are not)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) \
        and value == int(value)
    if not ok or not low <= value <= high:
        bound = f"[{low}, {high}]" if high != float("inf") else f">= {low}"
        raise ValueError(f"`{name}` must be an integer {bound}, got {value!r}")
    return int(value)
