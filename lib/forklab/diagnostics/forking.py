"""Forking-token tools beyond the 80/20 mask: the bottom-80% complement, ARES's high-window-entropy tokens,
HAPO's per-token temperature, the SPINE/EARL entropy band, and the logit lens at chosen positions.

Introduced in ``notebooks/06_forking_tokens.ipynb``. The token entropy ``H [B, T]``, the top-ρ forking
mask and the window mean already live in :mod:`forklab.diagnostics.entropy` and
:func:`forklab.regularizers.entropy_top_mask`; this module composes them into the rules the papers
train or sample with. Conventions: ``entropy [B, T]`` float, ``mask [B, T]`` bool; statistics are
over the valid tokens of the tensor passed in (the papers use the batch).
"""

from __future__ import annotations

import torch
from torch import Tensor

from forklab import _checks
from forklab._hapo_entropy import hapo_normalized_entropy
from forklab.diagnostics.entropy import window_entropy
from forklab.ops import entropy_from_logits
from forklab.regularizers import entropy_top_mask

__all__ = ["entropy_bottom_mask", "high_window_entropy_mask", "hapo_token_temperature", "entropy_band_penalty",
           "lens_entropy"]


def _entropy_mask(entropy, mask) -> tuple[Tensor, Tensor]:
    mask = _checks.bool_mask("mask", mask)
    _checks.same_shape("entropy", _checks.as_tensor("entropy", entropy), "mask", mask)
    return _checks.masked("entropy", entropy, mask), mask


def entropy_bottom_mask(entropy: Tensor, mask: Tensor, top_ratio: float = 0.2) -> Tensor:
    """The complement of the forking mask: the valid tokens *below* the top-ρ entropy threshold.

    .. math:: g_t = m_t \\wedge \\neg\\,\\mathbb 1[H_t \\ge \\mathrm{quantile}_{1-\\rho}(H)]

    "Beyond the 80/20 Rule" (arXiv 2506.01939) trains on the bottom 80% (ρ = 0.2) as an ablation and
    reports that it hurts. Not in verl/TRL as an option (the paper's code keeps only the top mask).
    HIGH: the exact complement of :func:`forklab.regularizers.entropy_top_mask` (ties at the threshold
    go to the top side). ``entropy``, ``mask``: ``[B, T]``; returns ``[B, T]`` bool, a subset of ``mask``.
    """
    entropy, mask = _entropy_mask(entropy, mask)
    return mask & ~entropy_top_mask(entropy, mask, top_ratio)


def high_window_entropy_mask(entropy: Tensor, mask: Tensor, window: int = 8, top_ratio: float = 0.2) -> Tensor:
    """ARES's high-window-entropy (HWE) tokens: the top-ρ tokens by the forward window mean of H.

    .. math:: \\bar H_t = \\frac{1}{|W_t|}\\sum_{\\tau \\in W_t} H_\\tau,
              \\; W_t = \\{t, …, t+w-1\\} \\cap \\text{valid},
              \\qquad g_t = \\mathbb 1[\\bar H_t \\ge \\mathrm{quantile}_{1-\\rho}(\\bar H)]

    ARES ("Multimodal Adaptive Reasoning via Difficulty-Aware Token-Level Entropy Shaping", arXiv
    2510.08457) uses HWE tokens as exploration triggers because one token's entropy is noisy and a
    window's mean is not. MED: the window mean is from the abstract and a summary; the window size and
    the ρ used to call a window "high" are not in what we read (w = 8 and ρ = 0.2 here are our
    choices). Not in verl/TRL. ``[B, T] -> [B, T]`` bool.
    """
    entropy, mask = _entropy_mask(entropy, mask)
    return entropy_top_mask(window_entropy(entropy, mask, window), mask, top_ratio)


def hapo_token_temperature(entropy: Tensor, mask: Tensor, temperature: float = 1.0, tau: float = 0.05,
                           pivot: float = 0.8) -> Tensor:
    """HAPO's adaptive sampling temperature of every token, ``T_t = T (1 + τ clip(ĥ_t, −1, 1))``.

    ĥ_t ∈ [−1, 1] is HAPO's normalised log-entropy (:func:`forklab.surrogates.hapo_normalized_entropy`:
    0 at the ``pivot`` quantile of log H, +1 at the most uncertain token, −1 at the most certain).
    "From Uniform to Heterogeneous: Tailoring Policy Optimization to Every Token's Nature" (HAPO,
    arXiv 2509.16591; HIGH as implemented in its patched vLLM sampler, τ = 0.05, T = 1). HAPO takes the
    statistics from the *previous* step's entropies; here they come from the ``entropy`` passed in (the
    sampler hook :func:`forklab.lm.sampling.hapo_temperature_fn` takes them from an earlier batch).
    Not in verl/TRL. ``[B, T] -> [B, T]`` float64, 0 off the mask.
    """
    entropy, mask = _entropy_mask(entropy, mask)
    temperature = _checks.positive("temperature", temperature)
    tau = _checks.finite("tau", tau, 0.0, 1.0)
    h_hat = hapo_normalized_entropy(entropy, mask, pivot).clamp(-1, 1)
    return torch.where(mask, temperature * (1 + tau * h_hat), torch.zeros((), dtype=torch.float64))


def entropy_band_penalty(entropy: Tensor, gate: Tensor, low: float, high: float) -> Tensor:
    """The SPINE/EARL entropy band on gated (forking) tokens: push H up below ``low``, down above ``high``.

    .. math:: P = \\frac{1}{\\sum_t g_t}\\sum_t g_t\\,\\big[(H_{lo} - H_t)_+ + (H_t - H_{hi})_+\\big]

    Add ``λ · P`` to the policy loss (``entropy`` must carry gradient). The gate ``g`` is usually the
    top-ρ forking mask (:func:`forklab.regularizers.entropy_top_mask`), so the policy gradient and the band
    act on the same tokens. "SPINE: Token-Selective Test-Time Reinforcement Learning with Entropy-Band
    Regularization" (arXiv 2511.17938) and "EARL: Entropy-Aware RL Alignment of LLMs for Reliable RTL
    Code Generation" (arXiv 2511.12033). LOW: a reconstruction from the abstracts ("update only forking
    tokens", "keep their entropy in a band"); H_lo, H_hi, λ and the exact form are not published in what
    we read, and no code was found. Not in verl/TRL.

    ======  ==========================================
    entropy ``[B, T]`` float (with gradient to train)
    gate    ``[B, T]`` bool
    returns scalar; 0 for an empty gate
    ======  ==========================================
    """
    gate = _checks.bool_mask("gate", gate)
    _checks.same_shape("entropy", _checks.as_tensor("entropy", entropy), "gate", gate)
    entropy = _checks.masked("entropy", entropy, gate)
    low, high = _checks.finite("low", low, 0.0), _checks.finite("high", high, 0.0)
    if low > high:
        raise ValueError(f"`low` ({low}) must not exceed `high` ({high})")
    h = torch.where(gate, entropy, torch.full((), low, dtype=entropy.dtype))
    outside = (low - h).clamp(min=0) + (h - high).clamp(min=0)
    return (outside * gate).sum() / gate.sum().clamp(min=1)


def lens_entropy(hidden_states, norm, head, rows: Tensor, cols: Tensor, temperature: float = 1.0,
                 layers=None) -> Tensor:
    """Logit-lens entropy of the internal layer policies at chosen positions, ``[len(layers), N]``.

    .. math:: \\pi_\\ell(\\cdot \\mid t) = \\mathrm{softmax}\\big(W_U\\,\\mathrm{norm}(h_{\\ell,t}) / T\\big),
              \\quad H_{\\ell,t} = H(\\pi_\\ell(\\cdot\\mid t))

    "Bottom-up Policy Optimization: Your Language Model Policy Secretly Contains Internal Policies"
    (BuPO, arXiv 2512.19673; MED: the logit-lens reading of the paper's "internal layer policies", from
    its abstract; its per-layer residual *contributions* are not computed here). Not in verl/TRL.
    ``hidden_states``: the tuple a Hugging Face model returns with ``output_hidden_states=True``
    (``L + 1`` tensors ``[B, T, D]``: the embeddings, then every layer; the last one already normed);
    ``norm``: the final norm module; ``head``: the unembedding (``model.get_output_embeddings()``);
    ``rows``, ``cols``: ``[N]`` long, the positions (batch row, time); ``layers``: indices into
    ``hidden_states`` (default all). Only N positions go through the 49k-wide head, which is what makes
    the lens affordable on a CPU. :func:`forklab.diagnostics.entropy.layer_entropies` does all positions.
    The logits are upcast to float64 before the entropy; returns float64.
    """
    if not isinstance(hidden_states, (tuple, list)) or not hidden_states:
        raise ValueError("`hidden_states` must be the non-empty tuple of a model's hidden states")
    rows, cols = _checks.as_tensor("rows", rows).long(), _checks.as_tensor("cols", cols).long()
    if rows.dim() != 1 or rows.shape != cols.shape:
        raise ValueError(f"`rows` and `cols` must be 1-D of the same length, got {list(rows.shape)}, "
                         f"{list(cols.shape)}")
    batch, length = hidden_states[0].shape[:2]
    if rows.numel() and (rows.min() < 0 or rows.max() >= batch or cols.min() < 0 or cols.max() >= length):
        raise ValueError(f"`rows`/`cols` must index the [{batch}, {length}] positions of `hidden_states`")
    last = len(hidden_states) - 1
    layers = list(range(last + 1)) if layers is None else [int(i) for i in layers]
    if any(not 0 <= i <= last for i in layers):
        raise ValueError(f"`layers` must lie in [0, {last}], got {layers}")
    out = []
    with torch.no_grad():
        for i in layers:
            h = hidden_states[i][rows, cols]
            # float64 entropy: over a large vocabulary the fp32 LSE − E[z] loses ~1e-3 nats to cancellation
            out.append(entropy_from_logits(head(h if i == last else norm(h)).double(), temperature))
    return torch.stack(out)
