"""The policies of :mod:`forklab.envs.seqpolicy`: tabular and shared-parameter (private; import from ``seqpolicy``)."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from forklab import _checks
from forklab.envs._seqpolicy_space import (
    DTYPE,
    Rollout,
    _check_mask,
    _check_prompt_ids,
    _check_space,
    _check_tokens,
    _integer,
    response_mask,
)


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
