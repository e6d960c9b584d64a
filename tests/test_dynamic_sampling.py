"""DAPO in RLTrainer: dynamic sampling (fill the batch with mixed groups) and soft overlong punishment."""

import pytest
import torch

from forklab import recipes
from forklab.lm import dynamic_sampling as ds
from forklab.lm.models import load_tiny
from forklab.lm.trainer import RLConfig, RLTrainer


def overlong_oracle(length: float, max_len: int, buffer: int, factor: float) -> float:
    """DAPO eq. 13 written case by case (independent of the vectorised clamp)."""
    if length <= max_len - buffer:
        return 0.0
    if length <= max_len:
        return ((max_len - buffer) - length) / buffer * factor
    return -factor


@pytest.mark.parametrize(("max_len", "buffer", "factor"), [(20, 4, 1.0), (6, 1, 1.0), (6, 2, 0.5), (10, 10, 2.0)])
def test_overlong_penalty_matches_the_piecewise_oracle_at_and_around_the_boundaries(max_len, buffer, factor):
    start = max_len - buffer
    lengths = [0, start - 1, start, start + 0.5, start + 1, (start + max_len) / 2, max_len - 1, max_len, max_len + 1,
               max_len + 7]
    got = recipes.overlong_penalty(torch.tensor(lengths, dtype=torch.float64), max_len, buffer, factor)
    expected = torch.tensor([overlong_oracle(x, max_len, buffer, factor) for x in lengths], dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-15)
    assert got[lengths.index(start)] == 0 and got[lengths.index(max_len)] == -factor


def test_overlong_penalty_and_recipe_fields_reject_bad_input():
    with pytest.raises(ValueError, match="`buffer`"):
        recipes.overlong_penalty(torch.ones(2), 6, 0)
    with pytest.raises(ValueError, match="`factor`"):
        recipes.overlong_penalty(torch.ones(2), 6, 2, factor=-1.0)
    with pytest.raises(ValueError, match="`overlong_buffer`"):
        recipes.get("dapo", overlong_buffer=1.5)
    dapo = recipes.get("dapo")
    assert dapo.dynamic_sampling and dapo.overlong_buffer == 0.2 and dapo.overlong_factor == 1.0
    assert recipes.get("grpo").overlong_buffer is None and not recipes.get("grpo").dynamic_sampling


def fake_rollouts(scores_per_draw, group_size=2, prompt_len=(3, 5), response_len=(2, 4)):
    """draw() returning rollouts with given per-group scores; shapes vary between draws (padding)."""
    draws = iter(range(len(scores_per_draw)))

    def draw():
        j = next(draws)
        scores = torch.tensor(scores_per_draw[j], dtype=torch.float64)
        n = len(scores)
        lp, lr = prompt_len[j % 2], response_len[j % 2]
        row_id = torch.arange(n, dtype=torch.float64) + 100 * j  # identifies each row after concatenation
        return dict(prompt_ids=torch.full((n, lp), 7), prompt_mask=torch.ones(n, lp, dtype=torch.bool),
                    tokens=torch.full((n, lr), 3), mask=torch.ones(n, lr, dtype=torch.bool),
                    old_logp=row_id[:, None].expand(n, lr).clone(), entropy=torch.ones(n, lr, dtype=torch.float64),
                    hidden=None, rewards=scores, score=scores, correct=scores > 0,
                    group=torch.arange(n // group_size).repeat_interleave(group_size), texts=[f"r{j}"] * n)

    return draw


def test_fill_mixed_groups_keeps_the_first_p_mixed_groups_across_draws_and_pads():
    # groups of 2: draw 0 has one mixed group (index 1), draw 1 has two (0 and 2), draw 2 is never needed
    draw = fake_rollouts([[0, 0, 1, 0, 1, 1], [0, 1, 1, 1, 1, 0], [0, 1, 0, 1, 0, 1]])
    batch, first, stats = ds.fill_mixed_groups(draw, prompts=3, group_size=2, max_extra=5, pad_id=0)
    assert stats == {"dynamic_sampling/rollouts": 2.0, "dynamic_sampling/groups": 3.0,
                     "frac_degenerate_groups": 3 / 6}
    assert batch["old_logp"][:, 0].tolist() == [2, 3, 100, 101, 104, 105]  # rows of those groups, in order
    assert batch["group"].tolist() == [0, 0, 1, 1, 2, 2]
    g = batch["score"].reshape(-1, 2)
    assert (g.amax(1) > g.amin(1)).all()
    assert batch["prompt_ids"].shape == (6, 5) and batch["tokens"].shape == (6, 4)
    assert batch["prompt_mask"][:2].tolist() == [[False, False, True, True, True]] * 2  # left padding
    assert batch["mask"][:2].tolist() == [[True, True, False, False]] * 2               # right padding
    assert len(batch["texts"]) == 6 and first["old_logp"][0, 0] == 0


def test_fill_mixed_groups_stops_at_the_budget_and_trains_on_what_it_found():
    draw = fake_rollouts([[0, 0, 1, 0], [1, 1, 0, 0], [0, 1, 0, 0]])
    batch, _, stats = ds.fill_mixed_groups(draw, prompts=2, group_size=2, max_extra=1, pad_id=0)
    assert stats["dynamic_sampling/rollouts"] == 2 and stats["dynamic_sampling/groups"] == 1
    assert stats["frac_degenerate_groups"] == 3 / 4 and len(batch["group"]) == 2
    with pytest.raises(ValueError, match="max_extra"):
        ds.fill_mixed_groups(draw, prompts=2, group_size=2, max_extra=-1, pad_id=0)


def dapo_trainer(max_extra: int, recipe=None, **config):
    model, tokenizer = load_tiny("student-addition", dtype="float64")
    seen = []
    trainer = RLTrainer(model, tokenizer, recipe or recipes.get("dapo"),
                        RLConfig(prompts_per_step=6, group_size=4, eval_every=0, seed=3,
                                 dynamic_sampling_max_extra=max_extra, **config),
                        hooks=[lambda t, r: seen.append(r) or {}])
    return trainer, seen


def test_rl_trainer_dapo_batch_holds_p_mixed_groups_after_resampling():
    trainer, seen = dapo_trainer(max_extra=10)
    for _ in range(3):
        metrics = trainer.step()
        r = seen[-1]
        g = r["score"].reshape(-1, 4)
        assert g.shape[0] == 6 and (g.amax(1) > g.amin(1)).all()      # the requested 6 groups, all mixed
        assert r["group"].tolist() == torch.arange(6).repeat_interleave(4).tolist()
        assert metrics["dynamic_sampling/groups"] == 6
        assert metrics["dynamic_sampling/rollouts"] >= 1 + (metrics["frac_degenerate_groups"] > 0)
    # no resampling budget: one rollout, its mixed groups only
    trainer, seen = dapo_trainer(max_extra=0)
    metrics = trainer.step()
    g = seen[-1]["score"].reshape(-1, 4)
    assert metrics["dynamic_sampling/rollouts"] == 1
    assert g.shape[0] == round(6 * (1 - metrics["frac_degenerate_groups"])) and (g.amax(1) > g.amin(1)).all()


def test_rl_trainer_adds_the_overlong_penalty_to_rewards_only_for_dapo():
    # max_new_tokens 4, buffer round(0.2 · 4) = 1: only responses that use all 4 tokens pay, −1 each
    trainer, seen = dapo_trainer(max_extra=2, max_new_tokens=4)
    trainer.step()
    r = seen[-1]
    lengths = r["mask"].sum(1).double()
    expected = torch.tensor([overlong_oracle(x, 4, 1, 1.0) for x in lengths.tolist()], dtype=torch.float64)
    torch.testing.assert_close(r["rewards"], r["score"] + expected, rtol=0, atol=0)
    assert (lengths == 4).any() and (lengths < 4).any()
    trainer, seen = dapo_trainer(max_extra=0, recipe=recipes.get("grpo"), max_new_tokens=4)
    trainer.step()
    assert torch.equal(seen[-1]["rewards"], seen[-1]["score"]) and len(seen[-1]["group"]) == 24
