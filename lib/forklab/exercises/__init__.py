"""Checkers for the notebooks' code exercises: a student's function in, a helpful message out.

One module per notebook (``forklab.exercises.nb01`` for ``01_policy_gradients_and_advantages``, …).
Every checker takes the student's function, runs it against an independent reference on a few
cases (small, edge, and a randomised one), and returns a :class:`Feedback` whose text says what
is right, what is wrong (the first failing case, expected vs got) and a hint. Printing a
``Feedback`` shows that text; ``bool(feedback)`` is True only when every case passed, so a
notebook can ``assert check_x(my_fn)`` once the student is done. The reference answers live in
these modules, not in the notebooks, so running all cells never prints a solution.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Feedback", "call_student"]


@dataclass
class Feedback:
    """The outcome of one exercise check: ``passed`` plus the lines shown to the student."""

    exercise: str
    passed: bool
    lines: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        head = f"✅ {self.exercise}: all checks passed." if self.passed else f"❌ {self.exercise}: not yet."
        return "\n".join([head, *("   " + line for line in self.lines)])

    def __repr__(self) -> str:  # notebooks show the message, not the dataclass
        return str(self)

    def _repr_pretty_(self, p, cycle) -> None:  # IPython display
        p.text(str(self))


def call_student(name: str, label: str, student: Callable, *args) -> tuple[object, Feedback | None]:
    """Run the student's function on case ``label``: ``(result, None)``, or ``(None, feedback)`` for the stub
    (``NotImplementedError``: not attempted yet) or any error it raises (its message, not a traceback)."""
    try:
        return student(*args), None
    except NotImplementedError:
        return None, Feedback(name, False, ["not attempted yet: replace `raise NotImplementedError` with your code"])
    except Exception as err:  # the student's bug, reported rather than raised
        return None, Feedback(name, False, [f"case '{label}': your function raised {type(err).__name__}: {err}"])
