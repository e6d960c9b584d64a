"""Notebook 09's experiments: each claim checked against a condition derived separately from the code."""

import itertools
import math

import matplotlib.figure
import pytest
import torch

from forklab import alignment as al
from forklab.envs.bandit import Bandit
from forklab.lessons import on_policy_distillation as lesson


def _policy_by_loops(node_logits, vocab, length):
    """π(y) for every y in lexicographic order, by walking the prefix tree with plain loops."""
    index = {(): 0}
    for t in range(1, length):
        for prefix in itertools.product(range(vocab), repeat=t):
            index[prefix] = len(index)
    probs = []
    for y in itertools.product(range(vocab), repeat=length):
        p = 1.0
        for t in range(length):
            p *= torch.softmax(node_logits[index[y[:t]]], -1)[y[t]].item()
        probs.append(p)
    return torch.tensor(probs, dtype=torch.float64)


def test_sequence_space_enumerates_every_sequence_with_its_prefix_node():
    seqs, nodes, num_nodes = lesson.sequence_space(3, 3)
    assert seqs.shape == (27, 3) and num_nodes == 13
    assert len({tuple(y) for y in seqs.tolist()}) == 27
    logits = torch.randn(num_nodes, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    probs = lesson.token_log_probs(logits, seqs, nodes).sum(-1).exp()
    torch.testing.assert_close(probs, _policy_by_loops(logits, 3, 3))
    with pytest.raises(ValueError, match="vocab"):
        lesson.sequence_space(1, 3)


def test_node_conditionals_recover_a_tabular_policy_and_success_values_match_brute_force():
    seqs, nodes, n = lesson.sequence_space(2, 3)
    logits = torch.randn(n, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    probs = lesson.token_log_probs(logits, seqs, nodes).sum(-1).exp()
    torch.testing.assert_close(lesson.node_conditionals(probs, seqs, nodes, n, 2), torch.softmax(logits, -1))
    success = seqs.sum(-1) >= 2
    values = lesson.success_values(logits, seqs, nodes, success)
    # root, first token v: P(success | y_1 = v) = Σ_{y: y_1 = v} π(y)·1[success] / π(y_1 = v)
    first = torch.softmax(logits[0], -1)
    for v in range(2):
        rows = seqs[:, 0] == v
        torch.testing.assert_close(values[0, v], (probs[rows] * success[rows]).sum() / first[v])


def test_gradient_alignment_is_one_for_the_tilted_teacher_at_the_last_token():
    # one token, success = token 2: the tilted teacher π·e^{r/β}/Z moves mass exactly as ∇P(success) does
    seqs, nodes, n = lesson.sequence_space(3, 1)
    logits = torch.tensor([[0.3, -0.2, 0.1]], dtype=torch.float64)
    success = seqs[:, 0] == 2
    values = lesson.success_values(logits, seqs, nodes, success)
    tilted = al.tilted_optimum(torch.softmax(logits[0], -1), success.double(), 0.5)
    gas = lesson.gradient_alignment(logits, tilted.log()[None], values)
    torch.testing.assert_close(gas, torch.ones(1, dtype=torch.float64))
    # a teacher equal to the student gives no distillation gradient: GAS undefined (NaN)
    assert torch.isnan(lesson.gradient_alignment(logits, logits, values)).all()


def test_jsd_fits_cover_at_beta_zero_and_seek_the_big_mode_at_beta_one():
    teacher = lesson.bimodal_teacher()
    forward = lesson.fit_gaussian_student(teacher, 0.0).exp()
    reverse = lesson.fit_gaussian_student(teacher, 1.0).exp()
    arms = torch.arange(21, dtype=torch.float64)
    std = lambda p: (p * (arms - (p * arms).sum()) ** 2).sum().sqrt()  # noqa: E731
    assert std(forward) > 4 and std(reverse) < 2
    assert reverse[:10].sum() > 0.99  # the 60% mode, not the 40% one


def test_gopd_run_reaches_the_geometric_mixture():
    ref = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    teacher = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    for lam in (0.0, 1.0, 1.5):
        pi = lesson.gopd_bandit_run(ref, teacher, lam, steps=4000)
        target = ref ** (1 - lam) * teacher**lam
        torch.testing.assert_close(pi, target / target.sum(), atol=1e-9, rtol=0)


def test_kdrl_without_rl_converges_to_the_teacher_and_grpo_alone_ignores_it():
    bandit = Bandit.correct_arms(4, [3])
    start = torch.log(torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64))
    teacher = torch.tensor([0.1, 0.1, 0.1, 0.7], dtype=torch.float64)
    kd_only = lesson.kdrl_bandit_run(bandit, start, teacher, 1.0, 400, rl=False)
    assert kd_only["KL(π‖π_T)"].iloc[-1] < 1e-6 and math.isclose(kd_only["P(correct)"].iloc[-1], 0.7, abs_tol=1e-3)
    grpo = lesson.kdrl_bandit_run(bandit, start, teacher, 0.0, 200)
    assert grpo["P(correct)"].iloc[-1] > 0.95 and grpo["P(correct)"].is_monotonic_increasing


def test_gap_closed_formula_on_a_hand_made_table():
    import pandas as pd

    row = {"schedule": "a", "seed": 0, "greedy_accuracy": 0.0, "teacher_sampled": 0.9}
    runs = pd.DataFrame([{**row, "step": 0, "sampled_accuracy": 0.4}, {**row, "step": 10, "sampled_accuracy": 0.65}])
    assert math.isclose(lesson.gap_closed(runs)["gap closed"].item(), 0.5)


def test_explore_returns_a_figure_and_rejects_bad_beta():
    fig = lesson.explore(0.3, 1.5)
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 2
    with pytest.raises(ValueError, match="beta"):
        lesson.explore(1.5, 1.0)
