"""forklab distillation objectives inside TRL's GKDTrainer: parity with TRL's own GKD loss, and learning.

The oracle is TRL itself: on one batch, ``GKDTrainer.compute_loss`` (its ``generalized_jsd_loss`` at β,
temperature 1, ``batchmean``) and ``ForklabDistillTrainer.compute_loss`` with forklab's ``gkd`` objective
must give the same loss and the same gradient, on off-policy data and on a batch the student generated.
"""

from __future__ import annotations

import pytest
import torch

trl = pytest.importorskip("trl")

from transformers import AutoModelForCausalLM  # noqa: E402

from forklab.envs.tasks import get_task  # noqa: E402
from forklab.integrations.trl_distill import ForklabDistillTrainer, distill_dataset, gkd_config  # noqa: E402
from forklab.lm import _rollout  # noqa: E402
from forklab.lm.tokenizer import CharTokenizer  # noqa: E402
from forklab.paths import data_dir  # noqa: E402

MODELS = data_dir() / "models"
GKD = trl.experimental.gkd.GKDTrainer


def _trainer(tmp_path, size=64, **kwargs):
    torch.manual_seed(0)
    student = AutoModelForCausalLM.from_pretrained(MODELS / "student-addition")
    teacher = AutoModelForCausalLM.from_pretrained(MODELS / "teacher-addition")
    char = CharTokenizer.for_tasks()
    config = {k: kwargs.pop(k) for k in list(kwargs) if k in ("beta", "lmbda", "max_steps", "learning_rate",
                                                               "per_device_train_batch_size")}
    args = gkd_config(str(tmp_path), use_cpu=True, seed=0, **config)
    return ForklabDistillTrainer(model=student, teacher_model=teacher, args=args, processing_class=char.to_hf(),
                                 train_dataset=distill_dataset(get_task("addition"), char, size=size), **kwargs)


def _loss_and_grad(loss_fn, model, inputs):
    loss = loss_fn(model, inputs)
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
    return loss.detach(), torch.cat([g.flatten() for g in grads])


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 1.0])
def test_gkd_objective_equals_trls_generalized_jsd_loss(tmp_path, beta):
    trainer = _trainer(tmp_path, beta=beta, objective="gkd")
    assert trainer.objective_kwargs == {"beta": beta}
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model
    model.train()
    torch.manual_seed(1)
    ids, attention, labels = trainer.generate_on_policy_outputs(model, batch, trainer.generation_config)
    on_policy = {**batch, "input_ids": ids, "attention_mask": attention, "labels": labels}
    for inputs in (batch, on_policy):
        trl_loss, trl_grad = _loss_and_grad(lambda m, x: GKD.compute_loss(trainer, m, x), model, inputs)
        fk_loss, fk_grad = _loss_and_grad(trainer.compute_loss, model, inputs)
        torch.testing.assert_close(fk_loss, trl_loss, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(fk_grad, trl_grad, rtol=1e-4, atol=1e-7)
        assert trl_loss > 1e-3 and trl_grad.abs().sum() > 0
    assert ids.shape != batch["input_ids"].shape or not torch.equal(ids, batch["input_ids"])  # two different batches


def test_selection_keeps_the_ratio_and_the_loss_is_the_kept_mean(tmp_path):
    trainer = _trainer(tmp_path, objective="reverse_kl", selection="entropy_top", ratio=0.5)
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    metrics = trainer._metrics["train"]
    n = int((batch["labels"][:, 1:] != -100).sum())
    assert metrics["distill/kept_ratio"][-1] == pytest.approx(max(1, n // 2) / n)
    assert float(loss.detach()) == pytest.approx(metrics["distill/objective"][-1], rel=1e-5)
    assert metrics["distill/objective"][-1] > metrics["distill/reverse_kl"][-1]  # high-entropy tokens diverge more


@pytest.mark.parametrize("bad, match", [({"objective": "nope"}, "objective"),
                                        ({"selection": "nope"}, "selection"),
                                        ({"objective": "gkd", "objective_kwargs": {"gamma": 1}}, "objective_kwargs"),
                                        ({"selection_divergence": "tv"}, "selection_divergence")])
def test_bad_settings_name_the_argument(tmp_path, bad, match):
    with pytest.raises(ValueError, match=match):
        _trainer(tmp_path, **bad)


def test_reverse_kl_with_tip_selection_learns_inside_trl(tmp_path):
    """Reverse KL on the top-50% entropy tokens, on-policy, 25 steps of 32 prompts: the teacher–student gap on
    held-out samples shrinks and greedy accuracy rises (measured: gap 1.05 → 0.62 nats per token, accuracy on 128
    test prompts 0.79 → 0.91, the teacher's 0.91)."""
    trainer = _trainer(tmp_path, size=512, objective="reverse_kl", selection="entropy_top", ratio=0.5,
                       max_steps=25, learning_rate=1e-3, per_device_train_batch_size=32)
    task, char = get_task("addition"), CharTokenizer.for_tasks()
    held_out = task.make_split("test", 128, seed=0)
    student, teacher = trainer.model, trainer.teacher_model

    def gap() -> float:  # token-mean KL(student ‖ teacher) on fixed sequences the initial student wrote
        with torch.no_grad():
            s = student(**fixed_inputs).logits[:, lp - 1:-1]
            t = teacher(**fixed_inputs).logits[:, lp - 1:-1]
        return float(torch.where(fixed_mask, trl.experimental.gkd.GKDTrainer.generalized_jsd_loss(
            s, t, beta=1.0, reduction="none").sum(-1), 0.0).sum() / fixed_mask.sum())

    ids, pmask = _rollout.encode_prompts(student, char, held_out)
    from forklab.lm import sampling
    out = sampling.sample(student, ids, pmask, 6, generator=torch.Generator().manual_seed(0),
                          stop_token_id=char.eos_id, pad_token_id=char.pad_id)
    fixed_inputs = _rollout.response_inputs(ids, pmask, out.tokens, out.mask)
    lp, fixed_mask = ids.shape[1], out.mask
    before_gap, before_acc = gap(), _rollout.greedy_accuracy(student, char, task, held_out, 6)
    trainer.train()
    after_gap, after_acc = gap(), _rollout.greedy_accuracy(student, char, task, held_out, 6)
    print(f"gap {before_gap:.3f} -> {after_gap:.3f}; greedy accuracy {before_acc:.3f} -> {after_acc:.3f}")
    assert after_gap < 0.75 * before_gap, (before_gap, after_gap)
    assert after_acc > before_acc + 0.05, (before_acc, after_acc)  # 128 prompts: s.e. of a share ≲ 0.04
    assert any("distill/kept_ratio" in h for h in trainer.state.log_history)
