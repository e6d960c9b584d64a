"""Batched sampling from a causal LM: tokens, masks, per-token log-probs and entropies (+ hidden states).

Introduced in ``notebooks/00_tour.ipynb``.

Used by the tiny-LM experiments (``RLTrainer`` rollouts and evaluation, distillation) and by the
real-LM cells. One entry point, :func:`sample` (and :func:`greedy`), with two backends that return the
same :class:`Samples`:

- ``"fast"``: :mod:`forklab.lm._prefix_tree` running :class:`~forklab.lm._llama_runner.TinyLlamaRunner`,
  a lean pure-torch Llama forward pass with a static KV cache; each distinct prompt is prefilled once
  and the G samples of a prompt are decoded as a prefix tree. Greedy outputs equal ``generate``'s.
- ``"generate"``: :mod:`forklab.lm._generate_backend`, ``model.generate`` for any other model, with the
  same outputs computed from its raw logits.

``backend="auto"`` takes the fast path for every ``LlamaForCausalLM`` (SmolLM2 included) and
``generate`` for everything else. :func:`pass_at_k` scores the samples; :func:`hapo_temperature_fn`
is HAPO's per-token temperature hook.

Batch layout (left padding, :mod:`forklab.lm._layout`)::

    prompt_ids   [B, Lp]   PAD PAD  1   +   2   =          prompt_mask  F F T T T T
    tokens       [B, T]    3   ;   PAD PAD                mask         T T F F
    positions of the prompt = prompt_mask.cumsum(-1) - 1 (clamped at 0); the response continues from there

Every response starts at the same column ``Lp``. A row stops after emitting ``stop_token_id`` (the
stop token is part of the response, its mask is True) or after ``max_new_tokens``; finished rows keep
emitting ``pad_token_id`` with mask False. ``T`` is the number of decoding steps actually run: the
longest response, at most ``max_new_tokens``.

What the log-probs mean (a decision, the same for both backends):

- ``logp`` is ``log softmax(z / temperature)[y]``: the token's log-prob under the *base* policy at
  the sampling temperature, **without** top-p truncation and without the per-token temperature of
  ``token_temperature_fn``. It is exactly what a trainer re-scores with
  ``forklab.ops.logprobs_from_logits(logits, tokens, temperature)`` (verl and TRL both divide the
  logits by the rollout temperature and ignore top-p), so on-policy ratios start at 1.
- ``entropy`` is the entropy of ``softmax(z / temperature)`` from the raw logits, never from the
  top-p-filtered ones (those give a smaller entropy, or NaN with ``-inf`` logits).
- ``sample_logp`` is the log-prob under the distribution the token was *actually* drawn from
  (per-token temperature, then top-p, renormalised); 0 under greedy decoding (a point mass). It equals
  ``logp`` when ``top_p = 1`` and no ``token_temperature_fn`` is given; the difference is the
  behaviour-policy correction for importance weighting.

HAPO's adaptive temperature (arXiv 2509.16591) is
``τ_t = T · (1 + tau · clip(ĥ_t, −1, 1))`` with ĥ the normalised log-entropy of the token;
:func:`hapo_temperature_fn` builds that hook from the previous step's entropy statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from forklab import _checks
from forklab._hapo_entropy import hapo_entropy_stats

# ``x as x``: internals that lived here before the split, still importable from here (tests, benchmarks).
# To patch the decoder's constants (``_COMPACT_FRACTION``, ...) patch ``forklab.lm._prefix_tree`` itself.
from forklab.lm._generate_backend import _sample_generate
from forklab.lm._layout import _response_mask as _response_mask
from forklab.lm._layout import position_ids_from_mask
from forklab.lm._llama_runner import _STATIC_ROPE as _STATIC_ROPE
from forklab.lm._llama_runner import TinyLlamaRunner, _is_fast_supported
from forklab.lm._prefix_tree import _decode_fast as _decode_fast
from forklab.lm._prefix_tree import _sample_fast
from forklab.lm._prefix_tree import _unique_prompts as _unique_prompts
from forklab.lm._token_choice import TemperatureFn, _Chooser
from forklab.lm._token_choice import _check_temperatures as _check_temperatures
from forklab.lm._token_choice import _draw as _draw
from forklab.lm._token_choice import _top_p_filter as _top_p_filter

__all__ = [
    "Samples",
    "TinyLlamaRunner",
    "sample",
    "greedy",
    "pass_at_k",
    "position_ids_from_mask",
    "hapo_temperature_fn",
    "entropy_stats",
]

# ---------------------------------------------------------------------------------------------- outputs
@dataclass
class Samples:
    """A batch of sampled responses and their per-token statistics.

    ============  ==============================================================================
    field         shape / meaning
    ============  ==============================================================================
    prompt_ids    ``[B, Lp]`` long, left-padded prompts (as given)
    prompt_mask   ``[B, Lp]`` bool, True on real prompt tokens
    tokens        ``[B, T]`` long, response tokens; PAD after a row stopped
    mask          ``[B, T]`` bool, True on response tokens (the stop token included)
    logp          ``[B, T]`` float32 (float64 for a float64 model), log softmax(z / temperature)[token]
                  (no top-p); 0 off the mask
    entropy       ``[B, T]`` same dtype, entropy of softmax(z / temperature), raw logits; 0 off the mask
    sample_logp   ``[B, T]`` same dtype, log-prob under the distribution actually sampled; 0 off the mask
    temperatures  ``[B, T]`` float32, the temperature each token was drawn at; 0 off the mask
    lengths       ``[B]`` long, number of response tokens (``mask.sum(1)``)
    hidden        ``[B, T, d]`` last-layer hidden state (after the final norm) that produced each
                  token's logits; 0 off the mask; ``None`` unless ``return_hidden=True``
    ============  ==============================================================================
    """

    prompt_ids: Tensor
    prompt_mask: Tensor
    tokens: Tensor
    mask: Tensor
    logp: Tensor
    entropy: Tensor
    sample_logp: Tensor
    temperatures: Tensor
    lengths: Tensor
    hidden: Tensor | None = None

    @property
    def sequences(self) -> Tensor:
        """``[B, Lp + T]`` prompt and response ids side by side (the input of a teacher-forced pass)."""
        return torch.cat([self.prompt_ids, self.tokens], dim=1)

    @property
    def attention_mask(self) -> Tensor:
        """``[B, Lp + T]`` bool, True on real prompt and response tokens."""
        return torch.cat([self.prompt_mask, self.mask], dim=1)

    @property
    def position_ids(self) -> Tensor:
        """``[B, Lp + T]`` the positions the tokens were sampled at (see :func:`position_ids_from_mask`)."""
        return position_ids_from_mask(self.attention_mask)


# ---------------------------------------------------------------------------------------------- public API
def _check_prompt(prompt_ids, prompt_mask, vocab_size: int | None) -> tuple[Tensor, Tensor]:
    ids = _checks.as_tensor("prompt_ids", prompt_ids)
    if ids.is_floating_point() or ids.dtype == torch.bool or ids.is_complex():
        raise ValueError(f"`prompt_ids` must be an integer tensor, got dtype {ids.dtype}")
    if ids.dim() != 2 or ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(f"`prompt_ids` must have shape [B, Lp] with B, Lp >= 1, got {list(ids.shape)}")
    if vocab_size is not None and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"`prompt_ids` must lie in [0, {vocab_size}), got ids in [{int(ids.min())}, {int(ids.max())}]")
    mask = _checks.bool_mask("prompt_mask", prompt_mask)
    _checks.same_shape("prompt_ids", ids, "prompt_mask", mask)
    if not mask.any(1).all():
        raise ValueError(f"`prompt_mask` has empty rows: {torch.nonzero(~mask.any(1)).flatten().tolist()}")
    if (mask[:, 1:] < mask[:, :-1]).any():
        raise ValueError("`prompt_mask` must be left-padded (within a row, False only before the first True)")
    return ids.long(), mask


def _token_id(name: str, value, vocab_size: int | None, optional: bool) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or int(value) != value or value < 0 or (vocab_size is not None and value >= vocab_size):
        raise ValueError(f"`{name}` must be a token id in [0, {vocab_size}), got {value!r}")
    return int(value)


@torch.no_grad()
def sample(
    model,
    prompt_ids: Tensor,
    prompt_mask: Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    greedy: bool = False,
    stop_token_id: int | None = None,
    pad_token_id: int = 0,
    generator: torch.Generator | None = None,
    token_temperature_fn: TemperatureFn | None = None,
    return_hidden: bool = False,
    backend: str = "auto",
) -> Samples:
    """Sample (or greedily decode) ``max_new_tokens`` at most for every left-padded prompt of a batch.

    ====================  ========================================================================
    argument              meaning
    ====================  ========================================================================
    prompt_ids            ``[B, Lp]`` long, left-padded
    prompt_mask           ``[B, Lp]`` bool, True on real tokens; every row non-empty
    temperature           > 0; sampling temperature, and the temperature of ``logp`` / ``entropy``
    top_p                 in (0, 1]; nucleus sampling (1 = off)
    greedy                argmax of the raw logits (``top_p`` and ``token_temperature_fn`` are ignored;
                          ``logp``/``entropy`` are still taken at ``temperature``)
    stop_token_id         a row stops after emitting it (e.g. the id of ``;``); None = never
    generator             ``torch.Generator`` for reproducible samples (same seed → same samples)
    token_temperature_fn  ``f(logits [B, V], entropy [B]) -> [B] or float``: the per-row temperature
                          of this step (HAPO), from the raw logits and the entropy at ``temperature``
    return_hidden         also return the last-layer hidden states (after the final norm)
    backend               ``"auto"``, ``"fast"`` (Llama only) or ``"generate"``
    ====================  ========================================================================

    Returns :class:`Samples` (see the module docstring for what ``logp``, ``entropy`` and
    ``sample_logp`` mean). Runs under ``torch.no_grad``; deterministic given ``generator`` (on the
    ``generate`` backend the global RNG is seeded from it inside ``fork_rng``; on the fast backend a CPU
    ``generator`` with a model on another device seeds a generator there). Both backends give
    identical greedy outputs; sampled outputs differ between them (different random streams).

    Raises ``ValueError`` naming the argument on an empty batch, mismatched or non-left-padded
    masks, ids outside the vocabulary, ``temperature <= 0``, ``top_p`` outside (0, 1],
    ``max_new_tokens < 1`` or past the model's positions (prompt + ``max_new_tokens`` >
    ``config.max_position_embeddings``), or an unknown backend.
    """
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    ids, mask = _check_prompt(prompt_ids, prompt_mask, vocab)
    if isinstance(max_new_tokens, bool) or int(max_new_tokens) != max_new_tokens or max_new_tokens < 1:
        raise ValueError(f"`max_new_tokens` must be a positive integer, got {max_new_tokens!r}")
    max_new_tokens = int(max_new_tokens)
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    longest = int(mask.sum(1).max()) if mask.numel() else 0
    if isinstance(limit, int) and longest + max_new_tokens > limit:
        raise ValueError(f"`max_new_tokens` {max_new_tokens} + the longest prompt ({longest} tokens) exceeds the "
                         f"model's {limit} positions (max_position_embeddings)")
    temperature = _checks.positive("temperature", temperature)
    top_p = float(top_p)
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"`top_p` must lie in (0, 1], got {top_p}")
    stop = _token_id("stop_token_id", stop_token_id, vocab, optional=True)
    pad = _token_id("pad_token_id", pad_token_id, vocab, optional=False)
    if token_temperature_fn is not None and not callable(token_temperature_fn):
        raise ValueError(f"`token_temperature_fn` must be callable or None, got {type(token_temperature_fn).__name__}")
    _checks.choice("backend", backend, {"auto", "fast", "generate"})
    fast_ok = _is_fast_supported(model)
    if backend == "fast" and not fast_ok:
        raise ValueError(f"`backend`='fast' needs a LlamaForCausalLM with a position-only rope, "
                         f"got {type(model).__name__}")
    use_fast = backend == "fast" or (backend == "auto" and fast_ok)
    device = next(model.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    if use_fast and not greedy and generator is not None and generator.device.type != device.type:
        # the draws on the logits' device need a generator there: derive one, seeded from `generator`
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        generator = torch.Generator(device).manual_seed(seed)
    chooser = _Chooser(temperature, top_p, bool(greedy), token_temperature_fn, generator)
    run = _sample_fast if use_fast else _sample_generate
    out = run(model, ids, mask, max_new_tokens, chooser, stop, pad, return_hidden)
    return Samples(prompt_ids=ids, prompt_mask=mask, lengths=out["mask"].sum(1), **out)


def greedy(model, prompt_ids: Tensor, prompt_mask: Tensor, max_new_tokens: int, **kwargs) -> Samples:
    """Greedy decoding: :func:`sample` with ``greedy=True`` (``logp``/``entropy`` still at ``temperature``)."""
    return sample(model, prompt_ids, prompt_mask, max_new_tokens, greedy=True, **kwargs)


# ---------------------------------------------------------------------------------------------- evaluation
def pass_at_k(num_samples, num_correct, k: int) -> Tensor:
    """Unbiased pass@k from n samples with c correct, per prompt (Chen et al. 2021, arXiv 2107.03374).

    .. math:: \\text{pass@}k = 1 - \\binom{n - c}{k} \\Big/ \\binom{n}{k}

    ============  ==========================================
    argument      shape
    ============  ==========================================
    num_samples   ``[P]`` integers n ≥ k (or a scalar)
    num_correct   ``[P]`` integers 0 ≤ c ≤ n
    returns       ``[P]`` float64
    ============  ==========================================

    The probability that a random k-subset of the n samples holds at least one correct one; it is 1
    when ``n − c < k``. Computed with log-gamma (no overflow for large n). For the *exact* pass@k of
    a known success probability see ``forklab.envs.bandit.pass_at_k``.
    """
    n = _checks.as_tensor("num_samples", num_samples)
    c = _checks.as_tensor("num_correct", num_correct)
    for name, x in (("num_samples", n), ("num_correct", c)):
        if x.is_floating_point() and not torch.equal(x, x.round()):
            raise ValueError(f"`{name}` must hold integers")
    n, c = torch.broadcast_tensors(n.double(), c.double())
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"`k` must be a positive integer, got {k!r}")
    if (c < 0).any() or (c > n).any():
        raise ValueError("`num_correct` must lie in [0, num_samples]")
    if (n < k).any():
        raise ValueError(f"`num_samples` must be >= k = {k} for every prompt")
    wrong = n - c
    safe = wrong >= k
    w = torch.where(safe, wrong, torch.full_like(wrong, float(k)))
    log_ratio = torch.lgamma(w + 1) - torch.lgamma(w - k + 1) - torch.lgamma(n + 1) + torch.lgamma(n - k + 1)
    return torch.where(safe, 1 - torch.exp(log_ratio), torch.ones_like(n))


# ---------------------------------------------------------------------------------------------- HAPO hook
#: HAPO's batch statistics of log-entropy (pivot, spread, side scales) for :func:`hapo_temperature_fn`.
entropy_stats = hapo_entropy_stats


def hapo_temperature_fn(temperature: float, stats: dict[str, float], tau: float = 0.05) -> TemperatureFn:
    """HAPO's Adaptive Temperature Sampling as a ``token_temperature_fn`` (arXiv 2509.16591).

    .. math:: \\tau_t = T\\,(1 + \\mathrm{tau}\\cdot\\mathrm{clip}(\\hat h_t, -1, 1)),\\quad
              \\hat h_t = \\frac{\\log H_t - m}{\\sigma\\, s_\\pm}

    with ``stats`` from :func:`entropy_stats` of the *previous* step's entropies (as in the HAPO repo,
    where they travel in ``meta_info['norm_entropys']``) and ``H_t`` the entropy at ``temperature``.
    High-entropy tokens are sampled hotter, low-entropy ones colder. Pass the same ``temperature``
    to :func:`sample`.
    """
    temperature = _checks.positive("temperature", temperature)
    tau = _checks.non_negative("tau", tau)
    missing = {"m", "sigma", "scale_pos", "scale_neg"} - set(stats)
    if missing:
        raise ValueError(f"`stats` lacks {sorted(missing)}; build it with entropy_stats()")
    m, sigma = stats["m"], stats["sigma"]
    scale_pos, scale_neg = stats["scale_pos"], stats["scale_neg"]

    def fn(logits: Tensor, entropy: Tensor) -> Tensor:
        h = (entropy.double().clamp(min=1e-8).log() - m) / sigma
        h_hat = torch.where(h > 0, h / scale_pos, h / scale_neg).clamp(-1, 1)
        return (temperature * (1 + tau * h_hat)).float()

    return fn


