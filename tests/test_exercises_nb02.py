"""Notebook 02's exercise checker: the reference passes, typical wrong answers fail with a useful message."""

import pytest
import torch

from forklab.aggregation import token_weights
from forklab.exercises import nb02


def ragged(lengths):
    return torch.arange(int(lengths.max()))[None, :] < lengths[:, None]


@pytest.mark.parametrize("seed", range(5))
def test_reference_equals_forklab_aggregation_on_random_groups(seed):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 9, (7,), generator=gen)
    adv = torch.randn(7, generator=gen, dtype=torch.float64)
    adv[int(torch.randint(0, 7, (1,), generator=gen))] = 0.0
    mask = ragged(lengths)
    expected = token_weights(mask, "balanced", adv, torch.zeros(7, dtype=torch.long))
    torch.testing.assert_close(nb02.reference_ba_weights(lengths, adv), expected)


def test_reference_and_the_shown_solution_pass():
    assert nb02.check_ba_weights(nb02.reference_ba_weights)
    namespace = {"torch": torch}
    exec(nb02.SOLUTIONS[4], namespace)  # the solution printed by show_solution(4) is correct code
    assert nb02.check_ba_weights(namespace["my_ba_weights"])


def token_mean(lengths, adv):
    m = ragged(lengths).double()
    return m / m.sum()


def seq_mean(lengths, adv):
    m = ragged(lengths).double()
    return m / (m.sum(1, keepdim=True) * len(lengths))


def no_side_factor(lengths, adv):
    w = torch.zeros(len(lengths), int(lengths.max()), dtype=torch.float64)
    for side in (adv > 0, adv < 0):
        if side.any():
            w[side] = 1.0 / lengths[side].sum()
    return w * ragged(lengths)


def g_without_zeros(lengths, adv):
    w = torch.zeros(len(lengths), int(lengths.max()), dtype=torch.float64)
    nonzero = (adv != 0).sum()
    for side in (adv > 0, adv < 0):
        if side.any():
            w[side] = (side.sum() / nonzero) / lengths[side].sum()
    return w * ragged(lengths)


def no_mask(lengths, adv):
    return nb02.reference_ba_weights(lengths, adv) + 0.01 * ~ragged(lengths)


@pytest.mark.parametrize(("wrong", "hint"), [(token_mean, "token-mean"), (seq_mean, "seq-mean"),
                                             (no_side_factor, "side factors"), (g_without_zeros, "zero advantages"),
                                             (no_mask, "padding")])
def test_typical_wrong_answers_fail_with_a_hint(wrong, hint):
    feedback = nb02.check_ba_weights(wrong)
    assert not feedback and hint in str(feedback) and "expected" in str(feedback)


def test_stub_shape_and_solutions(capsys):
    def stub(lengths, adv):
        raise NotImplementedError

    assert "not attempted yet" in str(nb02.check_ba_weights(stub))
    assert "expected shape" in str(nb02.check_ba_weights(lambda lengths, adv: torch.zeros(3)))
    nb02.show_solution(2)
    assert "norm_len" in capsys.readouterr().out
    with pytest.raises(ValueError, match="`exercise`"):
        nb02.show_solution(0)
