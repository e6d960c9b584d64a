"""RLTrainer's optimiser and learning-rate schedule, from ``RLConfig`` fields named as in transformers/TRL.

Private; used by :class:`forklab.lm.trainer.RLTrainer` (introduced in
``notebooks/01_policy_gradients_and_advantages.ipynb``). AdamW (``torch.optim.AdamW``) with
``betas = (adam_beta1, adam_beta2)``, ``eps = adam_epsilon`` and ``weight_decay``; forklab's defaults are
``(0.9, 0.99)``, ``1e-8``, ``0`` (transformers': ``(0.9, 0.999)``, ``1e-8``, ``0``).

The learning rate at trainer step ``s`` (0-based; every optimiser update of that step uses it) is
``lr · λ(s)`` with the schedules of ``transformers.get_scheduler`` (``lr_scheduler_type``), over
``max_steps`` steps with ``w`` warmup steps (``warmup_steps`` if ≥ 1, else ``ceil(warmup_steps ·
max_steps)``, as ``TrainingArguments.get_warmup_steps``)::

    constant              λ = 1
    constant_with_warmup  λ = s / max(1, w)  if s < w,  else 1
    linear                λ = s / max(1, w)  if s < w,  else max(0, (N − s) / max(1, N − w))
    cosine                λ = s / max(1, w)  if s < w,  else max(0, ½ (1 + cos(π · (s − w) / max(1, N − w))))

``N = max_steps`` counts trainer steps (rollouts); with one update per rollout (``inner_epochs =
minibatches = 1``) that is TRL's ``max_steps`` (optimiser steps). The factor is a function of the step
count alone, so resuming from a checkpoint needs no scheduler state.
"""

from __future__ import annotations

import math

import torch

__all__ = ["SCHEDULES", "make_optimizer", "lr_factor", "check_schedule"]

SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine")


def make_optimizer(params, config) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` with the config's ``lr``, betas, epsilon and weight decay.

    ``foreach=True``: one fused call per update step instead of one per parameter (the CPU default); the
    same numbers, bit for bit (tested).
    """
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay,
                             betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_epsilon, foreach=True)


def warmup_steps(config) -> int:
    """Warmup length in steps: ``warmup_steps`` if ≥ 1, else that fraction of ``max_steps`` rounded up."""
    w = config.warmup_steps
    return int(w) if w >= 1 else math.ceil(config.max_steps * w)


def lr_factor(config, step: int) -> float:
    """``λ(step)`` of the module docstring: the multiple of ``config.lr`` used at trainer step ``step``."""
    kind = config.lr_scheduler_type
    if kind == "constant":
        return 1.0
    w = warmup_steps(config)
    if step < w:
        return float(step) / float(max(1, w))
    if kind == "constant_with_warmup":
        return 1.0
    n = config.max_steps
    if kind == "linear":
        return max(0.0, float(n - step) / float(max(1, n - w)))
    progress = float(step - w) / float(max(1, n - w))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))


def check_schedule(config) -> None:
    """``ValueError`` naming the field for betas, epsilon or schedule settings out of range."""
    for name in ("adam_beta1", "adam_beta2"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
            raise ValueError(f"`config.{name}` must lie in [0, 1), got {value!r}")
    if isinstance(config.adam_epsilon, bool) or not isinstance(config.adam_epsilon, int | float) \
            or not config.adam_epsilon >= 0:
        raise ValueError(f"`config.adam_epsilon` must be >= 0, got {config.adam_epsilon!r}")
    if config.lr_scheduler_type not in SCHEDULES:
        raise ValueError(f"`config.lr_scheduler_type` must be one of {list(SCHEDULES)}, "
                         f"got {config.lr_scheduler_type!r}")
    w = config.warmup_steps
    if isinstance(w, bool) or not isinstance(w, int | float) or not w >= 0 or (w >= 1 and w != int(w)):
        raise ValueError(f"`config.warmup_steps` must be a whole number of steps or a ratio in [0, 1), got {w!r}")
    m = config.max_steps
    if isinstance(m, bool) or not isinstance(m, int) or m < 0:
        raise ValueError(f"`config.max_steps` must be a non-negative integer, got {m!r}")
    if config.lr_scheduler_type in ("linear", "cosine") and m < 1:
        raise ValueError(f"`config.max_steps` must be >= 1 for lr_scheduler_type={config.lr_scheduler_type!r} "
                         "(the schedule decays to 0 at max_steps)")
    if 0 < w < 1 and m < 1:
        raise ValueError("`config.warmup_steps` as a ratio needs `config.max_steps` >= 1")
