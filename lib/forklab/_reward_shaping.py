"""Reward shaping that a :class:`forklab.recipes.Recipe` applies before its advantages (public through
:mod:`forklab.recipes`): DAPO's soft overlong punishment.
"""

from __future__ import annotations

import torch
from torch import Tensor

from forklab import _checks

__all__ = ["overlong_penalty"]


def overlong_penalty(lengths: Tensor, max_len: int, buffer: int, factor: float = 1.0) -> Tensor:
    """DAPO's soft overlong punishment, added to the reward (arXiv 2503.14476, eq. 13; HIGH).

    .. math::

        R_{len}(y) = \\begin{cases} 0 & |y| \\le L_{max} - L_{buf} \\\\
                     \\frac{(L_{max} - L_{buf}) - |y|}{L_{buf}}\\cdot f & L_{max} - L_{buf} < |y| \\le L_{max} \\\\
                     -f & |y| > L_{max} \\end{cases}

    i.e. 0 up to L_max − L_buf, a linear ramp to −f at L_max, −f beyond (the paper's third case;
    verl's ``overlong_buffer`` reward manager never sees |y| > L_max because generation stops
    there). Paper: L_max = 20480, L_buf = 4096, f = 1. verl: ``reward_model.overlong_buffer.len``
    and ``.penalty_factor``; not in TRL. ``lengths [B]`` → ``[B]``. :class:`forklab.lm.trainer.RLTrainer`
    applies it when the recipe sets ``overlong_buffer`` (the ``dapo`` preset).
    """
    lengths = _checks.floating("lengths", lengths)
    max_len = _checks.integer("max_len", max_len, 1)
    buffer = _checks.integer("buffer", buffer, 1, max_len)
    factor = _checks.finite("factor", factor, 0.0)
    ramp = -(lengths - (max_len - buffer)) / buffer * factor
    return torch.clamp(ramp, min=-factor, max=0.0)
