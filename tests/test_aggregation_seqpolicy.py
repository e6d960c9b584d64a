"""Aggregation biases, exactly, on the sequence policy (every group of G = 2 responses enumerated).

Token-mean couples the balance between pushing correct responses up and wrong ones down to their
length gap; seq-mean and Balanced Aggregation do not. Inside one side, seq-mean gives each token of
a response of length |o| a weight ∝ 1/|o|; BA gives every token the same weight.
"""

import itertools

import pytest
import torch

from forklab.advantages import grpo
from forklab.aggregation import token_weights
from forklab.envs import seqpolicy as sp


def expected_push(mode: str, prompt: int):
    """E over groups (y1, y2) ~ π of (Σ_{A>0} Σ_t w|A|, Σ_{A<0} Σ_t w|A|) under the uniform policy."""
    task = sp.default_task()
    policy = sp.TabularPolicy()
    responses = sp.enumerate_responses()
    probs = sp.response_probs(policy)[prompt].detach()
    rewards = task.rewards[prompt]
    pos = neg = 0.0
    group = torch.zeros(2, dtype=torch.long)
    for i, j in itertools.product(range(len(probs)), repeat=2):
        r = rewards[[i, j]]
        if r[0] == r[1]:
            continue  # degenerate group: no gradient under any mode
        adv = grpo(r, group)
        w = token_weights(responses.mask[[i, j]], mode, adv, group)
        push = w.sum(1) * adv.abs()
        p = (probs[i] * probs[j]).item()
        pos += p * push[adv > 0].sum().item()
        neg += p * push[adv < 0].sum().item()
    return pos, neg


@pytest.mark.parametrize("prompt, correct_shorter", [(0, True), (1, False)])
def test_token_mean_couples_sign_balance_to_length_gap_and_seq_mean_and_ba_do_not(prompt, correct_shorter):
    gap = sp.length_gap(sp.TabularPolicy(), sp.default_task())[prompt].item()
    assert (gap < 0) == correct_shorter
    pos, neg = expected_push("token-mean", prompt)
    # token-mean: the side with longer responses gets more total weight
    assert (neg > 1.2 * pos) if correct_shorter else (pos > 1.2 * neg)
    for mode in ("seq-mean-token-mean", "balanced"):
        pos, neg = expected_push(mode, prompt)
        assert pos == pytest.approx(neg, rel=1e-12)


def test_inside_one_side_seq_mean_downweights_long_responses_and_ba_does_not():
    responses = sp.enumerate_responses()
    task = sp.default_task()
    correct = torch.nonzero(task.correct[1]).flatten()  # three correct responses of length 4
    short_wrong = 1  # "0 END", length 2, wrong for prompt 1
    idx = torch.tensor([correct[0].item(), short_wrong, 0])  # add "END" (length 1, wrong) too
    mask = responses.mask[idx]
    rewards = task.rewards[1][idx]
    group = torch.zeros(3, dtype=torch.long)
    adv = grpo(rewards, group)
    lengths = mask.sum(1).double()
    seq = token_weights(mask, "seq-mean-token-mean", adv, group)
    ba = token_weights(mask, "balanced", adv, group)
    # negative side: two wrong responses of lengths 2 and 1
    assert seq[1, 0] / seq[2, 0] == pytest.approx((1 / lengths[1] / (1 / lengths[2])).item())
    assert ba[1, 0] == pytest.approx(ba[2, 0].item())
    # and BA's side totals are k/G and (G-k)/G
    assert ba[0].sum().item() == pytest.approx(1 / 3) and ba[1:].sum().item() == pytest.approx(2 / 3)
