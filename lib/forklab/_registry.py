"""The one registry of an objective's parts: advantage estimators, surrogates (per-token losses), aggregation modes.

Each part is registered by a decorator beside its function (``@objective("ppo_clip", ...)`` in
:mod:`forklab.surrogates`, ``@advantage_estimator`` in :mod:`forklab.advantages`, ``@aggregation_mode``
in :mod:`forklab.aggregation`); :mod:`forklab.recipes`, the trainers, the TRL integration and the
lessons read it. Adding a clipping rule is one decorated function and its test (``docs/conventions.md``
walks through an example). This module sits on the lowest floor: it imports nothing from forklab.

How a registered function is called (:func:`call`): arguments are bound *by parameter name* from what
the caller has (``logp``, ``old_logp``, ``adv``, ``mask`` for a surrogate; ``rewards``, ``group`` for an
advantage estimator), plus the :class:`~forklab.recipes.Batch` fields listed in ``needs`` (passed
detached: they define the objective, they are not what it differentiates), plus the recipe's keyword
settings. A surrogate that accepts ``return_metrics`` is asked for its metrics.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Entry", "KINDS", "register", "objective", "advantage_estimator", "aggregation_mode", "entries",
           "names", "lookup", "unregister", "settings_of"]

KINDS = ("advantage", "surrogate", "aggregation")


@dataclass(frozen=True)
class Entry:
    """One registered part. ``needs``: Batch fields it reads beyond the standard inputs of its kind;
    ``label``: its display name in tables and widgets; ``notebook``: the notebook that introduces it."""

    kind: str
    name: str
    fn: Callable
    needs: tuple[str, ...] = ()
    label: str = ""
    notebook: str = ""


_ENTRIES: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}


def register(kind: str, name: str, *, needs: tuple[str, ...] = (), label: str | None = None,
             notebook: str = "") -> Callable[[Callable], Callable]:
    """Decorator: register the function under ``kind``/``name`` and return it unchanged.

    A name can be registered once per kind (a second function under it raises ``ValueError``); the
    same function again (a module reloaded) replaces its entry.
    """
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {list(KINDS)}, got {kind!r}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a non-empty str, got {name!r}")
    needs = tuple(needs)

    def decorator(fn: Callable) -> Callable:
        old = _ENTRIES[kind].get(name)
        if old is not None and (old.fn.__module__, old.fn.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"{kind} {name!r} is already registered (by {old.fn.__module__}.{old.fn.__qualname__})")
        _ENTRIES[kind][name] = Entry(kind, name, fn, needs, label or name, notebook)
        return fn

    return decorator


def objective(name: str, *, needs: tuple[str, ...] = (), label: str | None = None, notebook: str = ""):
    """Register a surrogate ``f(logp, old_logp, adv, mask, [needs...], **settings) -> loss [B, T]``."""
    return register("surrogate", name, needs=needs, label=label, notebook=notebook)


def advantage_estimator(name: str, *, needs: tuple[str, ...] = (), label: str | None = None, notebook: str = ""):
    """Register an advantage estimator ``f(rewards, group, [needs...], **settings) -> adv [B]`` (or ``[B, T]``)."""
    return register("advantage", name, needs=needs, label=label, notebook=notebook)


def aggregation_mode(name: str, *, label: str | None = None, notebook: str = ""):
    """Register an aggregation mode: ``f(mask, adv, group, norm_len) -> token weights [B, T]`` float64."""
    return register("aggregation", name, label=label, notebook=notebook)


def entries(kind: str) -> dict[str, Entry]:
    """The registered parts of ``kind``, name → :class:`Entry`, in registration order (a copy)."""
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {list(KINDS)}, got {kind!r}")
    return dict(_ENTRIES[kind])


def names(kind: str) -> tuple[str, ...]:
    """The registered names of ``kind``, in registration order."""
    return tuple(entries(kind))


def lookup(kind: str, name: str, argument: str | None = None) -> Entry:
    """The entry ``kind``/``name``; ``ValueError`` naming ``argument`` (default: the kind) if unknown."""
    found = entries(kind).get(name)
    if found is None:
        raise ValueError(f"`{argument or kind}` must be one of {sorted(_ENTRIES[kind])}, got {name!r}")
    return found


def unregister(kind: str, name: str) -> None:
    """Remove an entry (tests register throwaway objectives and clean up after themselves)."""
    lookup(kind, name)
    del _ENTRIES[kind][name]


@functools.cache
def _parameters(fn: Callable):
    """``inspect.signature(fn).parameters``, once per function (a trainer asks at every loss)."""
    return inspect.signature(fn).parameters


def settings_of(entry: Entry, inputs: tuple[str, ...]) -> set[str]:
    """The keyword settings ``entry.fn`` accepts: its parameters minus the bound inputs and ``needs``."""
    params = _parameters(entry.fn)
    return set(params) - set(inputs) - set(entry.needs) - {"return_metrics"}


def call(entry: Entry, inputs: dict, fields, settings: dict):
    """Call ``entry.fn`` with the ``inputs`` its signature names, its ``needs`` from ``fields`` (detached),
    and ``settings``. Returns ``(result, metrics)``; metrics are ``{}`` unless it takes ``return_metrics``."""
    params = _parameters(entry.fn)
    kwargs = {key: value for key, value in inputs.items() if key in params}
    for field in entry.needs:
        value = getattr(fields, field)
        kwargs[field] = value.detach() if hasattr(value, "detach") else value
    if "return_metrics" in params:
        return entry.fn(**kwargs, **settings, return_metrics=True)
    return entry.fn(**kwargs, **settings), {}
