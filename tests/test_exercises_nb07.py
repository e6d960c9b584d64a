"""The nb07 checker: its reference equals the pairwise definition (loops) and the library; it accepts the
reference and rejects typical wrong answers with a helpful message."""

import torch

from forklab.diagnostics import thr
from forklab.exercises import nb07


def test_reference_equals_the_pairwise_definition_and_the_library():
    for _, h, g, positive in nb07._cases():
        loops = torch.zeros(len(h), dtype=torch.float64)
        for t in range(len(h)):
            for i in range(len(h)):
                if positive[i]:
                    loops[t] += (g[t] @ g[i]) * (h[t] @ h[i])
        torch.testing.assert_close(nb07.solution_influence(h, g, positive), loops)
        torch.testing.assert_close(thr._factorised(h, g, positive), loops)


def test_reference_passes_and_stub_is_not_attempted():
    fb = nb07.check_influence(nb07.solution_influence)
    assert fb and "all checks passed" in str(fb)

    def stub(h, g, positive):
        raise NotImplementedError

    fb = nb07.check_influence(stub)
    assert not fb and "not attempted" in str(fb)


def test_typical_mistakes_get_their_hint():
    all_tokens = nb07.check_influence(lambda h, g, pos: nb07.solution_influence(h, g, torch.ones_like(pos)))
    assert not all_tokens and "correct responses only" in str(all_tokens) and "expected" in str(all_tokens)
    no_alpha = nb07.check_influence(lambda h, g, pos: (h @ h[pos].T).sum(-1))
    assert not no_alpha and "prediction-error similarity" in str(no_alpha)
    flipped = nb07.check_influence(lambda h, g, pos: -nb07.solution_influence(h, g, pos))
    assert not flipped and "sign" in str(flipped)
    scalar = nb07.check_influence(lambda h, g, pos: nb07.solution_influence(h, g, pos).sum())
    assert not scalar and "shape" in str(scalar)


def test_inputs_must_not_be_modified():
    def in_place(h, g, positive):
        out = nb07.solution_influence(h, g, positive)
        h.zero_()
        return out

    fb = nb07.check_influence(in_place)
    assert not fb and "modified" in str(fb)
