"""Batch layout of prompts and responses: left padding, positions, the response mask.

Introduced in ``notebooks/00_tour.ipynb``. Shared by both sampling backends and the trainers::

    prompt_ids   [B, Lp]   PAD PAD  1   +   2   =          prompt_mask  F F T T T T
    tokens       [B, T]    3   ;   PAD PAD                mask         T T F F
    positions of the prompt = prompt_mask.cumsum(-1) - 1 (clamped at 0); the response continues from there
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["position_ids_from_mask"]


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions of a padded batch: ``attention_mask.cumsum(-1) - 1``, clamped at 0 (long, same shape).

    Every forward pass that scores sampled tokens must use these, not ``0..L-1``: with left padding
    the two differ and the scored log-probs would not match the sampled ones.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _response_mask(tokens: Tensor, stop: int | None) -> Tensor:
    """True up to and including each row's first ``stop`` token (everywhere when ``stop`` is None)."""
    if stop is None:
        return torch.ones_like(tokens, dtype=torch.bool)
    is_stop = (tokens == stop).long()
    return (is_stop.cumsum(1) - is_stop) == 0

