"""Token-entropy diagnostics: distributions, forking tokens, window entropy, and entropy per layer.

Introduced in ``notebooks/06_forking_tokens.ipynb`` (planned).

Token entropy H_t = −Σ_v p_t(v) log p_t(v) of the policy at each generated position (computed from
raw, temperature-scaled logits with :func:`forklab.ops.entropy_from_logits`). "Beyond the 80/20
Rule" (arXiv 2506.01939, docs/formulas.md, HIGH) found, for Qwen3-8B on maths chains of thought, that
more than half of all tokens have H < 0.07 and the 80th percentile is 0.672: the few tokens above
it are *forking tokens* ("wait", "however", "thus") where the reasoning branches.

Conventions: ``entropy [B, T]`` float, ``mask [B, T]`` bool; statistics are over valid tokens.
Padding (forklab's one rule, docs/reliability.md): entropies off the mask are ignored, NaN and ±inf
included; NaN or ±inf on the mask raises ``ValueError``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import pandas as pd
import torch
from torch import Tensor

from forklab import _checks
from forklab.ops import entropy_from_logits, masked_sum
from forklab.regularizers import entropy_top_mask

__all__ = [
    "PAPER_P80",
    "PAPER_LOW",
    "entropy_stats",
    "per_sequence_entropy",
    "per_position_entropy",
    "forking_tokens",
    "window_entropy",
    "layer_entropies",
]

#: The 80/20 paper's 80th percentile of token entropy (Qwen3-8B, maths CoT) and its "near zero" mark.
PAPER_P80 = 0.672
PAPER_LOW = 0.07


def _inputs(entropy, mask) -> tuple[Tensor, Tensor]:
    mask = _checks.bool_mask("mask", mask)
    entropy = _checks.masked("entropy", entropy, mask)
    if not mask.any():
        raise ValueError("`mask` is empty: no token entropies to summarise")
    return entropy.double(), mask


def entropy_stats(entropy: Tensor, mask: Tensor, threshold: float = PAPER_P80, low: float = PAPER_LOW,
                  percentiles: Sequence[float] = (50, 80, 90, 95, 99)) -> dict[str, float]:
    """Summary of the token-entropy distribution over valid tokens.

    Keys: ``tokens``, ``mean``, ``p50``/``p80``/… (linear-interpolated percentiles),
    ``share_above`` (H > ``threshold``, default the paper's 0.672) and ``share_below_low``
    (H < ``low``, default 0.07). ``entropy``, ``mask``: ``[B, T]``.
    """
    entropy, mask = _inputs(entropy, mask)
    threshold, low = _checks.finite("threshold", threshold), _checks.finite("low", low)
    if isinstance(percentiles, str) or not hasattr(percentiles, "__iter__"):
        raise ValueError(f"`percentiles` must be a sequence of numbers in [0, 100], got {percentiles!r}")
    percentiles = [_checks.finite("percentiles", p, 0.0, 100.0) for p in percentiles]
    valid = entropy[mask]
    stats = {"tokens": float(valid.numel()), "mean": float(valid.mean())}
    qs = torch.tensor([p / 100 for p in percentiles], dtype=torch.float64)
    for p, value in zip(percentiles, torch.quantile(valid, qs).tolist(), strict=True):
        stats[f"p{p:g}"] = value
    stats["share_above"] = float((valid > threshold).double().mean())
    stats["share_below_low"] = float((valid < low).double().mean())
    return stats


def per_sequence_entropy(entropy: Tensor, mask: Tensor) -> pd.DataFrame:
    """Mean and median token entropy of each response (rows with no valid token get NaN)."""
    entropy, mask = _inputs(entropy, mask)
    rows = []
    for i in range(mask.shape[0]):
        v = entropy[i][mask[i]]
        rows.append({"length": int(v.numel()), "mean": float(v.mean()) if v.numel() else float("nan"),
                     "median": float(v.median()) if v.numel() else float("nan")})
    return pd.DataFrame(rows)


def per_position_entropy(entropy: Tensor, mask: Tensor) -> pd.DataFrame:
    """Mean token entropy at each response position t, with the number of responses that reach t."""
    entropy, mask = _inputs(entropy, mask)
    counts = mask.sum(0)
    sums = masked_sum(entropy, mask, dim=0)
    keep = counts > 0
    return pd.DataFrame({"position": torch.nonzero(keep).flatten().numpy(),
                         "mean": (sums[keep] / counts[keep]).numpy(), "count": counts[keep].numpy()})


def forking_tokens(entropy: Tensor, mask: Tensor, tokens: Tensor, decode: Callable[[int], str],
                   top_ratio: float = 0.2, top: int = 20) -> pd.DataFrame:
    """The most frequent tokens among the top-ρ by entropy (ties kept, as in :func:`entropy_top_mask`).

    Returns a DataFrame sorted by count with ``text`` (``decode(token_id)``), ``count``, ``mean_entropy``
    and ``share_of_forks``, at most ``top`` rows. ``tokens [B, T]`` are the generated token ids.
    """
    entropy, mask = _inputs(entropy, mask)
    tokens = _checks.as_tensor("tokens", tokens)
    top = _checks.integer("top", top, 0)
    if tokens.is_floating_point() or tokens.is_complex():
        raise ValueError(f"`tokens` must be integer ids, got dtype {tokens.dtype}")
    if tokens.shape != mask.shape:
        raise ValueError(f"`tokens` must have shape {list(mask.shape)}, got {list(tokens.shape)}")
    forks = entropy_top_mask(entropy, mask, top_ratio)
    ids = tokens[forks].tolist()
    ents = entropy[forks].tolist()
    counter = Counter(ids)
    total_ent: dict[int, float] = {}
    for i, h in zip(ids, ents, strict=True):
        total_ent[i] = total_ent.get(i, 0.0) + h
    rows = [{"token_id": i, "text": decode(i), "count": c, "mean_entropy": total_ent[i] / c,
             "share_of_forks": c / max(len(ids), 1)} for i, c in counter.most_common(top)]
    return pd.DataFrame(rows, columns=["token_id", "text", "count", "mean_entropy", "share_of_forks"])


def window_entropy(entropy: Tensor, mask: Tensor, window: int = 8, direction: str = "forward") -> Tensor:
    """Sliding-window mean token entropy inside each response (ARES's window entropy).

    .. math:: \\bar H_{t:w} = \\frac{1}{w}\\sum_{\\tau=t}^{t+w-1} H_\\tau

    ARES ("Multimodal Adaptive Reasoning via Difficulty-Aware Token-Level Entropy Shaping", arXiv
    2510.08457; MED, from a secondary summary of the paper) uses the forward window above: high
    window-entropy tokens open a stretch of sustained uncertainty, a more reliable signal of a
    reasoning-critical moment than one noisy token. Near the end of a response the window is cut
    short and the mean is over the valid tokens it still covers. ``direction="trailing"`` averages
    the last ``window`` tokens up to t instead. ``[B, T] -> [B, T]``, 0 off the mask.
    """
    entropy, mask = _inputs(entropy, mask)
    _checks.choice("direction", direction, {"forward", "trailing"})
    window = _checks.integer("window", window, 1)
    h = torch.where(mask, entropy, torch.zeros((), dtype=entropy.dtype))
    csum = torch.nn.functional.pad(h.cumsum(1), (1, 0))
    ccount = torch.nn.functional.pad(mask.double().cumsum(1), (1, 0))
    t = torch.arange(mask.shape[1])
    if direction == "forward":
        lo, hi = t, (t + int(window)).clamp(max=mask.shape[1])
    else:
        lo, hi = (t - int(window) + 1).clamp(min=0), t + 1
    total = csum[:, hi] - csum[:, lo]
    count = ccount[:, hi] - ccount[:, lo]
    return torch.where(mask, total / count.clamp(min=1), torch.zeros((), dtype=entropy.dtype))


def _final_norm(model):
    for path in ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm", "model.final_layernorm"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return obj
    raise ValueError(f"`model` ({type(model).__name__}): cannot find its final norm for the logit lens")


@torch.no_grad()
def layer_entropies(model, input_ids: Tensor, attention_mask: Tensor | None = None, temperature: float = 1.0,
                    chunk_size: int | None = 256) -> Tensor:
    """Entropy of the "internal policy" of every layer by the logit lens, ``[L + 1, B, T]``.

    .. math:: \\pi_\\ell = \\mathrm{softmax}\\big(W_U\\, \\mathrm{norm}(h_\\ell) / T\\big),
              \\quad H_\\ell = H(\\pi_\\ell)

    Row 0 is the embedding layer, row L the model's own output distribution ("Bottom-up Policy
    Optimization: Your Language Model Policy Secretly Contains Internal Policies", arXiv 2512.19673,
    which finds entropy falling from early to top layers). Works for Hugging Face causal LMs whose
    final norm is at ``model.norm`` / ``transformer.ln_f`` / ``gpt_neox.final_layer_norm``; as in those models,
    the last returned hidden state already has the final norm applied, so it is not normed twice.
    The last row equals the entropy of the model's logits (tested).
    """
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    hidden = out.hidden_states
    norm = _final_norm(model)
    head = model.get_output_embeddings()
    rows = []
    for i, h in enumerate(hidden):
        normed = h if i == len(hidden) - 1 else norm(h)
        rows.append(entropy_from_logits(head(normed), temperature, chunk_size))
    return torch.stack(rows)
