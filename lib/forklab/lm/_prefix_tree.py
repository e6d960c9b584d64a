"""The fast sampling backend: prompts prefilled once, G samples decoded as a prefix tree.

Introduced in ``notebooks/00_tour.ipynb``; called by :func:`forklab.lm.sampling.sample` for every
``LlamaForCausalLM``. It runs :class:`~forklab.lm._llama_runner.TinyLlamaRunner`, drops rows that have
stopped from the batch, and does not repeat work the rows of an RL batch share: each distinct prompt
is prefilled once, and the samples of a prompt that still agree token for token are decoded as one
row (a prefix tree whose nodes split, copying their cache row, where the samples diverge).
``benchmarks/results/sampler.md`` has the measured speed-ups (largest for small batches, where
per-operation overhead dominates, and for RL batches of G samples per prompt).

Pseudocode::

    U = distinct prompts; node[b] = the computed row of batch row b           # G samples of a prompt: one node
    cache = empty[layers, U, heads, Lp + max_new_tokens, head_dim]   # K and V, preallocated once
    z = forward(U prompts, positions from the mask, causal ∧ key-is-real mask)  → fills cache[..., :Lp, :]
    for t in 0 .. max_new_tokens-1:
        z_b = z[node[b]]                                                # the logits of every batch row
        y_t = argmax z_b                    if greedy
            ~ top_p(softmax(z_b / τ_t))     otherwise   (τ_t = token_temperature_fn(z_b, H_t) or temperature)
        keep z_b (raw logits) for the statistics
        stop if every row has emitted stop_token_id; rows that did leave the batch
        nodes ← distinct (node[b], y_t[b]) pairs; copy a node's cache row to each extra child
        z = forward(each node's token at column Lp + t, position n + t)       → writes cache[..., Lp + t, :]

    (Once no two rows share a node the batch is plain: finished rows ride along, masked, until they are
    ≥ 1/8 of it, then their cache rows are dropped. Models whose per-row cache is over 1/8 of their
    weights, e.g. SmolLM2 at long lengths, copy the prompt rows once and skip the tree.)
    logp = log_softmax(z / temperature)[y] ;  entropy = H(softmax(z / temperature))   # all steps at once*
    mask = True up to and including the first stop token ;  tokens after it = PAD

(* step by step when the ``[B, T, V]`` logits would exceed 64 MiB, e.g. at SmolLM2's 49k vocabulary.)
The loop runs under ``torch.inference_mode``; the returned tensors are ordinary ones (cloned), so
``tokens`` can feed a training forward pass.
"""

from __future__ import annotations

import torch
from torch import Tensor

from forklab.lm._layout import _response_mask
from forklab.lm._llama_runner import TinyLlamaRunner
from forklab.lm._token_choice import _Chooser

#: The fast path keeps every step's raw logits and computes logp/entropy once at the end when the
#: ``[B, T, V]`` buffer has at most this many entries (2²⁴ floats = 64 MiB), else step by step.
_DEFER_STATS_ELEMENTS = 1 << 24
#: Rows that emitted the stop token leave the batch (their cache rows are gathered away) once they are
#: at least this fraction of the rows still computed; until then they ride along and are masked.
_COMPACT_FRACTION = 0.125


def _unique_prompts(ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Rows to prefill and, for every batch row, which of them it copies: ``ids[unique][inverse] == ids``.

    ``unique`` (long ``[U]``) lists the first row of each distinct prompt (its real tokens and its
    padding) in batch order; ``inverse`` (long ``[B]``) points each row to its position in ``unique``.
    All rows distinct → ``unique = arange(B)``. A dict over the rows' token lists: measured ~10× faster
    than ``torch.unique(dim=0)`` for a 128 × 6 batch, which costs more than the prefill it saves.
    """
    first: dict[tuple, int] = {}
    unique, inverse = [], []
    for row, key in enumerate(map(tuple, torch.where(mask, ids, -1).tolist())):
        position = first.setdefault(key, len(first))
        if position == len(unique):
            unique.append(row)
        inverse.append(position)
    return (torch.tensor(unique, dtype=torch.long, device=ids.device),
            torch.tensor(inverse, dtype=torch.long, device=ids.device))


def _sample_fast(model, ids, mask, max_new_tokens, chooser: _Chooser, stop, pad, return_hidden) -> dict:
    # inference_mode trims the per-op dispatch cost; the clones turn the results into normal tensors
    # (usable in autograd later, e.g. tokens as inputs of a training forward pass)
    with torch.inference_mode():
        out = _decode_fast(model, ids, mask, max_new_tokens, chooser, stop, pad, return_hidden)
    return {key: None if value is None else value.clone() for key, value in out.items()}


def _decode_fast(model, ids, mask, max_new_tokens, chooser: _Chooser, stop, pad, return_hidden) -> dict:
    """Decode up to ``max_new_tokens`` for the left-padded batch ``ids, mask [B, Lp]``; the module's pseudocode.

    Returns a dict of ``tokens``/``mask`` ``[B, T]`` and ``logp``/``entropy``/``sample_logp``/
    ``temperatures`` ``[B, T]`` (0 off the mask) and ``hidden [B, T, d]`` or None, ``T`` = steps run.

    Algorithm, in three phases that share one loop:

    1. *Prefill once per distinct prompt.* :func:`_unique_prompts` maps batch row ``b`` to computed row
       ``node[b]``; the runner's cache holds one row per distinct prompt.
    2. *Prefix tree* (while some rows share a node, and copying cache rows is cheap, see
       ``TinyLlamaRunner.cache_is_small``): each step reads the logits of every batch row still
       decoding (``rows``) from its node, chooses the tokens, and drops rows that emitted ``stop``.
       The children of the step are the distinct ``(node, token)`` pairs (``torch.unique`` of
       ``node·V + token``); ``keep_rows(parent)`` gives every child a copy of its parent's cache row,
       and one runner step feeds each child its token. When every row is its own child, the tree
       has become a plain batch.
    3. *Plain batch*: computed row i is batch row ``rows[i]`` (i while ``rows`` is None). Finished
       rows ride along, masked, until they are ``_COMPACT_FRACTION`` of the batch; then their cache
       rows are dropped. The loop stops when every row has emitted ``stop``.

    Statistics: with ``B·T·V ≤ _DEFER_STATS_ELEMENTS`` the raw logits of every step are kept and
    ``log_softmax``/entropy are computed once at the end (fewer, larger ops); otherwise the chooser
    computes them step by step (``stats`` buffers in the logits' dtype: float64 for a float64 model).
    Random draws: one uniform per batch row still decoding, in batch order, whatever the tree looks
    like; without a stop token the tree therefore gives the same samples as a plain batch from the
    same generator (tested). With one, the tree drops a finished row at once while a plain batch may
    keep drawing for it, so the streams (not the distribution) differ.
    """
    runner = TinyLlamaRunner(model)
    b, lp = ids.shape
    dev, vocab = ids.device, runner.vocab_size
    # Prompts repeated in the batch (RL: G samples of each) are prefilled once. While samples of one
    # prompt still agree token for token, they are one computed row (a node of a prefix tree): ``node``
    # maps every batch row still decoding (``rows``) to its computed row, and a node splits (its
    # cache row copied) when its samples diverge. Once no two rows share a node the loop below is a
    # plain batch: computed row i is batch row ``rows[i]`` (or i, while ``rows`` is None).
    unique, node = _unique_prompts(ids, mask)
    runner.allocate(unique.numel(), lp + max_new_tokens)
    defer = b * max_new_tokens * vocab <= _DEFER_STATS_ELEMENTS
    tokens = torch.full((b, max_new_tokens), pad, dtype=torch.long, device=dev)
    fdtype = torch.float64 if runner.dtype == torch.float64 else torch.float32  # the logits' dtype
    stats = torch.zeros(4, b, max_new_tokens, dtype=fdtype, device=dev)  # logp, entropy, sample_logp, temperature
    have = [False] * 4
    logits = torch.zeros(b, max_new_tokens, vocab, dtype=fdtype, device=dev) if defer else None
    hidden = torch.zeros(b, max_new_tokens, runner.hidden_size, dtype=runner.dtype, device=dev) \
        if return_hidden else None
    steps = max_new_tokens
    z, h = runner.prefill(ids[unique], mask[unique])
    tree = unique.numel() < b and runner.cache_is_small(lp + max_new_tokens)
    rows = torch.arange(b, device=dev) if tree else None
    if unique.numel() < b and not tree:  # large caches: copy the prompt's rows once, no tree
        runner.keep_rows(node)
        z, h = z[node], h[node]
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    for t in range(max_new_tokens):
        if tree:
            z_rows = z.index_select(0, node)
            h_rows = None if hidden is None else h.index_select(0, node)
        else:
            z_rows, h_rows = z, h
        tok, step_stats = chooser(z_rows, with_stats=not defer)
        at = (slice(None) if rows is None else rows, t)
        tokens[at] = tok
        for j, value in enumerate(step_stats):
            if value is not None:
                stats[j][at] = value
                have[j] = True
        if defer:
            logits[at] = z_rows
        if hidden is not None:
            hidden[at] = h_rows
        last = t + 1 == max_new_tokens
        if tree:
            if stop is not None:
                going = tok != stop
                if not going.all():
                    rows, node, tok = rows[going], node[going], tok[going]
                if rows.numel() == 0:
                    steps = t + 1
                    break
            if last:
                break
            # the children of each node: one per distinct (node, token) pair
            children, node = torch.unique(node * vocab + tok, return_inverse=True)
            parent = children.div(vocab, rounding_mode="floor")
            if children.numel() == rows.numel():
                # every row its own node from now on: a plain batch, computed row i = batch row rows[i]
                tree, parent, children = False, parent[node], children[node]
                done = torch.zeros(rows.numel(), dtype=torch.bool, device=dev)
            if parent.numel() != runner.rows or not torch.equal(parent, torch.arange(runner.rows, device=dev)):
                runner.keep_rows(parent)
            z, h = runner.step(children.remainder(vocab))
            continue
        if stop is not None:
            done |= tok == stop
            finished = int(done.sum())
            if finished == done.numel():
                steps = t + 1
                break
            if finished >= _COMPACT_FRACTION * done.numel():
                keep = (~done).nonzero().squeeze(1)
                runner.keep_rows(keep)
                rows = keep if rows is None else rows[keep]
                tok, done = tok[keep], done[keep]
        if not last:
            z, h = runner.step(tok)  # finished rows not yet dropped go on; the mask below hides them
    tokens = tokens[:, :steps]
    valid = _response_mask(tokens, stop)
    if defer:
        logp_all, entropy = chooser.stats(logits[:, :steps])
        logp = logp_all.gather(-1, tokens[..., None]).squeeze(-1)
    else:
        logp, entropy = stats[0, :, :steps], stats[1, :, :steps]
    if chooser.greedy:
        sample_logp = torch.zeros_like(logp)
    else:
        sample_logp = stats[2, :, :steps] if have[2] else logp
    temps = stats[3, :, :steps] if have[3] else torch.full_like(logp, chooser.temperature)
    zero = torch.zeros((), dtype=fdtype, device=dev)
    return dict(tokens=torch.where(valid, tokens, torch.full_like(tokens, pad)), mask=valid,
                logp=torch.where(valid, logp, zero), entropy=torch.where(valid, entropy, zero),
                sample_logp=torch.where(valid, sample_logp, zero), temperatures=torch.where(valid, temps, zero),
                hidden=None if hidden is None else hidden[:, :steps] * valid[..., None])

