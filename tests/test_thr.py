"""THR/NTHR: factorised == pairwise; exact finite-difference ground truth on the sequence policy."""

import copy

import pytest
import torch

from forklab.advantages import grpo
from forklab.diagnostics import thr as T
from forklab.envs import seqpolicy as sp


def random_inputs(seed=0, b=6, t=5, v=11, d=4):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b, t, d, generator=g, dtype=torch.float64)
    logits = torch.randn(b, t, v, generator=g, dtype=torch.float64)
    tokens = torch.randint(0, v, (b, t), generator=g)
    mask = torch.arange(t)[None, :] < torch.tensor([5, 3, 4, 2, 5, 1])[:, None]
    group = torch.tensor([0, 0, 0, 1, 1, 1])
    correct = torch.tensor([True, False, True, False, True, False])
    return hidden, logits, tokens, mask, group, correct


@pytest.mark.parametrize("restrict", [True, False])
@pytest.mark.parametrize("seed", range(3))
def test_factorised_equals_pairwise(seed, restrict):
    args = random_inputs(seed)
    fast = T.influence_scores(*args, restrict_vocab=restrict)
    slow = T.pairwise_influence_scores(*args, restrict_vocab=restrict)
    torch.testing.assert_close(fast, slow)
    assert (fast[~args[3]] == 0).all()


def test_pairwise_by_explicit_loops():
    hidden, logits, tokens, mask, group, correct = random_inputs(5)
    probs = torch.softmax(logits, -1)
    got = T.influence_scores(hidden, logits, tokens, mask, group, correct, restrict_vocab=False)
    for j in range(6):
        for k in range(5):
            if not mask[j, k]:
                continue
            g_jk = torch.nn.functional.one_hot(tokens[j, k], 11).double() - probs[j, k]
            total = 0.0
            for i in range(6):
                if not (correct[i] and group[i] == group[j]):
                    continue
                for kk in range(5):
                    if mask[i, kk]:
                        g_ik = torch.nn.functional.one_hot(tokens[i, kk], 11).double() - probs[i, kk]
                        total += (g_jk @ g_ik).item() * (hidden[j, k] @ hidden[i, kk]).item()
            assert got[j, k].item() == pytest.approx(total, rel=1e-10, abs=1e-12)


def group_on_seqpolicy():
    """Prompt 0 of the default task: both correct answers, and four wrong responses of several lengths."""
    policy = sp.SharedPolicy(init_scale=1.0, seed=3)
    task = sp.default_task()
    responses = ["0", "2", "1", "0 0", "", "1 2 0"]  # tokens before END
    end = 3
    tokens = torch.full((6, 4), end)
    for i, r in enumerate(responses):
        for t, ch in enumerate(r.split()):
            tokens[i, t] = int(ch)
    mask = sp.response_mask(tokens)
    prompt_ids = torch.zeros(6, dtype=torch.long)
    rewards = task.reward(prompt_ids, tokens, mask)
    return policy, prompt_ids, tokens, mask, rewards


def correct_loglik(policy, prompt_ids, tokens, mask, correct):
    return policy.token_logprobs(prompt_ids, tokens, mask)[correct].sum()


def thr_on(policy, prompt_ids, tokens, mask, rewards, restrict=True):
    logits, hidden = policy.forward_with_hidden(prompt_ids, tokens)
    logits = policy.next_token_logits(prompt_ids, tokens)  # END forced at the last position
    group = torch.zeros(6, dtype=torch.long)
    adv = grpo(rewards, group)
    return T.token_hidden_reward(hidden.detach(), logits.detach(), tokens, mask, group, rewards > 0, adv,
                                 restrict_vocab=restrict), adv


def token_step_change(policy, prompt_ids, tokens, mask, correct, adv, j, k, eta, params="unembed"):
    """Exact change of Σ log π(correct) after one ascent step on Â_j · log π(y_{j,k}) alone."""
    moved = copy.deepcopy(policy)
    chosen = [moved.unembed.weight] if params == "unembed" else list(moved.parameters())
    logp = moved.token_logprobs(prompt_ids[j:j + 1], tokens[j:j + 1], mask[j:j + 1])[0, k]
    grads = torch.autograd.grad(adv[j] * logp, chosen)
    with torch.no_grad():
        for p, gr in zip(chosen, grads, strict=True):
            p += eta * gr
        before = correct_loglik(policy, prompt_ids, tokens, mask, correct)
        after = correct_loglik(moved, prompt_ids, tokens, mask, correct)
    return (after - before).item()


def test_thr_equals_the_finite_difference_when_only_the_unembedding_moves():
    policy, prompt_ids, tokens, mask, rewards = group_on_seqpolicy()
    result, adv = thr_on(policy, prompt_ids, tokens, mask, rewards, restrict=False)
    correct = rewards > 0
    eta = 1e-6
    for j, k in torch.nonzero(mask).tolist():
        fd = token_step_change(policy, prompt_ids, tokens, mask, correct, adv, j, k, eta) / eta
        assert fd == pytest.approx(result.thr[j, k].item(), rel=1e-4, abs=1e-8), (j, k)


def test_thr_sign_agrees_with_a_full_parameter_step_for_most_tokens():
    agree = total = 0
    for seed in range(4):
        policy, prompt_ids, tokens, mask, rewards = group_on_seqpolicy()
        policy = sp.SharedPolicy(init_scale=1.0, seed=seed)
        result, adv = thr_on(policy, prompt_ids, tokens, mask, rewards)
        correct = rewards > 0
        for j, k in torch.nonzero(mask).tolist():
            if abs(result.thr[j, k]) < 1e-12:
                continue  # forced END: no gradient at all
            fd = token_step_change(policy, prompt_ids, tokens, mask, correct, adv, j, k, 1e-5, params="all")
            agree += (fd > 0) == (result.thr[j, k] > 0)
            total += 1
    rate = agree / total
    print(f"THR sign agreement with full-parameter finite differences: {agree}/{total} = {rate:.2f}")
    assert rate >= 0.75


def test_threshold_and_reweighting_rules():
    hidden, logits, tokens, mask, group, correct = random_inputs(1)
    adv = torch.tensor([1.0, -0.5, 1.0, -1.0, 2.0, -1.0], dtype=torch.float64)
    result = T.token_hidden_reward(hidden, logits, tokens, mask, group, correct, adv)
    # tau = min over correct responses of their mean influence, per group
    infl = result.influence
    mean0 = [infl[i][mask[i]].mean().item() for i in (0, 2)]
    assert result.tau[0].item() == pytest.approx(min(mean0))
    assert result.tau[4].item() == pytest.approx(infl[4][mask[4]].mean().item())
    new = T.thr_advantages(adv, result, mask, p=0.5)
    above = mask & (result.thr.abs() > result.tau[:, None])
    expected = torch.where(above, adv[:, None] * (1 + 0.5 * torch.sign(result.thr)), adv[:, None].expand(6, 5))
    torch.testing.assert_close(new, torch.where(mask, expected, 0.0))
    only = T.thr_advantages(adv, result, mask, p=0.5, only=True)
    assert (only[mask & ~above] == 0).all()
    pass_rate = torch.tensor([2 / 3] * 3 + [1 / 3] * 3, dtype=torch.float64)
    nthr = T.nthr_advantages(adv, infl, result.tau, mask, correct, pass_rate)
    sel = mask & ~correct[:, None] & (infl > result.tau[:, None])
    scale = 2 * (0.5 - pass_rate).abs()
    torch.testing.assert_close(nthr, torch.where(mask, torch.where(sel, adv[:, None] * scale[:, None],
                                                                   adv[:, None].expand(6, 5)), 0.0))


def test_bad_inputs():
    hidden, logits, tokens, mask, group, correct = random_inputs()
    with pytest.raises(ValueError, match="`hidden` must have shape"):
        T.influence_scores(hidden[0], logits, tokens, mask, group, correct)
    with pytest.raises(ValueError, match="`logits`"):
        T.influence_scores(hidden, logits[:, :2], tokens, mask, group, correct)
    with pytest.raises(ValueError, match="`correct`"):
        T.influence_scores(hidden, logits, tokens, mask, group, correct[:3])
    with pytest.raises(ValueError, match="`adv`"):
        T.token_hidden_reward(hidden, logits, tokens, mask, group, correct, torch.ones(3))
