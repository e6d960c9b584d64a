"""Synthetic verifiable text tasks: prompts, reward functions, reference answers and demonstrations.

Introduced in ``notebooks/00_tour.ipynb``; ``graph_path(shortest=True)`` is the length-gap task of
``notebooks/02_loss_aggregation.ipynb``.

The tiny-LM scale of README.md ("Four scales") trains small transformers on these tasks. They are chosen so
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

Answer and terminator are separate: ``;`` is used only to end a response (no prompt or answer contains
it), and the tiny models' tokenizer makes it the EOS special token, so text decoded with
``skip_special_tokens=True`` is exactly the answer. ``Task.score_answer(example, answer, terminated)``
scores such an answer with the end known separately (``reward(example, answer + ";")``, or 0 when
truncated), and :func:`reward_function` wraps it as a TRL-style reward function on decoded completions.

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

Files: ``_base.py`` (the alphabet, :class:`Example`, :class:`Task` with splits and demonstrations, reading
a response), one file per task (``_addition.py``, ``_countdown.py``, ``_graph_path.py``, ``_gsm8k.py``) and
this one (the registry, :func:`get_task`, batched :func:`rewards`). Add a task: subclass :class:`Task` in
a new file and list it in :data:`TASKS`.
"""


from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

import torch
from torch import Tensor

from forklab import _checks
from forklab.envs.tasks._addition import Addition
from forklab.envs.tasks._base import ALPHABET, END, MAX_PROMPT_LEN, MAX_TEXT_LEN, Example, Task
from forklab.envs.tasks._countdown import Countdown
from forklab.envs.tasks._graph_path import GraphPath
from forklab.envs.tasks._gsm8k import GSM8K, extract_final_number
from forklab.envs.tasks._gsm8k import GSM8K_INSTRUCTION as GSM8K_INSTRUCTION

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
    "reward_function",
    "rewards",
]


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


def _message_text(item, what: str, role: str | None) -> str:
    """Plain text, or the last message's content (of ``role``, if given) of a chat conversation."""
    if isinstance(item, str):
        return item
    if isinstance(item, (list, tuple)):
        messages = [m for m in item if isinstance(m, dict) and (role is None or m.get("role") == role)]
        if messages and isinstance(messages[-1].get("content"), str):
            return messages[-1]["content"]
    raise ValueError(f"`{what}` must hold str or chat messages ([{{'role': ..., 'content': str}}]), "
                     f"got {item!r:.60}")


def reward_function(task: Task | str, graded: bool = False, eos_token_id: int | None = None):
    """A TRL-style reward function ``f(prompts, completions, completion_ids=None, **kw) -> list[float]`` for ``task``.

    Each prompt is parsed back into its example (``task.parse_prompt``; for chat prompts, the last user
    message) and each completion is read as the *answer*: the decoded text, which for the tiny models lacks
    the ``;`` (their EOS special token) that TRL's ``skip_special_tokens=True`` drops; a ``;`` left in
    (special tokens kept) ends the answer. ``completion_ids`` (TRL passes them) tells whether the
    generation ended with ``eos_token_id`` (default: the id of ``;`` in forklab's character tokenizer);
    a completion without it was truncated and scores 0. Without ``completion_ids`` a completion counts as
    ended. Scores: ``task.score_answer`` (``graded`` for partial credit), so every value equals
    ``task.reward`` on the same response; ``GSM8K`` reads the final number and ignores the end. Extra
    keyword arguments (TRL's dataset columns, ``trainer_state``) are ignored.
    """
    task = get_task(task) if isinstance(task, str) else task
    if not isinstance(task, Task):
        raise ValueError(f"`task` must be a forklab Task or a task name, got {type(task).__name__}")
    if not isinstance(graded, bool):
        raise ValueError(f"`graded` must be a bool, got {graded!r}")
    if eos_token_id is None and task.char_limits:
        from forklab.lm.tokenizer import CharTokenizer  # here: the tokenizer module imports this one

        eos_token_id = CharTokenizer.for_tasks().eos_id
    if eos_token_id is not None:
        eos_token_id = _checks.integer("eos_token_id", eos_token_id, 0)

    def reward(prompts, completions, completion_ids=None, **kwargs) -> list[float]:
        if len(prompts) != len(completions) or (completion_ids is not None and len(completion_ids) != len(prompts)):
            n_ids = "" if completion_ids is None else f", {len(completion_ids)} completion_ids"
            raise ValueError(f"`completions`: one per prompt, got {len(prompts)} prompts, "
                             f"{len(completions)} completions{n_ids}")
        scores = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            example = task.parse_prompt(_message_text(prompt, "prompts", "user"))
            answer, ended = _message_text(completion, "completions", None), True
            if task.char_limits and END in answer:
                answer = answer[: answer.index(END)]  # special tokens kept: the first END ends the answer
            elif completion_ids is not None and eos_token_id is not None:
                ids = completion_ids[i]
                ended = eos_token_id in (ids.tolist() if isinstance(ids, Tensor) else list(ids))
            scores.append(task.score_answer(example, answer, terminated=ended, graded=graded))
        return scores

    reward.__name__ = f"{task.name}_reward"  # TRL logs rewards/<__name__>/mean
    return reward


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
