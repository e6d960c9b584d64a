"""TIP axes, quadrants, Soft-OR and selection rules against hand counts and planted tokens."""

import math

import pytest
import torch

from forklab import divergences, ops
from forklab.diagnostics import tip


def hand_case():
    entropy = torch.tensor([[0.1, 0.9, 0.5, 0.2, 7.0], [0.8, 0.05, 0.6, 0.3, 0.4]])
    divergence = torch.tensor([[0.9, 0.8, 0.1, 0.6, 7.0], [0.2, 0.3, 0.7, 0.4, 0.5]])
    mask = torch.tensor([[True, True, True, True, False], [True, True, True, True, True]])
    return entropy, divergence, mask


def test_quadrants_by_value_match_a_hand_count():
    entropy, divergence, mask = hand_case()
    q = tip.quadrants(entropy, divergence, mask, entropy_threshold=0.4, divergence_threshold=0.4)
    # high H = H > 0.4, high D = D > 0.4 (ties are low: (0.4, 0.4) at [1, 4] has H low, D high)
    expected = torch.tensor([[3, 1, 2, 3, 0], [2, 4, 1, 4, 3]])
    assert torch.equal(q.ids, expected)
    torch.testing.assert_close(q.shares, torch.tensor([2, 2, 3, 2], dtype=torch.float64) / 9)
    assert float(q.shares.sum()) == pytest.approx(1.0)


def test_quadrants_default_median_split():
    entropy, divergence, mask = hand_case()
    q = tip.quadrants(entropy, divergence, mask)
    # valid H sorted: .05 .1 .2 .3 .4 .5 .6 .8 .9 -> median .4; valid D: .1 .2 .3 .4 .5 .6 .7 .8 .9 -> .5
    assert q.entropy_threshold == pytest.approx(0.4) and q.divergence_threshold == pytest.approx(0.5)
    expected = torch.tensor([[3, 1, 2, 3, 0], [2, 4, 1, 4, 4]])
    assert torch.equal(q.ids, expected)
    assert float(q.shares.sum()) == pytest.approx(1.0)
    counts = torch.bincount(expected[mask], minlength=5)[1:]
    torch.testing.assert_close(q.shares, counts.double() / 9)


def test_soft_or_is_probabilistic_or_of_minmax_axes():
    entropy, divergence, mask = hand_case()
    u = tip.soft_or_score(entropy, divergence, mask)
    h = (entropy - 0.05) / (0.9 - 0.05)  # min/max over valid tokens only (7.0 is padding)
    d = (divergence - 0.1) / (0.9 - 0.1)
    expected = torch.where(mask, 1 - (1 - h.double()) * (1 - d.double()), 0.0)
    torch.testing.assert_close(u, expected)
    assert u[mask].min() >= 0 and u[mask].max() <= 1
    flat = tip.soft_or_score(torch.ones(2, 5), divergence, mask)  # constant axis -> h = 0, u = d
    torch.testing.assert_close(flat, torch.where(mask, d.double(), 0.0))


def test_token_axes_use_ops_and_divergences():
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 4, 6, generator=gen), torch.randn(2, 4, 6, generator=gen)
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    s[~mask] = float("nan")  # padding garbage must not matter
    for kind, fn in (("reverse_kl", divergences.reverse_kl), ("jsd", divergences.jsd),
                     ("forward_kl", divergences.forward_kl)):
        entropy, div = tip.token_axes(s, t, mask, divergence=kind, temperature=0.7)
        torch.testing.assert_close(entropy[mask], ops.entropy_from_logits(s[mask], temperature=0.7))
        torch.testing.assert_close(div[mask], fn(s[mask], t[mask], temperature=0.7))
        assert (entropy[~mask] == 0).all() and (div[~mask] == 0).all()


def planted_batch(seed=0):
    """Moderate tokens everywhere, plus a few where the student is sure of one token, the teacher of another."""
    gen = torch.Generator().manual_seed(seed)
    B, T, V = 4, 16, 20
    student = 2.0 * torch.randn(B, T, V, generator=gen)
    teacher = student + 0.3 * torch.randn(B, T, V, generator=gen)
    planted = torch.zeros(B, T, dtype=torch.bool)
    planted[[0, 0, 1, 2, 3, 3], [2, 9, 5, 12, 0, 7]] = True
    for b, pos in planted.nonzero().tolist():
        student[b, pos] = 0.3 * torch.randn(V, generator=gen)
        teacher[b, pos] = 0.3 * torch.randn(V, generator=gen)
        student[b, pos, 3] += 12.0  # student: confident in token 3
        teacher[b, pos, 11] += 12.0  # teacher: confident in token 11
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 13:] = False
    mask[2, 14:] = False
    return student, teacher, mask, planted


def test_planted_overconfident_tokens_are_found_by_q3_and_soft_or_not_by_entropy():
    student, teacher, mask, planted = planted_batch()
    entropy, div = tip.token_axes(student, teacher, mask)
    assert (tip.quadrants(entropy, div, mask).ids[planted] == 3).all()
    assert (tip.select_q3(entropy, div, mask)[planted]).all()  # ratio=None: the whole Q3
    ratio = 6 / 59 + 1e-3  # N = 59 valid tokens -> k = 6, the number planted
    assert torch.equal(tip.select_q3(entropy, div, mask, ratio=ratio), planted)
    # Soft-OR ranks them next to the highest-entropy tokens (u = d ≈ 0.91-1.0 for planted, up to 1.0 for the
    # most uncertain others), so it needs room: measured, all 6 kept at ρ = 0.35 (k = 20) over the batch and
    # at ρ = 0.4 per sequence, while entropy top-ρ keeps none of them at any ρ up to 0.5
    assert tip.select_soft_or(entropy, div, mask, ratio=0.35)[planted].all()
    assert tip.select_soft_or(entropy, div, mask, ratio=0.4, scope="sequence")[planted].all()
    for rho in (0.35, 0.5):
        assert not tip.select_entropy_top(entropy, mask, rho)[planted].any()


RULES = ["entropy_top", "entropy_sample", "q3", "soft_or", "random"]


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("ratio", [0.05, 0.2, 0.29, 0.5, 1.0])
def test_each_rule_keeps_exactly_floor_ratio_n_within_the_mask(rule, ratio):
    student, teacher, mask, _ = planted_batch(seed=1)
    entropy, div = tip.token_axes(student, teacher, mask, divergence="jsd")
    gen = torch.Generator().manual_seed(0)
    extra = {"gamma": 0.5} if rule == "entropy_sample" else {}
    keep = tip.select_tokens(rule, entropy, div, mask, ratio, generator=gen, **extra)
    n = int(mask.sum())  # 59
    assert int(keep.sum()) == max(1, math.floor(ratio * n + 1e-9)) and not (keep & ~mask).any()
    keep = tip.select_tokens(rule, entropy, div, mask, ratio, generator=gen, scope="sequence")
    per_row = [max(1, math.floor(ratio * int(m) + 1e-9)) for m in mask.sum(1)]
    assert keep.sum(1).tolist() == per_row and not (keep & ~mask).any()


@pytest.mark.parametrize("rule", ["entropy_sample", "random"])
def test_random_rules_are_reproducible_with_a_seeded_generator(rule):
    student, teacher, mask, _ = planted_batch(seed=2)
    entropy, div = tip.token_axes(student, teacher, mask, divergence="jsd")

    def draw(seed):
        return tip.select_tokens(rule, entropy, div, mask, 0.3, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))


def test_sampling_weights_are_the_repository_formula_and_favour_high_entropy():
    entropy, divergence, mask = hand_case()
    w = tip.sampling_weights(entropy, mask, divergence, alpha=2.0, gamma=0.5, vocab_size=10)
    expected = (entropy.double() / math.log(10)) ** 2 * (divergence.double() / math.log(2)) ** 0.5
    torch.testing.assert_close(w, torch.where(mask, expected, 0.0))
    student, teacher, mask, _ = planted_batch(seed=3)
    entropy, _ = tip.token_axes(student, teacher, mask)
    gen = torch.Generator().manual_seed(0)
    picked = [entropy[tip.select_entropy_sampling(entropy, mask, 0.2, alpha=4.0, generator=gen)].mean()
              for _ in range(20)]
    assert torch.stack(picked).mean() > entropy[mask].mean() + 0.3


def test_bad_inputs_raise_naming_the_argument():
    entropy, divergence, mask = hand_case()
    cases = [
        ("`ratio`", lambda: tip.select_entropy_top(entropy, mask, 0.0)),
        ("`ratio`", lambda: tip.select_soft_or(entropy, divergence, mask, 1.5)),
        ("`rule`", lambda: tip.select_tokens("top", entropy, divergence, mask, 0.5)),
        ("`divergence`", lambda: tip.select_tokens("soft_or", entropy, None, mask, 0.5)),
        ("`divergence`", lambda: tip.quadrants(entropy, divergence[:, :4], mask)),
        ("`entropy`", lambda: tip.soft_or_score(torch.full_like(entropy, float("nan")), divergence, mask)),
        ("`mask`", lambda: tip.quadrants(entropy, divergence, torch.zeros_like(mask))),
        ("`mask`", lambda: tip.soft_or_score(entropy, divergence, mask.float())),
        ("`quantile`", lambda: tip.quadrants(entropy, divergence, mask, quantile=2.0)),
        ("`scope`", lambda: tip.select_random(mask, 0.5, scope="token")),
        ("`divergence`", lambda: tip.token_axes(torch.zeros(2, 5, 3), torch.zeros(2, 5, 3), mask, divergence="kl")),
        ("`teacher_logits`", lambda: tip.token_axes(torch.zeros(2, 5, 3), torch.zeros(2, 5, 4), mask)),
        ("`student_logits`", lambda: tip.token_axes(torch.zeros(2, 5), torch.zeros(2, 5, 4), mask)),
    ]
    for name, call in cases:
        with pytest.raises(ValueError, match=name):
            call()
    # NaN in the padding is fine, NaN on a valid token is not
    padded = entropy.clone()
    padded[0, 4] = float("nan")
    tip.quadrants(padded, divergence, mask)
