"""Teacher-forced scores of sampled responses and the held-out evaluation of ``RLTrainer``.

Private; :mod:`forklab.lm.trainer` re-exports both (introduced in
``notebooks/01_policy_gradients_and_advantages.ipynb``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from forklab.lm import sampling
from forklab.lm._rollout import decode_responses, encode_prompts, greedy_accuracy, model_device, response_inputs
from forklab.lm._train_forward import lean_supported, response_logits
from forklab.ops import logprobs_from_logits

__all__ = ["policy_forward", "evaluate"]


def policy_forward(model, prompt_ids: Tensor, prompt_mask: Tensor, tokens: Tensor, mask: Tensor,
                   temperature: float = 1.0, hidden: bool = False, backend: str = "auto"):
    """Teacher-forced scores of sampled responses: ``(logits [B, T, V], logp [B, T], hidden [B, T, d] | None)``.

    Input is the left-padded prompt followed by the response; positions come from the attention
    mask (``cumsum − 1``), exactly as the sampler used them, so ``logp`` equals the sampled log-probs
    at the same weights. Logits are divided by ``temperature``. Inputs are moved to the model's device.
    ``backend="auto"`` computes a Llama's logits with ``forklab.lm._train_forward`` (the model's own
    operations minus what the response logits do not need; equal logits, gradients equal to rounding)
    unless ``hidden`` is asked; ``"hf"`` always calls the model.
    """
    if backend not in ("auto", "hf"):
        raise ValueError(f"`backend` must be 'auto' or 'hf', got {backend!r}")
    device = model_device(model)
    prompt_ids, prompt_mask, tokens, mask = (x.to(device) for x in (prompt_ids, prompt_mask, tokens, mask))
    inputs = response_inputs(prompt_ids, prompt_mask, tokens, mask)
    lp = prompt_ids.shape[1]
    if backend == "auto" and not hidden and lean_supported(model):
        logits = response_logits(model, inputs["input_ids"], inputs["attention_mask"], inputs["position_ids"], lp,
                                 tokens.shape[1]) / temperature
        return logits, logprobs_from_logits(logits, tokens), None
    out = model(**inputs, output_hidden_states=hidden)
    logits = out.logits[:, lp - 1 : lp - 1 + tokens.shape[1]] / temperature
    logp = logprobs_from_logits(logits, tokens)
    h = out.hidden_states[-1][:, lp - 1 : lp - 1 + tokens.shape[1]] if hidden else None
    return logits, logp, h


@torch.no_grad()
def evaluate(model, tokenizer,  task, examples, max_new_tokens: int, k: int = 8,
             temperature: float = 1.0, generator: torch.Generator | None = None) -> dict[str, float]:
    """Greedy accuracy, sampled accuracy (T = ``temperature``) and unbiased pass@k (n = k samples)."""
    greedy_acc = greedy_accuracy(model, tokenizer, task, examples, max_new_tokens)
    ids, pmask = encode_prompts(model, tokenizer, examples)
    rep_ids, rep_mask = ids.repeat_interleave(k, 0), pmask.repeat_interleave(k, 0)
    sampled = sampling.sample(model, rep_ids, rep_mask, max_new_tokens, temperature=temperature,
                              stop_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id, generator=generator)
    texts = decode_responses(tokenizer, sampled.tokens, sampled.mask)
    ok = torch.tensor([task.reward(examples[i // k], t) for i, t in enumerate(texts)]).reshape(len(examples), k)
    correct = ok.sum(1)
    return {
        "eval/greedy_accuracy": greedy_acc,
        "eval/sampled_accuracy": float(ok.mean()),
        f"eval/pass@{k}": float(sampling.pass_at_k(torch.full_like(correct, k), correct, k).mean()),
        "eval/entropy": float(sampled.entropy[sampled.mask].mean()),
    }
