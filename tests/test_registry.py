"""The objective registry: a clipping rule registered in a test works everywhere without touching another file."""

import math

import pytest
import torch
from test_recipes import make_batch

from forklab import _registry as registry
from forklab import recipes
from forklab import surrogates as S
from forklab.aggregation import MODES, aggregate, token_weights
from forklab.lessons import ratios_clipping


@pytest.fixture
def throwaway():
    """A log-space clip registered for the test only: ℓ = max(−A·r, −A·exp(clamp(δ, −ε, ε)))."""
    name = "test_log_clip"

    @recipes.objective(name, label="log clip (test)", notebook="03_ratios_and_clipping")
    def log_clip(logp, old_logp, adv, mask, eps: float = 0.2, return_metrics: bool = False):
        delta = torch.where(mask, logp - old_logp.detach(), torch.zeros((), dtype=logp.dtype))
        adv = adv[:, None] if adv.dim() == 1 else adv
        loss = torch.maximum(-adv * delta.exp(), -adv * delta.clamp(-eps, eps).exp())
        loss = torch.where(mask, loss, torch.zeros((), dtype=loss.dtype))
        return (loss, {"test/clipped": float(((delta.abs() > eps) & mask).sum())}) if return_metrics else loss

    try:
        yield name, log_clip
    finally:
        registry.unregister("surrogate", name)


def test_a_registered_clipping_rule_runs_in_a_recipe_end_to_end(throwaway):
    name, _ = throwaway
    batch, logits = make_batch(seed=3)
    loss, metrics = recipes.Recipe(surrogate=name, surrogate_kwargs={"eps": 0.05},
                                   aggregation="seq-mean-token-mean").loss(batch)
    loss.backward()
    # oracle: with ε = 0.05 the log clip is PPO's clip with ε_low = 1 − e^−0.05, ε_high = e^0.05 − 1
    logp = batch.logp.detach().clone().requires_grad_(True)
    adv = recipes.get("grpo").advantages(batch)
    eps_low, eps_high = 1 - math.exp(-0.05), math.exp(0.05) - 1
    want = aggregate(S.ppo_clip(logp, batch.old_logp, adv, batch.mask, eps_low, eps_high), batch.mask,
                     "seq-mean-token-mean")
    torch.testing.assert_close(loss.detach(), want.detach(), rtol=1e-12, atol=1e-12)
    assert metrics["test/clipped"] > 0  # the rule's own metric reaches the trainer's log
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_a_registered_rule_appears_in_the_lesson_and_is_validated(throwaway):
    name, fn = throwaway
    assert name in recipes.names("surrogate") and recipes.registered("surrogate")[name].fn is fn
    lesson = ratios_clipping.objectives()
    assert list(lesson)[-1] == "log clip (test)"  # registered last, listed last, under its label
    with pytest.raises(ValueError, match="`surrogate_kwargs` has \\['eps_hi'\\]"):
        recipes.Recipe(surrogate=name, surrogate_kwargs={"eps_hi": 0.1})
    with pytest.raises(ValueError, match="already registered"):
        recipes.objective(name)(lambda logp, old_logp, adv, mask: -adv * logp)


def test_needs_of_a_registered_rule_reach_recipe_needs_and_batch_checks():
    name = "test_needs_entropy"

    @recipes.objective(name, needs=("entropy",))
    def entropy_weighted(logp, old_logp, adv, mask, entropy):
        assert not entropy.requires_grad  # needs are passed detached
        return torch.where(mask, -adv[:, None] * logp * entropy, torch.zeros((), dtype=logp.dtype))

    try:
        recipe = recipes.Recipe(surrogate=name)
        assert recipe.needs() == {"entropy"}
        batch, _ = make_batch()
        recipe.loss(batch)
        batch.entropy = None
        with pytest.raises(ValueError, match="\\['entropy'\\] are required by surrogate 'test_needs_entropy'"):
            recipe.loss(batch)
    finally:
        registry.unregister("surrogate", name)
    assert name not in recipes.names("surrogate")
    with pytest.raises(ValueError, match="`surrogate` must be one of"):
        recipes.Recipe(surrogate=name)


def test_registered_aggregation_mode_and_advantage_are_usable_by_name():
    @recipes.aggregation_mode("test-first-token")
    def first_token(mask, adv, group, norm_len):
        w = torch.zeros(mask.shape, dtype=torch.float64)
        w[:, 0] = mask[:, 0].double()
        return w

    @recipes.advantage_estimator("test_raw")
    def raw(rewards, group, shift: float = 0.0):
        return rewards - shift

    try:
        assert "test-first-token" not in MODES  # MODES is the built-in tuple; the registry has the new one
        batch, _ = make_batch()
        recipe = recipes.Recipe(advantage="test_raw", advantage_kwargs={"shift": 0.5}, surrogate="reinforce",
                                aggregation="test-first-token")
        loss, _ = recipe.loss(batch)
        want = (-(batch.rewards - 0.5) * batch.logp[:, 0]).sum()
        torch.testing.assert_close(loss, want)
        assert token_weights(batch.mask, "test-first-token")[:, 1:].abs().sum() == 0
    finally:
        registry.unregister("aggregation", "test-first-token")
        registry.unregister("advantage", "test_raw")


def test_the_built_in_registry_matches_the_presets_and_the_lesson():
    assert recipes.names("advantage") == ("grpo", "dr_grpo", "rloo", "median", "hapo", "gdpo", "bnpo", "dgpo")
    assert set(recipes.names("surrogate")) == {"reinforce", "ppo_clip", "gspo", "sapo", "cispo", "gmpo", "dhpo",
                                               "hapo_clip", "minpro", "clip_cov", "kl_cov", "lp_reg", "dcpo", "bapo",
                                               "etr", "arm_po", "agentic_entropy_balanced_po"}
    assert recipes.names("aggregation") == MODES
    for preset in recipes.PRESETS.values():
        recipe = preset()
        assert recipe.surrogate in recipes.names("surrogate") and recipe.advantage in recipes.names("advantage")
    assert recipes.get("hapo").needs() == {"entropy"} and recipes.get("lp_reg").needs() == {"proxy_logp"}
    assert recipes.get("grpo").needs() == set() and recipes.get("forking20").needs() == {"entropy"}
