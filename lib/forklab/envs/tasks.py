"""Synthetic verifiable text tasks: prompts, reward functions, reference answers and demonstrations.

Introduced in ``notebooks/00_tour.ipynb``; ``graph_path(shortest=True)`` is the length-gap task of
``notebooks/02_loss_aggregation.ipynb``.

The tiny-LM scale of DESIGN.md ("scales") trains small transformers on these tasks. They are chosen so
that the phenomena the papers study actually appear:

- variable response lengths, so loss aggregation and length gaps matter (all three tasks);
- several correct answers for one prompt, so pass@k and diversity matter (``countdown``, ``graph_path``);
- real decision points inside a response, so there are forking tokens (which number or operator comes
  next, which neighbour to walk to).

Every prompt and every response is a string over one shared alphabet, :data:`ALPHABET` (digits and
``+ - * = ; , >``); the character tokenizer :class:`forklab.lm.tokenizer.CharTokenizer` is built from it.
Prompts end with ``=`` ("answer now"); responses end with ``;`` (:data:`END`), so generation stops there.

=================  ===========================  ===============  ========================================
task               prompt                       response         correct answers
=================  ===========================  ===============  ========================================
``addition``       ``47+85=``                   ``132;``         one
``addition`` with  ``47+85=``                   ``12,13>132;``   column sums (with carry), then the sum;
``scratchpad``                                                   only the sum after ``>`` is verified
``countdown``      ``3,5,7>22=``                ``3*5+7;``       several: ``5*3+7;``, ``7+3*5;``, ``7+5*3;``
``graph_path``     ``01,03,12,23,34,0>4=``      ``034;``         every simple path: also ``01234;``
=================  ===========================  ===============  ========================================

Reading a response (every reward function): it is read up to its first ``;``, and anything after that is
ignored (the sampler stops there). A response without ``;`` was truncated and scores 0, and so does
anything that does not parse. Nothing is ever ``eval``-ed. ``reward`` is 1.0 or 0.0; ``graded_reward``
lies in [0, 1], equals 1 exactly when ``reward`` does, and gives partial credit otherwise.

Splits. Whether a problem is in ``train`` or ``test`` is a property of the problem itself: a hash of its
canonical key (``a+b`` and ``b+a`` share one, and so do reorderings of the countdown numbers and a graph
question asked in both directions) falls inside the test share ``test_fraction`` or not. So splits are
disjoint whatever the seeds, and growing ``test_fraction`` only moves problems from train to test::

    rng = Random(f"{name}|{split}|{seed}")               # deterministic from the seed
    while len(examples) < n:
        problem = sample_problem(rng)
        if split_of(problem) == split and its prompt is new: keep it

Demonstrations for supervised pretraining, ``demonstration(example, rng, noise)``: with probability
``1 − noise`` a correct answer drawn uniformly from :meth:`Task.reference_answers` (so an SFT model
spreads its mass over the correct answers), otherwise a plausible wrong one (a forgotten carry, a digit
slip, an expression that misses the target, a path that stops early or uses an edge that is not
there). The SFT model is then imperfect and RL has headroom.

Real text: :class:`GSM8K` (``get_task("gsm8k", path=...)``) serves grade-school maths word problems to a
real LM with its own tokenizer (``forklab.lm.tokenizer.HFTokenizer``). It is not bound to
:data:`ALPHABET` or the length limits (``Task.char_limits = False``), reads its problems from a local
JSONL file (or, when asked, the Hugging Face hub) instead of generating them, and is kept out of
:data:`TASKS`, which lists the synthetic tasks the character tokenizer can spell; :func:`get_task`
knows both (:data:`TEXT_TASKS`).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import random
import re
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from forklab import _checks

__all__ = [
    "ALPHABET",
    "END",
    "MAX_PROMPT_LEN",
    "MAX_TEXT_LEN",
    "Example",
    "Task",
    "Addition",
    "Countdown",
    "GraphPath",
    "GSM8K",
    "TASKS",
    "TEXT_TASKS",
    "extract_final_number",
    "get_task",
    "rewards",
]

ALPHABET = "0123456789+-*=;,>"  # every prompt and response is a string over these 17 characters
END = ";"  # ends every response; the sampler stops at it
MAX_PROMPT_LEN = 40  # characters; every task configuration is checked against these bounds
MAX_TEXT_LEN = 64  # prompt + response: the context of the tiny LMs

_NUMBER = "[1-9][0-9]*|0"  # canonical decimal (no leading zeros); [0-9], not \d, which matches "٣"


@dataclass(frozen=True)
class Example:
    """One problem: the ``prompt`` the model sees and the task's own hashable description of it.

    ``problem`` per task: addition ``(a, b)``; countdown ``(numbers, target)`` with the numbers in
    prompt order; graph_path ``(edges, start, goal)`` with ``edges`` sorted pairs ``(u, v)``, u < v;
    gsm8k ``(question, gold number as text, reference solution)``.
    """

    task: str
    prompt: str
    problem: tuple


# ----- small shared helpers -----------------------------------------------------------------------
_integer = _checks.integer


def _as_rng(rng) -> random.Random:
    if isinstance(rng, random.Random):
        return rng
    if isinstance(rng, int) and not isinstance(rng, bool):
        return random.Random(rng)
    raise ValueError(f"`rng` must be a random.Random or an int seed, got {type(rng).__name__}")


def _body(response: str) -> str | None:
    """The response up to its first END, or None when it has none (a truncated generation)."""
    if not isinstance(response, str):
        raise ValueError(f"`response` must be a str, got {type(response).__name__}")
    cut = response.find(END)
    return None if cut < 0 else response[:cut]


def _unit_hash(text: str) -> float:
    """A number in [0, 1) fixed by ``text`` on every machine and Python version (unlike ``hash``)."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


# ----- the task interface -------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Task:
    """A verifiable text task. Subclasses fill in the problem space; this class does splits and demos.

    A subclass implements ``_sample_problem(rng)``, ``_prompt(problem)``, ``parse_prompt(prompt)``,
    ``reward``, ``graded_reward``, ``reference_answers``, ``_plausible_wrong(example, rng)`` and the
    bounds ``max_prompt_len`` / ``max_response_len``; ``_key(problem)`` when problems have twins.
    """

    name: ClassVar[str] = "task"
    _size_args: ClassVar[str] = ""  # the arguments to shrink when a configuration is too long
    #: True for tasks over :data:`ALPHABET` whose lengths are checked against MAX_PROMPT_LEN / MAX_TEXT_LEN
    char_limits: ClassVar[bool] = True
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < float(self.test_fraction) < 1:
            raise ValueError(f"`test_fraction` must lie in (0, 1), got {self.test_fraction}")
        self._check_config()
        if not self.char_limits:
            return
        p, r = self.max_prompt_len, self.max_response_len
        if p > MAX_PROMPT_LEN or p + r > MAX_TEXT_LEN:
            raise ValueError(f"{self._size_args} give prompts of up to {p} and responses of up to {r} characters; "
                             f"the limits are {MAX_PROMPT_LEN} and {MAX_TEXT_LEN} together: reduce them")

    # ----- to implement -----------------------------------------------------------------------
    def _check_config(self) -> None:
        raise NotImplementedError

    def _sample_problem(self, rng: random.Random) -> tuple:
        raise NotImplementedError

    def _prompt(self, problem: tuple) -> str:
        raise NotImplementedError

    def _key(self, problem: tuple) -> tuple:
        """The canonical problem: twins (``a+b`` / ``b+a``) share a key and therefore a split."""
        return problem

    def _plausible_wrong(self, example: Example, rng: random.Random) -> str:
        raise NotImplementedError

    def parse_prompt(self, prompt: str) -> Example:
        """The example a prompt string describes (e.g. to restore a task set saved as text)."""
        raise NotImplementedError

    def reward(self, example: Example, response: str) -> float:
        """1.0 if ``response`` is a correct answer to ``example``, else 0.0."""
        raise NotImplementedError

    def graded_reward(self, example: Example, response: str) -> float:
        """A score in [0, 1]: 1 exactly when :meth:`reward` is 1, partial credit otherwise."""
        raise NotImplementedError

    def reference_answers(self, example: Example) -> list[str]:
        """Correct responses (each ending with ``;``): the canonical one, or all of them if several."""
        raise NotImplementedError

    @property
    def max_prompt_len(self) -> int:
        """Upper bound on ``len(prompt)`` under this configuration."""
        raise NotImplementedError

    @property
    def max_response_len(self) -> int:
        """Upper bound on the length of reference answers and demonstrations (``;`` included)."""
        raise NotImplementedError

    # ----- shared -----------------------------------------------------------------------------
    def example(self, problem: tuple) -> Example:
        return Example(self.name, self._prompt(problem), problem)

    def _check_example(self, example: Example) -> Example:
        if not isinstance(example, Example) or example.task != self.name:
            got = example.task if isinstance(example, Example) else type(example).__name__
            raise ValueError(f"`example` must be an Example of task {self.name!r}, got {got!r}")
        return example

    def _split_of_problem(self, problem: tuple) -> str:
        u = _unit_hash(f"{self.name}|{self._key(problem)!r}")
        return "test" if u < self.test_fraction else "train"

    def split_of(self, example: Example) -> str:
        """``"train"`` or ``"test"``: the split this problem belongs to, whatever the seed."""
        return self._split_of_problem(self._check_example(example).problem)

    def make_split(self, split: str, n: int, seed: int = 0) -> list[Example]:
        """``n`` examples with distinct prompts from ``split``; the same seed gives the same list."""
        _checks.choice("split", split, {"train", "test"})
        n = _integer("n", n, 0)
        seed = _integer("seed", seed, -(2**63))
        rng = random.Random(f"{self.name}|{split}|{seed}")
        examples, seen = [], set()
        budget = 200 * n + 1000  # draws; only reached when the split has fewer than n problems
        for _ in range(budget):
            if len(examples) == n:
                break
            problem = self._sample_problem(rng)
            if self._split_of_problem(problem) != split:
                continue
            example = self.example(problem)
            if example.prompt not in seen:
                seen.add(example.prompt)
                examples.append(example)
        if len(examples) < n:
            raise ValueError(f"`n` = {n} asks for more distinct {split} prompts than {self.name} has "
                             f"(found {len(examples)} in {budget} draws): reduce `n` or enlarge the task")
        return examples

    def demonstration(self, example: Example, rng: random.Random | int, noise: float = 0.0) -> str:
        """A response to imitate: a random correct answer, or with probability ``noise`` a wrong one."""
        self._check_example(example)
        rng = _as_rng(rng)
        noise = _checks.non_negative("noise", noise)
        if noise > 1:
            raise ValueError(f"`noise` must be <= 1, got {noise}")
        if rng.random() < noise:
            for _ in range(20):  # the generators are wrong by construction almost always; make sure
                wrong = self._plausible_wrong(example, rng)
                if self.reward(example, wrong) == 0.0:
                    return wrong
            return END  # an empty answer: always wrong
        return rng.choice(self.reference_answers(example))


# ----- addition -----------------------------------------------------------------------------------
def _columns(a: int, b: int) -> list[tuple[int, int]]:
    """Digit pairs of a and b, least significant first, padded with zeros to the longer operand."""
    width = max(len(str(a)), len(str(b)))
    da, db = str(a).zfill(width)[::-1], str(b).zfill(width)[::-1]
    return [(int(x), int(y)) for x, y in zip(da, db, strict=True)]


def _scratchpad(a: int, b: int, carries: bool = True) -> str:
    """``12,13>132;`` for 47+85: each column's total (carry in included), then the sum.

    With ``carries=False`` this is the classic slip: every column is added on its own and only its
    last digit written down (47+85 → ``12,12>22;``).
    """
    totals, carry = [], 0
    for x, y in _columns(a, b):
        totals.append(x + y + carry)
        carry = totals[-1] // 10 if carries else 0
    answer = a + b if carries else int("".join(str(t % 10) for t in reversed(totals)))
    return ",".join(map(str, totals)) + f">{answer}{END}"


def _digit_credit(predicted: str, true: str) -> float:
    """Share of right-aligned digit positions that agree, over the longer of the two numbers."""
    width = max(len(predicted), len(true))
    p, t = predicted.rjust(width), true.rjust(width)  # blanks, not zeros: "0132" must not match "132"
    return sum(x == y for x, y in zip(p, t, strict=True)) / width


@dataclass(frozen=True, kw_only=True)
class Addition(Task):
    """``a+b=`` → ``sum;`` with ``a, b`` uniform in [0, 10^digits); ``scratchpad`` adds column sums.

    One correct answer. The scratchpad variant (``47+85=`` → ``12,13>132;``) writes each column's total
    (carry in included) from the least significant column, then ``>`` and the sum: longer, more variable
    responses. Its reward checks the format and the sum only (as RLVR verifiers check the final answer,
    not the reasoning). Graded reward: the share of right-aligned digits of the sum that are right.
    """

    name: ClassVar[str] = "addition"
    _size_args: ClassVar[str] = "`digits`"
    digits: int = 2
    scratchpad: bool = False

    def _check_config(self) -> None:
        _integer("digits", self.digits, 1, 18)
        if not isinstance(self.scratchpad, bool):
            raise ValueError(f"`scratchpad` must be a bool, got {self.scratchpad!r}")

    @property
    def max_prompt_len(self) -> int:
        return 2 * self.digits + 2

    @property
    def max_response_len(self) -> int:
        d = self.digits  # totals ≤ 2 chars each, commas, ">", a sum of ≤ d + 1 digits, ";"
        return 4 * d + 2 if self.scratchpad else d + 2

    def _sample_problem(self, rng: random.Random) -> tuple:
        return rng.randrange(10**self.digits), rng.randrange(10**self.digits)

    def _prompt(self, problem: tuple) -> str:
        return f"{problem[0]}+{problem[1]}="

    def _key(self, problem: tuple) -> tuple:
        return tuple(sorted(problem))

    def parse_prompt(self, prompt: str) -> Example:
        m = re.fullmatch(f"({_NUMBER})\\+({_NUMBER})=", prompt) if isinstance(prompt, str) else None
        if m is None or max(len(m[1]), len(m[2])) > self.digits:
            raise ValueError(f"`prompt` must look like 'a+b=' with a, b of <= {self.digits} digits, got {prompt!r}")
        return self.example((int(m[1]), int(m[2])))

    def _answer(self, response: str) -> str | None:
        body = _body(response)
        pattern = f"(?:{_NUMBER})(?:,(?:{_NUMBER}))*>([0-9]+)" if self.scratchpad else "([0-9]+)"
        m = re.fullmatch(pattern, body) if body is not None else None
        return None if m is None else m[1]

    def reward(self, example: Example, response: str) -> float:
        a, b = self._check_example(example).problem
        return float(self._answer(response) == str(a + b))

    def graded_reward(self, example: Example, response: str) -> float:
        a, b = self._check_example(example).problem
        answer = self._answer(response)
        return 0.0 if answer is None else _digit_credit(answer, str(a + b))

    def reference_answers(self, example: Example) -> list[str]:
        a, b = self._check_example(example).problem
        return [_scratchpad(a, b) if self.scratchpad else f"{a + b}{END}"]

    def _plausible_wrong(self, example: Example, rng: random.Random) -> str:
        a, b = example.problem
        no_carry = _scratchpad(a, b, carries=False)
        if rng.random() < 0.5 and no_carry != _scratchpad(a, b):  # forgot the carries
            return no_carry if self.scratchpad else no_carry[no_carry.index(">") + 1 :]
        s = str(a + b)  # a slip of ±1 in one digit, never creating a leading zero
        i = rng.randrange(len(s))
        options = [(int(s[i]) + step) % 10 for step in (-1, 1)]
        options = [o for o in options if not (i == 0 and o == 0 and len(s) > 1)]
        slip = s[:i] + str(rng.choice(options)) + s[i + 1 :]
        if self.scratchpad:
            pad = _scratchpad(a, b)
            return pad[: pad.index(">") + 1] + slip + END
        return slip + END


# ----- countdown ----------------------------------------------------------------------------------
def _value(numbers: Sequence[int], ops: Sequence[str]) -> int:
    """Value of ``n0 op0 n1 op1 …`` with ops in ``+ - *``, ``*`` binding tighter; ``+``/``-`` left to right."""
    total, sign, term = 0, 1, numbers[0]
    for op, x in zip(ops, numbers[1:], strict=True):
        if op == "*":
            term *= x
        else:  # close the running product, start the next one
            total, sign, term = total + sign * term, (1 if op == "+" else -1), x
    return total + sign * term


def _expression(numbers: Sequence[int], ops: Sequence[str]) -> str:
    return str(numbers[0]) + "".join(op + str(x) for op, x in zip(ops, numbers[1:], strict=True))


@functools.lru_cache(maxsize=4096)
def _countdown_expressions(numbers: tuple[int, ...], use_all: bool) -> tuple[tuple[str, int], ...]:
    """Every expression ``(text, value)`` over ``numbers`` (sorted), each number used once or not at all."""
    table = {}
    for size in [len(numbers)] if use_all else range(1, len(numbers) + 1):
        for order in itertools.permutations(numbers, size):
            for ops in itertools.product("+-*", repeat=size - 1):
                table[_expression(order, ops)] = _value(order, ops)
    return tuple(sorted(table.items()))


@dataclass(frozen=True, kw_only=True)
class Countdown(Task):
    """``3,5,7>22=`` → ``3*5+7;``: reach the target with ``+ - *``, each number used at most once.

    Numbers are uniform in [1, max_number]. The target is the value of a random expression over 2 to
    all of them (all of them with ``use_all``), kept when it lies in [1, max_target] and is none of the
    numbers, so every problem is solvable and none is answered by copying a number. No parentheses:
    ``*`` binds tighter than ``+`` and ``-``, which go left to right. Correct: a well-formed expression
    whose numbers are a sub-multiset of the given ones (all of them with ``use_all``) and whose value is
    the target. Usually several answers, of different lengths (``7,7,1>14=``: ``7+7;``, ``7*1+7;``,
    ``1*7+7;``, …), and every number and operator is a real decision. Graded reward for a well-formed
    expression over allowed numbers: ``max(0, 1 − |value − target| / target)``.
    """

    name: ClassVar[str] = "countdown"
    _size_args: ClassVar[str] = "`num_numbers`, `max_number` and `max_target`"
    num_numbers: int = 3
    max_number: int = 9
    max_target: int = 99
    use_all: bool = False

    def _check_config(self) -> None:
        _integer("num_numbers", self.num_numbers, 2, 5)  # 5 numbers: ≤ 325 orders × ≤ 81 operator choices
        _integer("max_number", self.max_number, 1, 999)
        _integer("max_target", self.max_target, 1, 99999)
        if not isinstance(self.use_all, bool):
            raise ValueError(f"`use_all` must be a bool, got {self.use_all!r}")

    @property
    def max_prompt_len(self) -> int:
        n, w = self.num_numbers, len(str(self.max_number))
        return n * w + (n - 1) + 1 + len(str(self.max_target)) + 1

    @property
    def max_response_len(self) -> int:
        n, w = self.num_numbers, len(str(self.max_number))
        return n * w + (n - 1) + 1

    def _sample_problem(self, rng: random.Random) -> tuple:
        while True:  # a target out of range or equal to a number is redrawn
            numbers = tuple(rng.randint(1, self.max_number) for _ in range(self.num_numbers))
            size = self.num_numbers if self.use_all else rng.randint(2, self.num_numbers)
            value = _value(rng.sample(numbers, size), [rng.choice("+-*") for _ in range(size - 1)])
            if 1 <= value <= self.max_target and value not in numbers:
                return numbers, value

    def _prompt(self, problem: tuple) -> str:
        numbers, target = problem
        return ",".join(map(str, numbers)) + f">{target}="

    def _key(self, problem: tuple) -> tuple:
        return tuple(sorted(problem[0])), problem[1]

    def _expressions(self, example: Example) -> tuple[tuple[str, int], ...]:
        return _countdown_expressions(tuple(sorted(example.problem[0])), self.use_all)

    def parse_prompt(self, prompt: str) -> Example:
        pattern = f"((?:{_NUMBER})(?:,(?:{_NUMBER}))*)>({_NUMBER})="
        m = re.fullmatch(pattern, prompt) if isinstance(prompt, str) else None
        numbers = tuple(int(x) for x in m[1].split(",")) if m else ()
        target = int(m[2]) if m else 0
        if (len(numbers) != self.num_numbers or not all(1 <= x <= self.max_number for x in numbers)
                or not 1 <= target <= self.max_target):
            raise ValueError(f"`prompt` must look like '3,5,7>22=' with {self.num_numbers} numbers in "
                             f"[1, {self.max_number}] and a target in [1, {self.max_target}], got {prompt!r}")
        example = self.example((numbers, target))
        if not self.reference_answers(example):
            raise ValueError(f"`prompt` {prompt!r} has no solution")
        return example

    def _response_value(self, example: Example, response: str) -> int | None:
        """The value of a well-formed response over allowed numbers, else None."""
        numbers, _ = self._check_example(example).problem
        body = _body(response)
        if body is None or not re.fullmatch(f"(?:{_NUMBER})(?:[-+*](?:{_NUMBER}))*", body):
            return None
        used = [int(x) for x in re.findall("[0-9]+", body)]
        if Counter(used) - Counter(numbers) or (self.use_all and len(used) != len(numbers)):
            return None  # a number that is not given, or given fewer times
        return _value(used, re.findall("[-+*]", body))

    def reward(self, example: Example, response: str) -> float:
        return float(self._response_value(example, response) == example.problem[1])

    def graded_reward(self, example: Example, response: str) -> float:
        value, target = self._response_value(example, response), example.problem[1]
        return 0.0 if value is None else max(0.0, 1.0 - abs(value - target) / target)

    def reference_answers(self, example: Example) -> list[str]:
        target = self._check_example(example).problem[1]
        return [text + END for text, value in self._expressions(example) if value == target]

    def _plausible_wrong(self, example: Example, rng: random.Random) -> str:
        target = example.problem[1]  # a well-formed expression over the right numbers that misses
        misses = [text for text, value in self._expressions(example) if value != target and re.search("[-+*]", text)]
        return rng.choice(misses) + END if misses else END


# ----- graph_path ---------------------------------------------------------------------------------
def _adjacency(edges: tuple, num_nodes: int) -> list[set[int]]:
    adj = [set() for _ in range(num_nodes)]
    for u, v in edges:
        adj[u].add(v)
        adj[v].add(u)
    return adj


def _distances(adj: list[set[int]], source: int) -> list[float]:
    """Breadth-first hop counts from ``source`` (inf where unreachable)."""
    dist = [float("inf")] * len(adj)
    dist[source] = 0
    queue = deque([source])
    while queue:
        u = queue.popleft()
        for v in adj[u]:
            if dist[v] == float("inf"):
                dist[v] = dist[u] + 1
                queue.append(v)
    return dist


@functools.lru_cache(maxsize=4096)
def _simple_paths(edges: tuple, start: int, goal: int) -> tuple[str, ...]:
    """Every simple path from start to goal as ``"0234;"``, shortest first, then lexicographic."""
    adj = _adjacency(edges, 10)
    paths, stack = [], [(start, (start,))]
    while stack:  # depth-first; a simple path never revisits a node, so this terminates
        node, path = stack.pop()
        if node == goal:
            paths.append("".join(map(str, path)) + END)
            continue
        stack.extend((v, (*path, v)) for v in adj[node] if v not in path)
    return tuple(sorted(paths, key=lambda p: (len(p), p)))


@dataclass(frozen=True, kw_only=True)
class GraphPath(Task):
    """``01,03,12,23,34,0>4=`` → ``034;``: a simple path from start to goal in an undirected graph.

    Nodes are the digits ``0..num_nodes-1``; ``num_edges`` distinct random edges, listed as sorted
    pairs; start and goal are at least ``min_distance`` hops apart (so the answer is never a single
    given edge). Correct: starts at start, ends at goal, follows edges, never revisits a node. Every
    simple path counts, so there are often several, of different lengths, and each step is a choice
    of neighbour. Graded reward: 0.5 × the progress (in hops towards the goal) of the longest valid
    walk the response begins with, 1 for a correct path.

    ``shortest=True`` accepts only the shortest paths. The prompts and splits are unchanged, but a
    model trained on every simple path now has *longer* wrong answers (its detours) than correct
    ones: the positive/negative length gap that notebook 02 needs. A detour's graded reward is
    0.5 + 0.25 × (shortest hops / its hops), below 0.75.
    """

    name: ClassVar[str] = "graph_path"
    _size_args: ClassVar[str] = "`num_nodes` and `num_edges`"
    num_nodes: int = 6
    num_edges: int = 7
    min_distance: int = 2
    shortest: bool = False  # only shortest paths are correct: wrong answers are then longer (notebook 02)

    def _check_config(self) -> None:
        n = _integer("num_nodes", self.num_nodes, 3, 10)  # one digit per node
        d = _integer("min_distance", self.min_distance, 1, n - 1)
        _integer("num_edges", self.num_edges, d, n * (n - 1) // 2 - (d > 1))  # complete graph: all d = 1

    @property
    def max_prompt_len(self) -> int:
        return 3 * self.num_edges + 4

    @property
    def max_response_len(self) -> int:
        return self.num_nodes + 1

    def _sample_problem(self, rng: random.Random) -> tuple:
        pairs = list(itertools.combinations(range(self.num_nodes), 2))
        for _ in range(1000):
            edges = tuple(sorted(rng.sample(pairs, self.num_edges)))
            adj = _adjacency(edges, self.num_nodes)
            ends = [(s, g) for s in range(self.num_nodes) for g, d in enumerate(_distances(adj, s))
                    if self.min_distance <= d < float("inf")]
            if ends:
                return (edges, *rng.choice(ends))
        raise ValueError(f"`min_distance` = {self.min_distance} is unreachable with {self.num_edges} edges "
                         f"on {self.num_nodes} nodes")

    def _prompt(self, problem: tuple) -> str:
        edges, start, goal = problem
        return ",".join(f"{u}{v}" for u, v in edges) + f",{start}>{goal}="

    def _key(self, problem: tuple) -> tuple:
        edges, start, goal = problem
        return edges, min(start, goal), max(start, goal)  # a question asked both ways: one split

    def parse_prompt(self, prompt: str) -> Example:
        m = re.fullmatch(r"((?:[0-9]{2},)+)([0-9])>([0-9])=", prompt) if isinstance(prompt, str) else None
        pairs = [(int(p[0]), int(p[1])) for p in m[1].split(",")[:-1]] if m else []
        edges = tuple(sorted((min(p), max(p)) for p in pairs))
        start, goal = (int(m[2]), int(m[3])) if m else (0, 0)
        n = self.num_nodes
        ok = (m is not None and len(set(edges)) == len(edges) == self.num_edges and all(u != v for u, v in edges)
              and max(max(e) for e in edges + ((start, goal),)) < n)
        if not ok or not self.min_distance <= _distances(_adjacency(edges, n), start)[goal] < float("inf"):
            raise ValueError(f"`prompt` must look like '01,12,23,0>3=' with {self.num_edges} distinct edges on "
                             f"nodes 0..{n - 1} and a goal {self.min_distance}+ hops from the start, got {prompt!r}")
        return self.example((edges, start, goal))

    def _nodes(self, response: str) -> list[int] | None:
        body = _body(response)
        return [int(c) for c in body] if body and re.fullmatch("[0-9]+", body) else None

    def reward(self, example: Example, response: str) -> float:
        edges, start, goal = self._check_example(example).problem
        nodes = self._nodes(response)
        adj = _adjacency(edges, 10)
        if nodes is None or not self._is_path(adj, nodes, start, goal):
            return 0.0
        return float(not self.shortest or len(nodes) - 1 == _distances(adj, start)[goal])

    def graded_reward(self, example: Example, response: str) -> float:
        if self.reward(example, response) == 1.0:
            return 1.0
        edges, start, goal = example.problem
        nodes = self._nodes(response)
        if nodes is None or nodes[0] != start:
            return 0.0
        adj = _adjacency(edges, 10)
        if self.shortest and self._is_path(adj, nodes, start, goal):  # a detour: half credit to 0.75
            return 0.5 + 0.25 * _distances(adj, start)[goal] / (len(nodes) - 1)
        last, seen = start, {start}
        for v in nodes[1:]:  # the longest valid walk the response begins with
            if v not in adj[last] or v in seen:
                break
            last = v
            seen.add(v)
        to_goal = _distances(adj, goal)
        progress = (to_goal[start] - to_goal[last]) / to_goal[start]
        return 0.5 * min(1.0, max(0.0, progress))

    @staticmethod
    def _is_path(adj: list[set[int]], nodes: list[int], start: int, goal: int) -> bool:
        return (nodes[0] == start and nodes[-1] == goal and len(set(nodes)) == len(nodes)
                and all(v in adj[u] for u, v in itertools.pairwise(nodes)))

    def reference_answers(self, example: Example) -> list[str]:
        paths = _simple_paths(*self._check_example(example).problem)
        return [p for p in paths if len(p) == len(paths[0])] if self.shortest else list(paths)

    def _plausible_wrong(self, example: Example, rng: random.Random) -> str:
        edges, start, goal = example.problem
        adj = _adjacency(edges, 10)
        walk = [start]
        if rng.random() < 0.5:  # wander without ever reaching the goal, then stop
            for _ in range(rng.randint(1, self.num_nodes - 2)):
                options = sorted(adj[walk[-1]] - set(walk) - {goal})
                if not options:
                    break
                walk.append(rng.choice(options))
            if len(walk) > 1:
                return "".join(map(str, walk)) + END
        path = [int(c) for c in rng.choice(_simple_paths(edges, start, goal))[:-1]]
        skips = [i for i in range(1, len(path) - 1) if path[i + 1] not in adj[path[i - 1]]]
        if skips:  # jump over one node along an edge that is not there
            i = rng.choice(skips)
            path = path[:i] + path[i + 1 :]
        else:  # or straight to the goal (never a given edge: min_distance >= 2 by default)
            path = [start, goal]
        return "".join(map(str, path)) + END


# ----- gsm8k: real word problems for real LMs ------------------------------------------------------
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

    def parse_prompt(self, prompt: str) -> Example:
        for pool in self._pools.values():
            for problem in pool:
                if self._prompt(problem) == prompt:
                    return self.example(problem)
        raise ValueError(f"`prompt` is not a prompt of this GSM8K set: {str(prompt)[:60]!r}")

    def reward(self, example: Example, response: str) -> float:
        gold = Decimal(self._check_example(example).problem[1])
        return float(extract_final_number(response) == gold)

    def graded_reward(self, example: Example, response: str) -> float:
        return self.reward(example, response)

    def reference_answers(self, example: Example) -> list[str]:
        return [self._check_example(example).problem[2]]

    def _plausible_wrong(self, example: Example, rng: random.Random) -> str:
        solution, gold = example.problem[2], Decimal(example.problem[1])
        wrong = gold + rng.choice([-10, -2, -1, 1, 2, 10])
        return solution[: solution.rfind("####")] + f"#### {wrong}"


# ----- registry and batched rewards ---------------------------------------------------------------
TASKS: dict[str, type[Task]] = {"addition": Addition, "countdown": Countdown, "graph_path": GraphPath}
#: Tasks over real text (any tokenizer), kept apart from the character-alphabet :data:`TASKS`.
TEXT_TASKS: dict[str, type[Task]] = {"gsm8k": GSM8K}


def get_task(name: str, **kwargs) -> Task:
    """A task by name (a key of :data:`TASKS` or :data:`TEXT_TASKS`), configured by keyword.

    E.g. ``get_task("addition", digits=3)`` or ``get_task("gsm8k", path="tests/data/gsm8k_sample.jsonl")``.
    """
    _checks.choice("name", name, TASKS | TEXT_TASKS)
    cls = (TASKS | TEXT_TASKS)[name]
    known = {f.name for f in fields(cls)}
    for key in kwargs:
        if key not in known:
            raise ValueError(f"`{key}` is not an argument of task {name!r}; it takes {sorted(known)}")
    return cls(**kwargs)


def rewards(task: Task | str, examples: Sequence[Example], responses: Sequence[str], graded: bool = False) -> Tensor:
    """Reward of each ``(example, response)`` pair as a float32 ``[B]`` tensor (``graded`` for partial credit).

    Repeat each example G times (``[e for e in examples for _ in range(G)]``) to score groups.
    """
    task = get_task(task) if isinstance(task, str) else task
    if isinstance(responses, str) or len(examples) != len(responses):
        n = "a str" if isinstance(responses, str) else len(responses)
        raise ValueError(f"`responses` must be a sequence of one response per example ({len(examples)}), got {n}")
    score = task.graded_reward if graded else task.reward
    return torch.tensor([score(e, r) for e, r in zip(examples, responses, strict=True)], dtype=torch.float32)
