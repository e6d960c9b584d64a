"""The task interface and what every task shares: the alphabet, splits, reading a response, demonstrations.

See :mod:`forklab.envs.tasks` for the tasks and how splits and demonstrations are made.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import ClassVar

from forklab import _checks

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

    def score_answer(self, example: Example, answer: str, terminated: bool = True, graded: bool = False) -> float:
        """The reward of a response given as its answer text, with whether it ended known separately.

        ``answer`` is the response without its terminator (what a Hugging Face tokenizer decodes with
        ``skip_special_tokens=True``, since END is the tiny models' EOS); ``terminated`` says whether the
        generation ended with END (False: truncated, which scores 0). Equal to ``reward(example, answer +
        END)`` when terminated (``graded_reward`` with ``graded``): the same number forklab's own paths give.
        """
        self._check_example(example)
        if not isinstance(answer, str):
            raise ValueError(f"`answer` must be a str, got {type(answer).__name__}")
        if END in answer:
            raise ValueError(f"`answer` must not contain the terminator {END!r}: pass the text before it "
                             f"({answer!r:.40})")
        if not isinstance(terminated, bool) or not isinstance(graded, bool):
            raise ValueError(f"`terminated` and `graded` must be bools, got {terminated!r}, {graded!r}")
        if not terminated:
            return 0.0
        return (self.graded_reward if graded else self.reward)(example, answer + END)

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
