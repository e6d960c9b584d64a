"""The nb10 checker: the reference solution passes, typical wrong answers fail with a useful message."""

import math

import torch

from forklab.diagnostics import tip
from forklab.exercises import nb10


def _solution(entropy, divergence, mask, ratio):
    def unit(x):
        lo, hi = x[mask].min(), x[mask].max()
        return (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)

    h, d = unit(entropy), unit(divergence)
    u = torch.where(mask, h + d - h * d, torch.tensor(-torch.inf, dtype=h.dtype))
    k = max(1, int(ratio * int(mask.sum()) + 1e-9))
    keep = torch.zeros(mask.numel(), dtype=torch.bool)
    keep[u.flatten().topk(k).indices] = True
    return keep.reshape(mask.shape)


def test_reference_solution_passes():
    feedback = nb10.check_soft_or_keep(_solution)
    assert feedback, str(feedback)


def test_library_rule_passes_too():
    # an independent implementation (forklab.diagnostics.tip) agrees with the checker's list-based reference
    feedback = nb10.check_soft_or_keep(lambda h, d, m, r: tip.select_soft_or(h, d, m, r))
    assert feedback, str(feedback)


def test_not_attempted_is_reported_without_raising():
    def stub(entropy, divergence, mask, ratio):
        raise NotImplementedError

    feedback = nb10.check_soft_or_keep(stub)
    assert not feedback and "not attempted" in str(feedback)


def test_unnormalised_axes_get_the_min_max_hint():
    def raw(entropy, divergence, mask, ratio):
        u = torch.where(mask, entropy + divergence - entropy * divergence, torch.tensor(-math.inf, dtype=torch.float64))
        k = max(1, int(ratio * int(mask.sum()) + 1e-9))
        keep = torch.zeros(mask.numel(), dtype=torch.bool)
        keep[u.flatten().topk(k).indices] = True
        return keep.reshape(mask.shape)

    text = str(nb10.check_soft_or_keep(raw))
    assert "not yet" in text and "min)/(max − min)" in text


def test_min_max_over_padding_is_named():
    def whole_tensor(entropy, divergence, mask, ratio):
        return _solution(torch.nan_to_num(entropy), torch.nan_to_num(divergence), torch.ones_like(mask), ratio) & mask

    text = str(nb10.check_soft_or_keep(whole_tensor))
    assert "not yet" in text and ("padding" in text or "exactly k" in text)


def test_and_instead_of_or_fails():
    def soft_and(entropy, divergence, mask, ratio):
        def unit(x):
            lo, hi = x[mask].min(), x[mask].max()
            return (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)

        u = torch.where(mask, unit(entropy) * unit(divergence), torch.tensor(-math.inf, dtype=torch.float64))
        k = max(1, int(ratio * int(mask.sum()) + 1e-9))
        keep = torch.zeros(mask.numel(), dtype=torch.bool)
        keep[u.flatten().topk(k).indices] = True
        return keep.reshape(mask.shape)

    text = str(nb10.check_soft_or_keep(soft_and))
    assert "not yet" in text and "soft OR" in text


def test_wrong_count_is_named():
    def ceil_count(entropy, divergence, mask, ratio):
        keep = _solution(entropy, divergence, mask, 1.0)
        return keep  # keeps everything

    assert "keep exactly k" in str(nb10.check_soft_or_keep(ceil_count))


def test_in_place_modification_is_caught():
    def in_place(entropy, divergence, mask, ratio):
        entropy.mul_(1.0).add_(1.0)
        return _solution(entropy, divergence, mask, ratio)

    assert "modified its inputs" in str(nb10.check_soft_or_keep(in_place))


def test_show_solution_prints_only_when_asked(capsys):
    nb10.show_solution()
    assert "topk" in capsys.readouterr().out
