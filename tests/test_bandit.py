"""The bandit world against brute-force enumeration, autograd, and Monte-Carlo averages."""

import itertools
import math

import numpy as np
import pytest
import torch

from forklab import advantages as adv
from forklab.envs import bandit as bd


def brute_force_expected_advantage(bandit, pi, estimator, g):
    """E[A_1 | a_1 = k] by enumerating every arm tuple and every reward outcome of a group."""
    k, m = bandit.num_arms, len(bandit.values)
    fn = adv.get_estimator(estimator)
    num = torch.zeros(k, dtype=torch.float64)
    den = torch.zeros(k, dtype=torch.float64)
    for arms in itertools.product(range(k), repeat=g):
        p_arms = math.prod(pi[a].item() for a in arms)
        for outcome in itertools.product(range(m), repeat=g):
            p = p_arms * math.prod(bandit.probs[a, o].item() for a, o in zip(arms, outcome, strict=True))
            if p == 0:
                continue
            rewards = bandit.values[list(outcome)]
            a1 = fn(rewards, torch.zeros(g, dtype=torch.long))[0].item()
            num[arms[0]] += p * a1
            den[arms[0]] += p
    return num / den


@pytest.mark.parametrize("estimator", ["grpo", "mean", "rloo", "median", "median_std", "reinforce"])
def test_expected_advantages_match_brute_force_enumeration(estimator):
    bandit = bd.Bandit.graded([0.0, 0.5, 1.0], noise=0.5, noise_prob=0.4)  # M = 5 reward values
    pi = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    exact = bd.expected_advantages(bandit, pi[None], estimator, group_size=3)[0]
    oracle = brute_force_expected_advantage(bandit, pi, estimator, 3)
    torch.testing.assert_close(exact, oracle, rtol=1e-10, atol=1e-12)


def expected_reward_gradient(bandit, logits, temperature=1.0):
    theta = logits.clone().requires_grad_(True)
    j = (torch.softmax(theta / temperature, -1) * bandit.mean).sum()
    (grad,) = torch.autograd.grad(j, theta)
    return grad


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_unbiased_estimators_give_the_true_gradient_and_mean_baseline_shrinks_it(temperature):
    bandit = bd.Bandit.bernoulli([0.1, 0.8, 0.4, 0.6])
    logits = torch.tensor([0.3, -0.2, 0.5, 0.0], dtype=torch.float64)
    pi = torch.softmax(logits / temperature, -1)
    true = expected_reward_gradient(bandit, logits, temperature)
    g = 5
    for name, factor in [("reinforce", 1.0), ("rloo", 1.0), ("mean", (g - 1) / g)]:
        a_bar = bd.expected_advantages(bandit, pi[None], name, g)[0]
        got = bd.policy_gradient(pi, a_bar, temperature)
        torch.testing.assert_close(got, factor * true, rtol=1e-10, atol=1e-12)


def test_sampled_updates_average_to_the_exact_update():
    bandit = bd.Bandit.graded([0.2, 0.9, 0.5, 0.0], noise=0.3, noise_prob=0.5)
    init = torch.tensor([0.0, -0.5, 0.4, 0.2], dtype=torch.float64)
    common = dict(steps=1, lr=1.0, group_size=4, estimator="grpo", init_logits=init)
    exact = bd.train(bandit, mode="exact", num_seeds=1, **common).logits[0] - init
    sampled = bd.train(bandit, mode="sampled", num_seeds=40_000, seed=3, **common).logits - init
    se = sampled.std(0) / math.sqrt(sampled.shape[0])
    assert ((sampled.mean(0) - exact).abs() < 4 * se).all(), (sampled.mean(0), exact, se)


def test_npg_sampled_update_is_unbiased_for_delta_z_equal_lr_times_advantage():
    bandit = bd.Bandit.bernoulli([0.2, 0.7, 0.5])
    init = torch.tensor([0.2, -0.3, 0.1], dtype=torch.float64)
    common = dict(steps=1, lr=1.0, group_size=4, estimator="rloo", init_logits=init, update="npg")
    exact = bd.train(bandit, mode="exact", num_seeds=1, **common).logits[0] - init
    pi = torch.softmax(init, -1)
    torch.testing.assert_close(exact, bd.expected_advantages(bandit, pi[None], "rloo", 4)[0])
    sampled = bd.train(bandit, mode="sampled", num_seeds=40_000, seed=5, **common).logits - init
    se = sampled.std(0) / math.sqrt(sampled.shape[0])
    assert ((sampled.mean(0) - exact).abs() < 4 * se).all()


@pytest.mark.parametrize("p, g", [(0.5, 4), (0.2, 8), (0.9, 2)])
def test_degenerate_group_rate_is_p_to_the_g_plus_q_to_the_g(p, g):
    bandit = bd.Bandit.bernoulli([p])  # one arm: the pass rate is p whatever the policy
    run = bd.train(bandit, steps=1, lr=0.0, group_size=g, num_seeds=20_000, seed=1)
    rate = run.history["degenerate"].mean().item()
    expected = p**g + (1 - p) ** g
    assert rate == pytest.approx(expected, abs=4 * math.sqrt(expected * (1 - expected) / 20_000))


@pytest.mark.parametrize("mode", ["exact", "sampled"])
@pytest.mark.parametrize("update", ["pg", "npg"])
def test_grpo_training_raises_reward_and_collapses_entropy(mode, update):
    bandit = bd.Bandit.bernoulli([0.1, 0.2, 0.9, 0.3, 0.15])
    run = bd.train(bandit, steps=60, lr=0.3 if update == "npg" else 1.0, group_size=8, num_seeds=16,
                   mode=mode, update=update, seed=0)
    reward, ent = run.mean("reward"), run.mean("entropy")
    assert reward[0].item() == pytest.approx(bandit.mean.mean().item())
    assert ent[0].item() == pytest.approx(math.log(5))
    assert reward[-1] > 0.8
    assert ent[-1] < 0.5 * ent[0]
    assert run.history["pass@8"].shape == (61, 16)
    assert (run.history["pass@8"] >= run.history["pass@1"] - 1e-12).all()


def test_history_records_exact_pass_at_k_and_accuracy():
    bandit = bd.Bandit.correct_arms(6, correct=[1, 4], p_correct=0.9)
    run = bd.train(bandit, steps=0, num_seeds=2)
    s = (0.9 + 0.9) / 6
    assert run.history["accuracy"][0, 0].item() == pytest.approx(s)
    assert run.history["pass@8"][0, 0].item() == pytest.approx(1 - (1 - s) ** 8)


def test_constructors():
    graded = bd.Bandit.graded([0.0, 0.5, 1.0], noise=0.25, noise_prob=0.2)
    torch.testing.assert_close(graded.mean, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    assert graded.success.tolist() == pytest.approx([0.0, 0.0, 0.9])  # 1.0 - 0.25 fails the bar
    draws = graded.sample_rewards(torch.full((50_000,), 1), torch.Generator().manual_seed(0))
    assert set(np.round(draws.unique().numpy(), 6)) == {0.25, 0.5, 0.75}
    assert draws.mean().item() == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ValueError, match="`probs` rows"):
        bd.Bandit(torch.tensor([0.0, 1.0]), torch.tensor([[0.5, 0.6]]))
    with pytest.raises(ValueError, match="`p` must lie"):
        bd.Bandit.bernoulli([1.5])
    with pytest.raises(ValueError, match="`correct`"):
        bd.Bandit.correct_arms(3, correct=[5])


def test_train_rejects_bad_arguments():
    bandit = bd.Bandit.bernoulli([0.3, 0.6])
    with pytest.raises(ValueError, match="`mode`"):
        bd.train(bandit, mode="analytic")
    with pytest.raises(ValueError, match="`update`"):
        bd.train(bandit, update="adam")
    with pytest.raises(ValueError, match="`init_logits`"):
        bd.train(bandit, init_logits=torch.zeros(3), num_seeds=2)
    with pytest.raises(ValueError, match="`group_size`"):
        bd.train(bandit, group_size=1)
    with pytest.raises(ValueError, match="`estimator`"):
        bd.train(bandit, estimator="grpo_batch")
