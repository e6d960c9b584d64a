"""Synthetic verifiable tasks: hand-checked rewards, reference answers, demonstrations, splits, lengths."""

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from forklab.envs import tasks as T
from forklab.lm.tokenizer import CharTokenizer

CONFIGS = [
    ("addition", {}),
    ("addition", {"scratchpad": True}),
    ("addition", {"digits": 4, "scratchpad": True}),
    ("countdown", {}),
    ("countdown", {"num_numbers": 4}),
    ("countdown", {"use_all": True}),
    ("graph_path", {}),
    ("graph_path", {"num_nodes": 8, "num_edges": 10}),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'default'}" for name, kw in CONFIGS]


@pytest.fixture(scope="module", params=CONFIGS, ids=IDS)
def task_and_examples(request):
    name, kwargs = request.param
    task = T.get_task(name, **kwargs)
    return task, task.make_split("train", 150, seed=0) + task.make_split("test", 50, seed=0)


# ----- hand-written reward cases ------------------------------------------------------------------
def test_addition_rewards_by_hand():
    task = T.get_task("addition")
    ex = task.parse_prompt("47+85=")
    assert ex.problem == (47, 85)
    cases = {"132;": 1, "132;99+1": 1, "132;;": 1, "131;": 0, "132": 0, "0132;": 0, "+132;": 0, " 132;": 0,
             "12,13>132;": 0, "": 0, ";": 0, "1 32;": 0, "١٣٢;": 0}
    for response, expected in cases.items():
        assert task.reward(ex, response) == expected, response
    assert task.graded_reward(ex, "132;") == 1.0
    assert task.graded_reward(ex, "122;") == pytest.approx(2 / 3)  # two of three digits right
    assert task.graded_reward(ex, "32;") == pytest.approx(2 / 3)
    assert task.graded_reward(ex, "0132;") == pytest.approx(3 / 4)
    assert task.graded_reward(ex, "132") == 0.0  # truncated
    assert task.reference_answers(ex) == ["132;"]


def test_addition_scratchpad_by_hand():
    task = T.get_task("addition", scratchpad=True)
    ex = task.example((47, 85))
    assert task.reference_answers(ex) == ["12,13>132;"]
    assert task.reference_answers(task.example((7, 85))) == ["12,9>92;"]
    assert task.reference_answers(task.example((0, 0))) == ["0>0;"]
    assert task.reward(ex, "12,13>132;") == 1.0
    assert task.reward(ex, "12,12>132;") == 1.0  # only the answer is verified
    assert task.reward(ex, "12,12>22;") == 0.0  # the forgotten carry
    assert task.reward(ex, "132;") == 0.0  # no scratchpad: wrong format
    assert task.reward(ex, ">132;") == 0.0
    assert task.reward(ex, "12,,13>132;") == 0.0
    assert task.reward(ex, "12,13>132") == 0.0
    assert task.graded_reward(ex, "12,12>22;") == pytest.approx(1 / 3)  # right-aligned: "022" vs "132"


def test_countdown_rewards_by_hand():
    task = T.get_task("countdown")
    ex = task.parse_prompt("3,5,7>22=")
    assert ex.problem == ((3, 5, 7), 22)
    assert task.reference_answers(ex) == ["3*5+7;", "5*3+7;", "7+3*5;", "7+5*3;"]
    for response in ["3*5+7;", "7+5*3;", "3*5+7;xyz", "5*3+7;3"]:
        assert task.reward(ex, response) == 1.0, response
    wrong = ["3+5+7;", "3*5+7", "3*5+7+0;", "15+7;", "3*5+7*1;", "3*5*7-7*11;", "(3*5)+7;", "3**5+7;",
             "+3*5+7;", "3*5+07;", "22;", "", ";", "3*5 + 7;"]
    for response in wrong:
        assert task.reward(ex, response) == 0.0, response
    assert task.graded_reward(ex, "3+5+7;") == pytest.approx(1 - 7 / 22)
    assert task.graded_reward(ex, "5*7;") == pytest.approx(1 - 13 / 22)  # a subset of the numbers is allowed
    assert task.graded_reward(ex, "3*5*7;") == 0.0  # 105: too far
    assert task.graded_reward(ex, "3*5+8;") == 0.0  # 8 is not given
    # each number at most once, as often as it is given
    twins = task.parse_prompt("7,7,1>14=")
    assert "7+7;" in task.reference_answers(twins) and task.reward(twins, "7+7;") == 1.0
    assert task.reward(twins, "7*1+7;") == 1.0
    assert task.reward(task.parse_prompt("7,2,1>14="), "7+7;") == 0.0
    strict = T.get_task("countdown", use_all=True)
    assert strict.reward(strict.example(twins.problem), "7+7;") == 0.0
    assert strict.reward(strict.example(twins.problem), "7+7*1;") == 1.0


def test_countdown_precedence():
    task = T.get_task("countdown")
    ex = task.example(((9, 3, 2), 3))  # 9-3*2 = 3 (not 12), 9-3-2 = 4
    assert task.reward(ex, "9-3*2;") == 1.0
    assert task.reward(ex, "9-3-2;") == 0.0
    assert task.reward(task.example(((9, 3, 2), 4)), "9-3-2;") == 1.0  # left to right


def test_graph_path_rewards_by_hand():
    task = T.get_task("graph_path")
    ex = task.parse_prompt("01,03,12,23,34,35,45,0>4=")
    assert ex.problem == (((0, 1), (0, 3), (1, 2), (2, 3), (3, 4), (3, 5), (4, 5)), 0, 4)
    answers = task.reference_answers(ex)
    assert answers == ["034;", "0354;", "01234;", "012354;"]  # shortest first
    for response in [*answers, "034;0", "0354;;"]:
        assert task.reward(ex, response) == 1.0, response
    wrong = {"04;": 0.0,  # no edge 0-4: the walk stays at the start
             "03;": 0.25,  # valid, stops one hop short (2 hops → 1 hop to go): 0.5 × 1/2
             "012;": 0.0,  # valid, but 2 is as far from 4 as 0 is
             "01;": 0.0,  # valid, and further away (3 hops)
             "0343;": 0.5,  # the walk 0-3-4 reaches the goal, then turns back: full progress, not correct
             "03434;": 0.5,  # reaches the goal but revisits
             "134;": 0.0,  # wrong start
             "034": 0.0,  # truncated
             "0-3-4;": 0.0, "": 0.0, ";": 0.0, "0;": 0.0}
    for response, graded in wrong.items():
        assert task.reward(ex, response) == 0.0, response
        assert task.graded_reward(ex, response) == pytest.approx(graded), response


def test_graph_paths_are_symmetric_and_simple():
    task = T.get_task("graph_path")
    ex = task.parse_prompt("01,03,12,23,34,35,45,4>0=")
    assert sorted(a[::-1][1:] + ";" for a in task.reference_answers(ex)) == sorted(
        task.reference_answers(task.parse_prompt("01,03,12,23,34,35,45,0>4=")))
    assert task.split_of(ex) == task.split_of(task.parse_prompt("01,03,12,23,34,35,45,0>4="))


# ----- properties over every task -----------------------------------------------------------------
def test_reference_answers_all_score_one(task_and_examples):
    task, examples = task_and_examples
    for ex in examples:
        answers = task.reference_answers(ex)
        assert answers and len(set(answers)) == len(answers)
        for a in answers:
            assert a.endswith(T.END) and a.count(T.END) == 1
            assert task.reward(ex, a) == 1.0 and task.graded_reward(ex, a) == 1.0, (ex.prompt, a)


def test_demonstrations(task_and_examples):
    task, examples = task_and_examples
    rng = random.Random(0)
    assert all(task.reward(ex, task.demonstration(ex, rng, noise=0.0)) == 1.0 for ex in examples)
    wrong = [task.demonstration(ex, rng, noise=1.0) for ex in examples]
    assert all(task.reward(ex, w) == 0.0 for ex, w in zip(examples, wrong, strict=True))
    assert sum(w == T.END for w in wrong) <= len(wrong) // 20  # plausible, not the empty fallback
    rate = sum(task.reward(ex, task.demonstration(ex, rng, noise=0.3)) for ex in examples * 2) / (2 * len(examples))
    assert 0.6 < rate < 0.8
    assert task.demonstration(examples[0], 7, 0.5) == task.demonstration(examples[0], random.Random(7), 0.5)


def test_lengths_within_limits(task_and_examples):
    task, examples = task_and_examples
    assert task.max_prompt_len <= T.MAX_PROMPT_LEN
    assert task.max_prompt_len + task.max_response_len <= T.MAX_TEXT_LEN
    rng = random.Random(1)
    for ex in examples:
        assert len(ex.prompt) <= task.max_prompt_len and ex.prompt.endswith("=")
        responses = task.reference_answers(ex) + [task.demonstration(ex, rng, noise=1.0)]
        assert max(len(r) for r in responses) <= task.max_response_len
        assert set(ex.prompt + "".join(responses)) <= set(T.ALPHABET)


def test_graded_rewards_in_unit_interval(task_and_examples):
    task, examples = task_and_examples
    rng = random.Random(2)
    for ex in examples:
        for response in [task.demonstration(ex, rng, noise=1.0), *task.reference_answers(ex)[:3]]:
            g, r = task.graded_reward(ex, response), task.reward(ex, response)
            assert 0.0 <= g <= 1.0 and r in (0.0, 1.0)
            assert (g == 1.0) == (r == 1.0)


def test_parse_prompt_round_trip(task_and_examples):
    task, examples = task_and_examples
    for ex in examples:
        assert task.parse_prompt(ex.prompt) == ex


def test_responses_vary_in_length_and_some_prompts_have_several_answers(task_and_examples):
    task, examples = task_and_examples
    lengths = {len(a) for ex in examples for a in task.reference_answers(ex)}
    assert len(lengths) >= 2 or getattr(task, "use_all", False)  # use_all with 1-digit numbers: fixed length
    if task.name != "addition":
        assert sum(len(task.reference_answers(ex)) > 1 for ex in examples) > len(examples) / 2


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(range(len(CONFIGS))), st.text(alphabet=T.ALPHABET + " x(", max_size=14), st.integers(0, 9))
def test_arbitrary_responses_never_raise(config, response, which):
    name, kwargs = CONFIGS[config]
    task = T.get_task(name, **kwargs)
    ex = task.make_split("test", 10, seed=3)[which]
    r, g = task.reward(ex, response), task.graded_reward(ex, response)
    assert r in (0.0, 1.0) and 0.0 <= g <= 1.0 and (g == 1.0) == (r == 1.0)


# ----- splits -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=IDS)
def test_splits_deterministic_and_disjoint(name, kwargs):
    task = T.get_task(name, **kwargs)
    train = task.make_split("train", 300, seed=0)
    assert train == task.make_split("train", 300, seed=0)
    assert train != task.make_split("train", 300, seed=1)
    assert len({ex.prompt for ex in train}) == 300
    keys = {split: {task._key(ex.problem) for seed in (0, 1) for ex in task.make_split(split, 100, seed)}
            for split in ("train", "test")}
    assert not keys["train"] & keys["test"]
    assert not {task._key(ex.problem) for ex in train} & keys["test"]
    assert all(task.split_of(ex) == "train" for ex in train)
    # the test split is about test_fraction of the problem space
    draws = [task._sample_problem(random.Random(i)) for i in range(1000)]
    share = sum(task._split_of_problem(p) == "test" for p in draws) / len(draws)
    assert 0.12 < share < 0.28


def test_addition_twins_share_a_split():
    task = T.get_task("addition")
    for a, b in [(1, 2), (47, 85), (0, 99), (13, 31)]:
        assert task.split_of(task.example((a, b))) == task.split_of(task.example((b, a)))


def test_growing_test_fraction_only_moves_train_to_test():
    small, large = T.get_task("countdown", test_fraction=0.1), T.get_task("countdown", test_fraction=0.3)
    test_small = small.make_split("test", 100, seed=0)
    assert all(large.split_of(large.example(ex.problem)) == "test" for ex in test_small)


def test_make_split_errors():
    task = T.get_task("addition", digits=1)
    assert len(task.make_split("train", 0, seed=0)) == 0
    with pytest.raises(ValueError, match="`n`"):
        task.make_split("test", 100, seed=0)  # 1-digit addition has 100 prompts in all
    with pytest.raises(ValueError, match="`split`"):
        task.make_split("valid", 10, seed=0)
    with pytest.raises(ValueError, match="`n`"):
        task.make_split("train", -1, seed=0)


# ----- registry, configuration, batching ----------------------------------------------------------
def test_registry():
    assert set(T.TASKS) == {"addition", "countdown", "graph_path"}
    for name in T.TASKS:
        task = T.get_task(name)
        assert task.name == name and isinstance(task, T.Task)
    with pytest.raises(ValueError, match="`name`"):
        T.get_task("sudoku")
    with pytest.raises(ValueError, match="`digit`"):
        T.get_task("addition", digit=3)


@pytest.mark.parametrize(("name", "kwargs", "argument"), [
    ("addition", {"digits": 0}, "digits"),
    ("addition", {"digits": 12, "scratchpad": True}, "digits"),  # 26 + 50 characters > 64
    ("addition", {"scratchpad": 1}, "scratchpad"),
    ("addition", {"test_fraction": 1.0}, "test_fraction"),
    ("countdown", {"num_numbers": 6}, "num_numbers"),
    ("countdown", {"max_number": 0}, "max_number"),
    ("graph_path", {"num_nodes": 11}, "num_nodes"),
    ("graph_path", {"num_edges": 13}, "num_edges"),  # prompt of 43 characters
    ("graph_path", {"num_nodes": 4, "num_edges": 6}, "num_edges"),  # complete graph: no distance 2
])
def test_bad_configuration_names_the_argument(name, kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        T.get_task(name, **kwargs)


def test_bad_inputs_name_the_argument():
    add, cd, gp = T.get_task("addition"), T.get_task("countdown"), T.get_task("graph_path")
    ex = add.example((1, 2))
    with pytest.raises(ValueError, match="`example`"):
        cd.reward(ex, "3;")
    with pytest.raises(ValueError, match="`response`"):
        add.reward(ex, None)
    with pytest.raises(ValueError, match="`noise`"):
        add.demonstration(ex, random.Random(0), noise=1.5)
    with pytest.raises(ValueError, match="`rng`"):
        add.demonstration(ex, None)
    for task, prompt in [(add, "1+2"), (add, "123+4="), (add, "01+2="), (cd, "3,5>8="), (cd, "1,1,1>50="),
                         (gp, "01,12,0>2="), (gp, "01,03,12,23,34,35,45,0>1="), (gp, "01,03,12,23,34,35,49,0>4=")]:
        with pytest.raises(ValueError, match="`prompt`"):
            task.parse_prompt(prompt)


def test_batched_rewards():
    task = T.get_task("countdown")
    examples = task.make_split("test", 4, seed=0)
    group = [ex for ex in examples for _ in range(2)]
    responses = [r for ex in examples for r in (task.reference_answers(ex)[0], "1;")]
    out = T.rewards(task, group, responses)
    assert out.dtype == torch.float32 and out.shape == (8,)
    torch.testing.assert_close(out, torch.tensor([1.0, 0.0] * 4))
    graded = T.rewards("countdown", group, responses, graded=True)
    assert ((graded >= 0) & (graded <= 1)).all() and (graded[::2] == 1).all()
    with pytest.raises(ValueError, match="`responses`"):
        T.rewards(task, group, responses[:-1])
    with pytest.raises(ValueError, match="`responses`"):
        T.rewards(task, group[:1], "1;")


# ----- answer and terminator separate: TRL-style reward functions on decoded text --------------------
def _trl_decode(hf, response: str) -> tuple[str, list[int]]:
    """What TRL hands a reward function: ids cut after the first EOS, text decoded without special tokens."""
    ids = hf(response, add_special_tokens=False)["input_ids"]
    if hf.eos_token_id in ids:
        ids = ids[: ids.index(hf.eos_token_id) + 1]
    return hf.decode(ids, skip_special_tokens=True), ids


def _responses(task, examples):
    rng = random.Random(0)
    out = []
    for ex in examples:
        demos = [task.demonstration(ex, rng, noise=0.5) for _ in range(3)] + task.reference_answers(ex)[:2]
        randoms = ["".join(rng.choice(T.ALPHABET) for _ in range(rng.randint(0, 8))) for _ in range(3)]
        out += [(ex, r) for r in demos + [d[:-1] for d in demos] + [d + "7;1" for d in demos[:1]] + randoms]
    return out


def test_alphabet_uses_the_terminator_only_to_end_a_response(task_and_examples):
    task, examples = task_and_examples
    rng = random.Random(1)
    for ex in examples:
        assert T.END not in ex.prompt
        for answer in task.reference_answers(ex) + [task.demonstration(ex, rng, noise=0.5) for _ in range(3)]:
            assert answer.index(T.END) == len(answer) - 1, answer


def test_reward_function_on_decoded_completions_equals_task_reward(task_and_examples):
    task, examples = task_and_examples
    pytest.importorskip("transformers")
    hf = CharTokenizer.for_tasks().to_hf()  # the tiny models' Hugging Face tokenizer: ';' is its EOS
    pairs = _responses(task, examples[:60])
    decoded = [_trl_decode(hf, r) for _, r in pairs]
    prompts = [ex.prompt for ex, _ in pairs]
    for graded in (False, True):
        expected = [(task.graded_reward if graded else task.reward)(ex, r) for ex, r in pairs]
        f = T.reward_function(task, graded=graded)
        got = f(prompts, [t for t, _ in decoded], completion_ids=[ids for _, ids in decoded], trainer_state=None)
        assert got == expected
        kept = f(prompts, [hf.decode(ids) for _, ids in decoded],  # special tokens kept: ';' is in the text
                 completion_ids=[ids for _, ids in decoded])
        assert kept == expected
    truncated = [i for i, (_, r) in enumerate(pairs) if T.END not in r]
    assert truncated and sum(expected) > 0  # both kinds are present, so the equality is not vacuous
    assert all(got[i] == 0.0 for i in truncated)


def test_score_answer_and_truncation_by_hand():
    task = T.get_task("addition")
    ex = task.parse_prompt("47+85=")
    assert task.score_answer(ex, "132") == 1.0
    assert task.score_answer(ex, "132", terminated=False) == 0.0
    assert task.score_answer(ex, "122", graded=True) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="`answer`"):
        task.score_answer(ex, "132;")
    f = T.reward_function("addition")
    assert f.__name__ == "addition_reward"
    assert f(["47+85="] * 3, ["132", "132", "131"], completion_ids=[[2, 4, 3, 15], [2, 4, 3], [2, 4, 2, 15]]) \
        == [1.0, 0.0, 0.0]
    assert f(["47+85="], ["132"]) == [1.0]  # without ids a completion counts as ended
    chat = [[{"role": "system", "content": "be brief"}, {"role": "user", "content": "47+85="}]]
    assert f(chat, [[{"role": "assistant", "content": "132"}]], completion_ids=[torch.tensor([2, 4, 3, 15])]) == [1.0]
    with pytest.raises(ValueError, match="`completions`"):
        f(["47+85="], ["132", "1"])
    with pytest.raises(ValueError, match="`prompt`"):
        f(["47+85"], ["132"])
    with pytest.raises(ValueError, match="`eos_token_id`"):
        T.reward_function("addition", eos_token_id=-1)


def test_reward_function_gsm8k_reads_the_final_number():
    task = T.get_task("gsm8k", path="tests/data/gsm8k_sample.jsonl")
    ex = task.make_split("train", 1)[0]
    gold = ex.problem[1]
    f = T.reward_function(task)
    texts = [f"so #### {gold}", "#### 0.5", f"{gold}"]
    assert f([ex.prompt] * 3, texts) == [task.reward(ex, t) for t in texts] == [1.0, 0.0, 1.0]
    chat = [[{"role": "user", "content": ex.prompt}]]
    assert f(chat, [f"#### {gold}"], completion_ids=[[1, 2]]) == [1.0]  # GSM8K: the end is not needed
