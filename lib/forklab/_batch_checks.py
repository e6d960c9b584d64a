"""Validation of a :class:`forklab.recipes.Batch`'s fields, run first by ``Recipe.loss``.

Private. forklab's one padding rule (docs/reliability.md): values off ``mask`` are ignored (NaN and
±inf included) and come back as exactly 0; NaN or ±inf on it, a wrong shape or dtype raise
``ValueError`` naming the field.
"""

from __future__ import annotations

import torch
from torch import Tensor

from forklab import _checks


def checked_fields(batch) -> dict[str, Tensor]:
    """The fields of ``batch`` that are set, checked, off-mask values replaced by 0 (for ``dataclasses.replace``)."""
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
    return fields
