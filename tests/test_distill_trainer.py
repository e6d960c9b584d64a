"""DistillTrainer with forklab.distill objectives: agreement with the divergence path, G-OPD's λ = 1
invariance, OPSD's privileged teacher, weighting rules, schedules, errors."""

import pytest
import torch

from forklab.distill import privileged_prompt, rule_names
from forklab.lm import models
from forklab.lm.distill_trainer import DistillConfig, DistillTrainer
from forklab.lm.tokenizer import CharTokenizer

TOK = CharTokenizer.for_tasks()
SMALL = dict(prompts_per_step=4, max_new_tokens=4, eval_every=0, train_size=8, seed=0)


def _pair(seed=12):
    return (models.build_tiny("student", TOK.vocab_size, seed=seed),
            models.build_tiny("teacher", TOK.vocab_size, seed=1))


def _losses(config, steps=2, teacher="teacher"):
    student, t = _pair()
    trainer = DistillTrainer(student, t if teacher == "teacher" else None, TOK, config)
    return [h["loss"] for h in trainer.train(steps)], trainer


@pytest.mark.parametrize("objective,kwargs,divergence,beta", [
    ("reverse_kl", {}, "reverse_kl", 0.5), ("gkd", {"beta": 0.3}, "jsd", 0.3), ("forward_kl", {}, "forward_kl", 0.5)])
def test_registered_objectives_match_the_divergence_path(objective, kwargs, divergence, beta):
    new, _ = _losses(DistillConfig(objective=objective, objective_kwargs=kwargs, **SMALL))
    old, _ = _losses(DistillConfig(divergence=divergence, beta=beta, **SMALL))
    assert new == pytest.approx(old, rel=1e-6)


def test_gopd_lambda_one_does_not_depend_on_the_reference():
    config = DistillConfig(objective="gopd", objective_kwargs={"lam": 1.0}, **SMALL)
    first, trainer = _losses(config)
    student, teacher = _pair()
    other = DistillTrainer(student, teacher, TOK, config)
    other.reference = models.build_tiny("student", TOK.vocab_size, seed=99)  # a different π_ref
    assert [h["loss"] for h in other.train(2)] == pytest.approx(first, rel=1e-6)
    assert trainer.reference is not None  # G-OPD keeps a frozen copy of the initial student


class _Spy(torch.nn.Module):
    """A teacher that records the input ids it is shown."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config, self.seen = inner, inner.config, []

    def forward(self, **kwargs):
        self.seen.append(kwargs["input_ids"])
        return self.inner(**kwargs)


def test_opsd_teacher_reads_the_privileged_prompt():
    student, _ = _pair()
    spy = _Spy(models.build_tiny("student", TOK.vocab_size, seed=12))
    trainer = DistillTrainer(student, spy, TOK, DistillConfig(objective="opsd", **SMALL))
    assert trainer.teacher_context == "privileged"
    generator_state = trainer.generator.get_state()
    trainer.step()
    # the prompts this step drew (the first draw of the seeded generator)
    trainer.generator.set_state(generator_state)
    idx = torch.randint(0, len(trainer.train_examples), (SMALL["prompts_per_step"],), generator=trainer.generator)
    expected = privileged_prompt(trainer.task, trainer.train_examples[int(idx[0])])
    shown = TOK.decode([i for i in spy.seen[0][0].tolist() if i != TOK.pad_id])
    assert shown.startswith(expected)


def test_opsd_default_teacher_is_a_frozen_copy_of_the_initial_student():
    student, _ = _pair()
    initial = {k: v.clone() for k, v in student.state_dict().items()}
    trainer = DistillTrainer(student, None, TOK, DistillConfig(objective="opsd", lr=1e-2, **SMALL))
    trainer.train(2)
    assert trainer.teacher is not student
    assert all(torch.equal(v, initial[k]) for k, v in trainer.teacher.state_dict().items())
    assert any(not torch.equal(v, initial[k]) for k, v in student.state_dict().items())


def test_paced_weights_silence_prompts_the_student_never_solves():
    # an untrained student solves nothing: p̂ = 0 everywhere, so PACED's p̂(1 − p̂) = 0 and nothing moves
    config = DistillConfig(objective="opd", sequence_weighting="paced", samples_per_prompt=2, **SMALL)
    student, teacher = _pair()
    trainer = DistillTrainer(student, teacher, TOK, config)
    m = trainer.step()
    assert m["accuracy"] == 0.0 and m["loss"] == 0.0 and m["grad_norm"] == 0.0 and m["weights/kept_mean"] == 0.0


def test_token_weighting_and_scope_default_weights():
    _, trainer = _losses(DistillConfig(objective="opd", token_weighting="position", **SMALL), steps=1)
    assert trainer.history[0]["weights/kept_mean"] == pytest.approx(1.0)  # mean-1 position weights, no selection
    _, scope = _losses(DistillConfig(objective="scope", samples_per_prompt=2, **SMALL), steps=1)
    assert scope.sequence_rule is not None and scope.sequence_rule.name == "scope"
    student, teacher = _pair()
    off = DistillTrainer(student, teacher, TOK, DistillConfig(objective="scope", sequence_weighting="none",
                                                              samples_per_prompt=2, **SMALL))
    assert off.sequence_rule is None


def test_schedules_move_an_objective_setting():
    student, teacher = _pair()
    trainer = DistillTrainer(student, teacher, TOK, DistillConfig(objective="gkd", schedules={"beta": (0.0, 1.0)},
                                                                  schedule_steps=2, **SMALL))
    assert trainer._settings()["beta"] == 0.0
    trainer.step()
    assert trainer._settings()["beta"] == pytest.approx(0.5)


def test_configuration_errors_name_the_field():
    student, teacher = _pair()
    for config, field in [(DistillConfig(objective="bogus"), "config.objective"),
                          (DistillConfig(token_weighting="bogus"), "config.token_weighting"),
                          (DistillConfig(sequence_weighting="bogus"), "config.sequence_weighting"),
                          (DistillConfig(objective="kdrl"), "config.samples_per_prompt"),
                          (DistillConfig(teacher_context="other"), "config.teacher_context")]:
        with pytest.raises(ValueError, match=f"`{field}`"):
            DistillTrainer(student, teacher, TOK, config)
    with pytest.raises(ValueError, match="`config.objective_kwargs`"):
        DistillTrainer(student, teacher, TOK, DistillConfig(objective="opd", objective_kwargs={"lam": 2.0}))
    with pytest.raises(ValueError, match="`config.token_weighting_kwargs`"):
        DistillTrainer(student, teacher, TOK, DistillConfig(token_weighting="position",
                                                            token_weighting_kwargs={"decay": 0.5}))


def test_opd_objective_learns():
    student, teacher = _pair()
    trainer = DistillTrainer(student, teacher, TOK, DistillConfig(objective="opd", prompts_per_step=16, eval_every=0,
                                                                  train_size=16, lr=3e-3, seed=0))
    hist = trainer.train(20)
    assert hist[-1]["divergence/kept_mean"] < 0.7 * hist[0]["divergence/kept_mean"]


@pytest.mark.parametrize("kind,name", [("objective", n) for n in rule_names("objective")]
                         + [("token_weighting", n) for n in rule_names("token_weighting")]
                         + [("sequence_weighting", n) for n in rule_names("sequence_weighting")])
def test_every_registered_rule_runs_in_the_trainer(kind, name):
    student, teacher = _pair()
    config = DistillConfig(**{kind: name}, samples_per_prompt=2, dtype="float64",
                           **{**SMALL, "prompts_per_step": 2})
    m = DistillTrainer(student, teacher, TOK, config).step()
    assert all(torch.isfinite(torch.tensor(v)) for v in m.values())
