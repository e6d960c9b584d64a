"""The thr recipe: its token advantages against the rule written out by hand, its trainer hook against
plain GRPO (p = 0 must give the same update), TRL's refusal; the LLD measure against sequence log-probs."""

import copy

import pytest
import torch
from test_thr import random_inputs as thr_inputs

from forklab import recipes
from forklab import thr_reweighting as TR
from forklab.diagnostics import lld
from forklab.diagnostics import thr as T
from forklab.envs import seqpolicy as sp


def random_inputs(seed=0):
    """test_thr's inputs, with its ``correct`` pattern replaced and a GRPO-like advantage per response."""
    hidden, logits, tokens, mask, group, _ = thr_inputs(seed)
    correct = torch.tensor([True, False, False, False, True, True])
    adv = torch.tensor([1.2, -0.6, -0.6, -1.1, 0.6, 0.5], dtype=torch.float64)
    return hidden, logits, tokens, mask, group, correct, adv


@pytest.mark.parametrize("p", [-0.5, 0.0, 0.7])
def test_thr_mode_is_the_rule_on_pairwise_influences(p):
    hidden, logits, tokens, mask, group, correct, adv = random_inputs(1)
    got = TR.token_advantages(adv, hidden, logits, tokens, mask, group, correct, p=p)
    s = T.pairwise_influence_scores(hidden, logits, tokens, mask, group, correct)  # the O(N²) definition
    for j in range(6):
        pos = [i for i in range(6) if group[i] == group[j] and correct[i]]
        tau = min(s[i][mask[i]].mean().item() for i in pos)
        for k in range(5):
            if not mask[j, k]:
                assert got[j, k] == 0
                continue
            thr = adv[j].item() * s[j, k].item()
            want = adv[j].item() * (1 + p * (1 if thr > 0 else -1)) if abs(thr) > tau else adv[j].item()
            assert got[j, k].item() == pytest.approx(want, rel=1e-12, abs=1e-12), (j, k)


def test_nthr_mode_scales_selected_negative_tokens_by_the_pass_rate_rule():
    hidden, logits, tokens, mask, group, correct, adv = random_inputs(2)
    got = TR.token_advantages(adv, hidden, logits, tokens, mask, group, correct, mode="nthr")
    s = T.pairwise_influence_scores(hidden, logits, tokens, mask, group, correct)
    for j in range(6):
        rows = [i for i in range(6) if group[i] == group[j]]
        pass_rate = sum(bool(correct[i]) for i in rows) / len(rows)
        tau = min(s[i][mask[i]].mean().item() for i in rows if correct[i])
        for k in torch.nonzero(mask[j]).flatten().tolist():
            selected = not correct[j] and s[j, k].item() > tau
            want = adv[j].item() * (2 * abs(0.5 - pass_rate) if selected else 1.0)
            assert got[j, k].item() == pytest.approx(want, rel=1e-12, abs=1e-12)
    zero = TR.token_advantages(adv, hidden, logits, tokens, mask, group, correct, mode="nthr", eta=0.0)
    assert ((zero == 0) | (zero == adv[:, None])).all()


def _tiny_trainer(recipe, seed=0):
    from forklab.lm.models import load_tiny
    from forklab.lm.trainer import RLConfig, RLTrainer

    torch.manual_seed(seed)
    model, tok = load_tiny("student-addition", dtype="float64")
    config = RLConfig(prompts_per_step=4, group_size=8, lr=1e-3, eval_every=0, seed=seed, dtype="float64",
                      log_covariance=False)
    return RLTrainer(model, tok, recipe, config)


def _params(trainer):
    return torch.cat([p.detach().flatten() for p in trainer.model.parameters()])


def test_trainer_hook_p0_is_grpo_and_p_nonzero_changes_the_update():
    base = recipes.get("thr").replace(thr_p=0.0)
    plain = recipes.Recipe(name="grpo-same", advantage="grpo", surrogate="ppo_clip",
                           surrogate_kwargs={"eps_low": 0.2}, aggregation="token-mean")
    a, b, c = _tiny_trainer(base), _tiny_trainer(plain), _tiny_trainer(recipes.get("thr", thr_p=0.5))
    for tr in (a, b, c):
        tr.step()
    torch.testing.assert_close(_params(a), _params(b), rtol=0, atol=1e-12)
    assert (_params(a) - _params(c)).abs().max() > 1e-6


def test_rollout_advantages_keep_dtype_device_and_match_token_advantages():
    hidden, logits, tokens, mask, group, correct, adv = random_inputs(3)
    recipe = recipes.get("thr", thr_p=-0.5, thr_only=True)
    got = recipe.rollout_advantages(adv.float(), hidden, logits, tokens, mask, group, correct)
    assert got.dtype == torch.float32 and got.shape == mask.shape
    want = TR.token_advantages(adv, hidden, logits, tokens, mask, group, correct, p=-0.5, only=True)
    torch.testing.assert_close(got, want.float())


def test_recipe_validation():
    with pytest.raises(ValueError, match="thr_p"):
        recipes.get("thr", thr_p=1.5)
    with pytest.raises(ValueError, match="thr_mode"):
        recipes.get("thr", thr_mode="both")
    with pytest.raises(ValueError, match="nthr_eta"):
        recipes.get("thr", nthr_eta=-1.0)
    with pytest.raises(ValueError, match="mode"):
        TR.token_advantages(*random_inputs()[:6], torch.zeros(6), mode="x")
    assert isinstance(recipes.get("thr"), TR.THRRecipe) and recipes.get("thr").name == "thr"


def test_likelihood_displacement_equals_sequence_logprob_change():
    policy = sp.SharedPolicy(init_scale=1.0, seed=4)
    roll = policy.sample(group_size=6, generator=torch.Generator().manual_seed(0))
    old = policy.token_logprobs(roll.prompt_ids, roll.tokens, roll.mask).detach()
    moved = copy.deepcopy(policy)
    with torch.no_grad():
        for p in moved.parameters():
            p += 0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=p.dtype)
    new = moved.token_logprobs(roll.prompt_ids, roll.tokens, roll.mask).detach()
    want = (moved.sequence_logprob(roll.prompt_ids, roll.tokens, roll.mask)
            - policy.sequence_logprob(roll.prompt_ids, roll.tokens, roll.mask)).detach()
    torch.testing.assert_close(lld.likelihood_displacement(old, new, roll.mask), want)
    nan_off = torch.where(roll.mask, new, torch.nan)
    torch.testing.assert_close(lld.likelihood_displacement(old, nan_off, roll.mask), want)


def test_displacement_summary_counts_correct_responses_of_mixed_groups_only():
    delta = torch.tensor([0.3, -0.1, -0.5, 0.0, 0.2, 9.0], dtype=torch.float64)
    correct = torch.tensor([True, True, False, True, False, True])
    group = torch.tensor([0, 0, 0, 1, 1, 2])  # group 2 is all correct: not counted
    out = lld.displacement_summary(delta, correct, group)
    assert out["n"] == 3
    assert out["mean_delta"] == pytest.approx((0.3 - 0.1 + 0.0) / 3)
    assert out["share_displaced"] == pytest.approx(2 / 3)  # −0.1 and 0.0 (Δ ≤ ε = 0)
    assert lld.displacement_summary(delta[5:], correct[5:], group[5:])["n"] == 0
    with pytest.raises(ValueError, match="correct"):
        lld.displacement_summary(delta, correct[:3], group)
    with pytest.raises(ValueError, match="old_logp"):
        lld.likelihood_displacement(torch.full((2, 2), torch.nan), torch.zeros(2, 2), torch.ones(2, 2, dtype=bool))
