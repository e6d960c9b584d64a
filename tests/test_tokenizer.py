"""Character tokenizer: round trips, padding masks, JSON save/load, clear errors."""

import json
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from forklab.envs import tasks as T
from forklab.lm.tokenizer import PAD_TOKEN, CharTokenizer

TOK = CharTokenizer.for_tasks()


def test_vocabulary_of_the_tasks():
    assert TOK.vocab_size == len(TOK) == len(T.ALPHABET) + 1 == 18
    assert TOK.pad_id == 0 and TOK.vocab[0] == PAD_TOKEN
    assert TOK.eos == ";" and TOK.vocab[TOK.eos_id] == ";"
    assert TOK.encode("1+2=") == [2, 11, 3, 14]
    assert TOK == CharTokenizer(T.ALPHABET) and TOK != CharTokenizer(T.ALPHABET, eos=None)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=T.ALPHABET, max_size=64))
def test_round_trip_over_the_alphabet(text):
    ids = TOK.encode(text)
    assert len(ids) == len(text) and all(1 <= i < TOK.vocab_size for i in ids)
    assert TOK.decode(ids) == text
    assert TOK.decode(torch.tensor(ids, dtype=torch.long)) == text


def test_round_trip_on_every_task_string():
    rng = random.Random(0)
    for name in T.TASKS:
        task = T.get_task(name)
        for ex in task.make_split("train", 50, seed=0):
            for text in [ex.prompt, *task.reference_answers(ex), ex.prompt + task.demonstration(ex, rng, 0.5)]:
                assert TOK.decode(TOK.encode(text)) == text


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(alphabet=T.ALPHABET, max_size=12), min_size=1, max_size=6),
       st.sampled_from(["left", "right"]))
def test_batch_round_trip_and_masks(texts, pad_side):
    ids, mask = TOK.batch_encode(texts, pad_side=pad_side)
    length = max(len(t) for t in texts)
    assert ids.shape == mask.shape == (len(texts), length)
    assert ids.dtype == torch.long and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [len(t) for t in texts]
    assert ((ids == TOK.pad_id) == ~mask).all()  # PAD exactly where the mask is False
    assert TOK.batch_decode(ids) == list(texts)
    if length:
        ends = mask[:, -1] if pad_side == "left" else mask[:, 0]
        assert ends.tolist() == [len(t) > 0 for t in texts]  # real tokens are flush with that side


def test_left_and_right_padding_by_hand():
    ids, mask = TOK.batch_encode(["1+2=", "10+20="], pad_side="left")
    assert ids.tolist() == [[0, 0, 2, 11, 3, 14], [2, 1, 11, 3, 1, 14]]
    assert mask.tolist() == [[False, False, True, True, True, True], [True] * 6]
    position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)  # the pitfall of data/models/README.md
    assert position_ids[0, 2:].tolist() == position_ids[1, :4].tolist() == [0, 1, 2, 3]
    ids, mask = TOK.batch_encode(["1+2=", "10+20="], pad_side="right")
    assert ids.tolist() == [[2, 11, 3, 14, 0, 0], [2, 1, 11, 3, 1, 14]]
    assert mask.tolist() == [[True, True, True, True, False, False], [True] * 6]


def test_decode_drops_pad_and_can_stop_at_eos():
    ids = TOK.encode("12+3=15;7;")
    assert TOK.decode([0, 0, *ids, 0]) == "12+3=15;7;"
    assert TOK.decode(ids, stop_at_eos=True) == "12+3=15;"
    assert TOK.batch_decode(torch.tensor([ids, ids]), stop_at_eos=True) == ["12+3=15;"] * 2
    assert CharTokenizer("ab", eos=None).decode([1, 2, 1], stop_at_eos=True) == "aba"


def test_save_load_round_trip(tmp_path):
    path = TOK.save(tmp_path / "tokenizer.json")
    data = json.loads(path.read_text())  # plain JSON, no pickle
    assert data["alphabet"] == T.ALPHABET and data["eos"] == ";" and data["pad"] == PAD_TOKEN
    loaded = CharTokenizer.load(path)
    assert loaded == TOK and loaded.vocab == TOK.vocab and loaded.encode("3,5>8=") == TOK.encode("3,5>8=")
    other = CharTokenizer("xyz", eos=None)
    assert CharTokenizer.load(other.save(tmp_path / "other.json")) == other


def test_load_rejects_other_files(tmp_path):
    (tmp_path / "bad.json").write_text('{"alphabet": "01"}')
    (tmp_path / "broken.json").write_text("{")
    for name in ["bad.json", "broken.json", "missing.json"]:
        with pytest.raises(ValueError, match="`path`"):
            CharTokenizer.load(tmp_path / name)


def test_errors_name_the_argument_or_character():
    with pytest.raises(ValueError, match="'x'.*position 2"):
        TOK.encode("12x")
    with pytest.raises(ValueError, match="'a'"):
        TOK.batch_encode(["1+2=", "a"])
    with pytest.raises(ValueError, match="`text`"):
        TOK.encode(12)
    with pytest.raises(ValueError, match="`ids`"):
        TOK.decode([1, 18])
    with pytest.raises(ValueError, match="`ids`"):
        TOK.decode([-1])
    with pytest.raises(ValueError, match="`ids`"):
        TOK.decode(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="`ids`"):
        TOK.batch_decode(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="`texts`"):
        TOK.batch_encode([])
    with pytest.raises(ValueError, match="`texts`"):
        TOK.batch_encode("1+2=")
    with pytest.raises(ValueError, match="`pad_side`"):
        TOK.batch_encode(["1"], pad_side="middle")
    with pytest.raises(ValueError, match="`alphabet`"):
        CharTokenizer("0120")
    with pytest.raises(ValueError, match="`alphabet`"):
        CharTokenizer("")
    with pytest.raises(ValueError, match="`eos`"):
        CharTokenizer("012", eos=";")
