"""Batched sampling from a causal LM: tokens, masks, per-token log-probs and entropies (+ hidden states).

Introduced in ``notebooks/00_tour.ipynb``.

Used by the tiny-LM experiments (``RLTrainer`` rollouts and evaluation, distillation) and by the
real-LM cells. One entry point, :func:`sample`, with two backends that return the same
:class:`Samples`:

- ``"fast"``: :class:`TinyLlamaRunner`, a lean pure-torch re-implementation of the Llama forward pass
  (RMSNorm, rotary embeddings, grouped-query attention, SiLU MLP) that reads the weights of a
  ``transformers`` ``LlamaForCausalLM`` and decodes with a preallocated static KV cache. Its logits
  equal the model's own forward pass to float rounding (tested to 1e-5 in fp32) and its greedy
  outputs equal ``generate``'s. It saves ``generate``'s per-step overhead (fewer, fused operations:
  one GEMM for q/k/v and one for gate/up, no SDPA call when decoding on CPU in fp32), drops rows
  that have stopped from the batch, and does not repeat work the rows of an RL batch share: each
  distinct prompt is prefilled once, and the samples of a prompt that still agree token for token
  are decoded as one row (a prefix tree whose nodes split, copying their cache row, where the
  samples diverge). ``benchmarks/results/sampler.md`` has the measured speed-ups (largest for small
  batches, where per-operation overhead dominates, and for RL batches of G samples per prompt).
- ``"generate"``: ``model.generate`` for any other model, with the same outputs computed from its raw
  logits (``output_logits=True``; the processed ``output_scores`` hold ``-inf`` and give NaN entropies).

``backend="auto"`` takes the fast path for every ``LlamaForCausalLM`` (SmolLM2 included) and
``generate`` for everything else.

Batch layout (left padding, ``shared/reference/tiny-lm-facts.md``)::

    prompt_ids   [B, Lp]   PAD PAD  1   +   2   =          prompt_mask  F F T T T T
    tokens       [B, T]    3   ;   PAD PAD                mask         T T F F
    positions of the prompt = prompt_mask.cumsum(-1) - 1 (clamped at 0); the response continues from there

Every response starts at the same column ``Lp``. A row stops after emitting ``stop_token_id`` (the
stop token is part of the response, its mask is True) or after ``max_new_tokens``; finished rows keep
emitting ``pad_token_id`` with mask False. ``T`` is the number of decoding steps actually run: the
longest response, at most ``max_new_tokens``.

Pseudocode of the fast path::

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

What the log-probs mean (a decision, the same for both backends):

- ``logp`` is ``log softmax(z / temperature)[y]``: the token's log-prob under the *base* policy at
  the sampling temperature, **without** top-p truncation and without the per-token temperature of
  ``token_temperature_fn``. It is exactly what a trainer re-scores with
  ``forklab.ops.logprobs_from_logits(logits, tokens, temperature)`` (verl and TRL both divide the
  logits by the rollout temperature and ignore top-p), so on-policy ratios start at 1.
- ``entropy`` is the entropy of ``softmax(z / temperature)`` from the raw logits, never from the
  top-p-filtered ones (those give a smaller entropy, or NaN with ``-inf`` logits).
- ``sample_logp`` is the log-prob under the distribution the token was *actually* drawn from
  (per-token temperature, then top-p, renormalised); 0 under greedy decoding (a point mass). It equals
  ``logp`` when ``top_p = 1`` and no ``token_temperature_fn`` is given; the difference is the
  behaviour-policy correction for importance weighting.

HAPO's adaptive temperature (arXiv 2509.16591; ``shared/reference/formulas.md`` §6) is
``τ_t = T · (1 + tau · clip(ĥ_t, −1, 1))`` with ĥ the normalised log-entropy of the token;
:func:`hapo_temperature_fn` builds that hook from the previous step's entropy statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from forklab import _checks
from forklab.surrogates import hapo_entropy_stats

__all__ = [
    "Samples",
    "TinyLlamaRunner",
    "sample",
    "greedy",
    "pass_at_k",
    "position_ids_from_mask",
    "hapo_temperature_fn",
    "entropy_stats",
]

#: Rope types whose cos/sin depend only on the position (tables can be precomputed). "dynamic" and
#: "longrope" rescale with the sequence length seen so far; such models go through ``generate``.
_STATIC_ROPE = {"default", "linear", "llama3", "yarn"}

TemperatureFn = Callable[[Tensor, Tensor], "Tensor | float"]


# ---------------------------------------------------------------------------------------------- outputs
@dataclass
class Samples:
    """A batch of sampled responses and their per-token statistics.

    ============  ==============================================================================
    field         shape / meaning
    ============  ==============================================================================
    prompt_ids    ``[B, Lp]`` long, left-padded prompts (as given)
    prompt_mask   ``[B, Lp]`` bool, True on real prompt tokens
    tokens        ``[B, T]`` long, response tokens; PAD after a row stopped
    mask          ``[B, T]`` bool, True on response tokens (the stop token included)
    logp          ``[B, T]`` float32 (float64 for a float64 model), log softmax(z / temperature)[token]
                  (no top-p); 0 off the mask
    entropy       ``[B, T]`` same dtype, entropy of softmax(z / temperature), raw logits; 0 off the mask
    sample_logp   ``[B, T]`` same dtype, log-prob under the distribution actually sampled; 0 off the mask
    temperatures  ``[B, T]`` float32, the temperature each token was drawn at; 0 off the mask
    lengths       ``[B]`` long, number of response tokens (``mask.sum(1)``)
    hidden        ``[B, T, d]`` last-layer hidden state (after the final norm) that produced each
                  token's logits; 0 off the mask; ``None`` unless ``return_hidden=True``
    ============  ==============================================================================
    """

    prompt_ids: Tensor
    prompt_mask: Tensor
    tokens: Tensor
    mask: Tensor
    logp: Tensor
    entropy: Tensor
    sample_logp: Tensor
    temperatures: Tensor
    lengths: Tensor
    hidden: Tensor | None = None

    @property
    def sequences(self) -> Tensor:
        """``[B, Lp + T]`` prompt and response ids side by side (the input of a teacher-forced pass)."""
        return torch.cat([self.prompt_ids, self.tokens], dim=1)

    @property
    def attention_mask(self) -> Tensor:
        """``[B, Lp + T]`` bool, True on real prompt and response tokens."""
        return torch.cat([self.prompt_mask, self.mask], dim=1)

    @property
    def position_ids(self) -> Tensor:
        """``[B, Lp + T]`` the positions the tokens were sampled at (see :func:`position_ids_from_mask`)."""
        return position_ids_from_mask(self.attention_mask)


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions of a padded batch: ``attention_mask.cumsum(-1) - 1``, clamped at 0 (long, same shape).

    Every forward pass that scores sampled tokens must use these, not ``0..L-1``: with left padding
    the two differ and the scored log-probs would not match the sampled ones (tiny-lm-facts.md).
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


# ---------------------------------------------------------------------------------------------- fast runner
class _Layer:
    """One decoder layer's weights, with q/k/v and gate/up each concatenated into one matrix.

    The concatenations are copies, made once per runner: one GEMM instead of three (two) plus a
    ``cat`` saves a few dispatches per layer and step, which is what costs at these sizes. The other
    weights are referenced.
    """

    def __init__(self, layer) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        self.ln1, self.eps1 = layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon
        self.ln2, self.eps2 = layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon
        with torch.no_grad():
            self.w_qkv, self.b_qkv = _concat_linear(attn.q_proj, attn.k_proj, attn.v_proj)
            self.w_gu, self.b_gu = _concat_linear(mlp.gate_proj, mlp.up_proj)
        self.inter = mlp.gate_proj.weight.shape[0]
        self.wo, self.bo = attn.o_proj.weight, attn.o_proj.bias
        self.wd, self.bd = mlp.down_proj.weight, mlp.down_proj.bias
        self.wo_t, self.wd_t = self.wo.t(), self.wd.t()  # views, for addmm
        # the functional form skips a module call per layer and step; other activations stay modules
        silu = getattr(getattr(mlp, "config", None), "hidden_act", None) in ("silu", "swish")
        self.act = F.silu if silu else mlp.act_fn

    def qkv(self, h: Tensor) -> Tensor:
        """``[q | k | v]`` projections side by side, ``[..., (heads + 2·kv_heads)·head_dim]``."""
        return F.linear(h, self.w_qkv, self.b_qkv)

    def mlp_hidden(self, h: Tensor) -> Tensor:
        gate, up = F.linear(h, self.w_gu, self.b_gu).split(self.inter, dim=-1)
        return self.act(gate) * up

    def attn_out(self, x: Tensor, a: Tensor) -> Tensor:
        """``x + o_proj(a)``: the residual add fused into the GEMM (``addmm``) when there is no bias."""
        return torch.addmm(x, a, self.wo_t) if self.bo is None else x + F.linear(a, self.wo, self.bo)

    def mlp_out(self, x: Tensor, m: Tensor) -> Tensor:
        """``x + down_proj(m)``, fused like :meth:`attn_out`."""
        return torch.addmm(x, m, self.wd_t) if self.bd is None else x + F.linear(m, self.wd, self.bd)


def _concat_linear(*linears) -> tuple[Tensor, Tensor | None]:
    """The weights (and biases, zeros where one has none) of ``nn.Linear`` layers stacked along the outputs."""
    weight = torch.cat([lin.weight for lin in linears])
    if all(lin.bias is None for lin in linears):
        return weight, None
    bias = torch.cat([lin.weight.new_zeros(lin.weight.shape[0]) if lin.bias is None else lin.bias for lin in linears])
    return weight, bias


def _rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """LlamaRMSNorm: ``weight * x / sqrt(mean(x²) + eps)``, statistics in fp32 (one fused op for fp32)."""
    if x.dtype == torch.float32:
        return F.rms_norm(x, weight.shape, weight, eps)
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


class TinyLlamaRunner:
    """Inference-only Llama forward pass with a static KV cache, reading a ``LlamaForCausalLM``'s weights.

    ============  ==============================================================================
    method        shapes
    ============  ==============================================================================
    forward       ``ids [B, L]``, ``mask [B, L]`` → ``logits [B, L, V]`` float32, ``hidden [B, L, d]``
    allocate      preallocate the cache for ``B`` rows and ``max_len`` columns (+ rope tables)
    prefill       the prompt ``[B, Lp]`` → last column's ``logits [B, V]``, ``hidden [B, d]``
    step          one token per row ``[B]`` at the next column → ``logits [B, V]``, ``hidden [B, d]``
    keep_rows     ``rows [B']`` long: row i of the cache and state becomes a copy of row ``rows[i]``
                  (drops finished rows; repeats shared prompts and prefix-tree nodes)
    ============  ==============================================================================

    q/k/v and gate/up are concatenated into one weight matrix each (one GEMM instead of two or three
    plus a ``cat``); those are copies, so a runner does not see later optimiser steps of them —
    :func:`sample` builds a fresh one per call (a fraction of a millisecond for the tiny models). The
    other parameters are referenced.

    Cache: ``k, v [layers, B, heads, max_len, head_dim]``, K/V heads already repeated for GQA
    (``num_key_value_heads < num_attention_heads``) so decoding never repeats the whole cache. Rope:
    the cos/sin tables come from the model's own ``rotary_emb`` (same ``rope_theta`` and scaling),
    computed once per :meth:`allocate`; ``rotate_half(x)·sin`` is ``roll(x, D/2)·sin'`` with the first
    half of ``sin'`` negated (the same products, so the same numbers). Attention in :meth:`prefill`
    and :meth:`forward`: ``scaled_dot_product_attention`` with an explicit boolean mask (causal ∧ key
    is a real token); a padding query also sees itself, so no row is fully masked (which would give
    NaN). The prefill runs the last layer's attention and MLP for the last column only (the other
    columns only need their K/V). In :meth:`step` (one query per row) an fp32 CPU model computes
    ``softmax(q·Kᵀ·scale + bias)·V`` with elementwise products and sums over the cache, which was
    measured faster than SDPA's CPU kernel at these sizes; other models keep SDPA.
    """

    def __init__(self, model) -> None:
        if not _is_fast_supported(model):
            raise ValueError(
                f"`model` must be a transformers LlamaForCausalLM with a position-only rope "
                f"({sorted(_STATIC_ROPE)}), got {type(model).__name__}"
            )
        cfg = model.config
        core = model.model
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads or cfg.num_attention_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.rep = self.num_heads // self.num_kv_heads
        self.scale = self.head_dim**-0.5
        self.embed = core.embed_tokens.weight
        self.layers = [_Layer(layer) for layer in core.layers[: cfg.num_hidden_layers]]
        self.norm, self.norm_eps = core.norm.weight, core.norm.variance_epsilon
        self.lm_head = model.lm_head.weight  # the embedding itself when tied
        self.lm_bias = getattr(model.lm_head, "bias", None)
        self.rotary = core.rotary_emb
        self.dtype, self.device = self.embed.dtype, self.embed.device
        self.vocab_size = self.lm_head.shape[0]
        self.hidden_size = self.embed.shape[1]
        # decoding attention without SDPA: measured faster for the fp32 CPU models (module docstring);
        # bf16/fp16 or GPU models keep SDPA's fused kernel (fp32 accumulation, no [B, heads, L, D] products)
        self.plain_attention = self.device.type == "cpu" and self.dtype == torch.float32

    # -- cache and rope tables
    def allocate(self, batch: int, max_len: int) -> None:
        """Preallocate the K/V cache for ``batch`` rows of up to ``max_len`` columns, and the rope tables."""
        shape = (len(self.layers), batch, self.num_heads, max_len, self.head_dim)
        self.k = torch.empty(shape, dtype=self.dtype, device=self.device)
        self.v = torch.empty(shape, dtype=self.dtype, device=self.device)
        positions = torch.arange(max_len, device=self.device)[None]
        cos, sin = self.rotary(self.embed[:0], positions)  # HF's own rope: inv_freq, theta, scaling
        half = self.head_dim // 2
        self._cos = cos[0]  # [max_len, head_dim]
        self._sin = torch.cat([-sin[0, :, :half], sin[0, :, half:]], dim=-1)
        self.max_len, self.rows = max_len, batch
        self._k_layers = [self.k[i] for i in range(len(self.layers))]  # plain views (unbind's are read-only)
        self._v_layers = [self.v[i] for i in range(len(self.layers))]

    def _blocks(self, x: Tensor, b: int, n: int, positions: Tensor, attn_mask: Tensor, start: int,
                last_only: bool = False) -> Tensor:
        """Decoder layers on ``x [B·L, d]`` (rows of ``B`` sequences × ``L`` columns) at cache columns ``start..``.

        Returns ``[B·L, d]``, or ``[B, d]`` for the last column alone with ``last_only`` (prefill: the
        last layer then needs every column's K/V, for the cache, but only the last column's output).
        """
        stop = start + n
        heads, kv, hd = self.num_heads, self.num_kv_heads, self.head_dim
        cos = self._cos[positions].unsqueeze(2)  # [B, L, 1, D]
        sin = self._sin[positions].unsqueeze(2)
        for i, w in enumerate(self.layers):
            qkv = w.qkv(_rms_norm(x, w.ln1, w.eps1)).view(b, n, heads + 2 * kv, hd)
            qk = qkv[:, :, : heads + kv]
            qk = qk * cos + qk.roll(hd // 2, -1) * sin  # rope on q and k at once
            q = qk[:, :, :heads].transpose(1, 2)
            k = qk[:, :, heads:].transpose(1, 2)
            v = qkv[:, :, heads + kv :].transpose(1, 2)
            if self.rep > 1:
                k, v = k.repeat_interleave(self.rep, dim=1), v.repeat_interleave(self.rep, dim=1)
            self.k[i, :, :, start:stop] = k
            self.v[i, :, :, start:stop] = v
            if last_only and i == len(self.layers) - 1:
                q, attn_mask, n = q[:, :, -1:], attn_mask[:, :, -1:], 1
                x = x.view(b, -1, x.shape[-1])[:, -1]
            a = F.scaled_dot_product_attention(
                q, self.k[i, :, :, :stop], self.v[i, :, :, :stop], attn_mask=attn_mask, scale=self.scale
            )
            x = w.attn_out(x, a.transpose(1, 2).reshape(b * n, heads * hd))
            x = w.mlp_out(x, w.mlp_hidden(_rms_norm(x, w.ln2, w.eps2)))
        return _rms_norm(x, self.norm, self.norm_eps)

    def _logits(self, hidden: Tensor) -> Tensor:
        # float32 for half/bfloat16 models; a float64 model keeps float64 (portable notebook runs)
        logits = F.linear(hidden, self.lm_head, self.lm_bias)
        return logits if logits.dtype == torch.float64 else logits.float()

    def _prefill_mask(self, mask: Tensor) -> Tensor:
        n = mask.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=self.device).tril()
        eye = torch.eye(n, dtype=torch.bool, device=self.device)
        return ((causal & mask[:, None, :]) | eye)[:, None]  # [B, 1, L, L]

    def _run(self, ids: Tensor, mask: Tensor, last_only: bool = False) -> Tensor:
        b, n = ids.shape
        x = F.embedding(ids.reshape(-1), self.embed)
        hidden = self._blocks(x, b, n, position_ids_from_mask(mask), self._prefill_mask(mask), 0, last_only)
        return hidden if last_only else hidden.view(b, n, -1)

    # -- public passes
    def prefill(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Process the prompt (cache columns ``0..Lp-1``); returns the last column's ``logits [B, V]``, ``hidden``.

        Needs :meth:`allocate` first. Later :meth:`step` calls attend to the prompt's real tokens and
        to every generated column.
        """
        b, n = ids.shape
        self.key_valid = torch.ones(b, self.max_len, dtype=torch.bool, device=self.device)
        self.key_valid[:, :n] = mask
        # additive attention bias of the decoding steps, [B, 1, max_len]: 0 on keys to attend to, -inf on padding
        self._step_bias = torch.zeros(b, 1, self.max_len, dtype=self.dtype, device=self.device).masked_fill(
            ~self.key_valid[:, None], float("-inf"))
        self.next_pos = mask.long().sum(1)  # [B]: the first response token's position
        self.col = n
        last = self._run(ids, mask, last_only=True)
        return self._logits(last), last

    def step(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Feed one token per row at the next column; returns ``logits [B, V]`` float32 and ``hidden [B, d]``.

        The same computation as :meth:`_blocks` with one column, written out with as few tensor
        operations as possible (at the tiny sizes each costs more in dispatch than in arithmetic).
        """
        col, b = self.col, tokens.shape[0]
        heads, kv, hd, rep = self.num_heads, self.num_kv_heads, self.head_dim, self.rep
        length = col + 1
        x = F.embedding(tokens, self.embed)  # [B, d]
        cos = self._cos[self.next_pos].unsqueeze(1)  # [B, 1, D]
        sin = self._sin[self.next_pos].unsqueeze(1)
        bias = self._step_bias.narrow(2, 0, length)
        for w, kc, vc in zip(self.layers, self._k_layers, self._v_layers, strict=True):
            qkv = w.qkv(_rms_norm(x, w.ln1, w.eps1)).view(b, heads + 2 * kv, hd)
            qk, v = qkv.split((heads + kv, kv), dim=1)
            q, k = (qk * cos + qk.roll(hd // 2, -1) * sin).split((heads, kv), dim=1)
            if rep > 1:
                k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
            kc.select(2, col).copy_(k)
            vc.select(2, col).copy_(v)
            keys, values = kc.narrow(2, 0, length), vc.narrow(2, 0, length)
            if self.plain_attention:
                # one query per row: products and sums over the cache beat SDPA's CPU flash kernel (and
                # bmm's B·heads tiny GEMMs) at the tiny models' sizes; padding keys get -inf from the bias
                scores = (q.unsqueeze(2) * keys).sum(-1)  # [B, heads, length]
                probs = torch.softmax(torch.add(bias, scores, alpha=self.scale), dim=-1)
                a = (probs.unsqueeze(-1) * values).sum(2)  # [B, heads, D]
            else:
                a = F.scaled_dot_product_attention(q.unsqueeze(2), keys, values, attn_mask=bias.unsqueeze(1),
                                                   scale=self.scale)
            x = w.attn_out(x, a.reshape(b, heads * hd))
            x = w.mlp_out(x, w.mlp_hidden(_rms_norm(x, w.ln2, w.eps2)))
        hidden = _rms_norm(x, self.norm, self.norm_eps)
        self.col = length
        self.next_pos = self.next_pos + 1
        return self._logits(hidden), hidden

    def keep_rows(self, rows: Tensor) -> None:
        """Make row ``i`` of the cache and decoding state a copy of row ``rows[i]`` (long ``[B']``).

        Drops the rows not in ``rows`` (finished rows), and also repeats rows (prompts prefilled once
        and shared by several samples).
        """
        self.k, self.v = self.k.index_select(1, rows), self.v.index_select(1, rows)
        self.rows = rows.numel()
        self._k_layers = [self.k[i] for i in range(len(self.layers))]
        self._v_layers = [self.v[i] for i in range(len(self.layers))]
        self.key_valid = self.key_valid.index_select(0, rows)
        self._step_bias = self._step_bias.index_select(0, rows)
        self.next_pos = self.next_pos.index_select(0, rows)

    def cache_is_small(self, max_len: int) -> bool:
        """True when one row's K/V cache of ``max_len`` columns holds ≤ 1/8 as many numbers as the layers'
        weights: copying cache rows (to branch shared prefixes) then costs far less than a decoding step."""
        per_row = 2 * len(self.layers) * self.num_heads * max_len * self.head_dim
        weights = sum(w.w_qkv.numel() + w.w_gu.numel() + w.wo.numel() + w.wd.numel() for w in self.layers)
        return 8 * per_row <= weights

    @torch.no_grad()
    def forward(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Full-sequence forward pass (fresh cache): ``logits [B, L, V]`` float32 and ``hidden [B, L, d]``.

        Positions come from ``mask`` (:func:`position_ids_from_mask`); padded positions give finite
        but meaningless outputs. No gradients (like :meth:`prefill` and :meth:`step`, which expect to
        run under ``torch.no_grad`` or ``torch.inference_mode``): score tokens for training with the
        ``transformers`` model itself.
        """
        self.allocate(ids.shape[0], ids.shape[1])
        hidden = self._run(ids, mask)
        return self._logits(hidden), hidden


def _is_fast_supported(model) -> bool:
    try:
        from transformers import LlamaForCausalLM
    except ImportError:  # pragma: no cover - transformers is the `lm` extra
        return False
    if not isinstance(model, LlamaForCausalLM):
        return False
    rope = getattr(model.config, "rope_parameters", None) or {}
    return rope.get("rope_type", "default") in _STATIC_ROPE


# ---------------------------------------------------------------------------------------------- one step
class _Chooser:
    """Picks each step's tokens from the raw logits ``z [B, V]`` and computes their statistics."""

    def __init__(self, temperature: float, top_p: float, greedy: bool, temperature_fn: TemperatureFn | None,
                 generator: torch.Generator | None) -> None:
        self.temperature, self.top_p, self.greedy = temperature, top_p, greedy
        self.temperature_fn, self.generator = temperature_fn, generator

    def scaled(self, z: Tensor) -> Tensor:
        """``z / T`` (``z`` itself at T = 1: the same numbers without an op)."""
        return z / self.temperature if self.temperature != 1.0 else z

    def stats(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``log softmax(z / T)`` ``[..., V]`` and the entropy ``[...]`` of ``softmax(z / T)`` (LSE − E_p[z])."""
        zt = self.scaled(z)
        lse = torch.logsumexp(zt, dim=-1, keepdim=True)
        logp_all = zt - lse
        entropy = lse.squeeze(-1) - (logp_all.exp() * zt).sum(-1)
        return logp_all, entropy

    def token_temperatures(self, z: Tensor, entropy: Tensor) -> Tensor:
        return _check_temperatures(self.temperature_fn(z, entropy), z.shape[0], z.device)

    @property
    def plain(self) -> bool:
        """True when the token is drawn from the base policy itself (greedy or softmax(z/T), no top-p, no hook)."""
        return self.greedy or (self.temperature_fn is None and self.top_p == 1.0)

    def __call__(self, z: Tensor, with_stats: bool) -> tuple[Tensor, tuple]:
        """``tokens [B]`` and ``(logp, entropy, sample_logp, temperatures)`` (``[B]`` each).

        Without ``with_stats``, ``logp``/``entropy`` are None (the caller computes them for all steps
        at once), as are ``sample_logp``/``temperatures`` whenever they follow from the settings.
        """
        logp_all = entropy = sample_logp = temps = None
        if with_stats or self.temperature_fn is not None:
            logp_all, entropy = self.stats(z)
        if self.greedy:
            tokens = z.argmax(-1)
        elif self.plain:
            probs = logp_all.exp() if logp_all is not None else torch.softmax(self.scaled(z), dim=-1)
            tokens = _draw(probs, self.generator)
        else:
            if self.temperature_fn is not None:
                temps = self.token_temperatures(z, entropy)
                sample_all = torch.log_softmax(z / temps[:, None], dim=-1)
            else:
                sample_all = logp_all if logp_all is not None else torch.log_softmax(self.scaled(z), dim=-1)
            if self.top_p < 1.0:
                sample_all = _top_p_filter(sample_all, self.top_p)
            tokens = _draw(sample_all.exp(), self.generator)
            sample_logp = sample_all.gather(-1, tokens[:, None]).squeeze(-1)
        logp = None if logp_all is None else logp_all.gather(-1, tokens[:, None]).squeeze(-1)
        return tokens, (logp, entropy if with_stats else None, sample_logp, temps)


def _draw(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One token per row from probabilities ``[B, V]`` (rows summing to ~1, zeros allowed) → long ``[B]``.

    Inverse-CDF sampling: with ``u ~ U[0, 1)`` per row and ``c = cumsum(probs)``, the token is the number
    of ``c_i ≤ u · c_V`` — token i is drawn iff ``c_{i-1} ≤ u·c_V < c_i``, probability ``p_i / c_V``. A
    zero-probability token has ``c_i = c_{i-1}`` (adding 0 is exact), an empty interval, so it is never
    drawn; ``u · c_V`` is capped just below ``c_V`` (a guard: for ``u < 1`` the float product never
    rounds up to ``c_V``), so no draw can step past the last token with non-zero probability. One
    uniform per row instead of ``torch.multinomial``'s one exponential per row and vocabulary entry
    (measured 4.5× faster for 128 × 18; the gap grows with the vocabulary).
    """
    cdf = probs.cumsum(-1)
    total = cdf[:, -1:]
    u = torch.rand(total.shape, generator=generator, device=probs.device, dtype=cdf.dtype) * total
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, u, right=True).squeeze(-1)


def _top_p_filter(logp_all: Tensor, top_p: float) -> Tensor:
    """Nucleus filtering of log-probs ``[B, V]``: keep the smallest set of top tokens with mass ≥ ``top_p``.

    A token is kept when the mass of the tokens ranked above it is still below ``top_p`` (the top
    token always survives), as in ``transformers``' ``TopPLogitsWarper``; then renormalised.
    """
    sorted_logp, order = logp_all.sort(dim=-1, descending=True)
    p = sorted_logp.exp()
    drop_sorted = (p.cumsum(-1) - p) >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    kept = logp_all.masked_fill(drop, float("-inf"))
    return kept - torch.logsumexp(kept, dim=-1, keepdim=True)


def _check_temperatures(value, batch: int, device) -> Tensor:
    temps = torch.as_tensor(value, dtype=torch.float32, device=device)
    if temps.dim() == 0:
        temps = temps.expand(batch)
    if temps.shape != (batch,):
        raise ValueError(f"`token_temperature_fn` must return a float or a [{batch}] tensor, got {list(temps.shape)}")
    if not (torch.isfinite(temps) & (temps > 0)).all():
        raise ValueError("`token_temperature_fn` must return positive finite temperatures")
    return temps


def _response_mask(tokens: Tensor, stop: int | None) -> Tensor:
    """True up to and including each row's first ``stop`` token (everywhere when ``stop`` is None)."""
    if stop is None:
        return torch.ones_like(tokens, dtype=torch.bool)
    is_stop = (tokens == stop).long()
    return (is_stop.cumsum(1) - is_stop) == 0


# ---------------------------------------------------------------------------------------------- backends
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


def _sample_generate(model, ids, mask, max_new_tokens, chooser: _Chooser, stop, pad, return_hidden) -> dict:
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


# ---------------------------------------------------------------------------------------------- public API
def _check_prompt(prompt_ids, prompt_mask, vocab_size: int | None) -> tuple[Tensor, Tensor]:
    ids = _checks.as_tensor("prompt_ids", prompt_ids)
    if ids.is_floating_point() or ids.dtype == torch.bool or ids.is_complex():
        raise ValueError(f"`prompt_ids` must be an integer tensor, got dtype {ids.dtype}")
    if ids.dim() != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(f"`prompt_ids` must have shape [B, Lp] with B, Lp >= 1, got {list(ids.shape)}")
    if vocab_size is not None and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"`prompt_ids` must lie in [0, {vocab_size}), got ids in [{int(ids.min())}, {int(ids.max())}]")
    mask = _checks.bool_mask("prompt_mask", prompt_mask)
    _checks.same_shape("prompt_ids", ids, "prompt_mask", mask)
    if not mask.any(1).all():
        raise ValueError(f"`prompt_mask` has empty rows: {torch.nonzero(~mask.any(1)).flatten().tolist()}")
    if (mask[:, 1:] < mask[:, :-1]).any():
        raise ValueError("`prompt_mask` must be left-padded (within a row, False only before the first True)")
    return ids.long(), mask


def _token_id(name: str, value, vocab_size: int | None, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or int(value) != value or value < 0 or (vocab_size is not None and value >= vocab_size):
        raise ValueError(f"`{name}` must be a token id in [0, {vocab_size}), got {value!r}")
    return int(value)


@torch.no_grad()
def sample(
    model,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    greedy: bool = False,
    stop_token_id: int | None = None,
    pad_token_id: int = 0,
    generator: torch.Generator | None = None,
    token_temperature_fn: TemperatureFn | None = None,
    return_hidden: bool = False,
    backend: str = "auto",
) -> Samples:
    """Sample (or greedily decode) ``max_new_tokens`` at most for every left-padded prompt of a batch.

    ====================  ========================================================================
    argument              meaning
    ====================  ========================================================================
    prompt_ids            ``[B, Lp]`` long, left-padded
    prompt_mask           ``[B, Lp]`` bool, True on real tokens; every row non-empty
    temperature           > 0; sampling temperature, and the temperature of ``logp`` / ``entropy``
    top_p                 in (0, 1]; nucleus sampling (1 = off)
    greedy                argmax of the raw logits (``top_p`` and ``token_temperature_fn`` are ignored;
                          ``logp``/``entropy`` are still taken at ``temperature``)
    stop_token_id         a row stops after emitting it (e.g. the id of ``;``); None = never
    generator             ``torch.Generator`` for reproducible samples (same seed → same samples)
    token_temperature_fn  ``f(logits [B, V], entropy [B]) -> [B] or float``: the per-row temperature
                          of this step (HAPO), from the raw logits and the entropy at ``temperature``
    return_hidden         also return the last-layer hidden states (after the final norm)
    backend               ``"auto"``, ``"fast"`` (Llama only) or ``"generate"``
    ====================  ========================================================================

    Returns :class:`Samples` (see the module docstring for what ``logp``, ``entropy`` and
    ``sample_logp`` mean). Runs under ``torch.no_grad``; deterministic given ``generator`` (on the
    ``generate`` backend the global RNG is seeded from it inside ``fork_rng``; on the fast backend a CPU
    ``generator`` with a model on another device seeds a generator there). Both backends give
    identical greedy outputs; sampled outputs differ between them (different random streams).

    Raises ``ValueError`` naming the argument on an empty batch, mismatched or non-left-padded
    masks, ids outside the vocabulary, ``temperature <= 0``, ``top_p`` outside (0, 1],
    ``max_new_tokens < 1`` or past the model's positions (prompt + ``max_new_tokens`` >
    ``config.max_position_embeddings``), or an unknown backend.
    """
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    ids, mask = _check_prompt(prompt_ids, prompt_mask, vocab)
    if isinstance(max_new_tokens, bool) or int(max_new_tokens) != max_new_tokens or max_new_tokens < 1:
        raise ValueError(f"`max_new_tokens` must be a positive integer, got {max_new_tokens!r}")
    max_new_tokens = int(max_new_tokens)
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    longest = int(mask.sum(1).max()) if mask.numel() else 0
    if isinstance(limit, int) and longest + max_new_tokens > limit:
        raise ValueError(f"`max_new_tokens` {max_new_tokens} + the longest prompt ({longest} tokens) exceeds the "
                         f"model's {limit} positions (max_position_embeddings)")
    temperature = _checks.positive("temperature", temperature)
    top_p = float(top_p)
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"`top_p` must lie in (0, 1], got {top_p}")
    stop = _token_id("stop_token_id", stop_token_id, vocab, optional=True)
    pad = _token_id("pad_token_id", pad_token_id, vocab, optional=False)
    if token_temperature_fn is not None and not callable(token_temperature_fn):
        raise ValueError(f"`token_temperature_fn` must be callable or None, got {type(token_temperature_fn).__name__}")
    _checks.choice("backend", backend, {"auto", "fast", "generate"})
    fast_ok = _is_fast_supported(model)
    if backend == "fast" and not fast_ok:
        raise ValueError(f"`backend`='fast' needs a LlamaForCausalLM with a position-only rope, "
                         f"got {type(model).__name__}")
    use_fast = backend == "fast" or (backend == "auto" and fast_ok)
    device = next(model.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    if use_fast and not greedy and generator is not None and generator.device.type != device.type:
        # the draws on the logits' device need a generator there: derive one, seeded from `generator`
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        generator = torch.Generator(device).manual_seed(seed)
    chooser = _Chooser(temperature, top_p, bool(greedy), token_temperature_fn, generator)
    run = _sample_fast if use_fast else _sample_generate
    out = run(model, ids, mask, max_new_tokens, chooser, stop, pad, return_hidden)
    return Samples(prompt_ids=ids, prompt_mask=mask, lengths=out["mask"].sum(1), **out)


def greedy(model, prompt_ids: Tensor, prompt_mask: Tensor, max_new_tokens: int, **kwargs) -> Samples:
    """Greedy decoding: :func:`sample` with ``greedy=True`` (``logp``/``entropy`` still at ``temperature``)."""
    return sample(model, prompt_ids, prompt_mask, max_new_tokens, greedy=True, **kwargs)


# ---------------------------------------------------------------------------------------------- evaluation
def pass_at_k(num_samples, num_correct, k: int) -> Tensor:
    """Unbiased pass@k from n samples with c correct, per prompt (Chen et al. 2021, arXiv 2107.03374).

    .. math:: \\text{pass@}k = 1 - \\binom{n - c}{k} \\Big/ \\binom{n}{k}

    ============  ==========================================
    argument      shape
    ============  ==========================================
    num_samples   ``[P]`` integers n ≥ k (or a scalar)
    num_correct   ``[P]`` integers 0 ≤ c ≤ n
    returns       ``[P]`` float64
    ============  ==========================================

    The probability that a random k-subset of the n samples holds at least one correct one; it is 1
    when ``n − c < k``. Computed with log-gamma (no overflow for large n). For the *exact* pass@k of
    a known success probability see ``forklab.envs.bandit.pass_at_k``.
    """
    n = _checks.as_tensor("num_samples", num_samples)
    c = _checks.as_tensor("num_correct", num_correct)
    for name, x in (("num_samples", n), ("num_correct", c)):
        if x.is_floating_point() and not torch.equal(x, x.round()):
            raise ValueError(f"`{name}` must hold integers")
    n, c = torch.broadcast_tensors(n.double(), c.double())
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"`k` must be a positive integer, got {k!r}")
    if (c < 0).any() or (c > n).any():
        raise ValueError("`num_correct` must lie in [0, num_samples]")
    if (n < k).any():
        raise ValueError(f"`num_samples` must be >= k = {k} for every prompt")
    wrong = n - c
    safe = wrong >= k
    w = torch.where(safe, wrong, torch.full_like(wrong, float(k)))
    log_ratio = torch.lgamma(w + 1) - torch.lgamma(w - k + 1) - torch.lgamma(n + 1) + torch.lgamma(n - k + 1)
    return torch.where(safe, 1 - torch.exp(log_ratio), torch.ones_like(n))


# ---------------------------------------------------------------------------------------------- HAPO hook
#: HAPO's batch statistics of log-entropy (pivot, spread, side scales) for :func:`hapo_temperature_fn`.
entropy_stats = hapo_entropy_stats


def hapo_temperature_fn(temperature: float, stats: dict[str, float], tau: float = 0.05) -> TemperatureFn:
    """HAPO's Adaptive Temperature Sampling as a ``token_temperature_fn`` (arXiv 2509.16591, formulas.md §6).

    .. math:: \\tau_t = T\\,(1 + \\mathrm{tau}\\cdot\\mathrm{clip}(\\hat h_t, -1, 1)),\\quad
              \\hat h_t = \\frac{\\log H_t - m}{\\sigma\\, s_\\pm}

    with ``stats`` from :func:`entropy_stats` of the *previous* step's entropies (as in the HAPO repo,
    where they travel in ``meta_info['norm_entropys']``) and ``H_t`` the entropy at ``temperature``.
    High-entropy tokens are sampled hotter, low-entropy ones colder. Pass the same ``temperature``
    to :func:`sample`.
    """
    temperature = _checks.positive("temperature", temperature)
    tau = _checks.non_negative("tau", tau)
    missing = {"m", "sigma", "scale_pos", "scale_neg"} - set(stats)
    if missing:
        raise ValueError(f"`stats` lacks {sorted(missing)}; build it with entropy_stats()")
    m, sigma = stats["m"], stats["sigma"]
    scale_pos, scale_neg = stats["scale_pos"], stats["scale_neg"]

    def fn(logits: Tensor, entropy: Tensor) -> Tensor:
        h = (entropy.double().clamp(min=1e-8).log() - m) / sigma
        h_hat = torch.where(h > 0, h / scale_pos, h / scale_neg).clamp(-1, 1)
        return (temperature * (1 + tau * h_hat)).float()

    return fn

