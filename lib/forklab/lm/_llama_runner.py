"""TinyLlamaRunner: a lean pure-torch Llama forward pass with a static KV cache (the fast sampling backend).

Introduced in ``notebooks/00_tour.ipynb``; used by :func:`forklab.lm.sampling.sample` through
:mod:`forklab.lm._prefix_tree`.

It reads the weights of a ``transformers`` ``LlamaForCausalLM`` (RMSNorm, rotary embeddings,
grouped-query attention, SiLU MLP) and decodes with a preallocated static KV cache. Its logits equal
the model's own forward pass to float rounding (tested to 1e-5 in fp32) and its greedy outputs equal
``generate``'s. It saves ``generate``'s per-step overhead with fewer, fused operations: one GEMM for
q/k/v and one for gate/up, no SDPA call when decoding on CPU in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from forklab.lm._layout import position_ids_from_mask

__all__ = ["TinyLlamaRunner"]

#: Rope types whose cos/sin depend only on the position (tables can be precomputed). "dynamic" and
#: "longrope" rescale with the sequence length seen so far; such models go through ``generate``.
_STATIC_ROPE = {"default", "linear", "llama3", "yarn"}


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

