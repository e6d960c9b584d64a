"""The nb06 checker: its reference agrees with the library's batched window entropy, it accepts the
reference and rejects typical wrong answers with a helpful message."""

import torch

from forklab.diagnostics.entropy import window_entropy
from forklab.exercises import nb06


def test_reference_matches_the_batched_library_function():
    gen = torch.Generator().manual_seed(0)
    h = torch.rand(3, 10, generator=gen, dtype=torch.float64)
    lengths = [10, 4, 7]
    mask = torch.arange(10)[None, :] < torch.tensor(lengths)[:, None]
    for w in (1, 3, 12):
        batched = window_entropy(h, mask, w)
        for b, n in enumerate(lengths):
            torch.testing.assert_close(nb06.solution_window_entropy(h[b, :n], w), batched[b, :n])


def test_reference_passes_and_stub_is_not_attempted():
    fb = nb06.check_window_entropy(nb06.solution_window_entropy)
    assert fb and "all checks passed" in str(fb)

    def stub(entropy, window):
        raise NotImplementedError

    fb = nb06.check_window_entropy(stub)
    assert not fb and "not attempted" in str(fb)


def test_trailing_window_is_caught_with_hint():
    def trailing(h, w):
        return torch.stack([h[max(0, t - w + 1):t + 1].mean() for t in range(len(h))])

    fb = nb06.check_window_entropy(trailing)
    assert not fb and "trailing" in str(fb) and "expected" in str(fb)


def test_dividing_by_w_at_the_end_is_caught_with_hint():
    def padded(h, w):
        return torch.stack([h[t:t + w].sum() / w for t in range(len(h))])

    fb = nb06.check_window_entropy(padded)
    assert not fb and "divide by the number of tokens" in str(fb)


def test_in_place_edit_and_wrong_length_are_reported():
    def in_place(h, w):
        h.zero_()
        return h

    assert "modified its input" in str(nb06.check_window_entropy(in_place))
    fb = nb06.check_window_entropy(lambda h, w: h[:-1].double())
    assert not fb and "same length" in str(fb)
