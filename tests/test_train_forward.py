"""The trainer's lean training forward equals the transformers model's forward; a run through it equals one through
the model. Float64: logits to 1e-12. Gradients to 1e-10 when the RMSNorm statistics are float64 too (``f64_norms``);
with transformers' float32 statistics (its default, also for a float64 model) to float32 rounding, because the lean
forward computes a repeated prompt once and its norm's backward then rounds the samples' summed gradient once."""

import pytest
import torch

from forklab import recipes
from forklab.lm import _policy_scores, _train_forward, models
from forklab.lm._rollout import response_inputs
from forklab.lm._train_forward import lean_supported, response_logits
from forklab.lm.tokenizer import CharTokenizer
from forklab.lm.trainer import RLConfig, RLTrainer, policy_forward

TOK = CharTokenizer.for_tasks()


def _batch(model, task_prompts, tok=TOK, seed=0, repeats=4, max_new_tokens=6):
    from forklab.lm import sampling

    ids, mask = tok.batch_encode(task_prompts, pad_side="left")
    ids, mask = ids.repeat_interleave(repeats, 0), mask.repeat_interleave(repeats, 0)
    s = sampling.sample(model, ids, mask, max_new_tokens, stop_token_id=tok.eos_id,
                        generator=torch.Generator().manual_seed(seed))
    return s


@pytest.fixture
def f64_norms(monkeypatch):
    """RMSNorm statistics in the input's dtype, in transformers' module and in the lean forward alike."""
    from transformers.models.llama import modeling_llama

    def norm(x, weight, eps):
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    monkeypatch.setattr(_train_forward, "_rms_norm", norm)
    monkeypatch.setattr(modeling_llama.LlamaRMSNorm, "forward",
                        lambda self, x: norm(x, self.weight, self.variance_epsilon))


def _grads(model, s, forward):
    """Gradients of a loss that weights every kept logit differently, so that every weight's gradient is exercised."""
    params = [p for p in model.parameters() if p.requires_grad]
    logits = forward()
    weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(1), dtype=logits.dtype)
    return torch.autograd.grad((logits * weights)[s.mask].sum(), params)


def _both(model, s):
    inputs = response_inputs(s.prompt_ids, s.prompt_mask, s.tokens, s.mask)
    lp, t = s.prompt_ids.shape[1], s.tokens.shape[1]
    ids, attention, positions = inputs["input_ids"], inputs["attention_mask"], inputs["position_ids"]
    return (lambda: model(**inputs).logits[:, lp - 1 : lp - 1 + t],
            lambda: response_logits(model, ids, attention, positions, lp, t))


def _prompts(name):
    if "addition" in name:
        return ["1+2=", "45+67=", "9+99="]
    from forklab.envs.tasks import get_task

    return [e.prompt for e in get_task("graph_path").make_split("train", 3, seed=0)]


@pytest.mark.parametrize("name", ["student-addition", "student-graph", "teacher-addition"])
def test_lean_forward_equals_the_model_in_float64(name):
    model, tok = models.load_tiny(name, dtype="float64")
    assert lean_supported(model)
    s = _batch(model, _prompts(name), tok)
    model.train()
    hf, lean = _both(model, s)
    torch.testing.assert_close(lean(), hf(), rtol=0, atol=1e-12)
    # transformers' float32 norm statistics: the same gradient to float32 rounding (measured: 1.4e-7 of the largest)
    for a, b in zip(_grads(model, s, lean), _grads(model, s, hf), strict=True):
        assert float((a - b).abs().max()) <= 1e-6 * float(b.abs().max())
    _, logp_hf, _ = policy_forward(model, s.prompt_ids, s.prompt_mask, s.tokens, s.mask, 0.7, backend="hf")
    _, logp_lean, _ = policy_forward(model, s.prompt_ids, s.prompt_mask, s.tokens, s.mask, 0.7)
    torch.testing.assert_close(logp_lean, logp_hf, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="`backend`"):
        policy_forward(model, s.prompt_ids, s.prompt_mask, s.tokens, s.mask, backend="fast")


@pytest.mark.parametrize(("repeats", "max_new_tokens"), [(4, 6), (1, 6), (3, 1)])
def test_lean_gradients_equal_the_model_with_float64_norm_statistics(f64_norms, repeats, max_new_tokens):
    """Shared prompts (repeats > 1), none (1), and one response token (no response position is an input)."""
    model, tok = models.load_tiny("student-addition", dtype="float64")
    s = _batch(model, ["1+2=", "45+67=", "9+99=", "45+67="], tok, repeats=repeats, max_new_tokens=max_new_tokens)
    assert s.tokens.shape[1] == min(max_new_tokens, 4)
    hf, lean = _both(model, s)
    torch.testing.assert_close(lean(), hf(), rtol=0, atol=1e-12)
    for a, b in zip(_grads(model, s, lean), _grads(model, s, hf), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_lean_forward_computes_each_distinct_prompt_once(monkeypatch):
    """The first projection sees U·Lp prompt rows + B·(T−1) response rows, not B·(Lp + T − 1)."""
    model, tok = models.load_tiny("student-addition")
    s = _batch(model, ["1+2=", "45+67=", "9+99=", "45+67="], tok, repeats=4)
    rows = []
    linear = _train_forward.F.linear
    monkeypatch.setattr(_train_forward.F, "linear", lambda x, *a: rows.append(x.shape[0]) or linear(x, *a))
    _both(model, s)[1]()
    b, lp, t = s.tokens.shape[0], s.prompt_ids.shape[1], s.tokens.shape[1]
    assert rows[0] == 3 * lp + b * (t - 1)  # 3 distinct prompts ("45+67=" twice, 8 rows)


def test_lean_forward_handles_grouped_query_attention_and_biases(f64_norms):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=TOK.vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, attention_bias=True, mlp_bias=True,
                      max_position_embeddings=64, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).double()
    for name, p in model.named_parameters():  # transformers starts biases at 0: make their gradients matter
        if name.endswith("bias"):
            torch.nn.init.normal_(p, std=0.1)
    assert lean_supported(model)
    s = _batch(model, ["1+2=", "45+67="])
    hf, lean = _both(model, s)
    torch.testing.assert_close(lean(), hf(), rtol=0, atol=1e-12)
    for a, b in zip(_grads(model, s, lean), _grads(model, s, hf), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    model.config._attn_implementation = "eager"  # eager attention computes softmax differently: not the lean path
    assert not lean_supported(model)


@pytest.mark.parametrize("norms", ["float64", "transformers"])
def test_training_through_the_lean_forward_equals_training_through_the_model(request, monkeypatch, norms):
    """Four GRPO steps: to 1e-10 with float64 norm statistics. With transformers' float32 ones, metrics to 1e-7 and
    weights to 1e-6 (AdamW divides by √v, so a weight whose gradient is tiny moves by ~lr whatever its size, and the
    float32 rounding of that gradient shows there; measured 1.4e-7 at lr 1e-3)."""
    if norms == "float64":
        request.getfixturevalue("f64_norms")
    supported = _policy_scores.lean_supported

    def run(lean: bool):
        monkeypatch.setattr(_policy_scores, "lean_supported", supported if lean else lambda model: False)
        model, tok = models.load_tiny("student-addition", dtype="float64")
        trainer = RLTrainer(model, tok, recipes.get("grpo"), RLConfig(prompts_per_step=4, group_size=4, eval_every=0,
                                                                      lr=1e-3, seed=3))
        history = trainer.train(steps=4, progress=False)
        return history, dict(model.named_parameters())

    (h_lean, w_lean), (h_hf, w_hf) = run(True), run(False)
    tol = 1e-10 if norms == "float64" else 1e-7
    for a, b in zip(h_lean, h_hf, strict=True):
        for key in ("reward", "loss", "grad_norm", "entropy", "covariance"):
            assert abs(a[key] - b[key]) < tol, (key, a[key], b[key])
    for name, w in w_lean.items():
        torch.testing.assert_close(w, w_hf[name], rtol=0, atol=tol if norms == "float64" else 1e-6)
