"""Tensor primitives every objective is built from: masked reductions, log-probs, token entropy.

Introduced in ``notebooks/01_policy_gradients_and_advantages.ipynb`` (and used everywhere after).

Conventions (README.md): ``mask`` is bool ``[B, T]``, True on response tokens; ``logits`` is
``[..., V]``. The padding rule of every forklab module (docs/reliability.md): values outside the mask
never influence a result or a gradient, not even when they are NaN or inf (padding often holds
garbage), while NaN or ±inf *inside* the mask is a ``ValueError`` naming the argument.
"""

from __future__ import annotations

import torch
from torch import Tensor

from forklab import _checks

__all__ = [
    "masked_sum",
    "masked_mean",
    "masked_var",
    "logprobs_from_logits",
    "entropy_from_logits",
]


def _masked_inputs(x, mask) -> tuple[Tensor, Tensor]:
    x = _checks.as_tensor("x", x)
    if not x.is_floating_point():
        raise ValueError(f"`x` must be a floating tensor, got dtype {x.dtype}")
    mask = _checks.bool_mask("mask", mask)
    _checks.same_shape("x", x, "mask", mask)
    _checks.masked("x", x, mask)
    return x, mask


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of ``x`` over the True entries of ``mask``.

    .. math:: \\mathrm{masked\\_sum}(x, m) = \\sum_{i} m_i x_i

    ============  ==========================================
    argument      shape
    ============  ==========================================
    x             any, float
    mask          same as ``x``, bool
    returns       scalar, or ``x`` reduced over ``dim``
    ============  ==========================================

    Entries outside the mask are replaced by 0 *before* summing (``torch.where``, not
    multiplication), so NaN/inf padding cannot leak in. verl: ``masked_sum``.

    Raises ``ValueError`` on mismatched shapes, a non-bool mask, NaN inside the mask, or (for
    ``dim=None``) an empty mask.
    """
    x, mask = _masked_inputs(x, mask)
    if dim is not None:
        dim = _checks.integer("dim", dim, -max(x.dim(), 1), max(x.dim(), 1) - 1)
    if dim is None and not mask.any():
        raise ValueError("`mask` is empty: nothing to sum")
    zeros = torch.zeros((), dtype=x.dtype, device=x.device)
    filled = torch.where(mask, x, zeros)
    return filled.sum() if dim is None else filled.sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over the True entries of ``mask``.

    .. math:: \\mathrm{masked\\_mean}(x, m) = \\frac{\\sum_i m_i x_i}{\\sum_i m_i}

    With ``dim=None`` an empty mask raises ``ValueError``. With ``dim`` given, rows whose mask is
    empty return 0 (verl and OpenRLHF do the same; these rows carry no tokens, so they contribute
    no gradient), never NaN. Shapes as in :func:`masked_sum`. verl: ``masked_mean``.
    """
    total = masked_sum(x, mask, dim)
    mask = _checks.bool_mask("mask", mask)
    count = mask.sum() if dim is None else mask.sum(dim)
    return total / count.clamp(min=1).to(total.dtype)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of the masked entries of ``x`` (a scalar), Bessel-corrected by default.

    .. math:: \\mathrm{Var}_m(x) = \\frac{1}{N - 1}\\sum_i m_i (x_i - \\bar x)^2, \\quad N = \\sum_i m_i

    ``unbiased=True`` matches verl's ``masked_var``, ``torch.std`` and TRL's ``nanstd``; it needs at
    least two masked entries (otherwise ``ValueError``), one is enough when ``unbiased=False``.
    """
    x, mask = _masked_inputs(x, mask)
    n = int(mask.sum())
    if n < (2 if unbiased else 1):
        raise ValueError(f"`mask` selects {n} entries; the {'unbiased ' if unbiased else ''}variance needs more")
    mean = masked_mean(x, mask)
    sq = masked_sum((x - mean) ** 2, mask)
    return sq / (n - 1 if unbiased else n)


def _logit_inputs(logits, temperature: float) -> tuple[Tensor, float]:
    logits = _checks.logits("logits", logits)
    return logits, _checks.positive("temperature", temperature)


#: With ``chunk_size=None`` a chunk holds about this many logits (16 MiB of fp32 probabilities).
_AUTO_CHUNK_ELEMENTS = 1 << 22


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # fp16/bf16 log-softmax loses several digits; accumulate in fp32 (fp64 stays fp64).
    return torch.float64 if dtype == torch.float64 else torch.float32


def logprobs_from_logits(logits: Tensor, tokens: Tensor, temperature: float = 1.0) -> Tensor:
    """Log-probability of each chosen token under ``softmax(logits / temperature)``.

    .. math:: \\log \\pi(y_t) = z_{t,y_t}/T - \\operatorname{logsumexp}_v (z_{t,v}/T)

    ============  ==========================================
    argument      shape
    ============  ==========================================
    logits        ``[..., V]`` float (any float dtype)
    tokens        ``[...]`` integer ids in ``[0, V)``
    returns       ``[...]`` float32 (float64 for float64 logits)
    ============  ==========================================

    Computed as gather minus logsumexp, in fp32 for half-precision inputs. The temperature must
    be the sampling temperature, otherwise the scored log-probs differ from the sampled ones
    (verl and TRL both divide the logits by it). verl: ``logprobs_from_logits``; TRL:
    ``selective_log_softmax``.
    """
    logits, temperature = _logit_inputs(logits, temperature)
    tokens = _checks.as_tensor("tokens", tokens)
    if tokens.is_floating_point() or tokens.dtype == torch.bool:
        raise ValueError(f"`tokens` must be an integer tensor, got dtype {tokens.dtype}")
    if tokens.shape != logits.shape[:-1]:
        raise ValueError(
            f"`tokens` must have shape {list(logits.shape[:-1])} (logits without the vocabulary dim), "
            f"got {list(tokens.shape)}"
        )
    vocab = logits.shape[-1]
    if tokens.numel() and (tokens.min() < 0 or tokens.max() >= vocab):
        raise ValueError(f"`tokens` must lie in [0, {vocab}), got ids in [{int(tokens.min())}, {int(tokens.max())}]")
    z = logits.to(_compute_dtype(logits.dtype)) / temperature
    chosen = z.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)
    if torch.isinf(chosen).any():
        raise ValueError("`tokens` picks a token whose logit is -inf (probability 0: it cannot have been sampled)")
    return chosen - torch.logsumexp(z, dim=-1)


def entropy_from_logits(logits: Tensor, temperature: float = 1.0, chunk_size: int | None = None) -> Tensor:
    """Shannon entropy (nats) of ``softmax(logits / temperature)`` at every position.

    .. math:: H = -\\sum_v p_v \\log p_v = \\operatorname{logsumexp}(z) - \\sum_v p_v z_v,
              \\qquad p = \\operatorname{softmax}(z),\\; z = \\mathrm{logits}/T

    ============  ==========================================
    argument      shape
    ============  ==========================================
    logits        ``[..., V]`` float (any float dtype)
    returns       ``[...]`` float32 (float64 for float64 logits)
    ============  ==========================================

    ``chunk_size`` rows (positions) are processed at a time, each upcast to fp32, so at most one
    chunk of probabilities ``[chunk_size, V]`` exists at once; ``None`` picks the number of rows
    that keeps a chunk near 2²² logits (16 MiB in fp32; 85 rows at SmolLM2's 49k vocabulary). The
    result does not depend on the chunk size (``benchmarks/bench_entropy.py`` measures the cost).
    Logits of ``-inf`` (filtered tokens) have probability 0 and contribute 0, so a top-k-filtered
    distribution gets its own (smaller) entropy instead of NaN. Gradients flow (∂H/∂z = −p ⊙ (log p + H)).

    Token entropy is the axis of forking tokens (Beyond the 80/20 Rule, arXiv 2506.01939) and of
    the entropy-collapse lessons (The Entropy Mechanism, arXiv 2505.22617). verl:
    ``entropy_from_logits`` / ``entropy_from_logits_with_chunking`` (LSE − E_p[z]); TRL:
    ``entropy_from_logits(logits, chunk_size=128)``. Introduced in notebook 01, used from 04 on.
    """
    logits, temperature = _logit_inputs(logits, temperature)
    if chunk_size is not None:
        chunk_size = _checks.integer("chunk_size", chunk_size, 1)
    lead_shape = logits.shape[:-1]
    vocab = logits.shape[-1]
    flat = logits.reshape(-1, vocab)
    rows = flat.shape[0]
    step = max(1, _AUTO_CHUNK_ELEMENTS // vocab) if chunk_size is None else int(chunk_size)
    dtype = _compute_dtype(logits.dtype)
    pieces = []
    for start in range(0, max(rows, 1), step):
        z = flat[start : start + step].to(dtype)
        if temperature != 1.0:
            z = z / temperature
        lse = torch.logsumexp(z, dim=-1, keepdim=True)
        p = torch.exp(z - lse)
        if not torch.isfinite(z).all():  # filtered (-inf) logits: p = 0 there, and 0·(-inf) must count as 0
            z = torch.where(torch.isfinite(z), z, torch.zeros((), dtype=dtype, device=z.device))
        expected_z = torch.bmm(p.unsqueeze(1), z.unsqueeze(2)).reshape(-1)  # Σ_v p_v z_v without a [N, V] product
        pieces.append(lse.squeeze(-1) - expected_z)
    return torch.cat(pieces).reshape(lead_shape)


def _topk_indices(values: Tensor, k: int, dim: int = -1) -> Tensor:
    """Indices of the ``k`` largest ``values`` along ``dim``, ties broken by the lower index.

    ``torch.topk`` leaves the order of tied values unspecified, and CPU kernel sets (AVX2, AVX-512,
    the generic one) do break exact ties differently: duplicate responses in a group give exactly
    equal per-token scores, so a top-k choice among them would make a run depend on the CPU. A stable
    descending sort has one defined answer.
    """
    return torch.sort(values, dim=dim, descending=True, stable=True).indices.narrow(dim, 0, int(k))
