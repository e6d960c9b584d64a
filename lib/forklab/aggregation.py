"""Loss aggregation: how per-token losses ``[B, T]`` become one scalar.

Introduced in ``notebooks/02_loss_aggregation.ipynb``.

Every mode is *linear* in the per-token loss, so each is fully described by the weight it gives
every token: ``aggregate(loss, ...) == (token_weights(...) * loss).sum()`` over the mask. The
weights are defined once, in :func:`token_weights`; :func:`aggregate` only applies them. This is
also what notebook 02 plots (per-token gradient weight vs response length).

With L_i = Σ_t m_{i,t} and B' = the number of sequences with L_i > 0 (empty sequences are ignored,
as in verl and OpenRLHF):

============================  ==========================================  =========================
mode                          weight of a valid token of sequence i        who uses it
============================  ==========================================  =========================
``token-mean``                1 / Σ_j L_j                                 verl default, TRL dapo/bnpo
``token-sum``                 1                                           verl ``token-sum``
``seq-mean-token-mean``       1 / (B' · L_i)                              GRPO paper, TRL grpo/sapo
``seq-mean-token-sum``        1 / B'                                      verl
``seq-mean-token-sum-norm``   1 / (B' · norm_len), norm_len default T     Dr. GRPO (arXiv 2503.20783)
``balanced``                  see below                                   BA (arXiv 2605.04077)
============================  ==========================================  =========================

Balanced Aggregation, per group g of G responses with n⁺ positive- and n⁻ negative-advantage
responses: a token of a positive response weighs (n⁺/G) / Σ_{j∈S⁺} L_j, a token of a negative one
(n⁻/G) / Σ_{j∈S⁻} L_j; zero-advantage responses weigh 0 but count in G; the result is averaged
over groups. With binary rewards n⁻ = G − k (docs/formulas.md, Notebook 02: MED-HIGH); where zero advantages
exist the reference implementation's "(G−k)/G" is read as n⁻/G (zeros count in G only).
"""

from __future__ import annotations

import torch
from torch import Tensor

from forklab import _checks
from forklab._registry import aggregation_mode, lookup, names
from forklab.ops import masked_mean

__all__ = ["MODES", "token_weights", "aggregate"]

_NB2 = "02_loss_aggregation"


def _shape(mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``m`` (mask as float64), ``L_i`` and B' (sequences with L_i > 0) of the module docstring."""
    m = mask.double()
    lengths = m.sum(1)
    return m, lengths, (lengths > 0).sum().double()


@aggregation_mode("token-mean", notebook=_NB2)
def _token_mean(mask, adv, group, norm_len) -> Tensor:
    m, lengths, _ = _shape(mask)
    return m / lengths.sum()


@aggregation_mode("token-sum", notebook=_NB2)
def _token_sum(mask, adv, group, norm_len) -> Tensor:
    return mask.double()


@aggregation_mode("seq-mean-token-mean", notebook=_NB2)
def _seq_mean_token_mean(mask, adv, group, norm_len) -> Tensor:
    m, lengths, n_seq = _shape(mask)
    return m / (lengths.clamp(min=1)[:, None] * n_seq)


@aggregation_mode("seq-mean-token-sum", notebook=_NB2)
def _seq_mean_token_sum(mask, adv, group, norm_len) -> Tensor:
    m, _, n_seq = _shape(mask)
    return m / n_seq


@aggregation_mode("seq-mean-token-sum-norm", notebook=_NB2)
def _seq_mean_token_sum_norm(mask, adv, group, norm_len) -> Tensor:
    m, _, n_seq = _shape(mask)
    norm = float(mask.shape[1]) if norm_len is None else _checks.positive("norm_len", norm_len)
    return m / (n_seq * norm)


@aggregation_mode("balanced", notebook=_NB2)
def _balanced(mask, adv, group, norm_len) -> Tensor:
    if adv is None or group is None:
        raise ValueError("`adv` and `group` are required for mode='balanced'")
    m, lengths, _ = _shape(mask)
    adv = _checks.as_tensor("adv", adv)
    adv = _checks.floating("adv", adv) if adv.dim() == 1 else adv  # [B, T]: checked on the mask only
    seq_adv = _sequence_advantage(adv, mask).double()
    group = _checks.group_ids("group", group, mask.shape[0])
    _, index = torch.unique(group, return_inverse=True)
    n_groups = int(index.max()) + 1
    size = torch.bincount(index, minlength=n_groups).double()
    weights = torch.zeros(mask.shape[0], dtype=torch.float64, device=mask.device)
    for side in (seq_adv > 0, seq_adv < 0):
        count = torch.zeros(n_groups, dtype=torch.float64, device=mask.device).index_add_(0, index, side.double())
        tokens = torch.zeros(n_groups, dtype=torch.float64, device=mask.device).index_add_(0, index, lengths * side)
        per_token = (count / size) / tokens.clamp(min=1e-300)
        weights = weights + torch.where(side, per_token[index], torch.zeros((), dtype=torch.float64))
    return m * weights[:, None] / n_groups


#: The registered modes, in registration order (a new ``@aggregation_mode`` appears here when imported).
MODES = names("aggregation")


def _sequence_advantage(adv: Tensor, mask: Tensor) -> Tensor:
    if adv.dim() == 1:
        if adv.shape[0] != mask.shape[0]:
            raise ValueError(f"`adv` must have shape [{mask.shape[0]}] or {list(mask.shape)}, got {list(adv.shape)}")
        return adv
    adv = _checks.masked("adv", adv, mask)
    return masked_mean(adv, mask, dim=1)


def token_weights(mask: Tensor, mode: str = "token-mean", adv: Tensor | None = None, group: Tensor | None = None,
                  norm_len: float | None = None) -> Tensor:
    """The weight each token's loss gets under ``mode``, ``[B, T]`` float64, 0 off the mask.

    ============  =========================================================
    argument      shape
    ============  =========================================================
    mask          ``[B, T]`` bool, True on response tokens (not all False)
    adv           ``[B]`` or ``[B, T]``; needed by ``balanced`` (its sign)
    group         ``[B]`` integer prompt id; needed by ``balanced``
    norm_len      Dr. GRPO's constant (max response length); default T
    returns       ``[B, T]`` float64
    ============  =========================================================

    ``mode`` is any registered aggregation mode (:data:`MODES` and any added since).
    """
    entry = lookup("aggregation", mode, "mode")
    mask = _checks.bool_mask("mask", mask)
    if mask.dim() != 2:
        raise ValueError(f"`mask` must have shape [B, T], got {list(mask.shape)}")
    if not mask.any():
        raise ValueError("`mask` is empty: no token to aggregate")
    return entry.fn(mask, adv, group, norm_len)


def aggregate(loss: Tensor, mask: Tensor, mode: str = "token-mean", adv: Tensor | None = None,
              group: Tensor | None = None, norm_len: float | None = None) -> Tensor:
    """Reduce a per-token loss ``[B, T]`` to a scalar: Σ_{i,t} w_{i,t}(mode) · loss_{i,t}.

    Values of ``loss`` off the mask are ignored (even NaN/inf). Shapes and modes as in
    :func:`token_weights` and the module docstring; the result has ``loss``'s dtype and carries
    its gradient. verl: ``agg_loss(loss_mat, loss_mask, loss_agg_mode)`` (same mode names, minus
    ``balanced``); TRL: ``loss_type`` (``dapo``/``bnpo`` = token-mean per (micro-)batch, ``grpo`` =
    seq-mean-token-mean, ``dr_grpo`` = seq-mean-token-sum-norm with ``max_completion_length``).
    """
    loss = _checks.as_tensor("loss", loss)
    if not loss.is_floating_point():
        raise ValueError(f"`loss` must be a floating tensor, got dtype {loss.dtype}")
    mask = _checks.bool_mask("mask", mask)
    _checks.same_shape("mask", mask, "loss", loss)
    _checks.masked("loss", loss, mask)
    w = token_weights(mask, mode, adv, group, norm_len).to(loss.dtype)
    return (w * torch.where(mask, loss, torch.zeros((), dtype=loss.dtype))).sum()
