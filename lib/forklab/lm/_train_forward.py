"""A lean teacher-forced Llama forward with autograd: the response logits of ``RLTrainer``'s update.

Used by :func:`forklab.lm.trainer.policy_forward` (introduced in
``notebooks/01_policy_gradients_and_advantages.ipynb``) for a ``LlamaForCausalLM`` whose attention runs
through SDPA. The same tensor operations as ``transformers``' Llama forward, on the model's own
parameters (so gradients reach them), without what a training step does not need:

- no module calls, hooks, output dataclasses or mask helpers (the boolean mask ``causal ∧ key is a real
  token`` is built directly; it is the one ``create_causal_mask`` builds for SDPA);
- no last column: the logits at column ``c`` predict token ``c + 1``, so the last response token is
  never an input that a kept logit depends on;
- in the last layer, the attention output and the MLP only for the ``T`` columns whose logits are
  kept (``Lp − 1 .. Lp + T − 2``); the earlier columns are needed there only as keys and values;
- no logits for the prompt columns.

The logits equal the model's own forward pass at the kept columns (the same kernels on the same rows;
tested bitwise here and to 1e-12 in float64); the weight gradients are sums over fewer rows, so they agree
to rounding (tested to 1e-10 in float64). RoPE is applied as ``x·cos + roll(x, D/2)·sin'`` with the
first half of ``sin'`` negated: the same products as ``rotate_half`` (negation is exact).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from forklab.lm._llama_runner import _is_fast_supported

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


def response_logits(model, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, prompt_len: int,
                    response_len: int) -> Tensor:
    """Logits ``[B, T, V]`` of the columns ``Lp − 1 .. Lp + T − 2`` (those that score the ``T`` response tokens).

    ==============  ==============================================================================
    argument        shape
    ==============  ==============================================================================
    input_ids       ``[B, Lp + T]`` long, left-padded prompt then response
    attention_mask  ``[B, Lp + T]`` True (or 1) on real tokens
    position_ids    ``[B, Lp + T]`` long, ``attention_mask.cumsum − 1`` (clamped at 0)
    prompt_len      ``Lp`` ≥ 1; ``response_len`` is ``T`` ≥ 1
    ==============  ==============================================================================

    Differentiable in the model's parameters; the model must pass :func:`lean_supported`.
    """
    core, cfg = model.model, model.config
    n = prompt_len + response_len - 1
    ids, valid, pos = input_ids[:, :n], attention_mask[:, :n].bool(), position_ids[:, :n]
    b = ids.shape[0]
    x = F.embedding(ids, core.embed_tokens.weight)
    causal = torch.ones(n, n, dtype=torch.bool, device=ids.device).tril()
    mask = (causal[None] & valid[:, None, :])[:, None]  # [B, 1, n, n]
    cos, sin = core.rotary_emb(x, pos)  # transformers' own rope (theta, scaling), in x's dtype
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    half = hd // 2
    cos = cos.unsqueeze(2)
    sin = torch.cat([-sin[..., :half], sin[..., half:]], dim=-1).unsqueeze(2)  # [B, n, 1, D]
    layers = core.layers[: cfg.num_hidden_layers]
    for i, layer in enumerate(layers):
        attn, mlp = layer.self_attn, layer.mlp
        h = _rms_norm(x, layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon)
        q = F.linear(h, attn.q_proj.weight, attn.q_proj.bias).view(b, n, heads, hd)
        k = F.linear(h, attn.k_proj.weight, attn.k_proj.bias).view(b, n, kv, hd)
        v = F.linear(h, attn.v_proj.weight, attn.v_proj.bias).view(b, n, kv, hd)
        qk = torch.cat([q, k], dim=2)
        q, k = (qk * cos + qk.roll(half, -1) * sin).split((heads, kv), dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if attn.num_key_value_groups > 1:  # transformers' repeat_kv
            k = k.repeat_interleave(attn.num_key_value_groups, dim=1)
            v = v.repeat_interleave(attn.num_key_value_groups, dim=1)
        layer_mask = mask
        if i == len(layers) - 1:  # only the kept columns go on (the others were needed as keys/values)
            q, layer_mask, x = q[:, :, prompt_len - 1 :], mask[:, :, prompt_len - 1 :], x[:, prompt_len - 1 :]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=layer_mask, scale=attn.scaling)
        x = x + F.linear(a.transpose(1, 2).reshape(b, x.shape[1], heads * hd), attn.o_proj.weight, attn.o_proj.bias)
        h = _rms_norm(x, layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon)
        gate = F.linear(h, mlp.gate_proj.weight, mlp.gate_proj.bias)
        up = F.linear(h, mlp.up_proj.weight, mlp.up_proj.bias)
        x = x + F.linear(mlp.act_fn(gate) * up, mlp.down_proj.weight, mlp.down_proj.bias)
    x = _rms_norm(x, core.norm.weight, core.norm.variance_epsilon)
    return F.linear(x, model.lm_head.weight, getattr(model.lm_head, "bias", None))
