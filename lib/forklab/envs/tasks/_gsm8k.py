"""``gsm8k``: grade-school maths word problems for real LMs (local JSONL or the Hugging Face hub)."""

from __future__ import annotations

import functools
import json
import os
import random
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import ClassVar

from forklab import _checks
from forklab.envs.tasks._base import (
    Example,
    Task,
    _integer,
)

GSM8K_INSTRUCTION = "Solve the problem step by step, then put the final answer as a number after ####."
_DEC = r"(?<![\w.])-?(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?"  # 42, -3, 1,234, 2.50
_HASHES = re.compile(r"####\s*\\?\$?\s*(" + _DEC + ")")
_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")


def _as_decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None


def extract_final_number(text: str) -> Decimal | None:
    """The final numeric answer of a response: after the last ``####``, else in the last ``\\boxed{}``, else the
    last number in the text. Commas, ``$`` and a trailing ``.0`` are normalised away (a ``Decimal``); None if none.
    """
    if not isinstance(text, str):
        raise ValueError(f"`text` must be a str, got {type(text).__name__}")
    hashes = _HASHES.findall(text)
    if hashes:
        return _as_decimal(hashes[-1])
    for content in reversed(_BOXED.findall(text)):
        numbers = re.findall(_DEC, content)
        if numbers:
            return _as_decimal(numbers[-1])
    numbers = re.findall(_DEC, text)
    return _as_decimal(numbers[-1]) if numbers else None


def _read_gsm8k_jsonl(path: Path) -> list[tuple[str, str]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"`path` {str(path)!r} line {line_no} is not JSON: {err}") from None
            if not isinstance(row, dict) or not isinstance(row.get("question"), str) \
                    or not isinstance(row.get("answer"), str):
                raise ValueError(f"`path` {str(path)!r} line {line_no} needs string fields 'question' and 'answer'")
            rows.append((row["question"], row["answer"]))
    return rows


@dataclass(frozen=True, kw_only=True)
class GSM8K(Task):
    """Grade-school maths word problems (GSM8K, arXiv 2110.14168) for real LMs; reward 1 for the right number.

    Problems come from ``path``: a JSONL file of ``{"question": ..., "answer": "... #### 72"}`` lines
    (GSM8K's own format; split into train/test by a hash of the question, like the synthetic tasks), or
    a folder holding ``train.jsonl`` and ``test.jsonl`` (the official split); or, with ``hub=True``
    only, from ``datasets.load_dataset("openai/gsm8k", "main")`` (needs ``pip install datasets`` and
    the network). The prompt is the question, a newline and ``instruction``. :meth:`reward` compares
    :func:`extract_final_number` of the response with the number after the gold answer's ``####``,
    exactly; ``graded_reward`` is the same 0/1. ``make_split(split, n)`` gives at most ``n`` problems of
    the split (all of them for ``n=None``): a fixed dataset can hold fewer than asked.
    """

    name: ClassVar[str] = "gsm8k"
    char_limits: ClassVar[bool] = False
    path: str | os.PathLike | None = None
    hub: bool = False
    instruction: str = GSM8K_INSTRUCTION

    def _check_config(self) -> None:
        if not isinstance(self.hub, bool):
            raise ValueError(f"`hub` must be a bool, got {self.hub!r}")
        if not isinstance(self.instruction, str):
            raise ValueError(f"`instruction` must be a str, got {type(self.instruction).__name__}")
        if (self.path is None) == (not self.hub):
            raise ValueError("`path`: give either a local GSM8K JSONL file / folder (path=...) or hub=True "
                             f"(downloads openai/gsm8k), got path={self.path!r}, hub={self.hub!r}")
        if self.path is not None:
            path = Path(self.path)
            if not path.exists():
                raise ValueError(f"`path` {str(path)!r} does not exist (a GSM8K-style JSONL file or a folder "
                                 "with train.jsonl and test.jsonl)")
            if path.is_dir() and not all((path / f"{s}.jsonl").is_file() for s in ("train", "test")):
                raise ValueError(f"`path` {str(path)!r} is a folder without train.jsonl and test.jsonl")

    @functools.cached_property
    def _pools(self) -> dict[str, list[tuple]]:
        """Problems per split, each ``(question, gold, solution)``, duplicates of a question dropped."""
        if self.hub:
            try:
                import datasets
            except ImportError as err:
                raise ImportError("GSM8K from the hub needs the `datasets` package: pip install datasets") from err
            data = datasets.load_dataset("openai/gsm8k", "main")
            raw = {s: [(r["question"], r["answer"]) for r in data[s]] for s in ("train", "test")}
        elif Path(self.path).is_dir():
            raw = {s: _read_gsm8k_jsonl(Path(self.path) / f"{s}.jsonl") for s in ("train", "test")}
        else:
            raw = {"all": _read_gsm8k_jsonl(Path(self.path))}
        pools: dict[str, list[tuple]] = {"train": [], "test": []}
        seen = set()
        for part, rows in raw.items():
            for question, answer in rows:
                hashes = _HASHES.findall(answer)
                if not hashes:
                    raise ValueError(f"`path`: the answer of {question[:60]!r} does not end with '#### <number>'")
                if question in seen:
                    continue
                seen.add(question)
                problem = (question, str(_as_decimal(hashes[-1])), re.sub(r"<<[^<>]*>>", "", answer).strip())
                pools[self._split_of_problem(problem) if part == "all" else part].append(problem)
        return pools

    def _key(self, problem: tuple) -> tuple:
        return (problem[0],)

    def _prompt(self, problem: tuple) -> str:
        question = problem[0].strip()
        return f"{question}\n{self.instruction}" if self.instruction else question

    def make_split(self, split: str, n: int | None = None, seed: int = 0) -> list[Example]:
        """At most ``n`` problems of ``split`` (all for None), in an order fixed by ``seed``."""
        _checks.choice("split", split, {"train", "test"})
        seed = _integer("seed", seed, -(2**63))
        pool = self._pools[split]
        n = len(pool) if n is None else _integer("n", n, 0)
        if n and not pool:
            raise ValueError(f"`split` {split!r} of {self.name} holds no problems (path={self.path!r})")
        order = list(range(len(pool)))
        random.Random(f"{self.name}|{split}|{seed}").shuffle(order)
        return [self.example(pool[i]) for i in order[:n]]

    @functools.cached_property
    def _by_prompt(self) -> dict[str, tuple]:
        index: dict[str, tuple] = {}
        for pool in self._pools.values():
            for problem in pool:
                index.setdefault(self._prompt(problem), problem)  # the first, as a scan would find
        return index

    def parse_prompt(self, prompt: str) -> Example:
        problem = self._by_prompt.get(prompt) if isinstance(prompt, str) else None
        if problem is None:
            raise ValueError(f"`prompt` is not a prompt of this GSM8K set: {str(prompt)[:60]!r}")
        return self.example(problem)

    def reward(self, example: Example, response: str) -> float:
        gold = Decimal(self._check_example(example).problem[1])
        return float(extract_final_number(response) == gold)

    def graded_reward(self, example: Example, response: str) -> float:
        return self.reward(example, response)

    def score_answer(self, example: Example, answer: str, terminated: bool = True, graded: bool = False) -> float:
        """:meth:`reward` of the decoded text: the final number counts whether or not the model's EOS came
        (``terminated`` is checked, not used), as forklab's own paths score real-LM text."""
        if not isinstance(answer, str):
            raise ValueError(f"`answer` must be a str, got {type(answer).__name__}")
        if not isinstance(terminated, bool) or not isinstance(graded, bool):
            raise ValueError(f"`terminated` and `graded` must be bools, got {terminated!r}, {graded!r}")
        return self.reward(example, answer)

    def reference_answers(self, example: Example) -> list[str]:
        return [self._check_example(example).problem[2]]

    def _plausible_wrong(self, example: Example, rng: random.Random) -> str:
        solution, gold = example.problem[2], Decimal(example.problem[1])
        wrong = gold + rng.choice([-10, -2, -1, 1, 2, 10])
        return solution[: solution.rfind("####")] + f"#### {wrong}"
