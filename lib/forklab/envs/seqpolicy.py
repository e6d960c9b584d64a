"""The sequence-policy world: an autoregressive policy small enough to enumerate every response.

Introduced in ``notebooks/00_tour.ipynb``; exact computations in ``02_loss_aggregation.ipynb`` and
``03_ratios_and_clipping.ipynb``.

The middle scale of README.md ("Four scales"): real token-by-token generation, with variable lengths, an
END token and shared parameters, yet so few possible responses that every objective and gradient
is an exact finite sum. Used for loss-aggregation and length effects (per-token gradient weights,
sign-length coupling), Token Hidden Reward ground truth (finite differences through the last hidden
state ``h`` and the unembedding ``W``), and staleness / off-policy experiments.

World. ``V = vocab_size`` ordinary tokens ``0..V-1`` plus ``END = V``; ``A = V + 1`` actions. A
prompt is an integer id ``x ∈ [0, P)`` that conditions the policy. A response ``y = (y_0, …, y_{n-1})``
is ``n - 1`` ordinary tokens followed by END, ``1 ≤ n ≤ L = max_len`` (its length counts END). At the
last position ``L - 1`` only END is allowed (probability 1, no parameters involved), so every
response terminates and the probabilities over the enumeration sum to exactly 1:

.. math:: \\pi_\\theta(y \\mid x) = \\prod_{t<n} \\pi_\\theta(y_t \\mid x, y_{<t}), \\qquad
          N = \\sum_{k=0}^{L-1} V^k \\text{ responses} \\quad (V=3, L=4: 1+3+9+27 = 40)

Tensors. A batch of responses is ``tokens [B, T]`` long (``T ≤ L``; padded with END after the first
END), ``mask [B, T]`` bool (True on response tokens, END included) and ``prompt_ids [B]`` long. The
enumeration and :meth:`SequencePolicy.sample` use ``T = L``. Responses are ordered by length, then
lexicographically; the same order indexes the tabular policy's states (a prefix ``s`` of length
``k ≤ L - 2`` has the index of the response ``s + END``).

Exact quantities (autograd through the enumerated sum, float64 throughout, ~1e-12):

.. math:: J(\\theta) = \\frac{1}{P}\\sum_x \\sum_y \\pi_\\theta(y\\mid x) R(x,y), \\qquad
          \\nabla J = \\frac{1}{P}\\sum_x \\sum_y \\pi_\\theta(y\\mid x) R(x,y)\\,\\nabla\\log\\pi_\\theta(y\\mid x)

Sampling, batched ancestral (one forward per position, T ≤ 6)::

    tokens = [END] * L for each of the B·G rows
    for t in 0..L-1:
        logp_t = log_softmax(logits(x, tokens[:, :t]))      # only END allowed at t = L-1
        y_t ~ Categorical(exp(logp_t)) for rows not yet ended; ended rows keep END (mask False)
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from forklab import _checks

__all__ = [
    "MAX_LEN_LIMIT",
    "Responses",
    "Rollout",
    "num_responses",
    "enumerate_responses",
    "response_mask",
    "response_index",
    "SequencePolicy",
    "TabularPolicy",
    "SharedPolicy",
    "Task",
    "default_task",
    "response_logprobs",
    "response_probs",
    "expected_reward",
    "exact_gradient",
    "length_gap",
]

MAX_LEN_LIMIT = 6  # 364 responses for V = 3; enumeration stays instant
VOCAB_LIMIT = 8
DTYPE = torch.float64


# ----- the response space -------------------------------------------------------------------------
_integer = _checks.integer


def _check_space(vocab_size: int, max_len: int) -> tuple[int, int]:
    return _integer("vocab_size", vocab_size, 1, VOCAB_LIMIT), _integer("max_len", max_len, 2, MAX_LEN_LIMIT)


def num_responses(vocab_size: int = 3, max_len: int = 4) -> int:
    """N = Σ_{k<L} V^k: every response of 0..L-1 ordinary tokens followed by END."""
    v, L = _check_space(vocab_size, max_len)
    return sum(v**k for k in range(L))


class Responses(NamedTuple):
    """Every possible response, ordered by length then lexicographically; ``T = max_len``."""

    tokens: Tensor  # [N, T] long, END-padded
    mask: Tensor  # [N, T] bool, True on response tokens (END included)
    lengths: Tensor  # [N] long, counts END


@functools.lru_cache(maxsize=32)
def _enumeration(vocab_size: int, max_len: int) -> Responses:
    end = vocab_size
    rows = [list(body) + [end] * (max_len - k) for k in range(max_len)
            for body in itertools.product(range(vocab_size), repeat=k)]
    tokens = torch.tensor(rows, dtype=torch.long)
    lengths = torch.tensor([k + 1 for k in range(max_len) for _ in range(vocab_size**k)], dtype=torch.long)
    mask = torch.arange(max_len)[None, :] < lengths[:, None]
    return Responses(tokens, mask, lengths)


def enumerate_responses(vocab_size: int = 3, max_len: int = 4) -> Responses:
    """All N responses as padded tensors (fresh copies: safe to modify).

    ============  ===============================================
    field         shape
    ============  ===============================================
    tokens        ``[N, max_len]`` long, padded with END (= V)
    mask          ``[N, max_len]`` bool, True on response tokens
    lengths       ``[N]`` long, 1..max_len, END counted
    ============  ===============================================
    """
    cached = _enumeration(*_check_space(vocab_size, max_len))
    return Responses(*(x.clone() for x in cached))


def _check_tokens(tokens, vocab_size: int, max_len: int, batch: int | None = None) -> Tensor:
    tokens = _checks.as_tensor("tokens", tokens)
    if tokens.is_floating_point() or tokens.dtype == torch.bool or tokens.is_complex():
        raise ValueError(f"`tokens` must be an integer tensor of token ids, got dtype {tokens.dtype}")
    if tokens.dim() != 2 or not 1 <= tokens.shape[1] <= max_len:
        raise ValueError(f"`tokens` must have shape [B, T] with 1 <= T <= max_len = {max_len}, "
                         f"got {list(tokens.shape)}")
    if batch is not None and tokens.shape[0] != batch:
        raise ValueError(f"`tokens` must have {batch} rows (one per prompt id), got {tokens.shape[0]}")
    if tokens.numel() and (tokens.min() < 0 or tokens.max() > vocab_size):
        raise ValueError(f"`tokens` must lie in [0, {vocab_size}] (END = {vocab_size}), "
                         f"got ids in [{int(tokens.min())}, {int(tokens.max())}]")
    return tokens.long()


def _check_prompt_ids(prompt_ids, num_prompts: int) -> Tensor:
    prompt_ids = _checks.as_tensor("prompt_ids", prompt_ids)
    if prompt_ids.is_floating_point() or prompt_ids.dtype == torch.bool or prompt_ids.is_complex():
        raise ValueError(f"`prompt_ids` must be an integer tensor, got dtype {prompt_ids.dtype}")
    if prompt_ids.dim() != 1:
        raise ValueError(f"`prompt_ids` must have shape [B], got {list(prompt_ids.shape)}")
    if prompt_ids.numel() and (prompt_ids.min() < 0 or prompt_ids.max() >= num_prompts):
        raise ValueError(f"`prompt_ids` must lie in [0, {num_prompts}), "
                         f"got ids in [{int(prompt_ids.min())}, {int(prompt_ids.max())}]")
    return prompt_ids.long()


def response_mask(tokens, vocab_size: int = 3, max_len: int = 4) -> Tensor:
    """True on every position up to and including the first END, ``[B, T]`` bool."""
    v, L = _check_space(vocab_size, max_len)
    tokens = _check_tokens(tokens, v, L)
    ended_before = torch.cumsum((tokens == v).long(), 1) - (tokens == v).long()  # ENDs strictly before t
    return ended_before == 0


def _check_mask(mask, tokens: Tensor, vocab_size: int, max_len: int, complete: bool) -> Tensor:
    """A mask inside the response positions; ``complete`` demands exactly the full responses."""
    mask = _checks.bool_mask("mask", mask)
    _checks.same_shape("tokens", tokens, "mask", mask)
    if not mask.any():
        raise ValueError("`mask` is empty: no response token selected")
    full = response_mask(tokens, vocab_size, max_len)
    if (mask & ~full).any():
        raise ValueError("`mask` is True after a response's END token (padding positions have no policy)")
    if complete:
        ended = (mask & (tokens == vocab_size)).any(1)
        if not torch.equal(mask, full) or not ended.all():
            raise ValueError("`mask` must mark complete responses: every position up to and including END")
    if tokens.shape[1] == max_len and (mask[:, -1] & (tokens[:, -1] != vocab_size)).any():
        raise ValueError(f"`tokens` has an ordinary token at position max_len - 1 = {max_len - 1}, where only "
                         f"END ({vocab_size}) is allowed (probability 0)")
    return mask


def response_index(tokens, mask, vocab_size: int = 3, max_len: int = 4) -> Tensor:
    """Position of each complete response in :func:`enumerate_responses`, ``[B]`` long.

    A response of k ordinary tokens ``y_0..y_{k-1}`` sits at Σ_{i<k} V^i + Σ_j y_j V^{k-1-j}.
    """
    v, L = _check_space(vocab_size, max_len)
    tokens = _check_tokens(tokens, v, L)
    mask = _check_mask(mask, tokens, v, L, complete=True)
    k = mask.sum(1) - 1  # ordinary tokens before END
    code = torch.zeros(tokens.shape[0], dtype=torch.long)
    for j in range(tokens.shape[1]):
        code = torch.where(j < k, code * v + tokens[:, j], code)
    offsets = torch.tensor([sum(v**i for i in range(n)) for n in range(L + 1)], dtype=torch.long)
    return offsets[k] + code


class Rollout(NamedTuple):
    """Sampled responses, ``B·G`` rows (group_size consecutive rows per requested prompt)."""

    prompt_ids: Tensor  # [B·G] long, the prompt each response answers
    group: Tensor  # [B·G] long, index of the request in `prompt_ids` (= prompt id if each is asked once)
    tokens: Tensor  # [B·G, L] long, END-padded
    mask: Tensor  # [B·G, L] bool
    logp: Tensor  # [B·G, L] float64, log-prob of each sampled token under the sampler (detached), 0 off-mask
    lengths: Tensor  # [B·G] long, END counted


# ----- policies -------------------------------------------------------------------------------
class SequencePolicy(nn.Module):
    """Shared interface of the policies: subclasses only define :meth:`forward` (the raw logits).

    The logits at position t depend only on the prompt and ``tokens[:, :t]`` (causal); the token
    at t itself is not read. Positions after END are padding: their logits are computed but
    meaningless, and no method lets them into a log-probability.
    """

    def __init__(self, num_prompts: int, vocab_size: int, max_len: int):
        super().__init__()
        self.num_prompts = _integer("num_prompts", num_prompts, 1)
        self.vocab_size, self.max_len = _check_space(vocab_size, max_len)
        self.end = self.vocab_size
        self.num_actions = self.vocab_size + 1

    def extra_repr(self) -> str:
        return f"num_prompts={self.num_prompts}, vocab_size={self.vocab_size}, max_len={self.max_len}"

    # -- validation shared by every entry point
    def _inputs(self, prompt_ids, tokens) -> tuple[Tensor, Tensor]:
        prompt_ids = _check_prompt_ids(prompt_ids, self.num_prompts)
        return prompt_ids, _check_tokens(tokens, self.vocab_size, self.max_len, batch=prompt_ids.shape[0])

    def forward(self, prompt_ids: Tensor, tokens: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Raw logits ``[B, T, V+1]`` of the next action at every position."""
        raise NotImplementedError

    def next_token_logits(self, prompt_ids: Tensor, tokens: Tensor) -> Tensor:
        """The logits the sampler uses, ``[B, T, V+1]``: raw logits, with −inf on the ordinary tokens at
        position ``max_len − 1`` (only END allowed there). ``ops.entropy_from_logits`` accepts them."""
        logits = self(prompt_ids, tokens)
        if logits.shape[1] == self.max_len:
            forced = torch.zeros(logits.shape[1:], dtype=torch.bool)
            forced[-1, : self.vocab_size] = True
            logits = logits.masked_fill(forced, -torch.inf)
        return logits

    def log_policy(self, prompt_ids: Tensor, tokens: Tensor) -> Tensor:
        """log π(a | x, y_<t) for every action a, ``[B, T, V+1]`` (−inf where forbidden)."""
        return torch.log_softmax(self.next_token_logits(prompt_ids, tokens), dim=-1)

    def token_logprobs(self, prompt_ids: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """log π(y_t | x, y_<t) of the given tokens, ``[B, T]`` float64, exactly 0 off the mask.

        ============  ==================================================================
        argument      shape
        ============  ==================================================================
        prompt_ids    ``[B]`` long in [0, num_prompts)
        tokens        ``[B, T]`` long in [0, V], T ≤ max_len
        mask          ``[B, T]`` bool, a subset of the response positions (up to END)
        returns       ``[B, T]`` float64, differentiable in the parameters
        ============  ==================================================================
        """
        prompt_ids, tokens = self._inputs(prompt_ids, tokens)
        mask = _check_mask(mask, tokens, self.vocab_size, self.max_len, complete=False)
        logp = self.log_policy(prompt_ids, tokens).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        return torch.where(mask, logp, torch.zeros((), dtype=logp.dtype))

    def sequence_logprob(self, prompt_ids: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """log π(y | x) = Σ_t log π(y_t | x, y_<t) over the mask, ``[B]``."""
        return self.token_logprobs(prompt_ids, tokens, mask).sum(1)

    @torch.no_grad()
    def sample(self, prompt_ids=None, group_size: int = 8, generator: torch.Generator | None = None) -> Rollout:
        """Draw ``group_size`` responses for every entry of ``prompt_ids`` (default: every prompt once)
        by batched ancestral sampling; see the module pseudocode. Returns a :class:`Rollout`."""
        if prompt_ids is None:
            prompt_ids = torch.arange(self.num_prompts)
        g = _integer("group_size", group_size, 1)
        prompt_ids = _check_prompt_ids(prompt_ids, self.num_prompts)
        if prompt_ids.numel() == 0:
            raise ValueError("`prompt_ids` is empty: nothing to sample")
        group = torch.arange(len(prompt_ids)).repeat_interleave(g)
        ids = prompt_ids.repeat_interleave(g)
        rows, L = len(ids), self.max_len
        tokens = torch.full((rows, L), self.end, dtype=torch.long)
        logp = torch.zeros(rows, L, dtype=DTYPE)
        alive = torch.ones(rows, dtype=torch.bool)  # not yet ended before position t
        for t in range(L):
            dist = self.log_policy(ids, tokens[:, : t + 1])[:, t]  # [rows, A]; depends on tokens[:, :t] only
            drawn = torch.multinomial(dist.exp(), 1, generator=generator).squeeze(1)
            tokens[:, t] = torch.where(alive, drawn, self.end)
            logp[:, t] = torch.where(alive, dist.gather(1, drawn[:, None]).squeeze(1), 0.0)
            alive = alive & (drawn != self.end)
        mask = response_mask(tokens, self.vocab_size, L)
        return Rollout(ids, group, tokens, mask, logp, mask.sum(1))


class TabularPolicy(SequencePolicy):
    """One free logit vector per (prompt, prefix): an exact softmax policy in every state.

    ``table [P, S, V+1]`` float64 with S = Σ_{k ≤ L-2} V^k choice states per prompt (the prefixes
    after which a choice exists; the prefix of length L−1 is forced to END and needs no row). A
    prefix of length k is state Σ_{i<k} V^i + (its tokens read as a base-V number), i.e. the index
    of the response "prefix + END" in :func:`enumerate_responses`. Defaults: 40 responses, 13 states,
    2·13·4 = 104 parameters. ``init_scale = 0`` starts uniform; otherwise logits ~ N(0, init_scale²).
    """

    def __init__(self, num_prompts: int = 2, vocab_size: int = 3, max_len: int = 4, init_scale: float = 0.0,
                 seed: int = 0):
        super().__init__(num_prompts, vocab_size, max_len)
        init_scale = _checks.non_negative("init_scale", init_scale)
        self.num_states = sum(self.vocab_size**k for k in range(self.max_len - 1))
        gen = torch.Generator().manual_seed(int(seed))
        shape = (self.num_prompts, self.num_states, self.num_actions)
        self.table = nn.Parameter(init_scale * torch.randn(shape, generator=gen, dtype=DTYPE))

    def state_index(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Choice state of the prefix before every position, ``[B, T]`` long, and whether it is one
        (False on the forced last position and on padding after END)."""
        tokens = _check_tokens(tokens, self.vocab_size, self.max_len)
        v = self.vocab_size
        code = torch.zeros(tokens.shape[0], dtype=torch.long)
        clean = torch.ones(tokens.shape[0], dtype=torch.bool)  # no END in the prefix so far
        index, valid = [], []
        for t in range(tokens.shape[1]):
            offset = sum(v**i for i in range(t))
            index.append((offset + code).clamp(max=self.num_states - 1))
            valid.append(clean & (t <= self.max_len - 2))
            clean = clean & (tokens[:, t] != self.end)
            code = code * v + tokens[:, t].clamp(max=v - 1)
        return torch.stack(index, 1), torch.stack(valid, 1)

    def forward(self, prompt_ids: Tensor, tokens: Tensor) -> Tensor:
        """``table[x, state(y_<t)]`` at every position, ``[B, T, V+1]``; 0 where no choice exists."""
        prompt_ids, tokens = self._inputs(prompt_ids, tokens)
        index, valid = self.state_index(tokens)
        logits = self.table[prompt_ids[:, None], index]  # [B, T, A]
        return torch.where(valid[..., None], logits, torch.zeros((), dtype=DTYPE))


class SharedPolicy(SequencePolicy):
    """Shared parameters: an MLP reads (prompt, prefix, position) and an unembedding maps its last
    hidden state to logits, as in a language model.

    .. math:: h_t = \\mathrm{MLP}(e(x, y_{<t}, t)) \\in (-1, 1)^d, \\qquad z_t = W h_t + b, \\quad W \\in
              \\mathbb{R}^{(V+1) \\times d}

    The encoding ``e`` concatenates one-hot(prompt) ``[P]``, one slot per earlier position holding
    one-hot(token) ``[(L-1)·V]`` (empty for positions ≥ t) and one-hot(t) ``[L]``; it identifies the
    state exactly, so the MLP can represent any tabular policy given width. The MLP is
    ``num_layers`` tanh layers of width ``hidden_size``; ``h`` is the output of the last one. ``W`` and
    ``b`` are ``self.unembed.weight`` / ``.bias``; :meth:`forward_with_hidden` returns ``h`` for Token
    Hidden Reward (THR, arXiv 2510.03669), whose per-token terms are inner products of these ``h``.

    Init (seeded): weights ~ N(0, init_scale²/fan_in), biases 0, so the policy starts near uniform
    but not exactly. Defaults: 2 prompts, V = 3, L = 4 → 15 inputs, two layers of 8 → 236 parameters.
    """

    def __init__(self, num_prompts: int = 2, vocab_size: int = 3, max_len: int = 4, hidden_size: int = 8,
                 num_layers: int = 2, init_scale: float = 1.0, seed: int = 0):
        super().__init__(num_prompts, vocab_size, max_len)
        self.hidden_size = _integer("hidden_size", hidden_size, 1)
        self.num_layers = _integer("num_layers", num_layers, 1)
        init_scale = _checks.non_negative("init_scale", init_scale)
        self.num_features = self.num_prompts + (self.max_len - 1) * self.vocab_size + self.max_len
        widths = [self.num_features] + [self.hidden_size] * self.num_layers
        self.layers = nn.ModuleList(nn.Linear(i, o, dtype=DTYPE) for i, o in itertools.pairwise(widths))
        self.unembed = nn.Linear(self.hidden_size, self.num_actions, dtype=DTYPE)
        gen = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for layer in [*self.layers, self.unembed]:
                std = init_scale / layer.in_features**0.5
                layer.weight.copy_(std * torch.randn(layer.weight.shape, generator=gen, dtype=DTYPE))
                layer.bias.zero_()

    def encode(self, prompt_ids: Tensor, tokens: Tensor) -> Tensor:
        """The MLP input e(x, y_<t, t) at every position, ``[B, T, F]`` float64 (0/1)."""
        prompt_ids, tokens = self._inputs(prompt_ids, tokens)
        b, T = tokens.shape
        v, slots = self.vocab_size, self.max_len - 1
        # One-hot of each token in its own slot; END (and later padding) contributes nothing.
        onehot = torch.zeros(b, slots, v, dtype=DTYPE)
        n = min(T, slots)
        onehot[:, :n] = nn.functional.one_hot(tokens[:, :n], v + 1)[..., :v].to(DTYPE)
        earlier = (torch.arange(slots)[None, :] < torch.arange(T)[:, None]).to(DTYPE)  # [T, slots]: j < t
        prefix = (earlier[None, :, :, None] * onehot[:, None]).reshape(b, T, slots * v)
        prompt = nn.functional.one_hot(prompt_ids, self.num_prompts).to(DTYPE)[:, None].expand(b, T, -1)
        position = torch.eye(self.max_len, dtype=DTYPE)[:T][None].expand(b, T, -1)
        return torch.cat([prompt, prefix, position], dim=-1)

    def forward_with_hidden(self, prompt_ids: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """``(logits [B, T, V+1], hidden [B, T, d])`` with logits = hidden @ W.T + b exactly."""
        hidden = self.encode(prompt_ids, tokens)
        for layer in self.layers:
            hidden = torch.tanh(layer(hidden))
        return self.unembed(hidden), hidden

    def forward(self, prompt_ids: Tensor, tokens: Tensor) -> Tensor:
        """Raw logits ``[B, T, V+1]`` (see :meth:`forward_with_hidden`)."""
        return self.forward_with_hidden(prompt_ids, tokens)[0]


# ----- the verifiable task ------------------------------------------------------------------------
def _as_response(seq, vocab_size: int, max_len: int) -> tuple[int, ...]:
    seq = tuple(int(t) for t in seq)
    if len(seq) > max_len - 1 or any(not 0 <= t < vocab_size for t in seq):
        raise ValueError(f"`answers` must hold sequences of at most max_len - 1 = {max_len - 1} ordinary tokens "
                         f"in [0, {vocab_size}) (END is implied), got {seq}")
    return seq


@dataclass(frozen=True, eq=False)  # tensors inside: compare tasks by identity
class Task:
    """A verifiable reward: per prompt, a set of correct responses (optionally graded).

    ============  ===================================================================
    field         meaning
    ============  ===================================================================
    answers       per prompt, ``{ordinary tokens (END implied): reward}``
    rewards       ``[P, N]`` float64, R(x, y) over :func:`enumerate_responses`
    correct       ``[P, N]`` bool, y is one of x's answers
    ============  ===================================================================

    Build with :meth:`from_answers` or :meth:`with_length_gap`; :func:`default_task` documents the
    default. Response lengths count END: the answer ``(2,)`` is the response ``2 END`` of length 2.
    """

    answers: tuple[dict[tuple[int, ...], float], ...]
    vocab_size: int
    max_len: int
    rewards: Tensor
    correct: Tensor

    @property
    def num_prompts(self) -> int:
        return len(self.answers)

    @classmethod
    def from_answers(cls, answers: Sequence[Iterable | Mapping], vocab_size: int = 3, max_len: int = 4,
                     wrong_reward: float = 0.0) -> Task:
        """``answers[x]``: the correct token sequences of prompt x (reward 1), or a mapping
        sequence → reward for graded answers; every other response gets ``wrong_reward``."""
        v, L = _check_space(vocab_size, max_len)
        wrong = float(wrong_reward)
        if wrong != wrong:
            raise ValueError("`wrong_reward` is NaN")
        if isinstance(answers, (str, bytes)) or len(answers) == 0:
            raise ValueError("`answers` must be a non-empty sequence (one entry per prompt)")
        enum = _enumeration(v, L)
        index = {tuple(row[: n - 1].tolist()): i for i, (row, n) in enumerate(zip(enum.tokens, enum.lengths,
                                                                                   strict=True))}
        table = torch.full((len(answers), len(index)), wrong, dtype=DTYPE)
        correct = torch.zeros(len(answers), len(index), dtype=torch.bool)
        parsed = []
        for x, entry in enumerate(answers):
            items = entry.items() if isinstance(entry, Mapping) else ((seq, 1.0) for seq in entry)
            graded = {}
            for seq, r in items:
                seq, r = _as_response(seq, v, L), float(r)
                if seq in graded or r != r:
                    raise ValueError(f"`answers` of prompt {x}: {seq} is repeated or has a NaN reward")
                graded[seq] = r
                table[x, index[seq]], correct[x, index[seq]] = r, True
            parsed.append(graded)
        return cls(tuple(parsed), v, L, table, correct)

    @classmethod
    def with_length_gap(cls, correct_lengths: Sequence[int] = (2, 4), answers_per_prompt: Sequence[int] = (2, 3),
                        vocab_size: int = 3, max_len: int = 4, seed: int = 0) -> Task:
        """Prompt x is answered correctly only by ``answers_per_prompt[x]`` distinct responses of length
        ``correct_lengths[x]`` (END counted), drawn at random (seeded) among the V^(len−1) of that
        length. Choosing the lengths sets the gap between correct and wrong responses: short
        answers make the wrong responses long, long answers make them short (see :func:`length_gap`)."""
        v, L = _check_space(vocab_size, max_len)
        lengths, counts = list(correct_lengths), list(answers_per_prompt)
        if len(lengths) == 0 or len(lengths) != len(counts):
            raise ValueError(f"`correct_lengths` and `answers_per_prompt` need one entry per prompt, "
                             f"got {len(lengths)} and {len(counts)}")
        gen = torch.Generator().manual_seed(int(seed))
        answers = []
        for x, (n, c) in enumerate(zip(lengths, counts, strict=True)):
            n = _integer(f"correct_lengths[{x}]", n, 1, L)
            c = _integer(f"answers_per_prompt[{x}]", c, 1, v ** (n - 1))  # that many responses have length n
            picks = torch.randperm(v ** (n - 1), generator=gen)[:c].sort().values.tolist()
            bodies = list(itertools.product(range(v), repeat=n - 1))
            answers.append([bodies[i] for i in picks])
        return cls.from_answers(answers, v, L)

    def reward(self, prompt_ids, tokens, mask) -> Tensor:
        """R(x, y) of complete responses, ``[B]`` float64 (mask must run up to and including END)."""
        prompt_ids = _check_prompt_ids(prompt_ids, self.num_prompts)
        tokens = _check_tokens(tokens, self.vocab_size, self.max_len, batch=prompt_ids.shape[0])
        index = response_index(tokens, mask, self.vocab_size, self.max_len)
        return self.rewards[prompt_ids, index]

    def describe(self) -> str:
        """One line per prompt: its answers as token strings ('.' = END) with their rewards."""
        lines = []
        for x, graded in enumerate(self.answers):
            items = ", ".join(f"{' '.join(map(str, seq + ('.',)))} → {r:g}" for seq, r in graded.items())
            lines.append(f"prompt {x}: {items or '(no correct answer)'}")
        return "\n".join(lines)


def default_task() -> Task:
    """The default task (``Task.with_length_gap()``): 2 prompts, V = 3, max_len = 4, 40 responses.

    ========  ==============================  ===============  ========================
    prompt    correct responses ('.' = END)   uniform π: P(R)  uniform π: length gap
    ========  ==============================  ===============  ========================
    0         ``0 .``, ``2 .`` (length 2)     2/16             −0.84 (wrong are longer)
    1         ``1 2 0 .``, ``1 2 2 .``,       3/64             +1.33 (wrong are shorter)
              ``2 0 2 .`` (length 4)
    ========  ==============================  ===============  ========================

    Rewards are 1 / 0. Prompt 0 rewards short answers, prompt 1 long ones, so the sign of the
    correct-minus-wrong length gap differs between the prompts (sign-length coupling), and both
    prompts have several correct answers.
    """
    return Task.with_length_gap()


# ----- exact quantities by enumeration -----------------------------------------------------------
def response_logprobs(policy: SequencePolicy) -> Tensor:
    """log π(y | x) of every prompt and every enumerated response, ``[P, N]`` (differentiable)."""
    if not isinstance(policy, SequencePolicy):
        raise ValueError(f"`policy` must be a SequencePolicy, got {type(policy).__name__}")
    enum = _enumeration(policy.vocab_size, policy.max_len)
    p, n = policy.num_prompts, enum.tokens.shape[0]
    ids = torch.arange(p).repeat_interleave(n)
    logp = policy.sequence_logprob(ids, enum.tokens.repeat(p, 1), enum.mask.repeat(p, 1))
    return logp.reshape(p, n)


def response_probs(policy: SequencePolicy) -> Tensor:
    """π(y | x), ``[P, N]``; each row sums to 1 (the END rule makes every response terminate)."""
    return response_logprobs(policy).exp()


def _check_pair(policy: SequencePolicy, task: Task) -> None:
    if not isinstance(task, Task):
        raise ValueError(f"`task` must be a Task, got {type(task).__name__}")
    mine = (policy.num_prompts, policy.vocab_size, policy.max_len)
    theirs = (task.num_prompts, task.vocab_size, task.max_len)
    if mine != theirs:
        raise ValueError(f"`task` (prompts, vocab_size, max_len) = {theirs} does not match `policy` {mine}")


def expected_reward(policy: SequencePolicy, task: Task, per_prompt: bool = False) -> Tensor:
    """J(θ) = (1/P) Σ_x Σ_y π(y|x) R(x,y), a differentiable scalar (``[P]`` with ``per_prompt``)."""
    probs = response_probs(policy)
    _check_pair(policy, task)
    per = (probs * task.rewards).sum(1)
    return per if per_prompt else per.mean()


def exact_gradient(policy: SequencePolicy, task: Task) -> dict[str, Tensor]:
    """∇_θ J by autograd through the enumerated sum, one tensor per named parameter."""
    named = [(name, p) for name, p in policy.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(expected_reward(policy, task), [p for _, p in named], allow_unused=True)
    return {name: torch.zeros_like(p) if g is None else g for (name, p), g in zip(named, grads, strict=True)}


def length_gap(policy: SequencePolicy, task: Task) -> Tensor:
    """E_π[len | correct] − E_π[len | wrong] per prompt, ``[P]`` (NaN where either side has mass 0)."""
    with torch.no_grad():
        probs = response_probs(policy)
        _check_pair(policy, task)
        lengths = _enumeration(policy.vocab_size, policy.max_len).lengths.to(DTYPE)
        right, wrong = probs * task.correct, probs * ~task.correct
        return (right @ lengths) / right.sum(1) - (wrong @ lengths) / wrong.sum(1)
