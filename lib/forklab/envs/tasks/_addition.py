"""``addition``: ``47+85=`` → ``132;`` (or the column-sum scratchpad ``12,13>132;``)."""

from __future__ import annotations

import random
import re
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
