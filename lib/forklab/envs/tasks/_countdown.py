"""``countdown``: ``3,5,7>22=`` → an expression over the numbers that hits the target, e.g. ``3*5+7;``."""

from __future__ import annotations

import functools
import itertools
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from forklab.envs.tasks._base import (
    _NUMBER,
    END,
    Example,
    Task,
    _body,
    _integer,
)


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
