"""What both trainers do to get rollouts: draw prompts, repeat each G times, sample, decode; greedy accuracy.

Private; :mod:`forklab.lm.trainer` re-exports ``model_device``, ``response_inputs`` and
``decode_responses``. Random draws, in this order, all from the caller's ``generator``: the prompt
indices, then the sampler's draws (so a trainer's run is reproducible from its seed).
"""

from __future__ import annotations

import torch
from torch import Tensor

from forklab.lm import sampling


def model_device(model) -> torch.device:
    """The device of ``model``'s first parameter (where its inputs must go)."""
    return next(model.parameters()).device


def response_inputs(prompt_ids: Tensor, prompt_mask: Tensor, tokens: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """Model inputs for teacher-forcing sampled responses: left-padded prompt + response, positions from the mask."""
    ids = torch.cat([prompt_ids, tokens], 1)
    attention = torch.cat([prompt_mask, mask], 1)
    return dict(input_ids=ids, attention_mask=attention.long(), position_ids=sampling.position_ids_from_mask(attention))


def decode_responses(tokenizer, tokens: Tensor, mask: Tensor) -> list[str]:
    """The text of each row's response tokens (where ``mask`` is True)."""
    # one tolist per tensor, not one indexing per row: per-row tensor ops cost more than decoding here
    rows, keep = tokens.tolist(), mask.tolist()
    return [tokenizer.decode([t for t, k in zip(row, m, strict=True) if k]) for row, m in zip(rows, keep, strict=True)]


def encode_prompts(model, tokenizer, examples) -> tuple[Tensor, Tensor]:
    """Left-padded ``prompt_ids, prompt_mask [P, Lp]`` of the examples' prompts, on ``model``'s device."""
    ids, pmask = tokenizer.batch_encode([e.prompt for e in examples], pad_side="left")
    device = model_device(model)
    return ids.to(device), pmask.to(device)


@torch.no_grad()
def sample_groups(model, tokenizer, pool, prompts: int, group_size: int, generator: torch.Generator,
                  max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                  return_hidden: bool = False) -> tuple[list, sampling.Samples]:
    """``prompts`` examples drawn from ``pool`` (with replacement) and ``group_size`` samples of each.

    Returns the drawn examples ``[P]`` and the :class:`~forklab.lm.sampling.Samples` of the ``P·G`` rows
    (row ``i`` answers example ``i // G``). Puts ``model`` in eval mode.
    """
    idx = torch.randint(0, len(pool), (prompts,), generator=generator)
    examples = [pool[i] for i in idx.tolist()]
    ids, pmask = encode_prompts(model, tokenizer, examples)
    ids, pmask = ids.repeat_interleave(group_size, 0), pmask.repeat_interleave(group_size, 0)
    if model.training:  # a walk over the modules: only when needed
        model.eval()
    samples = sampling.sample(model, ids, pmask, max_new_tokens, temperature=temperature, top_p=top_p,
                              stop_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id, generator=generator,
                              return_hidden=return_hidden)
    return examples, samples


@torch.no_grad()
def greedy_accuracy(model, tokenizer, task, examples, max_new_tokens: int) -> float:
    """Share of ``examples`` whose greedy response ``task.reward`` accepts."""
    ids, pmask = encode_prompts(model, tokenizer, examples)
    greedy = sampling.sample(model, ids, pmask, max_new_tokens, greedy=True, stop_token_id=tokenizer.eos_id,
                             pad_token_id=tokenizer.pad_id)
    texts = decode_responses(tokenizer, greedy.tokens, greedy.mask)
    return float(sum(task.reward(e, r) for e, r in zip(examples, texts, strict=True)) / len(examples))
