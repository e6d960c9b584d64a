"""RLTrainer with TRL's names: AdamW betas/epsilon, lr schedules (oracle: transformers.get_scheduler), and TRL-style
reward functions with a list or datasets.Dataset of prompts."""

import math

import pytest
import torch

from forklab import recipes
from forklab.envs.tasks import get_task
from forklab.lm import models
from forklab.lm._optim import lr_factor
from forklab.lm.tokenizer import CharTokenizer
from forklab.lm.trainer import RLConfig, RLTrainer

TOK = CharTokenizer.for_tasks()


@pytest.mark.parametrize("kind", ["constant", "constant_with_warmup", "linear", "cosine"])
@pytest.mark.parametrize("warmup", [0, 3, 0.25])
def test_lr_schedule_equals_transformers_get_scheduler(kind, warmup):
    from transformers import get_scheduler

    config = RLConfig(lr=1e-3, lr_scheduler_type=kind, warmup_steps=warmup, max_steps=10)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=1e-3)
    w = int(warmup) if warmup >= 1 else math.ceil(10 * warmup)  # TrainingArguments.get_warmup_steps
    sched = get_scheduler(kind, opt, num_warmup_steps=w, num_training_steps=10)
    for step in range(14):  # past max_steps: linear/cosine stay at 0
        want = sched.get_last_lr()[0]
        assert abs(config.lr * lr_factor(config, step) - want) < 1e-15, (kind, warmup, step)
        opt.step()
        sched.step()


def test_defaults_keep_todays_optimizer_and_a_schedule_sets_the_lr():
    model = models.build_tiny("student", TOK.vocab_size, seed=0)
    trainer = RLTrainer(model, TOK, recipes.get("grpo"), RLConfig(eval_every=0))
    group = trainer.optimizer.param_groups[0]
    assert group["betas"] == (0.9, 0.99) and group["eps"] == 1e-8 and group["weight_decay"] == 0.0
    cfg = RLConfig(prompts_per_step=2, group_size=2, eval_every=0, lr=1e-3, adam_beta1=0.8, adam_beta2=0.95,
                   adam_epsilon=1e-6, lr_scheduler_type="linear", warmup_steps=1, max_steps=3)
    trainer = RLTrainer(model, TOK, recipes.get("grpo"), cfg)
    group = trainer.optimizer.param_groups[0]
    assert group["betas"] == (0.8, 0.95) and group["eps"] == 1e-6
    lrs = [m["lr"] for m in trainer.train(steps=3, progress=False)]
    assert lrs == [0.0, 1e-3, 0.5e-3]  # warmup from 0, then linear decay to 0 at max_steps
    for bad, match in [(dict(adam_beta2=1.0), "adam_beta2"), (dict(lr_scheduler_type="step"), "lr_scheduler_type"),
                       (dict(lr_scheduler_type="cosine"), "max_steps"), (dict(warmup_steps=2.5), "warmup_steps")]:
        with pytest.raises(ValueError, match=bad and match):
            RLTrainer(model, TOK, recipes.get("grpo"), RLConfig(**bad))


def _task_reward_function(task, examples, eos):
    """TRL-style: the task's reward of the decoded completion (``;`` restored when the ids end with EOS)."""

    def reward(prompts, completions, completion_ids, example, **kwargs):
        return [task.reward(examples[i], c + (";" if ids and ids[-1] == eos else ""))
                for i, c, ids in zip(example, completions, completion_ids, strict=True)]

    return reward


def test_trl_style_reward_function_and_dataset_reproduce_the_task_run():
    from datasets import Dataset

    task = get_task("addition")
    cfg = RLConfig(prompts_per_step=4, group_size=4, eval_every=0, seed=5, train_size=64, dtype="float64")
    examples = task.make_split("train", cfg.train_size, seed=cfg.seed)  # the trainer's own train split
    data = Dataset.from_list([{"prompt": e.prompt, "example": i} for i, e in enumerate(examples)])
    seen = {}

    def spy(prompts, completions, completion_ids, example, **kwargs):
        seen.update(prompts=prompts, completions=completions, ids=completion_ids, kwargs=kwargs)
        return [0.0] * len(prompts)

    runs = []
    for kwargs in [{}, dict(reward_funcs=[_task_reward_function(task, examples, TOK.eos_id), spy],
                            reward_weights=[1.0, 0.5], train_dataset=data)]:
        model, tok = models.load_tiny("student-addition", dtype="float64")
        trainer = RLTrainer(model, tok, recipes.get("grpo"), cfg, **kwargs)
        runs.append((trainer.train(steps=3, progress=False), model))
    (h_task, m_task), (h_fn, m_fn) = runs
    for a, b in zip(h_task, h_fn, strict=True):
        assert a["reward"] == b["reward"] and a["loss"] == b["loss"] and a["accuracy"] == b["accuracy"]
    for p, q in zip(m_task.parameters(), m_fn.parameters(), strict=True):
        assert torch.equal(p, q)
    # TRL's conventions: prompts repeated per completion, completions decoded without the EOS ";", ids with it
    assert len(seen["prompts"]) == 16 and seen["prompts"][0] == seen["prompts"][3]
    assert not any(";" in c for c in seen["completions"]) and any(ids[-1] == TOK.eos_id for ids in seen["ids"])
    assert seen["kwargs"] == {}


def test_a_trl_style_reward_function_on_a_list_of_prompts_learns():
    task = get_task("addition")

    def starts_with_one(prompts, completions, completion_ids, **kwargs):  # a reward the task never gave
        return [float(c.startswith("1")) for c in completions]

    prompts = [e.prompt for e in task.make_split("train", 256, seed=0)]
    model, tok = models.load_tiny("student-addition")
    cfg = RLConfig(prompts_per_step=16, group_size=8, eval_every=0, lr=3e-3, seed=0)
    trainer = RLTrainer(model, tok, recipes.get("grpo"), cfg, reward_funcs=starts_with_one, train_dataset=prompts)
    hist = trainer.train(steps=15, progress=False)
    first, last = sum(h["reward"] for h in hist[:3]) / 3, sum(h["reward"] for h in hist[-3:]) / 3
    assert last > first + 0.25, (first, last)  # seen: 0.48 -> 0.89


def test_reward_source_arguments_are_checked():
    model = models.build_tiny("student", TOK.vocab_size, seed=0)
    f = lambda prompts, completions, **kw: [0.0] * len(prompts)  # noqa: E731
    with pytest.raises(ValueError, match="`train_dataset` needs `reward_funcs`"):
        RLTrainer(model, TOK, recipes.get("grpo"), RLConfig(eval_every=0), train_dataset=["1+2="])
    with pytest.raises(ValueError, match="`reward_weights`"):
        RLTrainer(model, TOK, recipes.get("grpo"), RLConfig(eval_every=0), reward_funcs=[f], reward_weights=[1, 2])
    with pytest.raises(ValueError, match="`reward_funcs`"):
        RLTrainer(model, TOK, recipes.get("grpo"), RLConfig(eval_every=0), reward_funcs=[3])
    with pytest.raises(ValueError, match="`train_dataset`"):
        RLTrainer(model, TOK, recipes.get("grpo"), RLConfig(eval_every=0), reward_funcs=f, train_dataset=[{"q": 1}])
    with pytest.raises(ValueError, match="eval_every"):
        RLTrainer(model, TOK, recipes.get("grpo"), RLConfig(), reward_funcs=f, train_dataset=["1+2="])


def test_foreach_adamw_equals_the_per_parameter_loop_bit_for_bit():
    """RLTrainer's AdamW runs with foreach=True (faster on CPU); it must give the weights torch's default loop does."""
    from forklab.lm._optim import make_optimizer

    weights = {}
    for foreach in (False, True):
        model, _ = models.load_tiny("student-addition", dtype="float64")
        cfg = RLConfig(lr=1e-3, weight_decay=0.01)
        opt = make_optimizer(model.parameters(), cfg) if foreach else torch.optim.AdamW(
            model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99), foreach=False)
        gen = torch.Generator().manual_seed(1)
        for _ in range(5):
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            opt.step()
        weights[foreach] = [p.detach().clone() for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(weights[False], weights[True], strict=True))
