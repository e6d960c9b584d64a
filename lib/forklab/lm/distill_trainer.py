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
Peak activation memory per step is measured with ``torch.autograd.graph.saved_tensors_hooks``
(bytes of every tensor saved for backward; on CUDA also ``max_memory_allocated``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from forklab import divergences as div
from forklab.diagnostics import tip
from forklab.envs import tasks as task_lib
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
        self.student, self.teacher, self.tokenizer = student, teacher.eval(), tokenizer
        self.config = c = config or DistillConfig()
        if c.divergence not in _DIVERGENCES:
            raise ValueError(f"`config.divergence` must be one of {sorted(_DIVERGENCES)}, got {c.divergence!r}")
        if c.selection is not None and c.selection not in tip.RULES:
            raise ValueError(f"`config.selection` must be None or one of {sorted(tip.RULES)}, got {c.selection!r}")
        if c.dtype is not None:
            dtype = resolve_dtype(c.dtype, "config.dtype")
            student.to(dtype)
            teacher.to(dtype)
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

    def _response_hidden(self, model, inputs, lp: int, t: int) -> Tensor:
        return model.model(**inputs).last_hidden_state[:, lp - 1 : lp - 1 + t]

    def step(self) -> dict[str, float]:
        """One on-policy distillation step (the module docstring's pseudocode); returns and logs its metrics.

        Samples ``prompts_per_step × samples_per_prompt`` responses from the student, scores them with
        the teacher (no gradient), optionally keeps only the tokens a TIP rule selects
        (``config.selection``, share ``config.ratio``), and takes one AdamW step on the mean divergence
        over the kept tokens. The student's ``lm_head`` runs on the kept tokens only, which is where
        the activation memory saving comes from (``memory/saved_activations_mb``). Every
        ``eval_every`` steps it adds :func:`~forklab.lm.trainer.evaluate`'s metrics.
        """
        c = self.config
        t0 = time.perf_counter()
        examples, s = sample_groups(self.student, self.tokenizer, self.train_examples, c.prompts_per_step,
                                    c.samples_per_prompt, self.generator, c.max_new_tokens,
                                    temperature=c.temperature)
        inputs = response_inputs(s.prompt_ids, s.prompt_mask, s.tokens, s.mask)
        lp, t = s.prompt_ids.shape[1], s.tokens.shape[1]
        kwargs = {"beta": c.beta} if c.divergence == "jsd" else {}
        with torch.no_grad():
            teacher_logits = self.teacher(**inputs).logits[:, lp - 1 : lp - 1 + t]
            keep = s.mask
            if c.selection is not None:
                student_logits = self.student(**inputs).logits[:, lp - 1 : lp - 1 + t]
                entropy, divergence = tip.token_axes(student_logits, teacher_logits, s.mask)
                keep = tip.select_tokens(c.selection, entropy, divergence, s.mask, c.ratio, generator=self.generator)
        self.student.train()
        with saved_activation_bytes() as mem:
            hidden = self._response_hidden(self.student, inputs, lp, t)
            logits = self.student.lm_head(hidden[keep])  # [n_kept, V]: full-vocabulary work only where kept
            per_token = _DIVERGENCES[c.divergence](logits, teacher_logits[keep], **kwargs)
            loss = per_token.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.student.parameters(), c.grad_clip))
        self.optimizer.step()
        self.student.eval()
        texts = decode_responses(self.tokenizer, s.tokens, s.mask)
        rewards = [self.task.reward(examples[i // c.samples_per_prompt], x) for i, x in enumerate(texts)]
        metrics = {
            "loss": float(loss.detach()),
            "divergence/kept_mean": float(per_token.detach().mean()),
            "tokens/kept_share": float(keep.sum() / s.mask.sum()),
            "accuracy": float(sum(rewards) / len(rewards)),
            "entropy": float(s.entropy[s.mask].mean()),
            "grad_norm": grad_norm,
            "memory/saved_activations_mb": mem.bytes / 2**20,
            "time/step_s": time.perf_counter() - t0,
        }
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

    def train(self, steps: int) -> list[dict]:
        """Run ``steps`` more :meth:`step` calls; returns the whole history (one dict per step so far)."""
        for _ in range(int(steps)):
            self.step()
        return self.history


def teacher_student_gap(student, teacher, tokenizer: CharTokenizer, task, examples, max_new_tokens: int) -> dict:
    """Greedy accuracy of the student and of the teacher on ``examples`` (``evaluate``'s greedy half)."""
    return {f"{name}/greedy_accuracy": greedy_accuracy(model, tokenizer, task, examples, max_new_tokens)
            for name, model in (("student", student), ("teacher", teacher))}

