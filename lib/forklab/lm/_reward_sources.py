"""TRL-style prompts and rewards for ``RLTrainer``: ``reward_funcs``, ``train_dataset``, ``reward_weights``.

Private; used by :class:`forklab.lm.trainer.RLTrainer` (introduced in
``notebooks/01_policy_gradients_and_advantages.ipynb``). What TRL's ``GRPOTrainer`` does with them, on
forklab's rollouts::

    prompts      = P rows drawn from train_dataset (column "prompt"), each repeated G times
    completions  = decoded responses, special tokens skipped (the tiny models' ";" is their EOS: dropped)
    rewards[:,j] = reward_funcs[j](prompts=..., completions=..., completion_ids=..., **other columns)
    reward       = Σ_j reward_weights[j] · rewards[:, j]   (None → NaN, ignored by the sum, as TRL's nansum)

``completion_ids`` are each response's token ids, the EOS included when the response ended with it (as
TRL passes them). A dataset is a list of prompt strings, a list of dicts with a ``"prompt"`` key, or a
``datasets.Dataset`` with a ``prompt`` column; every other column is passed to the functions by name,
one value per completion.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["DatasetRow", "dataset_rows", "RewardFunctions"]


@dataclass(frozen=True)
class DatasetRow:
    """One prompt of a ``train_dataset`` and its other columns (``prompt`` is what the sampler reads)."""

    prompt: str
    columns: dict = field(default_factory=dict)


def dataset_rows(train_dataset) -> list[DatasetRow]:
    """The rows of a list of strings, a list of dicts with ``"prompt"``, or a ``datasets.Dataset`` with that column."""
    if isinstance(train_dataset, str | bytes) or not hasattr(train_dataset, "__len__") or len(train_dataset) == 0:
        raise ValueError("`train_dataset` must be a non-empty list of prompts or a datasets.Dataset with a 'prompt' "
                         f"column, got {type(train_dataset).__name__}")
    rows = []
    for i, item in enumerate(train_dataset):
        if isinstance(item, str):
            item = {"prompt": item}
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
            raise ValueError(f"`train_dataset`: row {i} must be a str or have a str 'prompt' (chat messages are not "
                             f"supported), got {item!r:.80}")
        rows.append(DatasetRow(item["prompt"], {k: v for k, v in item.items() if k != "prompt"}))
    return rows


class RewardFunctions:
    """TRL-style reward functions and weights; ``__call__`` scores one rollout's completions (see the module)."""

    def __init__(self, reward_funcs: Callable | Sequence[Callable], reward_weights: Sequence[float] | None = None):
        funcs = [reward_funcs] if callable(reward_funcs) else list(reward_funcs)
        if not funcs or not all(callable(f) for f in funcs):
            raise ValueError("`reward_funcs` must be a callable f(prompts, completions, **kw) -> list[float] or a "
                             "non-empty list of them")
        if reward_weights is None:
            reward_weights = [1.0] * len(funcs)
        weights = [float(w) for w in reward_weights]
        if len(weights) != len(funcs) or not all(math.isfinite(w) for w in weights):
            raise ValueError(f"`reward_weights` must hold {len(funcs)} finite numbers (one per reward function), "
                             f"got {list(reward_weights)!r}")
        self.funcs, self.weights = funcs, weights

    def __call__(self, rows: Sequence, group_size: int, tokenizer, tokens: Tensor, mask: Tensor) -> Tensor:
        """Weighted rewards ``[P·G]`` float64 of the completions; row ``i`` answers ``rows[i // group_size]``."""
        ids = [[t for t, k in zip(r, m, strict=True) if k] for r, m in zip(tokens.tolist(), mask.tolist(), strict=True)]
        special = {tokenizer.pad_id, tokenizer.eos_id}
        completions = [tokenizer.decode([t for t in row if t not in special]) for row in ids]
        prompts = [rows[i // group_size].prompt for i in range(len(ids))]
        columns = {}
        for key in {k for r in rows for k in getattr(r, "columns", {})}:
            columns[key] = [rows[i // group_size].columns.get(key) for i in range(len(ids))]
        per_func = torch.empty(len(ids), len(self.funcs), dtype=torch.float64)
        for j, f in enumerate(self.funcs):
            values = f(prompts=prompts, completions=completions, completion_ids=ids, **columns)
            if len(values) != len(ids):
                name = getattr(f, "__name__", repr(f))
                raise ValueError(f"`reward_funcs`: {name} returned {len(values)} rewards for {len(ids)} completions")
            per_func[:, j] = torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float64)
        if per_func.isnan().all(1).any():
            raise ValueError("`reward_funcs`: every function returned None for some completion")
        return (per_func * torch.tensor(self.weights, dtype=torch.float64)).nansum(1)
