"""The lesson modules of notebooks 00, 02 and 03: widget callbacks driven through their ranges, and the
numbers the notebooks assert, checked here against independent derivations."""

import math

import matplotlib.figure
import pytest
import torch

from forklab import widgets
from forklab.advantages import grpo
from forklab.envs import seqpolicy as sp
from forklab.envs import tasks as T
from forklab.lessons import loss_aggregation as la
from forklab.lessons import ratios_clipping as rc
from forklab.lessons import tour


# ----- graph_path(shortest=True): the length-gap task of notebook 02 ---------------------------------
def test_graph_path_shortest_rewards_by_hand():
    task = T.get_task("graph_path", shortest=True)
    ex = task.parse_prompt("01,03,12,23,34,35,45,0>4=")
    assert task.reference_answers(ex) == ["034;"]
    assert task.reward(ex, "034;") == 1.0
    for detour, hops in (("0354;", 3), ("01234;", 4), ("012354;", 5)):
        assert task.reward(ex, detour) == 0.0
        assert task.graded_reward(ex, detour) == pytest.approx(0.5 + 0.25 * 2 / hops)
    assert task.graded_reward(ex, "03;") == pytest.approx(0.25)  # partial walks keep their old credit
    assert task.reward(ex, "04;") == 0.0
    # prompts and splits do not depend on the flag
    plain = T.get_task("graph_path")
    assert [e.prompt for e in plain.make_split("train", 20, 3)] == [e.prompt for e in task.make_split("train", 20, 3)]


# ----- notebook 02 ------------------------------------------------------------------------------------
def test_token_mean_positive_share_is_the_length_ratio_by_hand():
    """Independent derivation: E[push+] / E[push] = L+ / (L+ + L-) under token-mean, 1/2 under seq-mean and BA."""
    table = la.sign_balance_table(correct_lengths=(1, 2, 3, 4), answers=1)
    policy = sp.TabularPolicy(1)
    lengths = sp.enumerate_responses().lengths.double()
    for _, row in table.iterrows():
        task = sp.Task.with_length_gap((int(row["correct_length"]),), (1,))
        probs = sp.response_probs(policy)[0].detach().double()
        right, wrong = probs * task.correct[0], probs * ~task.correct[0]
        l_pos, l_neg = (right @ lengths / right.sum()).item(), (wrong @ lengths / wrong.sum()).item()
        assert row["length_gap"] == pytest.approx(l_pos - l_neg)
        assert row["token-mean"] == pytest.approx(l_pos / (l_pos + l_neg), abs=1e-12)
        assert row["balanced"] == pytest.approx(0.5, abs=1e-12)


def test_token_shares_sum_to_one_and_seq_mean_is_inverse_length():
    lengths, adv = [2, 4, 6, 1], torch.tensor([1.0, 1.0, -1.0, -1.0])
    for mode in la.MAIN_MODES:
        share = la.token_shares(lengths, adv, mode)
        assert share.sum().item() == pytest.approx(1.0)
    seq = la.token_shares(lengths, adv, "seq-mean-token-mean")[:, 0]
    assert (seq * torch.tensor(lengths)).tolist() == pytest.approx([0.25] * 4)
    with pytest.raises(ValueError, match="`lengths`"):
        la.ragged_mask([3, 0])


def gap_explorer():
    return widgets.interactive(la.length_gap_explorer,
                               correct_length=widgets.int_slider(2, 1, 4, description="correct length"),
                               answers=widgets.int_slider(1, 1, 3, description="# answers"),
                               group_size=widgets.int_slider(2, 2, 3, description="G"))


@pytest.mark.parametrize("correct_length, answers", [(1, 1), (1, 3), (2, 1), (2, 3), (3, 2), (4, 3)])
def test_length_gap_explorer_through_its_range(correct_length, answers):
    w = gap_explorer()
    controls = {c.description: c for c in w.children[:-1]}
    controls["correct length"].value = correct_length
    controls["# answers"].value = answers
    w.update()
    fig = w.result
    assert isinstance(fig, matplotlib.figure.Figure)
    heights = [p.get_height() for p in fig.axes[0].patches]
    pos, neg = heights[:4], heights[4:]
    assert all(p + n == pytest.approx(1.0) for p, n in zip(pos, neg, strict=True))
    assert pos[1] == pytest.approx(0.5) and pos[3] == pytest.approx(0.5)  # seq-mean and BA
    assert fig.axes[0].get_title().startswith(f"{min(answers, 3 ** (correct_length - 1))} correct of length "
                                              f"{correct_length}:")


def test_length_gap_explorer_caps_answers_and_rejects_bad_input():
    assert la.length_gap_explorer(correct_length=1, answers=3).axes[0].get_title().startswith("1 correct of length 1")
    with pytest.raises(ValueError, match="`answers`"):
        la.length_gap_explorer(correct_length=2, answers=0)
    with pytest.raises(ValueError, match="`group_size`"):
        la.exact_side_push(sp.default_task(), 0, group_size=5)


# ----- notebook 03 ------------------------------------------------------------------------------------
def test_every_objective_has_weight_one_at_ratio_one():
    log_ratio = torch.zeros(4, 5, dtype=torch.float64)
    mask = torch.arange(5)[None, :] < torch.tensor([5, 3, 1, 4])[:, None]
    for name, fn in rc.objectives().items():
        c = rc.gradient_weights(fn, log_ratio, torch.tensor([1.0, -1.0, 0.5, -2.0]), mask)
        assert torch.allclose(c[mask], torch.ones(int(mask.sum()), dtype=torch.float64), atol=1e-12), name


def test_weights_against_the_closed_forms():
    r = torch.tensor([0.5, 1.1, 1.5, 4.0], dtype=torch.float64)
    curves = rc.weight_curves(ratios=r).set_index(["objective", "adv", "ratio"])["weight"]
    ppo_pos = [0.5, 1.1, 0.0, 0.0]  # min(rA, clip(r)A), A > 0: gradient r where unclipped or below 1-ε
    ppo_neg = [0.0, 1.1, 1.5, 4.0]
    sapo = [4 * torch.sigmoid(x - 1) * (1 - torch.sigmoid(x - 1)) * x for x in r]  # τ+ = 1
    for x, p, n, s in zip(r.tolist(), ppo_pos, ppo_neg, sapo, strict=True):
        assert curves[("PPO clip", 1.0, x)] == pytest.approx(p)
        assert curves[("PPO clip", -1.0, x)] == pytest.approx(n)
        assert curves[("SAPO", 1.0, x)] == pytest.approx(float(s))
    assert curves[("dual-clip", -1.0, 4.0)] == 0.0 and curves[("dual-clip", -1.0, 1.5)] == pytest.approx(1.5)
    with pytest.raises(ValueError, match="`ratios`"):
        rc.weight_curves(ratios=[0.0, 1.0])


def test_one_far_off_policy_token_silences_gspo_but_not_sapo():
    table = rc.one_off_policy_token(ratio=5.0, length=8, position=3).set_index("objective")
    assert table.loc["GSPO", "tokens_silenced"] == 8
    assert table.loc["SAPO", "tokens_silenced"] == 0
    s = torch.sigmoid(torch.tensor(4.0, dtype=torch.float64))
    assert table.loc["SAPO", "off_policy_token"] == pytest.approx(float(4 * s * (1 - s) * 5))
    with pytest.raises(ValueError, match="`position`"):
        rc.one_off_policy_token(position=8, length=8)


def test_staleness_bias_oracle_is_exact_and_token_bias_grows():
    bias = rc.staleness_bias(inner_steps=3, kinds=("sequence IS (exact)", "token IS (no clip)"))
    exact = bias[bias["surrogate"] == "sequence IS (exact)"]
    assert (exact["rel_error"] < 1e-10).all() and (exact["cosine"] > 1 - 1e-12).all()
    token = bias[bias["surrogate"] == "token IS (no clip)"]["rel_error"].tolist()
    assert token[0] < 1e-10 and token[1] < token[2] < token[3]
    assert bias.groupby("step")["kl"].first().is_monotonic_increasing


def clip_explorer():
    return widgets.interactive(rc.weight_explorer,
                               eps=widgets.float_slider(0.2, 0.05, 0.5, 0.01, description="ε"),
                               eps_high=widgets.float_slider(0.28, 0.05, 0.8, 0.01, description="ε_high"),
                               tau_pos=widgets.float_slider(1.0, 0.1, 5.0, 0.05, description="SAPO τ+"),
                               tau_neg=widgets.float_slider(1.05, 0.1, 5.0, 0.05, description="SAPO τ−"),
                               objective=widgets.dropdown(["all", *rc.objectives()], description="objective"))


@pytest.mark.parametrize("eps, eps_high, objective", [(0.2, 0.28, "all"), (0.05, 0.8, "PPO clip"),
                                                      (0.5, 0.05, "SAPO"), (0.1, 0.3, "CISPO")])
def test_weight_explorer_through_its_range(eps, eps_high, objective):
    w = clip_explorer()
    controls = {c.description: c for c in w.children[:-1]}
    controls["ε"].value, controls["ε_high"].value, controls["objective"].value = eps, eps_high, objective
    w.update()
    fig = w.result
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 2
    assert fig._suptitle.get_text().startswith(f"ε = {eps}, ε_high = {eps_high}")
    assert len(fig.axes[0].lines) == (len(rc.objectives()) if objective == "all" else 1) + 1  # + the r = 1 line
    with pytest.raises(ValueError, match="`objective`"):
        rc.weight_explorer(objective="trpo")


# ----- notebook 00 ------------------------------------------------------------------------------------
def bandit_widget():
    return widgets.interactive(tour.bandit_explorer,
                               lr=widgets.float_slider(0.5, 0.0, 3.0, 0.05, description="lr"),
                               group_size=widgets.int_slider(8, 2, 32, description="G"),
                               temperature=widgets.float_slider(1.0, 0.2, 2.0, 0.05, description="temperature"),
                               recipe=widgets.dropdown(list(tour.BANDIT_RECIPES), description="recipe"))


@pytest.mark.parametrize("recipe", list(tour.BANDIT_RECIPES))
def test_bandit_explorer_every_recipe(recipe):
    w = bandit_widget()
    w.children[3].value = recipe
    w.update()
    titles = [ax.get_title() for ax in w.result.axes]
    assert titles[0].startswith(f"{recipe}: reward") and titles[1].startswith(f"entropy {math.log(20):.2f} →")


def test_bandit_explorer_zero_lr_stays_uniform_and_bad_recipe_raises():
    fig = tour.bandit_explorer(lr=0.0, steps=5, num_seeds=4)
    assert fig.axes[1].get_title() == f"entropy {math.log(20):.2f} → {math.log(20):.2f}"
    assert fig.axes[0].get_title() == "grpo: reward 0.15 after 5 steps"  # 3 correct arms of 20
    with pytest.raises(ValueError, match="`recipe`"):
        tour.bandit_explorer(recipe="ppo")


def test_library_map_lists_every_module_and_the_new_notebooks():
    table = tour.library_map().set_index("module")
    for name in ("forklab.aggregation", "forklab.surrogates", "forklab.lm.trainer", "forklab.envs.tasks"):
        assert name in table.index and table.loc[name, "what"]
    assert table.loc["forklab.aggregation", "notebook"] == "02_loss_aggregation"
    assert table.loc["forklab.surrogates", "notebook"] == "03_ratios_and_clipping"
    assert not any(m.startswith("forklab.lessons") or "._" in m for m in table.index)


def test_library_floors_place_every_module_once_on_a_known_floor():
    floors = tour.library_floors().set_index("floor")["modules"]
    assert list(floors.index[:5]) == list(tour.FLOORS)  # a module no floor claims yet goes to a last "other" row
    text = " ".join(floors)
    for name in tour.library_map()["module"]:
        top, *sub = name.split(".")[1:]
        assert (f"{top}.{{" in text and sub[0] in text) if sub else top in text, name
    assert "envs.{bandit, seqpolicy, tasks}" in floors["worlds"] and "recipes" in floors["formulas"]


def test_metric_glossary_fills_last_step_values():
    history = [{"reward": 0.1, "entropy": 0.5}, {"reward": 0.4, "entropy": 0.3}]
    table = tour.metric_glossary(history).set_index("metric")
    assert table.loc["reward", "last_step"] == 0.4 and math.isnan(table.loc["kl", "last_step"])
    assert {"clip_ratio/low_mean", "clip_ratio/high_mean", "kl", "completion_length", "entropy"} <= set(table.index)


def test_grpo_step_by_hand_matches_autograd():
    """The tour's closed form of the bandit gradient, −(1/G) Σ_i A_i (e_{a_i} − π), against autograd."""
    logits = torch.randn(6, dtype=torch.float64, requires_grad=True)
    arms = torch.tensor([0, 2, 2, 5])
    adv = grpo(torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.zeros(4, dtype=torch.long)).double()
    pi = torch.softmax(logits, 0)
    (-(adv * torch.log(pi[arms])).mean()).backward()
    closed = -(adv[:, None] * (torch.nn.functional.one_hot(arms, 6) - pi.detach())).mean(0)
    assert torch.allclose(logits.grad, closed, atol=1e-12)


def test_bandit_natural_pg_overflow_is_a_clear_error():
    from forklab.envs import bandit as bd

    with pytest.raises(ValueError, match="`lr`"):
        bd.train(tour.tour_bandit(), steps=60, lr=0.5, update="npg", num_seeds=64, seed=0)
