"""A lean teacher-forced Llama forward with autograd: the response logits of ``RLTrainer``'s update.

Used by :func:`forklab.lm.trainer.policy_forward` (introduced in
``notebooks/01_policy_gradients_and_advantages.ipynb``) for a ``LlamaForCausalLM`` whose attention runs
through SDPA. The same tensor operations as ``transformers``' Llama forward, on the model's own
parameters (so gradients reach them), without the work a training step does not need:

- **each distinct prompt once.** An RL batch holds ``G`` samples of every prompt, and causal attention
  means a prompt's hidden states do not depend on what follows it. So the prompt columns are computed
  for the ``U`` distinct prompts only, and every response row attends to its prompt's keys and values
  (gathered, so the gradient of a shared prompt sums over its samples, as autograd does for copies);
- **one row list.** The ``U·Lp`` prompt positions and the ``B·(T−1)`` response positions that are inputs
  form one ``[N, d]`` matrix, so each projection is one matmul (q, k and v fused into one, gate and up
  into another); only attention sees the two parts apart;
- no last column (the last response token is never an input to a kept logit); in the last layer only
  the positions whose logits are kept (each prompt's last position and the response inputs); no logits
  for the other prompt positions; no module calls, hooks, output dataclasses or mask helpers (the
  boolean mask ``causal ∧ key is a real token`` is built directly, as ``create_causal_mask`` does for SDPA).

Pseudocode (one layer)::

    x        [N, d]       = U prompts × Lp positions, then B responses × (T−1) positions
    q, k, v               = split(norm(x) @ [Wq; Wk; Wv]ᵀ) ;  q, k ← rope(q, k, positions)
    prompt:   a_p = attention(q_p, k_p, v_p, causal ∧ real)                      # [U, Lp]
    response: a_r = attention(q_r, [k_p[prompt of row], k_r], [v_p[...], v_r], real prompt ∧ causal)
    x        += [a_p; a_r] @ Woᵀ ;  x += down(silu(gate) · up)(norm(x))          # gate, up: one matmul

The logits equal the model's own forward pass at the kept columns to rounding (tested to 1e-12 in
float64). The weight gradients are the same sums in another order: to 1e-10 where the RMSNorm
statistics are float64 (tested), to float32 rounding with transformers' float32 statistics, whose
backward rounds a shared prompt's summed gradient once instead of each sample's. RoPE is applied as
``x·cos + roll(x, D/2)·sin'`` with the first half of ``sin'`` negated: the same products as
``rotate_half`` (negation is exact).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from forklab.lm._llama_runner import _concat_linear, _is_fast_supported
from forklab.lm._prefix_tree import _unique_prompts

__all__ = ["lean_supported", "response_logits"]


def lean_supported(model) -> bool:
    """True for a ``LlamaForCausalLM`` with a position-only rope, SDPA attention and no attention dropout."""
    if not _is_fast_supported(model):
        return False
    cfg = model.config
    return getattr(cfg, "_attn_implementation", None) == "sdpa" and not getattr(cfg, "attention_dropout", 0.0)


def _rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """``LlamaRMSNorm``: statistics in float32 (as transformers does, a float64 model included)."""
    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def _rows(x: Tensor, index: Tensor | None) -> Tensor:
    return x if index is None else x.index_select(0, index)


def response_logits(model, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, prompt_len: int,
                    response_len: int, share_prompts: bool = True) -> Tensor:
    """Logits ``[B, T, V]`` of the columns ``Lp − 1 .. Lp + T − 2`` (those that score the ``T`` response tokens).

    ==============  ==============================================================================
    argument        shape
    ==============  ==============================================================================
    input_ids       ``[B, Lp + T]`` long, left-padded prompt then response
    attention_mask  ``[B, Lp + T]`` True (or 1) on real tokens
    position_ids    ``[B, Lp + T]`` long, ``attention_mask.cumsum − 1`` (clamped at 0)
    prompt_len      ``Lp`` ≥ 1; ``response_len`` is ``T`` ≥ 1
    ==============  ==============================================================================

    Rows with the same prompt (same real tokens, same padding) share its computation
    (``share_prompts=False`` computes every row's prompt, as ``benchmarks/bench_train_forward.py`` compares).
    Differentiable in the model's parameters; the model must pass :func:`lean_supported`.
    """
    core, cfg = model.model, model.config
    lp, r, b = prompt_len, response_len - 1, input_ids.shape[0]  # r: response positions that are inputs
    valid = attention_mask.bool()
    unique = inverse = None
    if share_prompts:
        unique, inverse = _unique_prompts(input_ids[:, :lp], valid[:, :lp])
        if len(unique) == b:  # no prompt repeats: no gathers
            unique = inverse = None
    ids_p, valid_p, pos_p = (_rows(z[:, :lp], unique) for z in (input_ids, valid, position_ids))
    ids_r, valid_r, pos_r = (z[:, lp : lp + r] for z in (input_ids, valid, position_ids))
    u, n_p, dev = ids_p.shape[0], ids_p.numel(), input_ids.device
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    half = hd // 2

    x = F.embedding(torch.cat([ids_p.reshape(-1), ids_r.reshape(-1)]), core.embed_tokens.weight)  # [N, d]
    cos, sin = core.rotary_emb(x[None], torch.cat([pos_p.reshape(-1), pos_r.reshape(-1)])[None])  # transformers' rope
    cos, sin = cos[0, :, None], torch.cat([-sin[0, :, :half], sin[0, :, half:]], dim=-1)[:, None]  # [N, 1, D]
    mask_p = (torch.ones(lp, lp, dtype=torch.bool, device=dev).tril()[None] & valid_p[:, None, :])[:, None]
    mask_r = torch.cat([_rows(valid_p, inverse)[:, None, :].expand(b, r, lp),
                        torch.ones(r, r, dtype=torch.bool, device=dev).tril()[None] & valid_r[:, None, :]], -1)[:, None]

    def heads_first(z: Tensor, rows: int, cols: int, groups: int = 1) -> Tensor:
        # [rows·cols, h, D] → [rows, h, cols, D]
        z = z.reshape(rows, cols, -1, hd).transpose(1, 2)
        return z.repeat_interleave(groups, dim=1) if groups > 1 else z  # transformers' repeat_kv

    layers = core.layers[: cfg.num_hidden_layers]
    for i, layer in enumerate(layers):
        attn, mlp = layer.self_attn, layer.mlp
        w_qkv, b_qkv = _concat_linear(attn.q_proj, attn.k_proj, attn.v_proj)  # gradients flow back to each
        h = _rms_norm(x, layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon)
        qkv = F.linear(h, w_qkv, b_qkv).view(-1, heads + 2 * kv, hd)
        qk, v = qkv.split((heads + kv, kv), dim=1)
        q, k = (qk * cos + qk.roll(half, -1) * sin).split((heads, kv), dim=1)
        g = attn.num_key_value_groups
        qp, kp, vp = heads_first(q[:n_p], u, lp), heads_first(k[:n_p], u, lp, g), heads_first(v[:n_p], u, lp, g)
        mp = mask_p
        if i == len(layers) - 1:  # of the prompt positions only the last one scores a response token
            qp, mp = qp[:, :, lp - 1 :], mask_p[:, :, lp - 1 :]
            x = torch.cat([x[:n_p].view(u, lp, -1)[:, -1], x[n_p:]])
        a = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mp, scale=attn.scaling)
        a = a.transpose(1, 2).reshape(-1, heads * hd)
        if r:
            qr, kr, vr = heads_first(q[n_p:], b, r), heads_first(k[n_p:], b, r, g), heads_first(v[n_p:], b, r, g)
            keys, values = torch.cat([_rows(kp, inverse), kr], 2), torch.cat([_rows(vp, inverse), vr], 2)
            a_r = F.scaled_dot_product_attention(qr, keys, values, attn_mask=mask_r, scale=attn.scaling)
            a = torch.cat([a, a_r.transpose(1, 2).reshape(-1, heads * hd)])
        x = x + F.linear(a, attn.o_proj.weight, attn.o_proj.bias)
        h = _rms_norm(x, layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon)
        gate, up = F.linear(h, *_concat_linear(mlp.gate_proj, mlp.up_proj)).chunk(2, dim=-1)
        x = x + F.linear(mlp.act_fn(gate) * up, mlp.down_proj.weight, mlp.down_proj.bias)
    x = _rms_norm(x, core.norm.weight, core.norm.variance_epsilon)
    logits = F.linear(x, model.lm_head.weight, getattr(model.lm_head, "bias", None))  # [U + B·r, V]
    first = _rows(logits[:u], inverse)[:, None]  # each prompt's last position scores response token 0
    return torch.cat([first, logits[u:].view(b, r, -1)], 1) if r else first
