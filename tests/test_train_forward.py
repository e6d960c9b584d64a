"""The trainer's lean training forward equals the transformers model's forward; a run through it equals one through
the model (float64: logits to 1e-12, gradients to 1e-10, weights after a few steps to 1e-10)."""

import pytest
import torch

from forklab import recipes
from forklab.lm import _policy_scores, models
from forklab.lm._rollout import response_inputs
from forklab.lm._train_forward import lean_supported, response_logits
from forklab.lm.tokenizer import CharTokenizer
from forklab.lm.trainer import RLConfig, RLTrainer, policy_forward

TOK = CharTokenizer.for_tasks()


def _batch(model, task_prompts, tok=TOK, seed=0):
    from forklab.lm import sampling

    ids, mask = tok.batch_encode(task_prompts, pad_side="left")
    ids, mask = ids.repeat_interleave(4, 0), mask.repeat_interleave(4, 0)
    s = sampling.sample(model, ids, mask, 6, stop_token_id=tok.eos_id, generator=torch.Generator().manual_seed(seed))
    return s


@pytest.mark.parametrize("name", ["student-addition", "student-graph", "teacher-addition"])
def test_lean_forward_equals_the_model_in_float64(name):
    model, tok = models.load_tiny(name, dtype="float64")
    assert lean_supported(model)
    prompts = ["1+2=", "45+67=", "9+99="] if "addition" in name else None
    if prompts is None:
        from forklab.envs.tasks import get_task

        prompts = [e.prompt for e in get_task("graph_path").make_split("train", 3, seed=0)]
    s = _batch(model, prompts, tok)
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    inputs = response_inputs(s.prompt_ids, s.prompt_mask, s.tokens, s.mask)
    lp, t = s.prompt_ids.shape[1], s.tokens.shape[1]
    want = model(**inputs).logits[:, lp - 1 : lp - 1 + t]
    got = response_logits(model, inputs["input_ids"], inputs["attention_mask"], inputs["position_ids"], lp, t)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    # a loss that weights every kept logit differently, so every weight's gradient is exercised
    weights = torch.randn(want.shape, generator=torch.Generator().manual_seed(1), dtype=want.dtype)
    g_want = torch.autograd.grad((want * weights)[s.mask].sum(), params)
    g_got = torch.autograd.grad((got * weights)[s.mask].sum(), params)
    for a, b in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    _, logp_hf, _ = policy_forward(model, s.prompt_ids, s.prompt_mask, s.tokens, s.mask, 0.7, backend="hf")
    _, logp_lean, _ = policy_forward(model, s.prompt_ids, s.prompt_mask, s.tokens, s.mask, 0.7)
    torch.testing.assert_close(logp_lean, logp_hf, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="`backend`"):
        policy_forward(model, s.prompt_ids, s.prompt_mask, s.tokens, s.mask, backend="fast")


def test_lean_forward_handles_grouped_query_attention_and_biases():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=TOK.vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, attention_bias=True, mlp_bias=True,
                      max_position_embeddings=64, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).double()
    assert lean_supported(model)
    s = _batch(model, ["1+2=", "45+67="])
    inputs = response_inputs(s.prompt_ids, s.prompt_mask, s.tokens, s.mask)
    lp, t = s.prompt_ids.shape[1], s.tokens.shape[1]
    want = model(**inputs).logits[:, lp - 1 : lp - 1 + t]
    got = response_logits(model, inputs["input_ids"], inputs["attention_mask"], inputs["position_ids"], lp, t)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    model.config._attn_implementation = "eager"  # eager attention computes softmax differently: not the lean path
    assert not lean_supported(model)


def test_training_through_the_lean_forward_equals_training_through_the_model(monkeypatch):
    def run(lean: bool):
        if not lean:
            monkeypatch.setattr(_policy_scores, "lean_supported", lambda model: False)
        model, tok = models.load_tiny("student-addition", dtype="float64")
        trainer = RLTrainer(model, tok, recipes.get("grpo"), RLConfig(prompts_per_step=4, group_size=4, eval_every=0,
                                                                      lr=1e-3, seed=3))
        history = trainer.train(steps=4, progress=False)
        monkeypatch.undo()
        return history, dict(model.named_parameters())

    (h_lean, w_lean), (h_hf, w_hf) = run(True), run(False)
    for a, b in zip(h_lean, h_hf, strict=True):
        for key in ("reward", "loss", "grad_norm", "entropy", "covariance"):
            assert abs(a[key] - b[key]) < 1e-10, (key, a[key], b[key])
    for name, w in w_lean.items():
        torch.testing.assert_close(w, w_hf[name], rtol=0, atol=1e-10)
