"""The ``generate`` sampling backend: ``model.generate`` for any causal LM, with forklab's statistics.

Introduced in ``notebooks/00_tour.ipynb``. The statistics come from the raw logits
(``output_logits=True``); the processed ``output_scores`` hold ``-inf`` and would give NaN entropies.
"""

from __future__ import annotations

import torch
from torch import Tensor

from forklab.lm._layout import _response_mask
from forklab.lm._token_choice import _Chooser


def _sample_generate(model, ids, mask, max_new_tokens, chooser: _Chooser, stop, pad, return_hidden) -> dict:
    """Sample with ``model.generate``; returns the same dict as ``_prefix_tree._decode_fast``.

    Algorithm: build a blank ``GenerationConfig`` (the model's own would add its eos token, top-k and
    penalties) with ``output_logits=True``; a per-token temperature hook runs as a logits processor
    before top-p and records the temperatures it used. A ``generator`` seeds the global RNG inside
    ``fork_rng`` (``generate`` takes none). Afterwards ``logp``/``entropy`` come from the raw logits
    at ``temperature`` (``chooser.stats``), ``sample_logp`` from the processed scores (sampling only),
    ``hidden`` from the last layer's last column at each step; everything after the first stop token
    is masked (PAD, 0).
    """
    from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

    recorded: list[Tensor] = []

    class _TokenTemperature(LogitsProcessor):  # runs before top-p (custom processors precede the warpers)
        def __call__(self, input_ids, scores):
            _, entropy = chooser.stats(scores.float())
            temps = chooser.token_temperatures(scores.float(), entropy)
            recorded.append(temps)
            return scores / temps[:, None].to(scores.dtype)

    sampling = not chooser.greedy
    use_fn = sampling and chooser.temperature_fn is not None
    # top_k=0: transformers' global default would be 50. Unset fields are filled from the model's own
    # generation_config (its eos token, top-k, penalties, ...), so that is swapped for a blank one below.
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=sampling, num_beams=1,
        temperature=(1.0 if use_fn else chooser.temperature) if sampling else None,
        top_p=chooser.top_p if sampling else None, top_k=0 if sampling else None,
        eos_token_id=stop, pad_token_id=pad,
        output_logits=True, output_scores=sampling, output_hidden_states=return_hidden,
        return_dict_in_generate=True, use_cache=True,
    )
    procs = LogitsProcessorList([_TokenTemperature()] if use_fn else [])
    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        if sampling and chooser.generator is not None:
            seed = int(torch.randint(0, 2**62, (1,), generator=chooser.generator, device=chooser.generator.device))
            devices = [ids.device] if ids.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                out = model.generate(input_ids=ids, attention_mask=mask.long(), generation_config=config,
                                     logits_processor=procs)
        else:
            out = model.generate(input_ids=ids, attention_mask=mask.long(), generation_config=config,
                                 logits_processor=procs)
    finally:
        model.generation_config = saved
    tokens = out.sequences[:, ids.shape[1]:]
    steps = tokens.shape[1]
    valid = _response_mask(tokens, stop)
    tokens = torch.where(valid, tokens, torch.full_like(tokens, pad))
    raw = torch.stack(out.logits, dim=1).float()  # [B, T, V] raw logits
    logp_all, entropy = chooser.stats(raw)
    logp = logp_all.gather(-1, tokens[..., None]).squeeze(-1)
    if sampling:
        sample_logp = torch.log_softmax(torch.stack(out.scores, 1).float(), -1).gather(-1, tokens[..., None])[..., 0]
    else:
        sample_logp = torch.zeros_like(logp)
    temps = torch.stack(recorded, 1) if use_fn else torch.full_like(logp, chooser.temperature)
    hidden = None
    if return_hidden:
        hidden = torch.stack([step[-1][:, -1] for step in out.hidden_states], dim=1)[:, :steps]
        hidden = hidden * valid[..., None]
    zero = torch.zeros((), device=tokens.device)
    return dict(tokens=tokens, mask=valid, logp=torch.where(valid, logp, zero),
                entropy=torch.where(valid, entropy, zero), sample_logp=torch.where(valid, sample_logp, zero),
                temperatures=torch.where(valid, temps.float(), zero), hidden=hidden)
