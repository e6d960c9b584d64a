"""Input validation shared by every public function.

The contract (README.md): bad input raises ``ValueError`` whose message names the argument,
never a silently wrong number. These helpers keep that one-liner at each call site.
"""

from __future__ import annotations

import torch
from torch import Tensor


def as_tensor(name: str, x) -> Tensor:
    """Return ``x`` as a tensor, or raise naming ``name`` if it cannot be one."""
    if isinstance(x, Tensor):
        return x
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"`{name}` must be a tensor or array-like, got {type(x).__name__}") from err


def floating(name: str, x) -> Tensor:
    """A floating-point tensor (ints and bools are promoted to float32); NaN is rejected."""
    x = as_tensor(name, x)
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"`{name}` must be a real-valued tensor, got dtype {x.dtype}")
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    if torch.isnan(x).any():
        raise ValueError(f"`{name}` contains NaN")
    return x


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
    value = float(value)
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"`{name}` must be a positive finite number, got {value}")
    return value


def non_negative(name: str, value: float) -> float:
    value = float(value)
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"`{name}` must be a non-negative finite number, got {value}")
    return value


def choice(name: str, value: str, options) -> str:
    if value not in options:
        raise ValueError(f"`{name}` must be one of {sorted(options)}, got {value!r}")
    return value


def integer(name: str, value, low: int, high: float = float("inf")) -> int:
    """An integer in [low, high] (3.0 is accepted; 3.5, "3" and True are not)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value == int(value)
    if not ok or not low <= value <= high:
        bound = f"[{low}, {high}]" if high != float("inf") else f">= {low}"
        raise ValueError(f"`{name}` must be an integer {bound}, got {value!r}")
    return int(value)
