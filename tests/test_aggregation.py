"""Loss aggregation against per-sequence loops and a hand-computed Balanced Aggregation case."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from forklab.aggregation import MODES, aggregate, token_weights


def ragged(lengths, seed=0, width=None):
    g = torch.Generator().manual_seed(seed)
    width = width or max(lengths)
    mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
    loss = torch.randn(len(lengths), width, generator=g, dtype=torch.float64)
    return torch.where(mask, loss, torch.full_like(loss, float("nan"))), mask  # NaN padding must not leak


def test_modes_against_loops():
    lengths = [3, 1, 5, 0, 2]
    loss, mask = ragged(lengths)
    rows = [loss[i, :n].tolist() for i, n in enumerate(lengths)]
    nonempty = [r for r in rows if r]
    assert aggregate(loss, mask, "token-mean").item() == pytest.approx(sum(map(sum, rows)) / sum(lengths))
    assert aggregate(loss, mask, "token-sum").item() == pytest.approx(sum(map(sum, rows)))
    assert aggregate(loss, mask, "seq-mean-token-mean").item() == pytest.approx(
        np.mean([np.mean(r) for r in nonempty]))
    assert aggregate(loss, mask, "seq-mean-token-sum").item() == pytest.approx(np.mean([sum(r) for r in nonempty]))
    assert aggregate(loss, mask, "seq-mean-token-sum-norm").item() == pytest.approx(
        sum(map(sum, rows)) / (len(nonempty) * 5))
    assert aggregate(loss, mask, "seq-mean-token-sum-norm", norm_len=8).item() == pytest.approx(
        sum(map(sum, rows)) / (len(nonempty) * 8))


def test_balanced_aggregation_hand_computed_case():
    # one group of G = 4: two correct (lengths 2, 4), one wrong (length 3), one zero-advantage (length 1)
    lengths = [2, 4, 3, 1]
    loss, mask = ragged(lengths, seed=3)
    adv = torch.tensor([1.0, 1.0, -2.0, 0.0])
    group = torch.zeros(4, dtype=torch.long)
    pos = loss[0, :2].sum() + loss[1, :4].sum()
    neg = loss[2, :3].sum()
    expected = (2 / 4) * pos / 6 + (1 / 4) * neg / 3  # k/G · token-mean(S+) + n-/G · token-mean(S-)
    assert aggregate(loss, mask, "balanced", adv=adv, group=group).item() == pytest.approx(expected.item())


def test_balanced_averages_groups_and_accepts_token_advantages():
    lengths = [2, 5, 1, 3, 3, 4]
    loss, mask = ragged(lengths, seed=4)
    adv = torch.tensor([0.5, -0.5, 1.0, -1.0, -1.0, 2.0])
    group = torch.tensor([4, 4, 9, 9, 9, 9])
    g1 = 0.5 * loss[0, :2].sum() / 2 + 0.5 * loss[1, :5].sum() / 5
    g2 = 0.5 * (loss[2, :1].sum() + loss[5, :4].sum()) / 5 + 0.5 * (loss[3, :3].sum() + loss[4, :3].sum()) / 6
    expected = (g1 + g2) / 2
    got = aggregate(loss, mask, "balanced", adv=adv, group=group)
    assert got.item() == pytest.approx(expected.item())
    token_adv = adv[:, None].expand(6, 5).clone()
    assert aggregate(loss, mask, "balanced", adv=token_adv, group=group).item() == pytest.approx(expected.item())


def test_all_means_agree_when_lengths_are_equal():
    loss, mask = ragged([4, 4, 4, 4], seed=5)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    group = torch.zeros(4, dtype=torch.long)
    reference = aggregate(loss, mask, "token-mean")
    for mode in ("seq-mean-token-mean", "seq-mean-token-sum-norm", "balanced"):
        assert aggregate(loss, mask, mode, adv=adv, group=group).item() == pytest.approx(reference.item()), mode
    assert aggregate(loss, mask, "token-sum").item() == pytest.approx(16 * reference.item())
    assert aggregate(loss, mask, "seq-mean-token-sum").item() == pytest.approx(4 * reference.item())


def test_token_sum_is_micro_batch_invariant():
    loss, mask = ragged([3, 1, 5, 2, 4, 4], seed=6)
    whole = aggregate(loss, mask, "token-sum")
    parts = aggregate(loss[:2], mask[:2], "token-sum") + aggregate(loss[2:], mask[2:], "token-sum")
    assert whole.item() == pytest.approx(parts.item())
    # token-mean is not: mean of micro-batch means differs from the global mean
    halves = (aggregate(loss[:2], mask[:2]) + aggregate(loss[2:], mask[2:])) / 2
    assert halves.item() != pytest.approx(aggregate(loss, mask).item())


def test_sign_length_coupling_of_token_mean_and_its_absence_in_seq_mean_and_ba():
    # binary rewards, k = 1 correct of G = 2; the wrong response is 4x longer
    mask = torch.arange(8)[None, :] < torch.tensor([[2], [8]])
    adv = torch.tensor([1.0, -1.0])
    group = torch.zeros(2, dtype=torch.long)
    side = {}
    for mode in ("token-mean", "seq-mean-token-mean", "balanced"):
        w = token_weights(mask, mode, adv, group)
        side[mode] = (w[0].sum().item(), w[1].sum().item())  # total weight of the positive / negative side
    assert side["token-mean"] == pytest.approx((0.2, 0.8))  # the long negative dominates
    assert side["seq-mean-token-mean"] == pytest.approx((0.5, 0.5))
    assert side["balanced"] == pytest.approx((0.5, 0.5))
    # inside one side, seq-mean gives the tokens of a long response 1/|o| less weight; BA does not
    mask2 = torch.arange(8)[None, :] < torch.tensor([[2], [8]])
    both_pos = torch.tensor([1.0, 1.0])
    w_seq = token_weights(mask2, "seq-mean-token-mean", both_pos, group)
    w_ba = token_weights(mask2, "balanced", both_pos, group)
    assert w_seq[0, 0] / w_seq[1, 0] == pytest.approx(4.0)
    assert w_ba[0, 0] / w_ba[1, 0] == pytest.approx(1.0)


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(0, 6), min_size=2, max_size=6).filter(any),
       extra=st.integers(1, 4), mode=st.sampled_from(MODES), seed=st.integers(0, 999))
def test_padding_invariance(lengths, extra, mode, seed):
    loss, mask = ragged(lengths, seed=seed, width=6)
    adv = torch.tensor([(-1.0) ** i for i in range(len(lengths))])
    group = torch.zeros(len(lengths), dtype=torch.long)
    padded_loss = torch.cat([loss, torch.full((len(lengths), extra), 7.0, dtype=torch.float64)], 1)
    padded_mask = torch.cat([mask, torch.zeros(len(lengths), extra, dtype=torch.bool)], 1)
    kwargs = dict(adv=adv, group=group, norm_len=10.0)
    a = aggregate(loss, mask, mode, **kwargs)
    b = aggregate(padded_loss, padded_mask, mode, **kwargs)
    assert torch.isfinite(a) and a.item() == pytest.approx(b.item())


def test_gradient_flows_and_bad_inputs():
    loss, mask = ragged([2, 3])
    loss = torch.where(mask, loss, 0.0).requires_grad_(True)
    aggregate(loss, mask, "seq-mean-token-mean").backward()
    torch.testing.assert_close(loss.grad, token_weights(mask, "seq-mean-token-mean"))
    with pytest.raises(ValueError, match="`mask` is empty"):
        aggregate(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="`mode`"):
        aggregate(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool), "seq-mean")
    with pytest.raises(ValueError, match="`adv` and `group` are required"):
        aggregate(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool), "balanced")
    with pytest.raises(ValueError, match="`loss` contains NaN inside"):
        aggregate(torch.full((2, 3), float("nan")), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="`loss` must have the same shape as `mask`"):
        aggregate(torch.zeros(2, 3), torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="`adv` must have shape"):
        aggregate(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool), "balanced",
                  adv=torch.ones(3), group=torch.zeros(2, dtype=torch.long))
