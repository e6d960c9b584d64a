"""Token Hidden Reward (THR) and its predecessor NTHR: which tokens move the likelihood of correct answers.

Introduced in ``notebooks/07_token_hidden_reward.ipynb`` (planned).

Setting (NTHR, "On the Effect of Negative Gradient in Group Relative Deep Reinforcement
Optimization", arXiv 2505.18830; docs/formulas.md, HIGH): last-layer hidden states h_t ∈ R^d, an
unembedding W, π_t = softmax(W h_t). Updating W on token t with weight Â changes W by
η·Â·(e_{y_t} − π_t) h_tᵀ, so to first order the log-likelihood of the correct responses P moves by

.. math::
    \\Delta \\sum_{i\\in P}\\log\\pi(y_i) \\approx \\eta\\,\\hat A\\; \\underbrace{g_t^\\top M^+ h_t}_{s_t}, \\qquad
    g_t = e_{y_t} - \\pi_t, \\quad M^+ = \\sum_{i\\in P}\\sum_{k} g_{i,k}\\, h_{i,k}^\\top

because ⟨(e−π)hᵀ, (e'−π')h'ᵀ⟩_F = α·⟨h, h'⟩ with α = ⟨e_y − π, e_{y'} − π'⟩ (the "token prediction-
error similarity"). ``influence`` s_t is that factorised sum; computing M⁺ once per group costs
O(N·|V*|·d) instead of the O(N²·(|V*| + d)) of the pairwise form (see ``benchmarks/``).

- NTHR (HIGH): s⁻ for tokens of incorrect responses; tokens with s⁻ > τ have their negative
  advantage scaled by η = 2|0.5 − p| (p = pass rate of the group).
- τ = β · min_{i∈P} s̄⁺_i, s̄⁺_i = mean over the tokens of correct response i of s_t (β = 1).
- THR (Token Hidden Reward, arXiv 2510.03669) — **LOW confidence**: the paper's full text was not
  available; implemented as the reconstruction documented in docs/formulas.md,
  THR_t = Â_{j(t)} · s_t, and the reweighting Â_t ← Â·(1 + p·sign(THR_t)) where |THR_t| > τ
  (others keep Â, or get 0 in the "THR-only" variant). The formula lives in :func:`_thr_formula`
  only, so correcting it is a one-line change.

The vocabulary is restricted to V* = tokens that appear in the group's responses, probabilities not
renormalised (NTHR's efficient computation); ``restrict_vocab=False`` uses the full vocabulary,
which is what the exact finite-difference identity needs.

Conventions: ``hidden [B, T, d]`` (the states the logits at each position are computed from),
``logits [B, T, V]``, ``tokens [B, T]`` (the sampled token at each position), ``mask [B, T]``,
``group [B]``, ``correct [B]`` bool, ``adv [B]``. Results are ``[B, T]``, 0 off the mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from forklab import _checks
from forklab.ops import masked_mean

__all__ = [
    "influence_scores",
    "pairwise_influence_scores",
    "nthr_threshold",
    "token_hidden_reward",
    "thr_advantages",
    "nthr_advantages",
    "THRResult",
]


def _on_mask(name: str, x: Tensor, mask: Tensor) -> Tensor:
    """``[B, T, ...]`` with off-mask rows replaced by 0 (padding is ignored, whatever it holds)."""
    return torch.where(mask.reshape(mask.shape + (1,) * (x.dim() - 2)), x, torch.zeros((), dtype=x.dtype))


def _correct(correct, n: int) -> Tensor:
    correct = _checks.bool_mask("correct", correct)
    if correct.shape != (n,):
        raise ValueError(f"`correct` must have shape [{n}], got {list(correct.shape)}")
    return correct


def _validate(hidden, logits, tokens, mask, group, correct):
    hidden = _checks.as_tensor("hidden", hidden)
    if not hidden.is_floating_point():
        raise ValueError(f"`hidden` must be a floating tensor, got dtype {hidden.dtype}")
    logits = _checks.as_tensor("logits", logits)
    if not logits.is_floating_point():
        raise ValueError(f"`logits` must be a floating tensor, got dtype {logits.dtype}")
    mask = _checks.bool_mask("mask", mask)
    if hidden.dim() != 3:
        raise ValueError(f"`hidden` must have shape [B, T, d], got {list(hidden.shape)}")
    if logits.dim() != 3 or logits.shape[:2] != hidden.shape[:2]:
        raise ValueError(f"`logits` must have shape [B, T, V] with B, T of `hidden`, got {list(logits.shape)}")
    if mask.shape != hidden.shape[:2]:
        raise ValueError(f"`mask` must have shape {list(hidden.shape[:2])}, got {list(mask.shape)}")
    if logits.shape[-1] == 0:
        raise ValueError("`logits` has an empty vocabulary dimension")
    _checks.floating("hidden", hidden[mask])  # NaN/inf on the mask is an error, off it ignored
    _checks.logits("logits", logits[mask])
    hidden, logits = _on_mask("hidden", hidden, mask), _on_mask("logits", logits, mask)
    tokens = _checks.as_tensor("tokens", tokens)
    if tokens.shape != mask.shape or tokens.is_floating_point() or tokens.is_complex():
        raise ValueError(f"`tokens` must be an integer tensor of shape {list(mask.shape)}")
    if tokens[mask].numel() and (tokens[mask].min() < 0 or tokens[mask].max() >= logits.shape[-1]):
        raise ValueError(f"`tokens` must lie in [0, {logits.shape[-1]}) on the mask")
    tokens = torch.where(mask, tokens, torch.zeros((), dtype=tokens.dtype))
    group = _checks.group_ids("group", group, mask.shape[0])
    correct = _correct(correct, mask.shape[0])
    # log-normaliser once for every position, in the logits' own precision (fp32 for half inputs):
    # only the |V*| columns of the group are ever exponentiated, never a [B, T, V] float64 copy
    lse = torch.logsumexp(logits if logits.dtype in (torch.float32, torch.float64) else logits.float(), -1)
    return hidden.double(), (logits, lse), tokens.long(), mask, group, correct.bool()


def _group_tensors(hidden, logits_lse, tokens, mask, rows, restrict_vocab):
    """Flatten one group's valid tokens: h [N, d], g = e_y − π [N, |V*|], owner row [N], the group's mask."""
    logits, lse = logits_lse
    sub_mask = mask[rows]
    h = hidden[rows][sub_mask]
    y = tokens[rows][sub_mask]
    vocab = torch.unique(y) if restrict_vocab else torch.arange(logits.shape[-1])
    z = logits.index_select(-1, vocab)[rows][sub_mask].double()  # [N, |V*|]
    probs = torch.exp(z - lse[rows][sub_mask].double()[:, None])
    onehot = (y[:, None] == vocab[None, :]).double()
    g = onehot - probs
    owner = rows[:, None].expand_as(sub_mask)[sub_mask]
    return h, g, owner, sub_mask


def _scores_by_group(hidden, logits, tokens, mask, group, correct, restrict_vocab, score) -> Tensor:
    """Run ``score(h [N, d], g [N, |V*|], positive [N]) -> [N]`` on each group's valid tokens; ``[B, T]``."""
    hidden, logits, tokens, mask, group, correct = _validate(hidden, logits, tokens, mask, group, correct)
    out = torch.zeros(mask.shape, dtype=torch.float64)
    for gid in torch.unique(group):
        rows = torch.nonzero(group == gid).flatten()
        h, g, owner, sub_mask = _group_tensors(hidden, logits, tokens, mask, rows, restrict_vocab)
        positive = correct[owner]
        if not positive.any():
            continue  # no correct response: nothing to raise, influence 0
        block = torch.zeros(sub_mask.shape, dtype=torch.float64)
        block[sub_mask] = score(h, g, positive)
        out[rows] = block
    return torch.where(mask, out, torch.zeros((), dtype=torch.float64))


def _factorised(h: Tensor, g: Tensor, positive: Tensor) -> Tensor:
    m_plus = g[positive].T @ h[positive]  # [|V*|, d]
    return ((g @ m_plus) * h).sum(-1)  # row-wise g_tᵀ M⁺ h_t


def _pairwise(h: Tensor, g: Tensor, positive: Tensor) -> Tensor:
    alpha = g @ g[positive].T  # [N, N+] prediction-error similarity
    kernel = h @ h[positive].T  # [N, N+] hidden-state similarity
    return (alpha * kernel).sum(-1)


def influence_scores(hidden: Tensor, logits: Tensor, tokens: Tensor, mask: Tensor, group: Tensor, correct: Tensor,
                     restrict_vocab: bool = True) -> Tensor:
    """s_t = g_tᵀ M⁺ h_t for every valid token, with M⁺ = Σ_{correct tokens} g hᵀ of its group (factorised).

    Groups without a correct response get 0. Shapes: see the module docstring; returns ``[B, T]``
    float64. NTHR calls s of a negative token s⁻ (arXiv 2505.18830, HIGH).
    """
    return _scores_by_group(hidden, logits, tokens, mask, group, correct, restrict_vocab, _factorised)


def pairwise_influence_scores(hidden: Tensor, logits: Tensor, tokens: Tensor, mask: Tensor, group: Tensor,
                              correct: Tensor, restrict_vocab: bool = True) -> Tensor:
    """The same s_t computed pairwise: Σ_{i∈P,k} α_{(i,k),t} ⟨h_{i,k}, h_t⟩ (the definition; O(N²) memory).

    The reference the factorised :func:`influence_scores` is tested and benchmarked against.
    """
    return _scores_by_group(hidden, logits, tokens, mask, group, correct, restrict_vocab, _pairwise)


def nthr_threshold(influence: Tensor, mask: Tensor, group: Tensor, correct: Tensor, beta: float = 1.0) -> Tensor:
    """τ per group = β · min over correct responses of their mean token influence s̄⁺ (NTHR, HIGH).

    Returns ``[B]`` (each response gets its group's τ; +inf for groups with no correct response, so
    that nothing is selected there). β = 1 default (0 for DeepSeek-1.5B in the paper).
    """
    mask = _checks.bool_mask("mask", mask)
    influence = _checks.masked("influence", influence, mask)
    group = _checks.group_ids("group", group, mask.shape[0])
    correct = _correct(correct, mask.shape[0])
    beta = _checks.finite("beta", beta)
    mean_score = masked_mean(influence, mask, dim=1)
    tau = torch.full((mask.shape[0],), float("inf"), dtype=torch.float64)
    for gid in torch.unique(group):
        rows = group == gid
        pos = rows & correct
        if pos.any():
            tau[rows] = float(beta) * mean_score[pos].min().item()
    return tau


def _thr_formula(adv: Tensor, influence: Tensor) -> Tensor:
    """THR_t = Â_{j(t)} · s_t — the LOW-confidence reconstruction (docs/formulas.md). Change it here only."""
    return adv[:, None] * influence


@dataclass
class THRResult:
    """THR of every token and what it was computed from. All ``[B, T]`` except ``tau`` ``[B]``."""

    thr: Tensor
    influence: Tensor
    tau: Tensor


def token_hidden_reward(hidden: Tensor, logits: Tensor, tokens: Tensor, mask: Tensor, group: Tensor, correct: Tensor,
                        adv: Tensor, beta: float = 1.0, restrict_vocab: bool = True) -> THRResult:
    """Token Hidden Reward of every token of both signs (LOW: reconstruction, see module docstring).

    THR_t > 0: the update on token t raises the likelihood of the group's correct responses
    (exploitation); THR_t < 0: it lowers it (for a negative token that resembles correct ones, the
    "detrimental" token of NTHR). ``adv [B]``; returns :class:`THRResult`.
    """
    influence = influence_scores(hidden, logits, tokens, mask, group, correct, restrict_vocab)
    adv = _checks.floating("adv", adv).double()
    if adv.shape != (mask.shape[0],):
        raise ValueError(f"`adv` must have shape [{mask.shape[0]}], got {list(adv.shape)}")
    thr = torch.where(mask, _thr_formula(adv, influence), torch.zeros((), dtype=torch.float64))
    return THRResult(thr=thr, influence=influence, tau=nthr_threshold(influence, mask, group, correct, beta))


def thr_advantages(adv: Tensor, result: THRResult, mask: Tensor, p: float, only: bool = False) -> Tensor:
    """THR-guided per-token advantages: Â·(1 + p·sign(THR)) where |THR| > τ, else Â (or 0 if ``only``).

    p > 0 amplifies positive-THR tokens and damps negative ones (exploitation: greedy accuracy);
    p < 0 does the opposite (exploration: pass@k). LOW confidence (docs/formulas.md). Note that THR
    carries the advantage's scale while τ is built from influence scores without it, as documented.
    Returns ``[B, T]`` float64, 0 off the mask.
    """
    mask = _checks.bool_mask("mask", mask)
    adv = _checks.floating("adv", adv).double()
    if adv.shape != (mask.shape[0],):
        raise ValueError(f"`adv` must have shape [{mask.shape[0]}], got {list(adv.shape)}")
    if not isinstance(result, THRResult):
        raise ValueError(f"`result` must be a THRResult, got {type(result).__name__}")
    thr = _checks.masked("result", result.thr, mask)
    tau = _checks.floating("result", result.tau, allow_inf=True)
    if tau.shape != (mask.shape[0],):
        raise ValueError(f"`result`.tau must have shape [{mask.shape[0]}], got {list(tau.shape)}")
    p = _checks.finite("p", p)
    above = mask & (thr.abs() > tau[:, None])
    base = adv[:, None].expand(mask.shape)
    weighted = base * (1 + p * torch.sign(thr))
    out = torch.where(above, weighted, torch.zeros_like(base) if only else base)
    return torch.where(mask, out, torch.zeros((), dtype=torch.float64))


def nthr_advantages(adv: Tensor, influence: Tensor, tau: Tensor, mask: Tensor, correct: Tensor, pass_rate: Tensor,
                    eta: float | None = None) -> Tensor:
    """NTHR's modified advantage: negative tokens with s⁻ > τ get Â·η, η = 2|0.5 − p| by default (HIGH).

    ``pass_rate [B]`` is the group's share of correct responses (p); ``eta`` overrides η (the paper's
    ablations: p, 1 − p; 0 in the analysis experiments). Returns ``[B, T]``, 0 off the mask.
    """
    mask = _checks.bool_mask("mask", mask)
    n = mask.shape[0]
    adv = _checks.floating("adv", adv).double()
    influence = _checks.masked("influence", influence, mask).double()
    tau = _checks.floating("tau", tau, allow_inf=True).double()  # +inf: a group with no correct response
    correct = _correct(correct, n)
    p = _checks.floating("pass_rate", pass_rate).double()
    for name, x in (("adv", adv), ("tau", tau), ("pass_rate", p)):
        if x.shape != (n,):
            raise ValueError(f"`{name}` must have shape [{n}], got {list(x.shape)}")
    if ((p < 0) | (p > 1)).any():
        raise ValueError("`pass_rate` must lie in [0, 1]")
    scale = 2 * (0.5 - p).abs() if eta is None else torch.full_like(p, _checks.finite("eta", eta))
    selected = mask & ~correct[:, None] & (influence > tau[:, None])
    base = adv[:, None].expand(mask.shape)
    out = torch.where(selected, base * scale[:, None], base)
    return torch.where(mask, out, torch.zeros((), dtype=torch.float64))
