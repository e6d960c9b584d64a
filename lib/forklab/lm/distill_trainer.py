"""DistillTrainer: on-policy distillation of a student LM from a teacher that shares its tokenizer.

Introduced in ``notebooks/09_on_policy_distillation.ipynb`` and ``10_token_importance_tip.ipynb`` (planned).
One step::

    samples   = sample(student, P prompts × n)                        # on-policy: the student's own text
    with no_grad: z_t = teacher(prompt + response)                    # teacher logits at every position
    [select]  keep = rule(student entropy, divergence, ratio ρ)       # TIP token selection (optional)
    h         = student.body(prompt + response)                       # hidden states, with grad
    z_s       = lm_head(h[keep])                                      # logits only where kept: the memory saving
    loss      = mean over kept tokens of D(z_s, z_t)                  # reverse KL by default
    AdamW step

``divergence``: ``reverse_kl`` (on-policy distillation: dense, KL-regularised RL with the teacher as
reward), ``forward_kl``, ``jsd`` (β via ``beta``, TRL's GKD convention) or ``total_variation``.

``objective`` (instead of ``divergence``): any objective registered in :mod:`forklab.distill` (``opd``,
``reverse_kl``, ``forward_kl``, ``gkd``, ``gopd``, ``opsd``, ``kdrl``, ``trrd``, ``scope``, ``tsd_kd``,
``clipped_forward_kl``, …) with ``objective_kwargs``; then the step also computes, on the whole batch and
without gradient, what the objective asks for (rewards, GRPO advantages over ``samples_per_prompt``
responses per prompt, the student's sampling-time log-probs, the frozen initial student's for G-OPD),
and multiplies the per-token loss by the weights of ``token_weighting`` (``position``, ``prune_opd``,
``tsd_kd``) and ``sequence_weighting`` (``paced``, ``scope``; ``"none"`` turns off an objective's
default). The loss is Σ_kept w_t ℓ_t / #kept. ``teacher_context="privileged"`` (OPSD's default) scores the
responses with the teacher reading :func:`forklab.distill.privileged_prompt` instead of the prompt; pass
the student itself (current weights) or a frozen copy (OPSD's ``--fixed_teacher``; ``teacher=None``) as
the teacher. ``schedules={"beta": (0.0, 1.0)}`` moves an objective setting linearly (or by cosine) over
``schedule_steps`` steps (:func:`forklab.distill.jsd_beta_schedule`).

Peak activation memory per step is measured with ``torch.autograd.graph.saved_tensors_hooks``
(bytes of every tensor saved for backward; on CUDA also ``max_memory_allocated``).
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from forklab import divergences as div
from forklab.diagnostics import tip
from forklab.distill import _registry as distill_registry
from forklab.distill.objectives import jsd_beta_schedule
from forklab.envs import tasks as task_lib
from forklab.lm import _distill_inputs as batch_lib
from forklab.lm._rollout import decode_responses, greedy_accuracy, response_inputs, sample_groups
from forklab.lm.models import resolve_dtype
from forklab.lm.tokenizer import CharTokenizer
from forklab.lm.trainer import evaluate
from forklab.runs import RunLog

__all__ = ["DistillConfig", "DistillTrainer", "saved_activation_bytes", "teacher_student_gap"]

_DIVERGENCES = {"reverse_kl": div.reverse_kl, "forward_kl": div.forward_kl, "jsd": div.jsd,
                "total_variation": div.total_variation}


@dataclass
class DistillConfig:
    """Hyperparameters of :class:`DistillTrainer`."""

    task: str = "addition"
    task_kwargs: dict = field(default_factory=dict)
    prompts_per_step: int = 32
    samples_per_prompt: int = 1
    max_new_tokens: int = 6
    temperature: float = 1.0
    lr: float = 1e-3
    grad_clip: float = 1.0
    divergence: str = "reverse_kl"
    beta: float = 0.5
    selection: str | None = None
    ratio: float = 0.5
    train_size: int = 4000
    eval_size: int = 128
    eval_every: int = 10
    pass_k: int = 8
    seed: int = 0
    #: ``None`` keeps the models' dtypes; ``"float64"`` converts student and teacher in place (the
    #: notebooks' portable setting, see ``RLConfig.dtype``).
    dtype: str | None = None
    #: a :mod:`forklab.distill` objective by name (``None``: the ``divergence`` above, as before).
    objective: str | None = None
    objective_kwargs: dict = field(default_factory=dict)
    #: ``forklab.distill`` weighting rules by name (``"none"`` for the sequence one: off even by default).
    token_weighting: str | None = None
    token_weighting_kwargs: dict = field(default_factory=dict)
    sequence_weighting: str | None = None
    sequence_weighting_kwargs: dict = field(default_factory=dict)
    selection_kwargs: dict = field(default_factory=dict)
    #: ``"prompt"`` or ``"privileged"`` (OPSD); ``None``: the objective's default.
    teacher_context: str | None = None
    privileged_template: str = "answer_first"
    #: objective setting -> (start, end), moved over ``schedule_steps`` steps (``schedule_kind``).
    schedules: dict = field(default_factory=dict)
    schedule_steps: int = 100
    schedule_kind: str = "linear"


class saved_activation_bytes:  # noqa: N801 - used as a context manager, reads like one
    """Context manager counting the bytes of tensors autograd saves for backward (activation memory)."""

    def __enter__(self):
        self.bytes = 0

        def pack(t: Tensor):
            self.bytes += t.numel() * t.element_size()
            return t

        self._hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        return False


class DistillTrainer:
    """On-policy distillation; see the module docstring. ``student`` and ``teacher`` share ``tokenizer``."""

    def __init__(self, student, teacher, tokenizer: CharTokenizer, config: DistillConfig | None = None,
                 run_path: str | os.PathLike | None = None):
        self.config = c = config or DistillConfig()
        if c.divergence not in _DIVERGENCES:
            raise ValueError(f"`config.divergence` must be one of {sorted(_DIVERGENCES)}, got {c.divergence!r}")
        if c.selection is not None and c.selection not in tip.RULES:
            raise ValueError(f"`config.selection` must be None or one of {sorted(tip.RULES)}, got {c.selection!r}")
        self._resolve_rules(c)
        if teacher is None:  # OPSD's --fixed_teacher: the student's initial weights
            teacher = copy.deepcopy(student).requires_grad_(False)
        self.student, self.teacher, self.tokenizer = student, teacher.eval(), tokenizer
        if c.dtype is not None:
            dtype = resolve_dtype(c.dtype, "config.dtype")
            student.to(dtype)
            teacher.to(dtype)
        self.reference = None
        if self.objective is not None and "ref_logp" in self.objective.inputs:  # G-OPD: π_ref = initial student
            self.reference = copy.deepcopy(student).eval().requires_grad_(False)
        if student.config.vocab_size != teacher.config.vocab_size:
            raise ValueError("`teacher` must share the student's vocabulary (same tokenizer)")
        self.task = task_lib.get_task(c.task, **c.task_kwargs)
        self.train_examples = self.task.make_split("train", c.train_size, seed=c.seed)
        self.eval_examples = self.task.make_split("test", c.eval_size, seed=c.seed)
        self.optimizer = torch.optim.AdamW(student.parameters(), lr=c.lr, betas=(0.9, 0.99))
        self.generator = torch.Generator().manual_seed(c.seed)
        self.eval_generator = torch.Generator().manual_seed(c.seed + 1)
        self.step_count = 0
        self.history: list[dict] = []
        self.log = RunLog(run_path) if run_path is not None else None

    def _resolve_rules(self, c: DistillConfig) -> None:
        def find(kind, name, argument):
            return None if name is None else distill_registry.lookup(kind, name, argument)

        self.objective = find("objective", c.objective, "config.objective")
        self.token_rule = find("token_weighting", c.token_weighting, "config.token_weighting")
        default_seq = self.objective.sequence_weighting if self.objective is not None else None
        seq = default_seq if c.sequence_weighting is None else c.sequence_weighting
        self.sequence_rule = None if seq == "none" else find("sequence_weighting", seq, "config.sequence_weighting")
        context = c.teacher_context or (self.objective.teacher_context if self.objective else "prompt")
        if context not in ("prompt", "privileged"):
            raise ValueError(f"`config.teacher_context` must be 'prompt' or 'privileged', got {context!r}")
        self.teacher_context = context
        if c.schedule_kind not in ("linear", "cosine"):
            raise ValueError(f"`config.schedule_kind` must be 'linear' or 'cosine', got {c.schedule_kind!r}")
        needs_adv = any(r is not None and "adv" in r.inputs for r in (self.objective, self.token_rule,
                                                                      self.sequence_rule))
        if needs_adv and c.samples_per_prompt < 2:
            raise ValueError("`config.samples_per_prompt` must be >= 2 for an objective that uses GRPO advantages")
        for rule, kwargs, field_name in ((self.objective, c.objective_kwargs, "objective_kwargs"),
                                         (self.token_rule, c.token_weighting_kwargs, "token_weighting_kwargs"),
                                         (self.sequence_rule, c.sequence_weighting_kwargs, "sequence_weighting_kwargs"),
                                         (self.objective, c.schedules, "schedules")):
            unknown = set(kwargs) - set(rule.settings) if rule is not None else set()
            if unknown:
                raise ValueError(f"`config.{field_name}` for {rule.name!r} takes {sorted(rule.settings)}, "
                                 f"got {sorted(unknown)}")
        if self.objective is None and c.schedules and set(c.schedules) != {"beta"}:
            raise ValueError("`config.schedules` takes only 'beta' with the `divergence` path")

    def _settings(self) -> dict:
        """The objective's settings at this step (``objective_kwargs`` with ``schedules`` applied)."""
        c = self.config
        settings = dict(c.objective_kwargs) if self.objective is not None else {"beta": c.beta}
        for name, (start, end) in c.schedules.items():
            settings[name] = start + (end - start) * jsd_beta_schedule(self.step_count, c.schedule_steps, 0.0, 1.0,
                                                                       c.schedule_kind)
        return settings

    def _response_hidden(self, model, inputs, lp: int, t: int) -> Tensor:
        return model.model(**inputs).last_hidden_state[:, lp - 1 : lp - 1 + t]

    def step(self) -> dict[str, float]:
        """One on-policy distillation step (the module docstring's pseudocode); returns and logs its metrics.

        Samples ``prompts_per_step × samples_per_prompt`` responses from the student, scores them with
        the teacher (no gradient), optionally keeps only the tokens a TIP rule selects
        (``config.selection``, share ``config.ratio``), and takes one AdamW step on the mean per-token
        loss over the kept tokens (the divergence, or ``config.objective``, times the weighting rules'
        weights). The student's ``lm_head`` runs on the kept tokens only, which is where the activation
        memory saving comes from (``memory/saved_activations_mb``). Every ``eval_every`` steps it adds
        :func:`~forklab.lm.trainer.evaluate`'s metrics.
        """
        c = self.config
        t0 = time.perf_counter()
        examples, s = sample_groups(self.student, self.tokenizer, self.train_examples, c.prompts_per_step,
                                    c.samples_per_prompt, self.generator, c.max_new_tokens,
                                    temperature=c.temperature)
        inputs = response_inputs(s.prompt_ids, s.prompt_mask, s.tokens, s.mask)
        lp, t = s.prompt_ids.shape[1], s.tokens.shape[1]
        settings = self._settings()
        texts = decode_responses(self.tokenizer, s.tokens, s.mask)
        rewards = [self.task.reward(examples[i // c.samples_per_prompt], x) for i, x in enumerate(texts)]
        weighted = self.token_rule is not None or self.sequence_rule is not None
        full_batch = self.objective is not None or weighted
        with torch.no_grad():
            if self.teacher_context == "privileged":
                teacher_logits = batch_lib.privileged_teacher_logits(
                    self.teacher, self.tokenizer, self.task, examples, c.samples_per_prompt, s, c.privileged_template)
            else:
                teacher_logits = self.teacher(**inputs).logits[:, lp - 1 : lp - 1 + t]
            keep = s.mask
            student_logits = None
            if c.selection is not None or full_batch:
                student_logits = self.student(**inputs).logits[:, lp - 1 : lp - 1 + t]
            if c.selection is not None:
                entropy, divergence = tip.token_axes(student_logits, teacher_logits, s.mask)
                keep = tip.select_tokens(c.selection, entropy, divergence, s.mask, c.ratio, generator=self.generator,
                                         **c.selection_kwargs)
            batch, weights = self._batch(full_batch, student_logits, teacher_logits, s, inputs, lp, t, rewards,
                                         settings)
        self.student.train()
        with saved_activation_bytes() as mem:
            hidden = self._response_hidden(self.student, inputs, lp, t)
            logits = self.student.lm_head(hidden[keep])  # [n_kept, V]: full-vocabulary work only where kept
            if self.objective is None:
                per_token = _DIVERGENCES[c.divergence](logits, teacher_logits[keep], **_divergence_kwargs(c,
                                                                                                             settings))
            else:
                per_token = self._objective_loss(logits, keep, s.tokens, batch, settings)
            if weights is None:
                loss = per_token.mean()
            else:
                loss = (per_token * weights[keep].to(per_token.dtype)).sum() / per_token.numel()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.student.parameters(), c.grad_clip))
        self.optimizer.step()
        self.student.eval()
        metrics = {
            "loss": float(loss.detach()),
            "divergence/kept_mean": float(per_token.detach().mean()) if self.objective is None else
            float(div.reverse_kl(logits.detach(), teacher_logits[keep]).mean()),
            "tokens/kept_share": float(keep.sum() / s.mask.sum()),
            "accuracy": float(sum(rewards) / len(rewards)),
            "entropy": float(s.entropy[s.mask].mean()),
            "grad_norm": grad_norm,
            "memory/saved_activations_mb": mem.bytes / 2**20,
            "time/step_s": time.perf_counter() - t0,
        }
        if self.objective is not None:
            metrics["objective/kept_mean"] = float(per_token.detach().mean())
        if weights is not None:
            metrics["weights/kept_mean"] = float(weights[keep].mean())
        if torch.cuda.is_available():
            metrics["memory/cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        self.step_count += 1
        if c.eval_every and self.step_count % c.eval_every == 0:
            metrics |= evaluate(self.student, self.tokenizer, self.task, self.eval_examples, c.max_new_tokens,
                                c.pass_k, c.temperature, self.eval_generator)
        self.history.append({"step": self.step_count, **metrics})
        if self.log is not None:
            self.log.append(self.step_count, metrics)
        return metrics

    def _batch(self, full_batch: bool, student_logits, teacher_logits, s, inputs, lp: int, t: int, rewards,
               settings: dict) -> tuple[dict | None, Tensor | None]:
        """Whole-batch inputs of the rules (no gradient) and the product of the weighting rules' weights."""
        if not full_batch:
            return None, None
        c = self.config
        device = s.mask.device
        group = torch.arange(c.prompts_per_step, device=device).repeat_interleave(c.samples_per_prompt)
        reward = torch.tensor(rewards, dtype=torch.float64, device=device)
        ref_logits = None
        if self.reference is not None:
            ref_logits = batch_lib.response_logits(self.reference, inputs, lp, t)
        needs_adv = any(r is not None and "adv" in r.inputs for r in (self.objective, self.token_rule,
                                                                      self.sequence_rule))
        batch = batch_lib.batch_inputs(student_logits, teacher_logits, s.tokens, s.mask, reward, group, ref_logits,
                                       needs_adv)
        if self.objective is not None and self.objective.prepare is not None:
            batch |= self.objective.prepare(student_logits, teacher_logits, s.mask, **settings)
        weights = None
        for rule, kwargs in ((self.token_rule, c.token_weighting_kwargs),
                             (self.sequence_rule, c.sequence_weighting_kwargs)):
            w = batch_lib.rule_weights(rule, batch, kwargs, s.mask)
            if w is not None:
                weights = w if weights is None else weights * w
        return batch, weights

    def _objective_loss(self, logits: Tensor, keep: Tensor, tokens: Tensor, batch: dict, settings: dict) -> Tensor:
        """The registered objective on the kept tokens, as one row ``[1, n_kept]``; returns ``[n_kept]``."""
        available = {}
        for name, value in batch.items():
            if name == "group":
                continue
            if value.dim() == 1:
                value = value[:, None].expand(keep.shape)
            available[name] = value[keep][None]
        available["student_logits"] = logits[None]
        available["logp"] = batch_lib.token_logp(logits, tokens[keep])[None]
        available["mask"] = torch.ones(1, logits.shape[0], dtype=torch.bool, device=logits.device)
        return distill_registry.call(self.objective, available, settings)[0]

    def train(self, steps: int) -> list[dict]:
        """Run ``steps`` more :meth:`step` calls; returns the whole history (one dict per step so far)."""
        for _ in range(int(steps)):
            self.step()
        return self.history


def _divergence_kwargs(config: DistillConfig, settings: dict) -> dict:
    """The keyword arguments of ``config.divergence`` (β only for ``jsd``, scheduled when asked)."""
    return {"beta": settings["beta"]} if config.divergence == "jsd" else {}


def teacher_student_gap(student, teacher, tokenizer: CharTokenizer, task, examples, max_new_tokens: int) -> dict:
    """Greedy accuracy of the student and of the teacher on ``examples`` (``evaluate``'s greedy half)."""
    return {f"{name}/greedy_accuracy": greedy_accuracy(model, tokenizer, task, examples, max_new_tokens)
            for name, model in (("student", student), ("teacher", teacher))}

