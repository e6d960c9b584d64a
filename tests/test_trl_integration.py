"""forklab recipes inside TRL's GRPOTrainer: step-0 parity with TRL's own loss types, and learning.

The oracle is TRL itself: on one generated batch, TRL's ``GRPOTrainer._compute_loss`` with
``loss_type=X`` and forklab's recipe (``ForklabGRPOTrainer._compute_loss``) must give the same loss and
the same gradient. Old log-probs are recorded (``num_iterations=2``) and the weights are then perturbed,
so ratios leave 1 and the clipping branches are exercised (asserted: some tokens are clipped).
"""

from __future__ import annotations

import pytest
import torch

trl = pytest.importorskip("trl")

from forklab import recipes  # noqa: E402
from forklab.envs.tasks import get_task  # noqa: E402
from forklab.integrations.trl import ForklabGRPOTrainer, grpo_config, hf_tokenizer, task_dataset  # noqa: E402
from forklab.lm.models import load_tiny  # noqa: E402
from forklab.recipes import Recipe  # noqa: E402

MAX_LEN = 6

#: TRL loss type (+ its config) → the forklab recipe that must equal it.
CASES = {
    "grpo": ({}, recipes.grpo()),
    "bnpo": ({}, Recipe("bnpo", "grpo", {}, "ppo_clip", {"eps_low": 0.2}, "token-mean")),
    "dr_grpo": ({}, Recipe("dr_grpo", "dr_grpo", {}, "ppo_clip", {"eps_low": 0.2}, "seq-mean-token-sum-norm",
                           norm_len=MAX_LEN)),
    "dapo": ({"epsilon_high": 0.28},
             Recipe("dapo", "grpo", {}, "ppo_clip", {"eps_low": 0.2, "eps_high": 0.28}, "token-mean")),
    "cispo": ({"epsilon_high": 5.0}, recipes.cispo()),
    "sapo": ({}, recipes.sapo()),
    "gspo": ({"loss_type": "grpo", "importance_sampling_level": "sequence", "epsilon": 3e-4, "epsilon_high": 4e-4},
             recipes.gspo()),
}


def _trainer(tmp_path, recipe, **config):
    model, char_tok = load_tiny("student-addition")
    data, reward = task_dataset(get_task("addition"), char_tok, size=64)
    args = grpo_config(str(tmp_path), use_cpu=True, seed=0, **config)
    trainer = ForklabGRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data,
                                 processing_class=hf_tokenizer(char_tok), recipe=recipe)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop; the test calls the loss directly
    return trainer


def _loss_and_grad(loss_fn, model, inputs):
    loss = loss_fn(model, inputs)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params)
    return loss.detach(), torch.cat([g.flatten() for g in grads])


@pytest.mark.parametrize("loss_type", sorted(CASES))
def test_recipe_loss_and_gradient_equal_trls_loss_type_at_step_0(tmp_path, loss_type):
    config, recipe = CASES[loss_type]
    config = {"loss_type": loss_type, **config}
    trainer = _trainer(tmp_path, recipe, num_iterations=2, max_completion_length=MAX_LEN, **config)
    torch.manual_seed(0)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    inputs = trainer._generate_and_score_completions(batch)
    assert inputs["old_per_token_logps"] is not None
    assert (inputs["advantages"] != 0).any(), "a batch with no signal would make the test vacuous"
    with torch.no_grad():  # move the policy away from the one that sampled: ratios ≠ 1
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    model = trainer.model
    trl_loss, trl_grad = _loss_and_grad(lambda m, x: trl.GRPOTrainer._compute_loss(trainer, m, x), model, inputs)
    fk_loss, fk_grad = _loss_and_grad(trainer._compute_loss, model, inputs)
    torch.testing.assert_close(fk_loss, trl_loss, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fk_grad, trl_grad, rtol=1e-4, atol=1e-6)
    assert trl_grad.abs().sum() > 0
    if loss_type in ("grpo", "bnpo", "dr_grpo", "dapo"):  # the clip branch was taken somewhere
        m = trainer._metrics["train"]
        assert max(m["clip_ratio/region_mean"]) > 0, m["clip_ratio/region_mean"]


def test_recipe_advantages_replace_trls_when_the_estimator_differs(tmp_path):
    recipe = recipes.grpo().replace(name="rloo", advantage="rloo")
    trainer = _trainer(tmp_path, recipe)
    torch.manual_seed(0)
    inputs = trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    rewards, group = inputs["rewards"], inputs["group"]
    for g in group.unique():  # RLOO by hand: r_i − mean of the others in the group
        r = rewards[group == g]
        expected = r - (r.sum() - r) / (len(r) - 1)
        torch.testing.assert_close(inputs["advantages"][group == g].float(), expected.float())


@pytest.mark.parametrize("bad", ["lp_reg", "dynamic", "entropy_quantile", "thr"])
def test_unsupported_settings_raise_value_errors(tmp_path, bad):
    recipe = {"lp_reg": recipes.lp_reg(), "dynamic": recipes.dapo(), "entropy_quantile": recipes.grpo(),
              "thr": recipes.get("thr")}[bad]
    extra = {"top_entropy_quantile": 0.2} if bad == "entropy_quantile" else {}
    with pytest.raises(ValueError, match="recipe|top_entropy_quantile"):
        _trainer(tmp_path, recipe, **extra)


def test_a_forklab_only_recipe_learns_inside_trl(tmp_path):
    """Balanced Aggregation (no TRL loss type) trains the tiny student: sampled reward rises."""
    trainer = _trainer(tmp_path, recipes.ba(), max_steps=40, learning_rate=2e-4, per_device_train_batch_size=64)
    trainer.train()
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    first, last = sum(rewards[:8]) / 8, sum(rewards[-8:]) / 8
    assert last > first + 0.05, (first, last)
    assert any("clip_ratio/region_mean" in h for h in trainer.state.log_history)
