"""Tiny LMs: sizes, safetensors round trip, SFT, RLTrainer (reproducible, learns, resumes), DistillTrainer."""

import json

import pytest
import torch

from forklab import recipes
from forklab.lm import models
from forklab.lm.distill_trainer import DistillConfig, DistillTrainer
from forklab.lm.sft import train_sft
from forklab.lm.tokenizer import CharTokenizer
from forklab.lm.trainer import RLConfig, RLTrainer, policy_forward
from forklab.paths import data_dir

TOK = CharTokenizer.for_tasks()


def test_sizes_are_in_the_documented_ranges():
    student = models.build_tiny("student", TOK.vocab_size)
    teacher = models.build_tiny("teacher", TOK.vocab_size)
    assert 100_000 <= models.count_parameters(student) <= 500_000
    assert 1_000_000 <= models.count_parameters(teacher) <= 3_000_000
    with pytest.raises(ValueError, match="`size`"):
        models.build_tiny("huge")


def test_save_load_round_trip_gives_identical_logits(tmp_path):
    model = models.build_tiny("student", TOK.vocab_size, seed=3)
    path = models.save_model(model, TOK, tmp_path / "m", {"note": "test"})
    assert (path / "model.safetensors").exists() and not list(path.glob("*.bin"))
    loaded, tok = models.load_model(path)
    ids, mask = tok.batch_encode(["12+34=", "5+6="], pad_side="right")
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids, attention_mask=mask.long()).logits,
                                   model(input_ids=ids, attention_mask=mask.long()).logits, rtol=0, atol=0)
    assert json.loads((path / "provenance.json").read_text()) == {"note": "test"}
    with pytest.raises(ValueError, match="safetensors"):
        models.load_model(tmp_path)


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="is not a shipped model"):
        models.load_tiny("no-such-model")
    with pytest.raises(ValueError, match="`name`"):
        models.load_real("")


def test_shipped_models_have_provenance_and_stay_small():
    root = data_dir() / "models"
    shipped = [p for p in root.iterdir() if p.is_dir()]
    assert shipped, "no shipped models in data/models"
    total = sum(f.stat().st_size for p in shipped for f in p.iterdir())
    assert total <= 20 * 2**20
    for p in shipped:
        prov = json.loads((p / "provenance.json").read_text())
        assert {"command", "seed", "versions", "test_metrics_256_prompts"} <= set(prov)
        model, tok = models.load_model(p)
        assert models.count_parameters(model) == prov["parameters"]


def test_sft_lowers_the_loss():
    model = models.build_tiny("student", TOK.vocab_size, seed=0)
    pairs = [(f"{a}+{b}=", f"{a + b};") for a in range(10, 30) for b in range(10, 20)]
    losses = train_sft(model, TOK, pairs, steps=60, batch_size=32, log_every=20)
    assert losses[-1] < 0.7 * losses[0]


def small_trainer(seed=0, **overrides):
    model = models.build_tiny("student", TOK.vocab_size, seed=1)
    pairs = [(f"{a}+{b}=", f"{a + b};") for a in range(10, 40) for b in range(10, 40)]
    train_sft(model, TOK, pairs, steps=150, batch_size=64, cosine=False, betas=(0.9, 0.999), seed=0)
    config = RLConfig(prompts_per_step=4, group_size=6, eval_every=0, eval_size=16, train_size=32, seed=seed,
                      lr=5e-5, **overrides)
    return RLTrainer(model, TOK, recipes.get("grpo"), config)


def test_rl_trainer_is_reproducible_and_logs_trl_metrics():
    a, b = small_trainer(), small_trainer()
    ha, hb = a.train(steps=3, progress=False), b.train(steps=3, progress=False)
    drop = {"time/sample_s", "time/step_s"}
    assert [{k: v for k, v in h.items() if k not in drop} for h in ha] == \
        [{k: v for k, v in h.items() if k not in drop} for h in hb]
    assert {"reward", "entropy", "clip_ratio/low_mean", "clip_ratio/high_mean", "completion_length",
            "frac_degenerate_groups", "covariance", "grad_norm"} <= set(ha[-1])


def test_rl_trainer_raises_the_shipped_students_sampled_accuracy():
    # The shipped student knows addition but samples its mistakes (sampled accuracy ~0.45-0.5): 80 GRPO steps
    # of 2 epochs x 2 minibatches (~5 s) gain 11-17 points for RL seeds 0-3 (entropy 0.44 -> 0.22-0.24);
    # the test asks for 5.
    model, tokenizer = models.load_tiny("student-addition")
    tr = RLTrainer(model, tokenizer, recipes.get("grpo"),
                   RLConfig(eval_every=0, eval_size=64, train_size=512, lr=5e-4, inner_epochs=2, minibatches=2))
    before = tr.evaluate()
    tr.train(steps=80, progress=False)
    after = tr.evaluate()
    assert after["eval/sampled_accuracy"] > before["eval/sampled_accuracy"] + 0.05, (before, after)
    assert after["eval/entropy"] < before["eval/entropy"]


def _greedy(tr):
    from forklab.lm import sampling

    ids, mask = TOK.batch_encode([e.prompt for e in tr.train_examples], pad_side="left")
    s = sampling.sample(tr.model, ids, mask, 6, greedy=True, stop_token_id=TOK.eos_id)
    return [TOK.decode(r[m].tolist()) for r, m in zip(s.tokens, s.mask, strict=True)]


def test_resume_continues_the_same_run(tmp_path):
    full = small_trainer()
    full.train(steps=4, progress=False)
    first = small_trainer()
    first.train(steps=2, progress=False)
    first.save_checkpoint(tmp_path / "ckpt")
    assert not list((tmp_path / "ckpt").glob("*.pt")) and not list((tmp_path / "ckpt").glob("*.bin"))
    second = small_trainer()
    second.load_checkpoint(tmp_path / "ckpt")
    second.train(steps=2, progress=False)
    for x, y in zip(full.history[2:], second.history, strict=True):
        assert x["step"] == y["step"] and x["reward"] == y["reward"]
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-6)


def test_trainer_input_errors():
    model = models.build_tiny("student", TOK.vocab_size)
    with pytest.raises(ValueError, match="`name`"):
        RLTrainer(model, TOK, recipes.get("grpo"), RLConfig(task="sudoku"))
    with pytest.raises(ValueError, match="`ref_model` is required"):
        RLTrainer(model, TOK, recipes.get("grpo", kl_coef=0.1))
    with pytest.raises(ValueError, match="minibatches"):
        RLTrainer(model, TOK, recipes.get("grpo"), RLConfig(prompts_per_step=2, minibatches=3))


def test_policy_forward_matches_sampled_logprobs_with_left_padding():
    from forklab.lm import sampling

    model = models.build_tiny("student", TOK.vocab_size, seed=5)
    ids, mask = TOK.batch_encode(["1+2=", "45+67=", "9+99="], pad_side="left")
    s = sampling.sample(model, ids, mask, 5, stop_token_id=TOK.eos_id, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, logp, _ = policy_forward(model, ids, mask, s.tokens, s.mask)
    torch.testing.assert_close(logp[s.mask], s.logp[s.mask].to(logp.dtype), rtol=1e-5, atol=1e-5)


def test_distill_trainer_reduces_divergence_and_selection_saves_activation_memory():
    teacher = models.build_tiny("student", TOK.vocab_size, seed=11)
    student = models.build_tiny("student", TOK.vocab_size, seed=12)
    cfg = DistillConfig(prompts_per_step=16, eval_every=0, train_size=16, lr=3e-3, seed=0)
    full = DistillTrainer(student, teacher, TOK, cfg)
    hist = full.train(20)
    assert hist[-1]["divergence/kept_mean"] < 0.7 * hist[0]["divergence/kept_mean"]
    picky = DistillTrainer(models.build_tiny("student", TOK.vocab_size, seed=12), teacher, TOK,
                           DistillConfig(prompts_per_step=16, eval_every=0, train_size=16, selection="entropy_top",
                                         ratio=0.25, seed=0))
    m = picky.step()
    assert m["tokens/kept_share"] < 0.5
    assert m["memory/saved_activations_mb"] < hist[0]["memory/saved_activations_mb"]
    with pytest.raises(ValueError, match="`config.divergence`"):
        DistillTrainer(student, teacher, TOK, DistillConfig(divergence="kl"))


def test_real_model_loads_offline_with_its_chat_template():
    model, tok = models.load_real("smollm2-135m")
    assert 130e6 < models.count_parameters(model) < 140e6
    enc = tok.apply_chat_template([{"role": "user", "content": "2+2?"}], add_generation_prompt=True,
                                  return_dict=True, return_tensors="pt")
    assert enc["input_ids"].shape[1] > 5
    with torch.no_grad():
        logits = model(**enc).logits
    assert logits.shape[-1] == model.config.vocab_size and torch.isfinite(logits).all()
