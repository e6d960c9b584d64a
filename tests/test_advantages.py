"""forklab.advantages against per-group loops written with Python's `statistics` module.

The oracles here never call the code under test: each one recomputes the formula from its
definition (loop vs vectorised, the RLOO identity, constant group → 0).
"""

import statistics

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from forklab import advantages as adv


def groups_of(rewards, group):
    out = {}
    for i, (r, g) in enumerate(zip(rewards, group, strict=True)):
        out.setdefault(g, []).append((i, r))
    return out


def loop_grpo(rewards, group, scale="group", eps=1e-6):
    result = [0.0] * len(rewards)
    batch_std = statistics.stdev(rewards)
    for members in groups_of(rewards, group).values():
        rs = [r for _, r in members]
        mu = statistics.fmean(rs)
        for i, r in members:
            if len(set(rs)) == 1:
                result[i] = 0.0
            elif scale == "group":
                result[i] = (r - mu) / (statistics.stdev(rs) + eps)
            elif scale == "batch":
                result[i] = (r - mu) / (batch_std + eps)
            else:
                result[i] = r - mu
    return result


def random_batch(seed, n_groups=5, size=6, levels=3):
    rng = np.random.default_rng(seed)
    rewards = rng.integers(0, levels, size=n_groups * size) / (levels - 1)
    group = np.repeat(rng.permutation(100)[:n_groups], size)  # arbitrary, non-contiguous ids
    perm = rng.permutation(len(rewards))  # groups interleaved in the batch
    return rewards[perm].tolist(), group[perm].tolist()


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("seed", range(5))
def test_grpo_matches_loop(scale, seed):
    rewards, group = random_batch(seed)
    got = adv.grpo(torch.tensor(rewards, dtype=torch.float64), torch.tensor(group), scale=scale)
    np.testing.assert_allclose(got.numpy(), loop_grpo(rewards, group, scale), rtol=1e-12, atol=1e-12)


def test_grpo_constant_group_is_exactly_zero_even_with_rounding():
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.7, 0.2], dtype=torch.float64)
    group = torch.tensor([0, 0, 0, 1, 1])
    out = adv.grpo(rewards, group)
    assert out[:3].tolist() == [0.0, 0.0, 0.0]
    assert out[3] > 0 > out[4]


def test_grpo_low_variance_group_like_verl_test():
    # verl's regression case: rewards 1.0 vs 1.00001 must not blow up beyond (r-mu)/(std+eps)
    rewards = [1.0, 1.00001, 1.0, 1.00001]
    got = adv.grpo(torch.tensor(rewards, dtype=torch.float64), torch.zeros(4, dtype=torch.long))
    np.testing.assert_allclose(got.numpy(), loop_grpo(rewards, [0] * 4), rtol=1e-9)


def test_binary_group_advantages_follow_nthr_lemma():
    # NTHR Lemma 4.2 (formulas.md 1A): with k of G correct and p = k/G, the population-std advantage
    # is sqrt((1-p)/p) for a correct response; with the unbiased std it is scaled by sqrt((G-1)/G).
    g_size, k = 8, 3
    rewards = torch.tensor([1.0] * k + [0.0] * (g_size - k), dtype=torch.float64)
    out = adv.grpo(rewards, torch.zeros(g_size, dtype=torch.long), eps=0.0)
    p = k / g_size
    factor = np.sqrt((g_size - 1) / g_size)
    assert out[0].item() == pytest.approx(np.sqrt((1 - p) / p) * factor)
    assert out[-1].item() == pytest.approx(-np.sqrt(p / (1 - p)) * factor)


@pytest.mark.parametrize("seed", range(4))
def test_rloo_is_reward_minus_mean_of_the_others(seed):
    rewards, group = random_batch(seed, size=4)
    got = adv.rloo(torch.tensor(rewards, dtype=torch.float64), torch.tensor(group))
    members = groups_of(rewards, group)
    for i, (r, g) in enumerate(zip(rewards, group, strict=True)):
        others = [rj for j, rj in members[g] if j != i]
        assert got[i].item() == pytest.approx(r - statistics.fmean(others), abs=1e-12)
    # and the identity A = n/(n-1) (R - mu) (RLOO as a rescaled mean baseline)
    n = 4
    np.testing.assert_allclose(got.numpy(), np.array(loop_grpo(rewards, group, "none")) * n / (n - 1), atol=1e-12)


@pytest.mark.parametrize("size", [2, 3, 4, 5, 8, 9])
def test_median_matches_statistics_median(size):
    rewards, group = random_batch(size, size=size, levels=5)
    r, g = torch.tensor(rewards, dtype=torch.float64), torch.tensor(group)
    plain = adv.median(r, g, scale="none")
    scaled = adv.median(r, g, scale="group", eps=1e-6)
    members = groups_of(rewards, group)
    for i, (ri, gi) in enumerate(zip(rewards, group, strict=True)):
        rs = [x for _, x in members[gi]]
        if len(set(rs)) == 1:
            assert plain[i] == 0 and scaled[i] == 0
            continue
        assert plain[i].item() == pytest.approx(ri - statistics.median(rs), abs=1e-12)
        assert scaled[i].item() == pytest.approx((ri - statistics.median(rs)) / (statistics.stdev(rs) + 1e-6))


def test_median_pivot_marks_exactly_one_zero_advantage_response_per_odd_group():
    rewards = torch.tensor([0.0, 1.0, 1.0, 0.5, 0.2, 1.0, 0.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    group = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])  # sizes 3, 3, 4
    pivot = adv.median_pivot(rewards, group)
    assert pivot.tolist() == [False, True, False, True, False, False, False, False, False, False]
    assert (adv.median(rewards, group)[pivot] == 0).all()


def test_median_flips_fewer_signs_than_mean_with_one_outlier():
    # one outlier reward drags the mean above a good response; the median does not move
    rewards = torch.tensor([0.6, 0.5, 0.4, 5.0, 0.3], dtype=torch.float64)
    group = torch.zeros(5, dtype=torch.long)
    assert adv.grpo(rewards, group, scale="none")[0] < 0  # 0.6 is above typical, yet negative
    assert adv.median(rewards, group, scale="none")[0] > 0


def test_token_group_average_equals_stats_of_rewards_repeated_per_token():
    rng = np.random.default_rng(7)
    rewards = rng.integers(0, 2, 12).astype(float)
    rewards[[0, 6]] = [0.0, 1.0]  # no constant group
    rewards[[1, 7]] = [1.0, 0.0]
    lengths = rng.integers(1, 9, 12).astype(float)
    group = np.repeat([3, 8], 6)
    got = adv.token_group_average(torch.tensor(rewards), torch.tensor(group), torch.tensor(lengths), eps=1e-6)
    for g in (3, 8):
        idx = group == g
        per_token = np.repeat(rewards[idx], lengths[idx].astype(int))
        mu, sigma = per_token.mean(), per_token.std(ddof=0)
        expected = (rewards[idx] - mu) / (sigma + 1e-6)
        if np.abs(expected).max() >= 5:
            expected = np.array(loop_grpo(rewards[idx].tolist(), [g] * 6))
        np.testing.assert_allclose(got.numpy()[idx], expected, rtol=1e-10)


def test_token_group_average_falls_back_to_grpo_when_an_advantage_reaches_5():
    rewards = torch.tensor([1.0] + [0.0] * 5, dtype=torch.float64)
    lengths = torch.tensor([1.0] + [100.0] * 5, dtype=torch.float64)
    group = torch.zeros(6, dtype=torch.long)
    per_token = np.repeat(rewards.numpy(), lengths.numpy().astype(int))
    assert (1 - per_token.mean()) / per_token.std() >= 5  # the unguarded value would be huge
    got = adv.token_group_average(rewards, group, lengths)
    np.testing.assert_allclose(got.numpy(), loop_grpo(rewards.tolist(), [0] * 6), rtol=1e-12)


def test_multi_reward_sum_collapses_combinations_but_gdpo_does_not():
    # components: correctness, format. (1,0) and (0,1) both sum to 1.
    rewards = torch.tensor([[1, 0], [0, 1], [0, 1], [0, 1], [0, 0], [0, 1]], dtype=torch.float64)
    group = torch.zeros(6, dtype=torch.long)
    summed = adv.multi_reward(rewards, group, mode="sum_then_normalize")
    gdpo = adv.multi_reward(rewards, group, mode="normalize_then_sum")
    assert summed[0].item() == pytest.approx(summed[1].item())
    assert gdpo[0].item() > gdpo[1].item() + 0.5  # the rarely satisfied component weighs more
    # GDPO by hand: per-component group z-score (stdev), sum, batch whitening
    comp = [loop_grpo(rewards[:, j].tolist(), [0] * 6) for j in range(2)]
    total = np.array(comp[0]) + np.array(comp[1])
    expected = (total - total.mean()) / (total.std(ddof=1) + 1e-6)
    np.testing.assert_allclose(gdpo.numpy(), expected, rtol=1e-10)
    weighted = adv.multi_reward(rewards, group, weights=torch.tensor([2.0, 0.5]), mode="sum_then_normalize")
    np.testing.assert_allclose(weighted.numpy(), loop_grpo((rewards @ torch.tensor([2.0, 0.5],
                               dtype=torch.float64)).tolist(), [0] * 6), rtol=1e-12)


@settings(max_examples=50, deadline=None)
@given(
    rewards=st.lists(st.floats(-5, 5, allow_nan=False), min_size=4, max_size=4),
    a=st.floats(0.1, 10),
    b=st.floats(-3, 3),
)
def test_grpo_is_invariant_to_affine_reward_changes_and_sums_to_zero(rewards, a, b):
    r = torch.tensor(rewards * 2, dtype=torch.float64)
    group = torch.tensor([0] * 4 + [1] * 4)
    base = adv.grpo(r, group, eps=0.0)
    moved = adv.grpo(a * r + b, group, eps=0.0)
    if len(set(rewards)) > 1 and statistics.stdev(rewards) > 1e-3:
        np.testing.assert_allclose(moved.numpy(), base.numpy(), atol=1e-6)
    assert abs(base[:4].sum().item()) < 1e-9
    assert abs(adv.rloo(r, group)[:4].sum().item()) < 1e-9


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: adv.grpo(torch.tensor([1.0, 0.0]), torch.tensor([0, 0, 0])), "`group` must have shape"),
        (lambda: adv.grpo(torch.tensor([]), torch.tensor([], dtype=torch.long)), "`rewards` is empty"),
        (lambda: adv.grpo(torch.tensor([1.0, float("nan")]), torch.tensor([0, 0])), "`rewards` contains NaN"),
        (lambda: adv.grpo(torch.tensor([1.0, float("inf")]), torch.tensor([0, 0])), "`rewards` contains inf"),
        (lambda: adv.grpo(torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0, 0, 1])), "single response"),
        (lambda: adv.grpo(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])), "`group` must be an integer"),
        (lambda: adv.grpo(torch.ones(2, 2), torch.tensor([0, 0])), "`rewards` must have shape"),
        (lambda: adv.grpo(torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), scale="std"), "`scale` must be one of"),
        (lambda: adv.grpo(torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), eps=-1), "`eps`"),
        (lambda: adv.rloo(torch.tensor([1.0, float("nan")]), torch.tensor([0, 0])), "`rewards` contains NaN"),
        (lambda: adv.median(torch.tensor([1.0]), torch.tensor([0])), "single response"),
        (lambda: adv.token_group_average(torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), torch.tensor([1.0])),
         "`lengths` must have the same shape"),
        (lambda: adv.token_group_average(torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), torch.tensor([0.0, 0.0])),
         "`lengths` sums to 0"),
        (lambda: adv.token_group_average(torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), torch.tensor([-1.0, 2.0])),
         "`lengths` must be non-negative"),
        (lambda: adv.multi_reward(torch.tensor([1.0, 0.0]), torch.tensor([0, 0])),
         "`rewards` must have shape \\[B, K\\]"),
        (lambda: adv.multi_reward(torch.ones(2, 2), torch.tensor([0, 0]), weights=torch.ones(3)), "`weights`"),
        (lambda: adv.multi_reward(torch.ones(2, 2), torch.tensor([0, 0]), mode="x"), "`mode`"),
        (lambda: adv.get_estimator("ppo"), "`estimator` must be one of"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_inputs_are_not_modified_and_dtype_is_kept():
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5], dtype=torch.float32)
    group = torch.tensor([0, 0, 1, 1])
    before = rewards.clone()
    out = adv.grpo(rewards, group)
    assert out.dtype == torch.float32
    assert torch.equal(rewards, before)


def test_group_spread_below_float_resolution_gives_zero_not_nan():
    # found by hypothesis: a subnormal spread makes the unbiased std underflow to 0
    rewards = torch.tensor([0.0, 0.0, 0.0, 1.1125369292536007e-308], dtype=torch.float64)
    out = adv.grpo(rewards, torch.zeros(4, dtype=torch.long), eps=0.0)
    assert torch.isfinite(out).all() and (out == 0).all()
