"""Real-model adapters, offline: HFTokenizer, the GSM8K task, RLTrainer on a HF tokenizer, real_rl_run."""

import json
import time
from decimal import Decimal
from pathlib import Path

import pytest
import torch

from forklab import recipes
from forklab.envs import tasks as T
from forklab.lm import models, real_run
from forklab.lm.tokenizer import HFTokenizer
from forklab.lm.trainer import RLConfig, RLTrainer, evaluate

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

FIXTURE = Path(__file__).parent / "data" / "gsm8k_sample.jsonl"
SPECIALS = ["<pad>", "<eos>", "<|system|>", "<|user|>", "<|assistant|>"]
TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<eos>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def make_hf_tokenizer(chat_template: str | None = TEMPLATE):
    """A character-level ``PreTrainedTokenizerFast`` built here (no hub): specials first, then printable ASCII."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import WordLevel

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for c in "\n" + "".join(chr(i) for i in range(32, 127)) + "[UNK]":
        vocab.setdefault(c, len(vocab))
    vocab["[UNK]"] = len(vocab)
    core = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    core.decoder = decoders.Fuse()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>",
                                               unk_token="[UNK]", additional_special_tokens=SPECIALS[2:])
    tok.chat_template = chat_template
    return tok


@pytest.fixture(scope="module")
def hf_tok():
    return make_hf_tokenizer()


@pytest.fixture(scope="module")
def gsm8k():
    return T.get_task("gsm8k", path=FIXTURE)


# ----- HFTokenizer ----------------------------------------------------------------------------------
def test_hf_tokenizer_chat_template_left_padding_and_masks(hf_tok):
    tok = HFTokenizer(hf_tok)
    assert tok.chat and tok.eos_id == 1 and tok.pad_id == 0 and tok.vocab_size == len(hf_tok)
    assert tok.format_prompt("2+2?") == "<|user|>2+2?<eos><|assistant|>"
    ids, mask = tok.batch_encode(["ab", "abcd"], pad_side="left")
    assert ids.dtype == torch.long and mask.dtype == torch.bool  # as CharTokenizer
    user, asst, eos = (hf_tok.convert_tokens_to_ids(t) for t in ("<|user|>", "<|assistant|>", "<eos>"))
    a, b, c, d = (hf_tok.convert_tokens_to_ids(ch) for ch in "abcd")
    assert ids.tolist() == [[0, 0, user, a, b, eos, asst], [user, a, b, c, d, eos, asst]]
    assert mask.tolist() == [[False, False] + [True] * 5, [True] * 7]
    right, rmask = tok.batch_encode(["ab", "abcd"], pad_side="right")
    assert right[0].tolist() == [user, a, b, eos, asst, 0, 0] and rmask.sum(1).tolist() == [5, 7]
    with_system = HFTokenizer(hf_tok, system="Be brief.")
    assert with_system.format_prompt("hi") == "<|system|>Be brief.<eos><|user|>hi<eos><|assistant|>"


def test_hf_tokenizer_decode_round_trip_and_plain_mode(hf_tok):
    tok = HFTokenizer(hf_tok, chat=False)
    text = "Tom has 3 apples.\n#### 3"
    ids, mask = tok.batch_encode([text])
    assert mask.all() and tok.decode(ids[0]) == text == tok.decode(ids[0].tolist())
    assert tok.decode(torch.tensor(tok.encode("12") + [tok.eos_id])) == "12"  # special tokens dropped
    assert tok.batch_decode(ids) == [text]
    assert HFTokenizer(make_hf_tokenizer(chat_template=None)).chat is False  # default: chat iff a template


def test_hf_tokenizer_pad_falls_back_to_eos_and_ids_can_be_overridden(hf_tok):
    tok = make_hf_tokenizer()
    tok.pad_token = None
    assert HFTokenizer(tok).pad_id == HFTokenizer(tok).eos_id == 1
    assert HFTokenizer(hf_tok, eos_id=4).eos_id == 4


def test_hf_tokenizer_bad_input(hf_tok):
    tok = HFTokenizer(hf_tok)
    for bad in ([], "abc", ["ok", 3]):
        with pytest.raises(ValueError, match="`texts`"):
            tok.batch_encode(bad)
    with pytest.raises(ValueError, match="`pad_side`"):
        tok.batch_encode(["a"], pad_side="middle")
    with pytest.raises(ValueError, match="`texts`"):
        HFTokenizer(hf_tok, chat=False).batch_encode([""])  # no tokens at all
    with pytest.raises(ValueError, match="`chat`"):
        HFTokenizer(make_hf_tokenizer(chat_template=None), chat=True)
    with pytest.raises(ValueError, match="`eos_id`"):
        HFTokenizer(hf_tok, eos_id=10_000)
    with pytest.raises(ValueError, match="`tokenizer`"):
        HFTokenizer(object())


# ----- GSM8K ---------------------------------------------------------------------------------------
def test_gsm8k_rewards_by_hand(gsm8k):
    ex = T.Example("gsm8k", "q", ("q", "42", "... #### 42"))
    cases = {"#### 42": 1, "so 6 * 7 = 42\n#### 42": 1, "#### 42\nthen 7 more": 1, "\\boxed{42}": 1,
             "The answer is $\\boxed{\\$42}$.": 1, "the answer is 42.": 1, "42.0": 1, "#### $42.00": 1,
             "#### 41": 0, "#### 41 but really 42": 0, "\\boxed{41} and then 42": 0, "4 2": 0, "142": 0,
             "-42": 0, "no number here": 0, "": 0, "42 apples, so 41": 0}
    for response, expected in cases.items():
        assert gsm8k.reward(ex, response) == expected, response
        assert gsm8k.graded_reward(ex, response) == expected, response
    big = T.Example("gsm8k", "q", ("q", "1234", ""))
    for response in ("1,234", "#### 1,234", "$1,234", "1234.0", "\\boxed{1,234}"):
        assert gsm8k.reward(big, response) == 1, response
    assert gsm8k.reward(big, "12,34") == 0
    assert T.extract_final_number("costs $1,234.50 in all") == Decimal("1234.50")
    assert T.extract_final_number("nothing") is None
    with pytest.raises(ValueError, match="`example`"):
        gsm8k.reward(T.Example("addition", "1+2=", (1, 2)), "3")


def test_gsm8k_loads_the_fixture_with_deterministic_disjoint_splits(gsm8k):
    train, test = gsm8k.make_split("train"), gsm8k.make_split("test")
    lines = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
    assert len(train) + len(test) == len(lines) and train and test
    assert not {e.prompt for e in train} & {e.prompt for e in test}
    assert gsm8k.make_split("train", 4, seed=3) == gsm8k.make_split("train", 4, seed=3)
    assert gsm8k.make_split("train", 4, seed=3) != gsm8k.make_split("train", 4, seed=4)
    assert len(gsm8k.make_split("train", 1000)) == len(train)  # a fixed set: at most n
    for e in train + test:
        assert e.prompt.endswith(T.GSM8K_INSTRUCTION) and e.problem[0] in e.prompt
        assert gsm8k.reward(e, gsm8k.reference_answers(e)[0]) == 1.0  # the gold solution scores
        assert "<<" not in gsm8k.reference_answers(e)[0]  # calculator annotations removed
        assert gsm8k.reward(e, gsm8k.demonstration(e, 0, noise=1.0)) == 0.0
        assert gsm8k.parse_prompt(e.prompt) == e
    assert {e.problem[1] for e in train + test} == {line["answer"].split("####")[-1].strip() for line in lines}
    assert T.rewards(gsm8k, test, ["#### " + e.problem[1] for e in test]).tolist() == [1.0] * len(test)


def test_gsm8k_folder_with_official_splits_and_errors(tmp_path):
    lines = FIXTURE.read_text().splitlines()
    (tmp_path / "train.jsonl").write_text("\n".join(lines[:7]) + "\n")
    (tmp_path / "test.jsonl").write_text("\n".join(lines[7:]) + "\n")
    task = T.get_task("gsm8k", path=tmp_path)
    assert len(task.make_split("train")) == 7 and len(task.make_split("test")) == len(lines) - 7
    with pytest.raises(ValueError, match="`path`.*does not exist"):
        T.get_task("gsm8k", path=tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="`path`"):
        T.get_task("gsm8k")  # neither a file nor hub=True: never downloads unasked
    with pytest.raises(ValueError, match="`path`"):
        T.get_task("gsm8k", path=FIXTURE, hub=True)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "no final number"}\n')
    with pytest.raises(ValueError, match="####"):
        T.get_task("gsm8k", path=bad).make_split("train")
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(ValueError, match="line 1"):
        T.get_task("gsm8k", path=bad).make_split("train")
    with pytest.raises(ValueError, match="`gsm8k_path`"):
        T.get_task("gsm8k", gsm8k_path=FIXTURE)


def test_gsm8k_from_the_hub_needs_datasets(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed; nothing is downloaded
    task = T.get_task("gsm8k", hub=True)
    with pytest.raises(ImportError, match="pip install datasets"):
        task.make_split("train", 2)


def test_synthetic_tasks_keep_their_character_limits():
    assert T.get_task("gsm8k", path=FIXTURE).char_limits is False and T.Addition.char_limits is True
    with pytest.raises(ValueError, match="`digits`"):
        T.get_task("addition", digits=12, scratchpad=True)
    assert "gsm8k" not in T.TASKS and "gsm8k" in T.TEXT_TASKS


# ----- RLTrainer on a HF tokenizer and a GSM8K task --------------------------------------------------
def tiny_policy(tok: HFTokenizer, seed: int = 0):
    return models.build_tiny("student", vocab_size=tok.vocab_size, max_positions=512, seed=seed)


def gsm8k_trainer(hf_tok, gsm8k, seed=0, **overrides):
    tok = HFTokenizer(hf_tok)
    config = RLConfig(task="gsm8k", prompts_per_step=2, group_size=2, max_new_tokens=4, eval_every=0, eval_size=2,
                      seed=seed, lr=1e-3, **overrides)
    return RLTrainer(tiny_policy(tok, seed=1), tok, recipes.get("grpo"), config, task=gsm8k)


def test_rl_trainer_runs_a_hf_tokenizer_on_gsm8k_reproducibly(hf_tok, gsm8k):
    a, b = gsm8k_trainer(hf_tok, gsm8k), gsm8k_trainer(hf_tok, gsm8k)
    ha, hb = a.train(steps=2, progress=False), b.train(steps=2, progress=False)
    assert len(ha) == 2 and a.task is gsm8k and len(a.train_examples) == len(gsm8k.make_split("train"))
    assert {"reward", "accuracy", "entropy", "completion_length", "loss", "grad_norm"} <= set(ha[-1])
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in ha)
    assert 1 <= ha[-1]["completion_length"] <= 4
    drop = {"time/sample_s", "time/step_s"}
    assert [{k: v for k, v in h.items() if k not in drop} for h in ha] == \
        [{k: v for k, v in h.items() if k not in drop} for h in hb]
    m = evaluate(a.model, a.tokenizer, gsm8k, a.eval_examples, max_new_tokens=4, k=2,
                 generator=torch.Generator().manual_seed(0))
    assert set(m) == {"eval/greedy_accuracy", "eval/sampled_accuracy", "eval/pass@2", "eval/entropy"}


@pytest.mark.parametrize("name", sorted(recipes.PRESETS))
def test_every_preset_runs_a_step_on_the_hf_path(hf_tok, gsm8k, name):
    import copy

    tok = HFTokenizer(hf_tok)
    model = tiny_policy(tok, seed=2)
    recipe = recipes.get(name)
    ref = copy.deepcopy(model) if recipe.kl_coef else None
    config = RLConfig(prompts_per_step=2, group_size=3, max_new_tokens=3, eval_every=0, eval_size=1, lr=1e-3,
                      inner_epochs=2, minibatches=2)
    m = RLTrainer(model, tok, recipe, config, ref_model=ref, task=gsm8k).step()
    assert m["completion_length"] >= 1 and all(v == v for v in m.values())  # no NaN


def test_rl_trainer_rejects_a_task_that_is_not_a_task(hf_tok):
    tok = HFTokenizer(hf_tok)
    with pytest.raises(ValueError, match="`task`"):
        RLTrainer(tiny_policy(tok), tok, recipes.get("grpo"), RLConfig(), task="gsm8k")


# ----- real_rl_run -----------------------------------------------------------------------------------
def test_real_rl_run_with_an_injected_model(hf_tok, gsm8k, tmp_path):
    base = tiny_policy(HFTokenizer(hf_tok))
    before = {k: v.clone() for k, v in base.state_dict().items()}
    out = real_run.real_rl_run(["grpo", "dr_grpo"], task=gsm8k, steps=2, prompts_per_step=2, group_size=2,
                               max_new_tokens=4, lr=1e-3, device="cpu", run_dir=tmp_path, model=(base, hf_tok),
                               progress=False, engine="forklab")
    assert list(out) == ["grpo", "dr_grpo"] and all(len(h) == 2 for h in out.values())
    assert all(torch.isfinite(torch.tensor(h[-1]["loss"])) for h in out.values())
    assert (tmp_path / "grpo.csv").exists() and (tmp_path / "dr_grpo.csv").exists()
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())  # each recipe trains a copy
    again = real_run.real_rl_run("grpo", task="gsm8k", task_kwargs={"path": str(FIXTURE)}, steps=2,
                                 prompts_per_step=2, group_size=2, max_new_tokens=4, lr=1e-3, device="cpu",
                                 model=(base, hf_tok), progress=False, engine="forklab")
    drop = {"time/sample_s", "time/step_s"}
    assert [{k: v for k, v in h.items() if k not in drop} for h in again["grpo"]] == \
        [{k: v for k, v in h.items() if k not in drop} for h in out["grpo"]]


def test_real_rl_run_takes_recipe_objects_keyed_by_name(hf_tok, gsm8k):
    base = tiny_policy(HFTokenizer(hf_tok))
    ba = recipes.get("grpo", aggregation="balanced").replace(name="ba_mode")
    out = real_run.real_rl_run(["grpo", ba], task=gsm8k, steps=1, prompts_per_step=2, group_size=2, max_new_tokens=3,
                               device="cpu", model=(base, hf_tok), progress=False, engine="forklab")
    assert list(out) == ["grpo", "ba_mode"] and all(len(h) == 1 for h in out.values())
    with pytest.raises(ValueError, match="share a name"):
        real_run.real_rl_run(["grpo", recipes.get("grpo")], task=gsm8k)
    with pytest.raises(ValueError, match="`recipe_names`"):
        real_run.real_rl_run([3], task=gsm8k)


def test_real_rl_run_monkeypatched_loader_and_bad_input(hf_tok, gsm8k, monkeypatch):
    calls = []

    def fake_load_real(name, dtype=torch.float32, device=None):
        calls.append((name, dtype, device))
        return tiny_policy(HFTokenizer(hf_tok)).to(dtype), hf_tok

    monkeypatch.setattr(models, "load_real", fake_load_real)
    out = real_run.real_rl_run(["grpo"], model_name="some/model", task=gsm8k, steps=1, prompts_per_step=1,
                               group_size=2, max_new_tokens=2, device="cpu", progress=False,
                               config_overrides={"temperature": 0.7}, engine="forklab")
    assert calls == [("some/model", torch.float32, "cpu")] and len(out["grpo"]) == 1
    with pytest.raises(ValueError, match="`recipe_names`"):
        real_run.real_rl_run(["no_such_recipe"], task=gsm8k)
    with pytest.raises(ValueError, match="`config_overrides`"):
        real_run.real_rl_run(["grpo"], task=gsm8k, config_overrides={"learning_rate": 1.0})
    with pytest.raises(ValueError, match="`group_size`"):
        real_run.real_rl_run(["grpo"], task=gsm8k, group_size=1)
    with pytest.raises(ValueError, match="`dtype`"):
        real_run.real_rl_run(["grpo"], task=gsm8k, dtype="float99")
    assert calls == [("some/model", torch.float32, "cpu")]  # bad input fails before any loading


def test_real_run_instructions():
    line = real_run.real_run_instructions("05_entropy.ipynb")
    assert "REAL_RUN = False" in line and "05_entropy.ipynb" in line and "pip install -e .[lm,trl]" in line
    assert "internet access" in line and "TRL" in line
    assert "\n" not in line and real_run.REAL_RUN_HELP in line
    with pytest.raises(ValueError, match="`notebook`"):
        real_run.real_run_instructions("")


def test_real_rl_run_smollm2_on_cpu(gsm8k):
    t0 = time.perf_counter()
    out = real_run.real_rl_run(["grpo"], model_name="smollm2-135m", task=gsm8k, steps=1, prompts_per_step=1,
                               group_size=2, max_new_tokens=8, device="cpu", progress=False, engine="forklab")
    (h,) = out["grpo"]
    assert torch.isfinite(torch.tensor(h["loss"])) and 1 <= h["completion_length"] <= 8
    print(f"SmolLM2-135M real_rl_run smoke: {time.perf_counter() - t0:.1f} s")


# ----- the TRL engine ---------------------------------------------------------------------------------
def test_real_rl_run_trl_engine_with_an_injected_model(hf_tok, gsm8k, tmp_path):
    pytest.importorskip("trl")
    base = tiny_policy(HFTokenizer(hf_tok))
    before = {k: v.clone() for k, v in base.state_dict().items()}
    ba = recipes.get("grpo", aggregation="balanced").replace(name="ba_mode")
    out = real_run.real_rl_run([ba], task=gsm8k, steps=2, prompts_per_step=2, group_size=2,
                               max_new_tokens=4, lr=1e-3, device="cpu", model=(base, hf_tok), progress=False,
                               run_dir=tmp_path, config_overrides={"inner_epochs": 2, "minibatches": 2})
    assert list(out) == ["ba_mode"] and all(len(h) == 2 for h in out.values())
    for h in out.values():
        assert all(0.0 <= s["reward"] <= 1.0 and torch.isfinite(torch.tensor(s["loss"])) for s in h)
        assert {"entropy", "completions/mean_length", "clip_ratio/region_mean"} <= set(h[-1])
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())  # each recipe trains a copy
    with pytest.raises(ValueError, match="`config_overrides`"):
        real_run.real_rl_run(["grpo"], task=gsm8k, model=(base, hf_tok), config_overrides={"eval_every": 5})
    with pytest.raises(ValueError, match="`engine`"):
        real_run.real_rl_run(["grpo"], task=gsm8k, engine="deepspeed")
