"""DAPO's dynamic sampling: draw rollouts until the batch holds enough groups with mixed rewards.

DAPO (*DAPO: An Open-Source LLM Reinforcement Learning System at Scale*, arXiv 2503.14476, eq. 11,
HIGH: the paper's constraint 0 < |{o_i correct}| < G and verl's ``filter_groups`` agree) over-samples
and filters out groups whose rewards are all equal (all correct or all wrong: zero GRPO advantage,
no gradient), so that every step trains on a full batch of informative groups::

    batch = []
    while len(batch) < P and rollouts drawn ≤ 1 + max_extra:      # verl: max_num_gen_batches
        rollout = sample P prompts × G; score them
        batch += [groups of rollout whose task rewards are not all equal]
    train on batch[:P]

verl: ``algorithm.filter_groups.enable / metric / max_num_gen_batches`` (verl raises when the budget
runs out; here the step trains on the mixed groups it found). Not in TRL. Used by
:class:`forklab.lm.trainer.RLTrainer` for recipes with ``dynamic_sampling`` (the ``dapo`` preset),
introduced in ``notebooks/00_tour.ipynb``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["fill_mixed_groups", "concat_groups"]


def fill_mixed_groups(draw: Callable[[], dict], prompts: int, group_size: int, max_extra: int,
                      pad_id: int) -> tuple[dict, dict, dict[str, float]]:
    """Rollouts from ``draw()`` until ``prompts`` groups have mixed task rewards (``rollout["score"]``).

    ``draw`` returns an ``RLTrainer.rollout`` dict (groups of ``group_size`` consecutive rows). At most
    ``max_extra`` rollouts beyond the first. Returns the first ``prompts`` mixed groups as one rollout
    (fewer when the budget ran out; groups relabelled 0..n−1), the first rollout unfiltered, and
    ``dynamic_sampling/rollouts``, ``dynamic_sampling/groups`` and ``frac_degenerate_groups`` over every
    group drawn.
    """
    if prompts < 1 or group_size < 2 or max_extra < 0:
        raise ValueError(f"need prompts >= 1, group_size >= 2, max_extra >= 0; got {prompts}, {group_size}, "
                         f"{max_extra}")
    parts, kept, mixed, degenerate, drawn = [], [], 0, 0, 0
    while mixed < prompts and len(parts) <= max_extra:
        r = draw()
        g = r["score"].reshape(-1, group_size)
        is_mixed = g.amax(1) > g.amin(1)
        ok = torch.nonzero(is_mixed).flatten()[: prompts - mixed]
        parts.append(r)
        kept.append(ok)
        mixed += len(ok)
        degenerate += int((~is_mixed).sum())
        drawn += len(is_mixed)
    stats = {"dynamic_sampling/rollouts": float(len(parts)), "dynamic_sampling/groups": float(mixed),
             "frac_degenerate_groups": degenerate / drawn}
    return concat_groups(parts, kept, group_size, pad_id), parts[0], stats


def concat_groups(parts: list[dict], kept: list[Tensor], group_size: int, pad_id: int) -> dict:
    """The groups ``kept[j]`` of each rollout ``parts[j]`` as one rollout (groups relabelled 0..n−1).

    Prompts are left-padded and responses right-padded to the longest part (positions come from the
    attention mask, so extra padding changes nothing the model sees).
    """
    rows = [(p["group"][:, None] == k.to(p["group"].device)[None, :]).any(1) for p, k in zip(parts, kept,
                                                                                             strict=True)]
    prompt_len = max(p["prompt_ids"].shape[1] for p in parts)
    response_len = max(p["tokens"].shape[1] for p in parts)

    def cat(key: str, left: bool = False, width: int = 0, value=0) -> Tensor:
        pieces = []
        for p, row in zip(parts, rows, strict=True):
            x = p[key][row]
            missing = width - x.shape[1] if width else 0
            if missing:
                pad = x.new_full((x.shape[0], missing, *x.shape[2:]), value)
                x = torch.cat([pad, x] if left else [x, pad], 1)
            pieces.append(x)
        return torch.cat(pieces)

    out = dict(prompt_ids=cat("prompt_ids", True, prompt_len, pad_id), prompt_mask=cat("prompt_mask", True, prompt_len),
               tokens=cat("tokens", width=response_len, value=pad_id), mask=cat("mask", width=response_len),
               old_logp=cat("old_logp", width=response_len), entropy=cat("entropy", width=response_len),
               hidden=None if parts[0]["hidden"] is None else cat("hidden", width=response_len),
               rewards=cat("rewards"), score=cat("score"), correct=cat("correct"),
               texts=[t for p, row in zip(parts, rows, strict=True) for t, keep in zip(p["texts"], row.tolist(),
                                                                                      strict=True) if keep])
    n = len(out["rewards"]) // group_size
    out["group"] = torch.arange(n, device=out["rewards"].device).repeat_interleave(group_size)
    return out
