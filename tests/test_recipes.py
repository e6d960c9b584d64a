"""Recipes: every preset runs end to end; compositions equal the hand-wired library calls."""

import pytest
import torch

from forklab import advantages as A
from forklab import recipes
from forklab import regularizers as R
from forklab import surrogates as S
from forklab.aggregation import aggregate
from forklab.kl import kl_estimate
from forklab.ops import entropy_from_logits, logprobs_from_logits


def make_batch(seed=0, with_grad=True):
    g = torch.Generator().manual_seed(seed)
    b, t, v = 8, 6, 7
    logits = torch.randn(b, t, v, generator=g, dtype=torch.float64).requires_grad_(with_grad)
    tokens = torch.randint(0, v, (b, t), generator=g)
    lengths = torch.tensor([6, 2, 4, 5, 3, 6, 1, 4])
    mask = torch.arange(t)[None, :] < lengths[:, None]
    logp = logprobs_from_logits(logits, tokens)
    old = logp.detach() + 0.1 * torch.randn(b, t, generator=g, dtype=torch.float64)
    batch = recipes.Batch(
        logp=logp, mask=mask, group=torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]),
        rewards=torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0], dtype=torch.float64),
        old_logp=old, ref_logp=old - 0.05, entropy=entropy_from_logits(logits), tokens=tokens,
        proxy_logp=R.minp_proxy_logprobs(logits.detach(), tokens),
    )
    return batch, logits


@pytest.mark.parametrize("name", list(recipes.PRESETS))
def test_every_preset_gives_a_finite_loss_gradient_and_metrics(name):
    batch, logits = make_batch()
    recipe = recipes.get(name, kl_coef=0.01, entropy_coef=0.001)
    if recipe.norm_len is None and recipe.aggregation == "seq-mean-token-sum-norm":
        recipe = recipe.replace(norm_len=16.0)  # Dr. GRPO's generation budget (RLTrainer: max_new_tokens)
    loss, metrics = recipe.loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert all(isinstance(v, float) for v in metrics.values())
    assert {"loss/policy", "kl", "entropy", "advantages/mean_abs"} <= set(metrics)
    assert "arXiv" in recipes.PRESETS[name].__doc__


def test_grpo_preset_equals_the_hand_wired_composition_plus_kl():
    batch, _ = make_batch()
    loss, _ = recipes.get("grpo", kl_coef=0.04).loss(batch)
    adv = A.grpo(batch.rewards, batch.group)
    per_token = S.ppo_clip(batch.logp, batch.old_logp, adv, batch.mask, 0.2)
    expected = aggregate(per_token, batch.mask, "seq-mean-token-mean") + 0.04 * aggregate(
        kl_estimate(batch.logp, batch.ref_logp, "k3"), batch.mask, "seq-mean-token-mean")
    torch.testing.assert_close(loss, expected)


def test_ba_and_dapo_presets_equal_their_compositions():
    batch, _ = make_batch(1)
    adv = A.grpo(batch.rewards, batch.group)
    ba, _ = recipes.get("ba").loss(batch)
    per_token = S.ppo_clip(batch.logp, batch.old_logp, adv, batch.mask, 0.2)
    torch.testing.assert_close(ba, aggregate(per_token, batch.mask, "balanced", adv=adv, group=batch.group))
    dapo, _ = recipes.get("dapo").loss(batch)
    per_token = S.ppo_clip(batch.logp, batch.old_logp, adv, batch.mask, 0.2, 0.28)
    torch.testing.assert_close(dapo, aggregate(per_token, batch.mask, "token-mean"))
    assert recipes.get("dapo").dynamic_sampling


def test_forking20_only_trains_the_top_entropy_tokens():
    batch, logits = make_batch(2)
    batch.old_logp = batch.logp.detach()
    loss, metrics = recipes.get("forking20").loss(batch)
    (grad_logp,) = torch.autograd.grad(loss, batch.logp)
    keep = R.entropy_top_mask(batch.entropy.detach(), batch.mask, 0.2)
    assert (grad_logp[~keep] == 0).all() and (grad_logp[keep] != 0).all()
    assert metrics["entropy_mask/kept"] == pytest.approx(float(keep.sum() / batch.mask.sum()))


def test_precomputed_advantages_are_used_and_missing_fields_are_named():
    batch, _ = make_batch(3)
    batch.adv = torch.ones(8, dtype=torch.float64)
    batch.rewards = None
    loss, metrics = recipes.get("grpo").loss(batch)
    assert metrics["advantages/mean_abs"] == 1.0
    batch.entropy = None
    with pytest.raises(ValueError, match=r"\['entropy'\] are required by surrogate 'hapo_clip'"):
        recipes.get("hapo").replace(hapo_redistribution=0.0).loss(batch)
    batch.ref_logp = None
    with pytest.raises(ValueError, match="ref_logp"):
        recipes.get("grpo", kl_coef=0.1).loss(batch)


def test_recipe_and_preset_validation():
    with pytest.raises(ValueError, match="`name` must be one of"):
        recipes.get("ppo2")
    with pytest.raises(ValueError, match="`surrogate`"):
        recipes.Recipe(surrogate="trpo")
    assert recipes.get("dr_grpo", norm_len=64).norm_len == 64


def test_overlong_penalty_is_dapo_soft_punishment():
    lengths = torch.tensor([10.0, 16.0, 18.0, 20.0, 25.0])
    got = recipes.overlong_penalty(lengths, max_len=20, buffer=4)
    torch.testing.assert_close(got, torch.tensor([0.0, 0.0, -0.5, -1.0, -1.0]))  # −f beyond L_max (eq. 13)


def test_hapo_redistribution_rule():
    mask = torch.ones(1, 4, dtype=torch.bool)
    entropy = torch.tensor([[0.01, 0.1, 1.0, 2.0]], dtype=torch.float64)
    h = S.hapo_normalized_entropy(entropy, mask)
    old = torch.zeros(1, 4, dtype=torch.float64) - 1
    ratios = torch.tensor([[1.0, 1.5, 1.0, 1.5]], dtype=torch.float64)  # inside, outside, inside, outside N
    adv = torch.tensor([2.0], dtype=torch.float64)
    got = S.hapo_redistribute(old + ratios.log(), old, adv, mask, entropy, beta=1.0)
    expected = torch.tensor([[2 * (1 + h[0, 0]), 2.0, 2.0 if h[0, 2] > 0 else 2 * (1 + h[0, 2]), 2 * (1 + h[0, 3])]],
                            dtype=torch.float64)
    torch.testing.assert_close(got, expected)
