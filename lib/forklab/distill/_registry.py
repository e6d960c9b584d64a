"""The registry of :mod:`forklab.distill`: objectives and token/sequence weighting rules by name.

One decorator, :func:`distill_rule`, beside each function. :class:`~forklab.lm.distill_trainer.DistillTrainer`
(and the TRL integration) look rules up here and call them with the inputs their signature names
(:func:`call`), so adding an objective is one decorated function and its test.

Kinds:

=====================  ==============================================================  ==================
kind                   function returns                                                 trainer applies it
=====================  ==============================================================  ==================
``objective``          per-token loss ``[B, T]`` (0 off ``mask``)                       on the kept tokens
``token_weighting``    float weights ``[B, T]`` (0 off ``mask``), or a bool mask        × the loss
``sequence_weighting`` float weights ``[B]`` (one per response)                         × the loss
=====================  ==============================================================  ==================

Inputs a trainer offers, by parameter name: ``student_logits``/``teacher_logits`` ``[B, T, V]``, ``logp``
(student log-prob of the sampled token, with gradient), ``old_logp`` (the same, detached), ``teacher_logp``,
``ref_logp`` (the frozen initial student), ``mask``, ``adv`` (GRPO advantage), ``rewards``, ``correct``,
``group``. An entry's ``prepare`` (optional) computes extra per-token inputs ``[B, T]`` on the whole batch
before tokens are selected (e.g. TSD-KD's prefix mask), which the trainer then gathers like the others.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["KINDS", "DistillRule", "distill_rule", "rules", "rule_names", "lookup", "call"]

KINDS = ("objective", "token_weighting", "sequence_weighting")


@dataclass(frozen=True)
class DistillRule:
    """One registered rule: its function, the paper (title, arXiv id), confidence, notebook, and options.

    ``teacher_context``: ``"prompt"`` (the teacher sees the student's prompt) or ``"privileged"`` (the
    teacher is the student given privileged context, OPSD); ``sequence_weighting``: a rule the trainer
    applies by default with this objective (SCOPE's dual-path weights); ``prepare``: see the module doc.
    """

    kind: str
    name: str
    fn: Callable
    label: str
    paper: str
    confidence: str
    notebook: str
    teacher_context: str = "prompt"
    sequence_weighting: str | None = None
    prepare: Callable | None = None

    @property
    def inputs(self) -> tuple[str, ...]:
        """The parameter names of ``fn`` without a default (what the caller must provide)."""
        return tuple(p.name for p in inspect.signature(self.fn).parameters.values()
                     if p.default is inspect.Parameter.empty)

    @property
    def settings(self) -> tuple[str, ...]:
        """The parameter names of ``fn`` with a default (hyperparameters and optional inputs)."""
        return tuple(p.name for p in inspect.signature(self.fn).parameters.values()
                     if p.default is not inspect.Parameter.empty)


_RULES: dict[str, dict[str, DistillRule]] = {kind: {} for kind in KINDS}


def distill_rule(kind: str, name: str, *, label: str, paper: str, confidence: str, notebook: str,
                 teacher_context: str = "prompt", sequence_weighting: str | None = None,
                 prepare: Callable | None = None) -> Callable[[Callable], Callable]:
    """Decorator: register the function under ``kind``/``name`` and return it unchanged."""
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {list(KINDS)}, got {kind!r}")
    if confidence not in ("HIGH", "MED", "LOW"):
        raise ValueError(f"`confidence` must be HIGH, MED or LOW, got {confidence!r}")
    if teacher_context not in ("prompt", "privileged"):
        raise ValueError(f"`teacher_context` must be 'prompt' or 'privileged', got {teacher_context!r}")

    def decorator(fn: Callable) -> Callable:
        old = _RULES[kind].get(name)
        if old is not None and (old.fn.__module__, old.fn.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"{kind} {name!r} is already registered (by {old.fn.__module__}.{old.fn.__qualname__})")
        _RULES[kind][name] = DistillRule(kind, name, fn, label, paper, confidence, notebook, teacher_context,
                                         sequence_weighting, prepare)
        return fn

    return decorator


def rules(kind: str) -> dict[str, DistillRule]:
    """The registered rules of ``kind``, name → :class:`DistillRule`, in registration order (a copy)."""
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {list(KINDS)}, got {kind!r}")
    return dict(_RULES[kind])


def rule_names(kind: str) -> tuple[str, ...]:
    """The registered names of ``kind``, in registration order."""
    return tuple(rules(kind))


def lookup(kind: str, name: str, argument: str | None = None) -> DistillRule:
    """The rule ``kind``/``name``; ``ValueError`` naming ``argument`` (default: the kind) if unknown."""
    found = rules(kind).get(name)
    if found is None:
        raise ValueError(f"`{argument or kind}` must be one of {sorted(_RULES[kind])}, got {name!r}")
    return found


def call(rule: DistillRule, inputs: dict, settings: dict | None = None):
    """Call ``rule.fn`` with the ``inputs`` its signature names, plus ``settings`` (keyword hyperparameters).

    A required input missing from ``inputs`` or a setting the function does not take raises ``ValueError``.
    """
    params = inspect.signature(rule.fn).parameters
    settings = dict(settings or {})
    unknown = set(settings) - {p for p in params if params[p].default is not inspect.Parameter.empty}
    if unknown:
        raise ValueError(f"`{rule.kind}_kwargs` for {rule.name!r} takes {sorted(rule.settings)}, got {sorted(unknown)}")
    missing = [p for p in rule.inputs if p not in inputs]
    if missing:
        raise ValueError(f"{rule.kind} {rule.name!r} needs inputs {missing} that the caller did not provide")
    kwargs = {k: v for k, v in inputs.items() if k in params and k not in settings}
    return rule.fn(**kwargs, **settings)
