"""The response space of :mod:`forklab.envs.seqpolicy`: enumeration, masks, indices (private; use ``seqpolicy``)."""

from __future__ import annotations

import functools
import itertools
from typing import NamedTuple

import torch
from torch import Tensor

from forklab import _checks

MAX_LEN_LIMIT = 6  # 364 responses for V = 3; enumeration stays instant
VOCAB_LIMIT = 8
DTYPE = torch.float64


# ----- the response space -------------------------------------------------------------------------
_integer = _checks.integer


def _check_space(vocab_size: int, max_len: int) -> tuple[int, int]:
    return _integer("vocab_size", vocab_size, 1, VOCAB_LIMIT), _integer("max_len", max_len, 2, MAX_LEN_LIMIT)


def num_responses(vocab_size: int = 3, max_len: int = 4) -> int:
    """N = Σ_{k<L} V^k: every response of 0..L-1 ordinary tokens followed by END."""
    v, L = _check_space(vocab_size, max_len)
    return sum(v**k for k in range(L))


class Responses(NamedTuple):
    """Every possible response, ordered by length then lexicographically; ``T = max_len``."""

    tokens: Tensor  # [N, T] long, END-padded
    mask: Tensor  # [N, T] bool, True on response tokens (END included)
    lengths: Tensor  # [N] long, counts END


@functools.lru_cache(maxsize=32)
def _enumeration(vocab_size: int, max_len: int) -> Responses:
    end = vocab_size
    rows = [list(body) + [end] * (max_len - k) for k in range(max_len)
            for body in itertools.product(range(vocab_size), repeat=k)]
    tokens = torch.tensor(rows, dtype=torch.long)
    lengths = torch.tensor([k + 1 for k in range(max_len) for _ in range(vocab_size**k)], dtype=torch.long)
    mask = torch.arange(max_len)[None, :] < lengths[:, None]
    return Responses(tokens, mask, lengths)


def enumerate_responses(vocab_size: int = 3, max_len: int = 4) -> Responses:
    """All N responses as padded tensors (fresh copies: safe to modify).

    ============  ===============================================
    field         shape
    ============  ===============================================
    tokens        ``[N, max_len]`` long, padded with END (= V)
    mask          ``[N, max_len]`` bool, True on response tokens
    lengths       ``[N]`` long, 1..max_len, END counted
    ============  ===============================================
    """
    cached = _enumeration(*_check_space(vocab_size, max_len))
    return Responses(*(x.clone() for x in cached))


def _check_tokens(tokens, vocab_size: int, max_len: int, batch: int | None = None) -> Tensor:
    tokens = _checks.as_tensor("tokens", tokens)
    if tokens.is_floating_point() or tokens.dtype == torch.bool or tokens.is_complex():
        raise ValueError(f"`tokens` must be an integer tensor of token ids, got dtype {tokens.dtype}")
    if tokens.dim() != 2 or not 1 <= tokens.shape[1] <= max_len:
        raise ValueError(f"`tokens` must have shape [B, T] with 1 <= T <= max_len = {max_len}, "
                         f"got {list(tokens.shape)}")
    if batch is not None and tokens.shape[0] != batch:
        raise ValueError(f"`tokens` must have {batch} rows (one per prompt id), got {tokens.shape[0]}")
    if tokens.numel() and (tokens.min() < 0 or tokens.max() > vocab_size):
        raise ValueError(f"`tokens` must lie in [0, {vocab_size}] (END = {vocab_size}), "
                         f"got ids in [{int(tokens.min())}, {int(tokens.max())}]")
    return tokens.long()


def _check_prompt_ids(prompt_ids, num_prompts: int) -> Tensor:
    prompt_ids = _checks.as_tensor("prompt_ids", prompt_ids)
    if prompt_ids.is_floating_point() or prompt_ids.dtype == torch.bool or prompt_ids.is_complex():
        raise ValueError(f"`prompt_ids` must be an integer tensor, got dtype {prompt_ids.dtype}")
    if prompt_ids.dim() != 1:
        raise ValueError(f"`prompt_ids` must have shape [B], got {list(prompt_ids.shape)}")
    if prompt_ids.numel() and (prompt_ids.min() < 0 or prompt_ids.max() >= num_prompts):
        raise ValueError(f"`prompt_ids` must lie in [0, {num_prompts}), "
                         f"got ids in [{int(prompt_ids.min())}, {int(prompt_ids.max())}]")
    return prompt_ids.long()


def response_mask(tokens, vocab_size: int = 3, max_len: int = 4) -> Tensor:
    """True on every position up to and including the first END, ``[B, T]`` bool."""
    v, L = _check_space(vocab_size, max_len)
    tokens = _check_tokens(tokens, v, L)
    ended_before = torch.cumsum((tokens == v).long(), 1) - (tokens == v).long()  # ENDs strictly before t
    return ended_before == 0


def _check_mask(mask, tokens: Tensor, vocab_size: int, max_len: int, complete: bool) -> Tensor:
    """A mask inside the response positions; ``complete`` demands exactly the full responses."""
    mask = _checks.bool_mask("mask", mask)
    _checks.same_shape("tokens", tokens, "mask", mask)
    if not mask.any():
        raise ValueError("`mask` is empty: no response token selected")
    full = response_mask(tokens, vocab_size, max_len)
    if (mask & ~full).any():
        raise ValueError("`mask` is True after a response's END token (padding positions have no policy)")
    if complete:
        ended = (mask & (tokens == vocab_size)).any(1)
        if not torch.equal(mask, full) or not ended.all():
            raise ValueError("`mask` must mark complete responses: every position up to and including END")
    if tokens.shape[1] == max_len and (mask[:, -1] & (tokens[:, -1] != vocab_size)).any():
        raise ValueError(f"`tokens` has an ordinary token at position max_len - 1 = {max_len - 1}, where only "
                         f"END ({vocab_size}) is allowed (probability 0)")
    return mask


def response_index(tokens, mask, vocab_size: int = 3, max_len: int = 4) -> Tensor:
    """Position of each complete response in :func:`enumerate_responses`, ``[B]`` long.

    A response of k ordinary tokens ``y_0..y_{k-1}`` sits at Σ_{i<k} V^i + Σ_j y_j V^{k-1-j}.
    """
    v, L = _check_space(vocab_size, max_len)
    tokens = _check_tokens(tokens, v, L)
    mask = _check_mask(mask, tokens, v, L, complete=True)
    k = mask.sum(1) - 1  # ordinary tokens before END
    code = torch.zeros(tokens.shape[0], dtype=torch.long)
    for j in range(tokens.shape[1]):
        code = torch.where(j < k, code * v + tokens[:, j], code)
    offsets = torch.tensor([sum(v**i for i in range(n)) for n in range(L + 1)], dtype=torch.long)
    return offsets[k] + code


class Rollout(NamedTuple):
    """Sampled responses, ``B·G`` rows (group_size consecutive rows per requested prompt)."""

    prompt_ids: Tensor  # [B·G] long, the prompt each response answers
    group: Tensor  # [B·G] long, index of the request in `prompt_ids` (= prompt id if each is asked once)
    tokens: Tensor  # [B·G, L] long, END-padded
    mask: Tensor  # [B·G, L] bool
    logp: Tensor  # [B·G, L] float64, log-prob of each sampled token under the sampler (detached), 0 off-mask
    lengths: Tensor  # [B·G] long, END counted


# ----- policies -------------------------------------------------------------------------------
