"""The sequence-policy world against hand loops, closed forms, finite differences and Monte-Carlo counts.

Oracles are written here from the definitions (itertools enumeration, a Python loop of log-softmaxes,
the answers dict), never by calling the function under test on itself.
"""

import itertools
import math

import pytest
import torch

from forklab import ops
from forklab.envs import seqpolicy as sp


def all_bodies(v, max_len):
    """Every response as its tuple of ordinary tokens (END implied), by length then lexicographic."""
    return [body for k in range(max_len) for body in itertools.product(range(v), repeat=k)]


def policies(p=2, v=3, max_len=4):
    return [sp.TabularPolicy(p, v, max_len, init_scale=1.0, seed=3), sp.SharedPolicy(p, v, max_len, seed=4)]


def hand_logprob(policy, x, body):
    """log π(body + END | x) by a loop over positions: logits of the prefix alone, log-softmax by hand."""
    v, L = policy.vocab_size, policy.max_len
    response = list(body) + [v]
    total = 0.0
    for t, y_t in enumerate(response):
        if t == L - 1:  # the forced END: probability 1
            assert y_t == v
            continue
        prefix = torch.tensor([response[: t + 1]])  # the token at t is a placeholder the policy must not read
        z = policy(torch.tensor([x]), prefix)[0, t].tolist()
        top = max(z)
        total += z[y_t] - (top + math.log(sum(math.exp(zi - top) for zi in z)))
    return total


def hand_objective(policy, task):
    """J = mean_x Σ_y π(y|x) R(x,y) from the hand log-probs and the task's answers dict."""
    with torch.no_grad():
        per_prompt = [sum(math.exp(hand_logprob(policy, x, body)) * task.answers[x].get(body, 0.0)
                          for body in all_bodies(policy.vocab_size, policy.max_len))
                      for x in range(policy.num_prompts)]
    return sum(per_prompt) / len(per_prompt)


# ----- enumeration ----------------------------------------------------------------------------
@pytest.mark.parametrize(("v", "max_len"), [(3, 4), (2, 6), (1, 2), (4, 3)])
def test_enumeration_lists_every_response_once_in_documented_order(v, max_len):
    enum = sp.enumerate_responses(v, max_len)
    bodies = all_bodies(v, max_len)
    assert sp.num_responses(v, max_len) == len(bodies) == enum.tokens.shape[0]
    assert enum.tokens.shape == enum.mask.shape == (len(bodies), max_len)
    for row, mask, n, body in zip(enum.tokens.tolist(), enum.mask.tolist(), enum.lengths.tolist(), bodies,
                                  strict=True):
        assert n == len(body) + 1
        assert row == list(body) + [v] * (max_len - len(body))  # END, then END padding
        assert mask == [True] * n + [False] * (max_len - n)
    assert sp.response_index(enum.tokens, enum.mask, v, max_len).tolist() == list(range(len(bodies)))


def test_default_sizes():
    assert sp.num_responses() == 40
    assert sp.TabularPolicy().table.shape == (2, 13, 4)
    assert sum(p.numel() for p in sp.SharedPolicy().parameters()) == 236


# ----- probabilities ---------------------------------------------------------------------------
@pytest.mark.parametrize(("v", "max_len"), [(3, 4), (2, 6), (1, 2)])
def test_probabilities_sum_to_one_for_every_prompt(v, max_len):
    for policy in policies(3, v, max_len):
        probs = sp.response_probs(policy)
        assert probs.dtype == torch.float64 and probs.shape == (3, sp.num_responses(v, max_len))
        assert (probs > 0).all()
        torch.testing.assert_close(probs.sum(1), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-12)


def test_uniform_tabular_policy_matches_closed_form():
    # uniform over V+1 actions at every free position, forced END at position L-1
    v, L = 3, 4
    probs = sp.response_probs(sp.TabularPolicy(2, v, L))
    oracle = torch.tensor([(v + 1) ** -min(len(b) + 1, L - 1) for b in all_bodies(v, L)], dtype=torch.float64)
    torch.testing.assert_close(probs, oracle.expand(2, -1), rtol=1e-13, atol=0)


@pytest.mark.parametrize("which", [0, 1])
def test_sequence_logprob_equals_hand_loop_of_log_softmax(which):
    policy = policies()[which]
    logp = sp.response_logprobs(policy).detach()
    for x in range(2):
        oracle = torch.tensor([hand_logprob(policy, x, b) for b in all_bodies(3, 4)], dtype=torch.float64)
        torch.testing.assert_close(logp[x], oracle, rtol=0, atol=1e-12)


def test_tabular_logits_are_the_table_row_of_the_documented_state():
    policy = sp.TabularPolicy(2, 3, 4, init_scale=1.0, seed=7)
    states = {body: i for i, body in enumerate(b for b in all_bodies(3, 4) if len(b) <= 2)}  # prefixes, len ≤ L-2
    assert len(states) == policy.num_states
    enum = sp.enumerate_responses()
    with torch.no_grad():
        for x in range(2):
            logits = policy(torch.full((40,), x), enum.tokens)
            for row, n, z in zip(enum.tokens.tolist(), enum.lengths.tolist(), logits, strict=True):
                for t in range(min(n, 3)):
                    torch.testing.assert_close(z[t], policy.table[x, states[tuple(row[:t])]], rtol=0, atol=0)


@pytest.mark.parametrize("which", [0, 1])
def test_token_logprobs_zero_off_mask_and_respect_partial_masks(which):
    policy = policies()[which]
    enum = sp.enumerate_responses()
    ids = torch.zeros(40, dtype=torch.long)
    full = policy.token_logprobs(ids, enum.tokens, enum.mask)
    assert (full[~enum.mask] == 0).all()
    first_only = torch.zeros_like(enum.mask)
    first_only[:, 0] = True
    part = policy.token_logprobs(ids, enum.tokens, first_only)
    torch.testing.assert_close(part[:, 0], full[:, 0], rtol=0, atol=0)
    assert (part[:, 1:] == 0).all()


# ----- gradients -------------------------------------------------------------------------------
@pytest.mark.parametrize("which", [0, 1])
def test_exact_gradient_matches_central_finite_differences(which):
    policy, task = policies()[which], sp.default_task()
    torch.testing.assert_close(sp.expected_reward(policy, task).item(), hand_objective(policy, task),
                               rtol=0, atol=1e-12)
    grad = sp.exact_gradient(policy, task)
    assert set(grad) == {name for name, _ in policy.named_parameters()}
    g = torch.Generator().manual_seed(0)
    h = 1e-5
    for name, param in policy.named_parameters():
        for flat in torch.randint(param.numel(), (2,), generator=g).tolist():
            idx = tuple(torch.unravel_index(torch.tensor(flat), param.shape))
            with torch.no_grad():
                original = param[idx].item()
                param[idx] = original + h
                up = hand_objective(policy, task)
                param[idx] = original - h
                down = hand_objective(policy, task)
                param[idx] = original
            assert grad[name][idx].item() == pytest.approx((up - down) / (2 * h), abs=1e-9), (name, idx)


@pytest.mark.parametrize("which", [0, 1])
def test_reinforce_expectation_equals_exact_gradient(which):
    policy, task = policies()[which], sp.default_task()
    exact = sp.exact_gradient(policy, task)
    params = dict(policy.named_parameters())
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    enum = sp.enumerate_responses()
    for x in range(2):
        for i, body in enumerate(all_bodies(3, 4)):
            reward = task.answers[x].get(body, 0.0)
            if reward == 0.0:
                continue
            logp = policy.sequence_logprob(torch.tensor([x]), enum.tokens[i : i + 1], enum.mask[i : i + 1])[0]
            score = torch.autograd.grad(logp, list(params.values()), allow_unused=True)
            for name, s in zip(params, score, strict=True):
                if s is not None:
                    total[name] += logp.exp().detach() * reward * s / 2
    for name in params:
        torch.testing.assert_close(total[name], exact[name], rtol=1e-10, atol=1e-13)


# ----- the shared policy's hidden states -------------------------------------------------------
def test_shared_logits_are_computed_from_the_exposed_hidden_state():
    policy = sp.SharedPolicy(seed=1)
    enum = sp.enumerate_responses()
    ids = torch.arange(2).repeat_interleave(40)
    logits, hidden = policy.forward_with_hidden(ids, enum.tokens.repeat(2, 1))
    assert hidden.shape == (80, 4, 8) and logits.shape == (80, 4, 4)
    w, b = policy.unembed.weight, policy.unembed.bias
    assert w.shape == (4, 8)
    torch.testing.assert_close(logits, hidden @ w.T + b, rtol=0, atol=1e-15)
    torch.testing.assert_close(policy(ids, enum.tokens.repeat(2, 1)), logits, rtol=0, atol=0)


def test_shared_policy_is_causal_and_reads_the_prompt():
    policy = sp.SharedPolicy(seed=2)
    tokens = torch.tensor([[0, 1, 2, 3]])
    _, base = policy.forward_with_hidden(torch.tensor([0]), tokens)
    for t in range(4):
        changed = tokens.clone()
        changed[0, t] = (changed[0, t] + 1) % 3
        _, hidden = policy.forward_with_hidden(torch.tensor([0]), changed)
        torch.testing.assert_close(hidden[0, : t + 1], base[0, : t + 1], rtol=0, atol=0)  # position t reads y_<t
        if t < 3:
            assert not torch.allclose(hidden[0, t + 1], base[0, t + 1])
    _, other = policy.forward_with_hidden(torch.tensor([1]), tokens)
    assert not torch.allclose(other[0, 0], base[0, 0])


def test_forced_end_logits_work_with_ops_entropy():
    policy = sp.SharedPolicy()
    enum = sp.enumerate_responses()
    logits = policy.next_token_logits(torch.zeros(40, dtype=torch.long), enum.tokens)
    assert torch.isinf(logits[:, -1, :3]).all() and torch.isfinite(logits[:, :-1]).all()
    entropy = ops.entropy_from_logits(logits)
    assert torch.isfinite(entropy).all() and (entropy[:, -1].abs() < 1e-15).all()


# ----- sampling --------------------------------------------------------------------------------
@pytest.mark.parametrize("which", [0, 1])
def test_sampling_frequencies_match_enumerated_probabilities(which):
    policy = policies()[which]
    n = 40_000
    roll = policy.sample(torch.tensor([0, 1]), group_size=n, generator=torch.Generator().manual_seed(11))
    assert roll.tokens.shape == (2 * n, 4) and roll.logp.dtype == torch.float64
    assert roll.group.tolist() == roll.prompt_ids.tolist() == [0] * n + [1] * n
    index = {body: i for i, body in enumerate(all_bodies(3, 4))}
    probs = sp.response_probs(policy).detach()
    for x in range(2):
        counts = torch.zeros(40, dtype=torch.float64)
        rows = roll.tokens[roll.prompt_ids == x].tolist()
        for row in rows:
            counts[index[tuple(row[: row.index(3)] if 3 in row else row)]] += 1
        expected = n * probs[x]
        z = (counts - expected) / (expected * (1 - probs[x])).sqrt()
        assert z.abs().max() < 4.5, z.abs().max()
        chi2 = ((counts - expected) ** 2 / expected).sum().item()
        assert chi2 < 39 + 6 * math.sqrt(2 * 39), chi2  # 39 degrees of freedom


def test_sample_returns_valid_responses_and_their_logprobs():
    policy = sp.SharedPolicy(seed=5)
    roll = policy.sample(torch.tensor([1, 0, 1]), group_size=5, generator=torch.Generator().manual_seed(0))
    assert roll.group.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert roll.prompt_ids.tolist() == [1] * 5 + [0] * 5 + [1] * 5
    assert roll.mask.tolist() == sp.response_mask(roll.tokens).tolist()
    assert roll.lengths.tolist() == roll.mask.sum(1).tolist()
    assert not roll.logp.requires_grad
    rescored = policy.token_logprobs(roll.prompt_ids, roll.tokens, roll.mask).detach()
    torch.testing.assert_close(roll.logp, rescored, rtol=0, atol=1e-14)
    one = sp.TabularPolicy().sample(group_size=2)  # default: every prompt once
    assert one.prompt_ids.tolist() == [0, 0, 1, 1]


# ----- the task --------------------------------------------------------------------------------
def test_default_task_is_the_documented_one():
    task = sp.default_task()
    assert task.answers == ({(0,): 1.0, (2,): 1.0}, {(1, 2, 0): 1.0, (1, 2, 2): 1.0, (2, 0, 2): 1.0})
    assert "prompt 1: 1 2 0 . → 1" in task.describe()
    gap = sp.length_gap(sp.TabularPolicy(), task)
    assert gap[0] < 0 < gap[1]


def test_reward_agrees_with_the_answers_dict_and_supports_grades():
    task = sp.Task.from_answers([{(): 0.5, (1, 1): 1.0}, [(0, 0, 0)]], wrong_reward=-1.0)
    enum = sp.enumerate_responses()
    for x in range(2):
        got = task.reward(torch.full((40,), x), enum.tokens, enum.mask)
        oracle = [task.answers[x].get(b, -1.0) for b in all_bodies(3, 4)]
        assert got.tolist() == oracle
    assert task.correct.sum().item() == 3
    # shorter padding (T < max_len) and a shuffled batch
    tokens = torch.tensor([[1, 1, 3], [3, 3, 3], [0, 3, 3]])
    assert task.reward(torch.tensor([0, 0, 1]), tokens, sp.response_mask(tokens)).tolist() == [1.0, 0.5, -1.0]


def test_length_gap_matches_hand_conditional_expectations():
    policy, task = sp.TabularPolicy(init_scale=0.7, seed=9), sp.Task.with_length_gap((3, 1), (4, 1), seed=2)
    probs = sp.response_probs(policy).detach()
    for x in range(2):
        right = [(probs[x, i].item(), len(b) + 1) for i, b in enumerate(all_bodies(3, 4)) if b in task.answers[x]]
        wrong = [(probs[x, i].item(), len(b) + 1) for i, b in enumerate(all_bodies(3, 4)) if b not in task.answers[x]]
        mean = [sum(p * n for p, n in side) / sum(p for p, _ in side) for side in (right, wrong)]
        assert sp.length_gap(policy, task)[x].item() == pytest.approx(mean[0] - mean[1], abs=1e-12)
    assert all(len(b) == 2 for b in task.answers[0]) and task.answers[1] == {(): 1.0}


# ----- validation ------------------------------------------------------------------------------
ENUM = sp.enumerate_responses()
POLICY = sp.SharedPolicy()
TASK = sp.default_task()
ids2 = torch.tensor([0, 1])
tok2 = torch.tensor([[0, 3, 3, 3], [1, 2, 3, 3]])
mask2 = sp.response_mask(tok2)


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("max_len", lambda: sp.TabularPolicy(max_len=7)),
        ("max_len", lambda: sp.SharedPolicy(max_len=1)),
        ("vocab_size", lambda: sp.enumerate_responses(vocab_size=0)),
        ("num_prompts", lambda: sp.TabularPolicy(num_prompts=0)),
        ("hidden_size", lambda: sp.SharedPolicy(hidden_size=0)),
        ("init_scale", lambda: sp.TabularPolicy(init_scale=-1.0)),
        ("prompt_ids", lambda: POLICY.token_logprobs(torch.tensor([0, 2]), tok2, mask2)),
        ("prompt_ids", lambda: POLICY.token_logprobs(torch.tensor([-1, 0]), tok2, mask2)),
        ("prompt_ids", lambda: POLICY.token_logprobs(torch.tensor([0.0, 1.0]), tok2, mask2)),
        ("prompt_ids", lambda: POLICY.sample(torch.tensor([[0]]), 2)),
        ("tokens", lambda: POLICY.token_logprobs(ids2, tok2[:1], mask2[:1])),
        ("tokens", lambda: POLICY.token_logprobs(ids2, torch.tensor([[0, 4, 3, 3], [0, 3, 3, 3]]), mask2)),
        ("tokens", lambda: POLICY.token_logprobs(ids2, torch.full((2, 5), 3), torch.ones(2, 5, dtype=torch.bool))),
        ("tokens", lambda: POLICY.token_logprobs(ids2, tok2.double(), mask2)),
        ("tokens", lambda: POLICY.token_logprobs(ids2, torch.tensor([[0, 1, 2, 0], [3, 3, 3, 3]]),
                                                 torch.tensor([[True] * 4, [True, False, False, False]]))),
        ("mask", lambda: POLICY.token_logprobs(ids2, tok2, mask2[:, :3])),
        ("mask", lambda: POLICY.token_logprobs(ids2, tok2, torch.ones(2, 4, dtype=torch.bool))),  # after END
        ("mask", lambda: POLICY.token_logprobs(ids2, tok2, torch.zeros(2, 4, dtype=torch.bool))),
        ("mask", lambda: TASK.reward(ids2, tok2, torch.tensor([[True, False, False, False], mask2[1].tolist()]))),
        ("mask", lambda: TASK.reward(ids2, torch.tensor([[0, 1], [2, 3]]), torch.ones(2, 2, dtype=torch.bool))),
        ("vocab_size", lambda: sp.num_responses(vocab_size="3")),
        ("num_layers", lambda: sp.SharedPolicy(num_layers=1.5)),
        ("group_size", lambda: POLICY.sample(ids2, 0)),
        ("answers", lambda: sp.Task.from_answers([[(0, 3)]])),
        ("answers", lambda: sp.Task.from_answers([[(0, 1, 2, 0)]])),
        ("answers", lambda: sp.Task.from_answers([[(0,), (0,)]])),
        ("correct_lengths", lambda: sp.Task.with_length_gap((5, 2), (1, 1))),
        ("answers_per_prompt", lambda: sp.Task.with_length_gap((2, 2), (4, 1))),
        ("task", lambda: sp.expected_reward(sp.TabularPolicy(num_prompts=3), TASK)),
        ("policy", lambda: sp.response_probs(object())),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_argument(name, call):
    with pytest.raises(ValueError, match=f"`{name}"):
        call()
