"""OPSD's privileged context: the prompt the self-teacher reads (the student's prompt plus the answer).

Introduced in ``notebooks/09_on_policy_distillation.ipynb``. In On-Policy Self-Distillation the teacher is
the student network itself, conditioned on information the student does not see: the official code
prepends "Here is a reference solution…" + the solution + a transition to the problem. For forklab's
character tasks the privileged prompt must stay inside the task alphabet, so the reference answer
(which ends with ``;``) is written *before* the prompt: ``"142;61+81="`` for ``"61+81="``. The teacher's
logits are then read on the student's response tokens, with no gradient
(:class:`~forklab.lm.distill_trainer.DistillTrainer` with ``teacher_context="privileged"``).

A tiny model only benefits from such a prompt after it has seen some (e.g. SFT on
``privileged_prompt(...) + answer`` pairs): the context is information, not an instruction.
"""

from __future__ import annotations

__all__ = ["privileged_prompt", "PRIVILEGED_TEMPLATES"]

#: name -> format string over ``answer`` (the first reference answer) and ``prompt``.
PRIVILEGED_TEMPLATES = {"answer_first": "{answer}{prompt}", "answer_only": "{answer}"}


def privileged_prompt(task, example, template: str = "answer_first") -> str:
    """The self-teacher's prompt for ``example``: ``template`` filled with its first reference answer.

    ``task``: a :class:`forklab.envs.tasks.Task` (for ``reference_answers``); ``example``: one of its
    examples; ``template``: a key of :data:`PRIVILEGED_TEMPLATES` or a format string with ``{answer}`` and
    ``{prompt}``. Returns a str. Paper: Zhao et al., "Self-Distilled Reasoner: On-Policy Self-Distillation
    for Large Language Models", arXiv 2601.18734 (code siyan-zhao/OPSD, ``data_collator.py``). Confidence
    HIGH for the idea (read in code); the answer-first layout is forklab's (the alphabet has no words).
    Not in verl/TRL. Notebook 09.
    """
    if not isinstance(template, str):
        raise ValueError(f"`template` must be a str, got {type(template).__name__}")
    fmt = PRIVILEGED_TEMPLATES.get(template, template)
    if "{answer}" not in fmt:
        raise ValueError(f"`template` must be one of {sorted(PRIVILEGED_TEMPLATES)} or contain '{{answer}}', "
                         f"got {template!r}")
    answers = task.reference_answers(example)
    if not answers:
        raise ValueError("`example` has no reference answer to put in the privileged context")
    return fmt.format(answer=answers[0], prompt=example.prompt)
