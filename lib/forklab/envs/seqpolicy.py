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

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

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

# the response space and the policies live in private modules (one concept each); their names are public here
from forklab.envs._seqpolicy_policies import (  # noqa: E402
    SequencePolicy,
    SharedPolicy,
    TabularPolicy,
)
from forklab.envs._seqpolicy_space import (  # noqa: E402
    DTYPE,
    MAX_LEN_LIMIT,
    Responses,
    Rollout,
    _check_prompt_ids,
    _check_space,
    _check_tokens,
    _enumeration,
    _integer,
    enumerate_responses,
    num_responses,
    response_index,
    response_mask,
)


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
