"""forklab distillation objectives inside TRL: a ``GKDTrainer`` whose loss is a forklab objective by name.

forklab's own :class:`~forklab.lm.distill_trainer.DistillTrainer` is a single-process loop for the tiny
models and the notebooks. :class:`ForklabDistillTrainer` puts the same objectives, token weighting rules and
TIP token selection inside TRL's ``GKDTrainer`` (``trl.experimental.gkd``), which brings accelerate
(multi-GPU), DeepSpeed and FSDP. Launch commands and matching settings: ``docs/scale-out.md``.

What it changes in ``GKDTrainer`` and what it keeps::

    TRL: batch → [λ: student generates | seq_kd: teacher generates] → compute_loss → step
    here:                                                  └ student/teacher logits on the completion
                                                             [select] keep = TIP rule(entropy, divergence, ρ)
                                                             ℓ_t = objective(...); w_t = weighting rule(s)
                                                             loss = Σ_kept w_t ℓ_t / #kept

- data, collator, on-policy fraction ``lmbda``, ``seq_kd``, generation, optimizer, distribution: TRL's;
- the loss: the objective registered under ``objective`` (:mod:`forklab.distill`: ``gkd``, ``reverse_kl``,
  ``forward_kl``, ``opd``, ``gopd``, ``tsd_kd``, ...) on the completion tokens, times the weights of
  ``token_weighting`` / ``sequence_weighting``, averaged over the tokens a TIP rule keeps
  (``selection``, share ``ratio``; :func:`forklab.diagnostics.tip.select_tokens`), or over all completion
  tokens without one. The mean is per micro-batch, and ``Trainer`` divides it by the gradient-accumulation
  steps (``num_items_in_batch`` is not used: transformers counts it on the dataset's labels, before
  on-policy generation replaces them);
- ``gkd`` takes ``beta`` from ``args.beta`` unless ``objective_kwargs`` sets it; ``schedules={"beta": (b0,
  b1)}`` moves a setting linearly over ``args.max_steps``;
- metrics, under TRL's names where TRL has one: ``entropy`` (student, completion tokens),
  ``completions/mean_length``, and ``distill/reverse_kl`` (teacher–student gap, all completion tokens),
  ``distill/objective`` (mean ℓ over kept tokens), ``distill/kept_ratio``.

Equal to TRL's own loss (tests/test_trl_distill.py checks loss and gradient on a batch of the shipped
tiny models): ``objective="gkd"`` at ``beta`` with no selection and no weighting is
``GKDTrainer.generalized_jsd_loss(..., beta, temperature=1.0, reduction="batchmean")`` as GKD's
``compute_loss`` calls it (TRL's loss temperature is 1: ``args.temperature`` only samples), when
``num_items_in_batch`` is ``None`` or equals the micro-batch's completion-token count (one micro-batch per
step, off-policy data). Confidence HIGH (tested). Not supported (``ValueError`` at construction): objectives
that need rewards, groups or advantages (GKD samples one completion per prompt and scores none: use
:class:`~forklab.lm.distill_trainer.DistillTrainer`), and a teacher reading a privileged prompt (OPSD). The
reference model of G-OPD is ``ref_model`` (a frozen copy of the initial student when not given). Selection
saves no memory here (the student's full logits are computed, as in ``GKDTrainer``), unlike forklab's
``DistillTrainer``, whose ``lm_head`` runs on the kept tokens only. No vLLM generation: TRL's
``GKDTrainer`` generates with ``model.generate``. ``forklab.lm.real_run.real_distill_run`` (REAL_RUN
cells) runs it on real models through :func:`trl_distill_run`.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from forklab import divergences as div
from forklab.diagnostics import tip
from forklab.distill import call_rule, lookup
from forklab.ops import entropy_from_logits

try:
    from trl.experimental.gkd import GKDConfig, GKDTrainer
    from trl.models import prepare_deepspeed
except ImportError as exc:  # pragma: no cover - trl is an optional dependency
    raise ImportError("forklab.integrations.trl_distill needs TRL: `pip install trl` (the project pins it in "
                      "requirements.lock)") from exc

__all__ = ["ForklabDistillTrainer", "GKDConfig", "gkd_config", "distill_dataset", "trl_distill_run",
           "OFFERED_INPUTS"]

#: What this trainer can hand an objective or weighting rule, by parameter name (``[B, T]`` unless noted).
OFFERED_INPUTS = ("student_logits", "teacher_logits", "mask", "logp", "old_logp", "teacher_logp", "ref_logp")


def _token_logp(logits: Tensor, tokens: Tensor) -> Tensor:
    return torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)


# ----- the trainer ------------------------------------------------------------------------------------------
class ForklabDistillTrainer(GKDTrainer):
    """TRL's ``GKDTrainer`` with a forklab distillation objective as the loss. See the module docstring.

    ``objective`` / ``objective_kwargs``: a registered objective and its settings; ``token_weighting`` /
    ``sequence_weighting`` (+ ``_kwargs``): registered weighting rules (``"none"`` turns off an objective's
    default sequence weighting); ``selection`` / ``ratio`` / ``selection_kwargs``: a TIP rule
    (:data:`forklab.diagnostics.tip.RULES`), its kept share and options (``scope``, thresholds, ...), on
    student entropy × ``selection_divergence`` (reverse KL by default); ``schedules``: setting → (start,
    end), linear over ``args.max_steps``; ``ref_model``: the frozen reference of objectives that take
    ``ref_logp``. Every other argument is ``GKDTrainer``'s.
    """

    def __init__(self, *args, objective: str = "gkd", objective_kwargs: dict | None = None,
                 token_weighting: str | None = None, token_weighting_kwargs: dict | None = None,
                 sequence_weighting: str | None = None, sequence_weighting_kwargs: dict | None = None,
                 selection: str | None = None, ratio: float | None = 0.5, selection_kwargs: dict | None = None,
                 selection_divergence: str = "reverse_kl", schedules: dict | None = None, ref_model=None, **kwargs):
        self.objective = lookup("objective", objective, "objective")
        self.token_rule = None if token_weighting is None else \
            lookup("token_weighting", token_weighting, "token_weighting")
        seq = self.objective.sequence_weighting if sequence_weighting is None else sequence_weighting
        self.sequence_rule = None if seq in (None, "none") else \
            lookup("sequence_weighting", seq, "sequence_weighting")
        rules = [r for r in (self.objective, self.token_rule, self.sequence_rule) if r is not None]
        for rule in rules:
            missing = sorted(set(rule.inputs) - set(OFFERED_INPUTS))
            if missing:
                raise ValueError(f"`{rule.kind}` {rule.name!r} needs {missing}, which GKD's batches do not have "
                                 f"(this trainer offers {list(OFFERED_INPUTS)}); use forklab's DistillTrainer")
        if self.objective.teacher_context != "prompt":
            raise ValueError(f"`objective` {objective!r} scores with a privileged-context teacher (OPSD), which "
                             "GKDTrainer's batches do not carry; use forklab's DistillTrainer")
        if selection is not None and selection not in tip.RULES:
            raise ValueError(f"`selection` must be None or one of {list(tip.RULES)}, got {selection!r}")
        if selection_divergence not in tip.DIVERGENCES:
            raise ValueError(f"`selection_divergence` must be one of {sorted(tip.DIVERGENCES)}, "
                             f"got {selection_divergence!r}")
        self.objective_kwargs = dict(objective_kwargs or {})
        self.rule_kwargs = {"token_weighting": dict(token_weighting_kwargs or {}),
                            "sequence_weighting": dict(sequence_weighting_kwargs or {})}
        self.selection, self.ratio, self.selection_kwargs = selection, ratio, dict(selection_kwargs or {})
        self.selection_divergence = selection_divergence
        self.schedules = {k: (float(a), float(b)) for k, (a, b) in (schedules or {}).items()}
        unknown = sorted((set(self.objective_kwargs) | set(self.schedules)) - set(self.objective.settings))
        if unknown:
            raise ValueError(f"`objective_kwargs`/`schedules`: {objective!r} takes {list(self.objective.settings)}, "
                             f"got {unknown}")
        super().__init__(*args, **kwargs)
        if self.objective.name == "gkd" and "beta" not in self.objective_kwargs:
            self.objective_kwargs["beta"] = float(self.args.beta)  # GKDConfig's β, as GKDTrainer reads it
        self.model_accepts_loss_kwargs = False  # Trainer then divides our micro-batch mean by the accumulation
        self.ref_model = None
        if any("ref_logp" in r.inputs for r in rules):
            ref = ref_model if ref_model is not None else copy.deepcopy(self.accelerator.unwrap_model(self.model))
            ref = ref.eval().requires_grad_(False)  # ZeRO-3 shards the student: pass ref_model there
            self.ref_model = prepare_deepspeed(ref, self.accelerator) if self.is_deepspeed_enabled else \
                self.accelerator.prepare_model(ref, evaluation_mode=True)
        self._selection_generator = torch.Generator().manual_seed(int(self.args.seed) + self.accelerator.process_index)

    def settings(self) -> dict:
        """The objective's settings at the current step (``objective_kwargs`` with ``schedules`` applied)."""
        out = dict(self.objective_kwargs)
        progress = min(1.0, self.state.global_step / max(1, self.state.max_steps or 1))
        for name, (start, end) in self.schedules.items():
            out[name] = start + (end - start) * progress
        return out

    # ------------------------------------------------------------------------------------------------ loss
    def distill_loss(self, student_logits: Tensor, teacher_logits: Tensor, tokens: Tensor, mask: Tensor,
                     ref_logits: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss on one micro-batch: Σ_kept w_t ℓ_t / #kept, and its metrics (as ``[sum, count]`` pairs).

        ``student_logits`` (with grad) / ``teacher_logits`` / ``ref_logits``: ``[B, T, V]`` at the positions
        that predict ``tokens`` ``[B, T]``; ``mask`` bool ``[B, T]``: the completion tokens.
        """
        inputs = {"student_logits": student_logits, "teacher_logits": teacher_logits, "mask": mask,
                  "logp": _token_logp(student_logits, tokens)}
        with torch.no_grad():
            inputs["old_logp"] = inputs["logp"].detach()
            inputs["teacher_logp"] = _token_logp(teacher_logits, tokens)
            if ref_logits is not None:
                inputs["ref_logp"] = _token_logp(ref_logits, tokens)
            entropy = entropy_from_logits(student_logits.detach())
            gap = div.reverse_kl(student_logits.detach(), teacher_logits)
            keep = mask
            if self.selection is not None and mask.any():
                divergence = gap if self.selection_divergence == "reverse_kl" else \
                    tip.DIVERGENCES[self.selection_divergence](student_logits.detach(), teacher_logits)
                keep = tip.select_tokens(self.selection, entropy.cpu(), divergence.cpu(), mask.cpu(), self.ratio,
                                         generator=self._selection_generator, **self.selection_kwargs)
                keep = keep.to(mask.device)
        settings = self.settings()
        if self.objective.prepare is not None:
            with torch.no_grad():
                inputs |= self.objective.prepare(student_logits.detach(), teacher_logits, mask, **settings)
        per_token = call_rule(self.objective, inputs, settings)
        weights = torch.ones_like(per_token)
        for rule in (self.token_rule, self.sequence_rule):
            if rule is not None:
                with torch.no_grad():
                    w = call_rule(rule, inputs, self.rule_kwargs[rule.kind]).to(per_token.dtype)
                weights = weights * (w[:, None] if w.dim() == 1 else w)
        kept = keep.sum()
        loss = torch.where(keep, per_token * weights, 0.0).sum() / kept.clamp_min(1)
        n = mask.sum()
        metrics = {"entropy": (entropy[mask].sum(), n), "distill/reverse_kl": (gap[mask].sum(), n),
                   "distill/objective": (per_token.detach()[keep].sum(), kept),
                   "distill/kept_ratio": (kept, n),
                   "completions/mean_length": (n, torch.tensor(mask.shape[0], device=mask.device))}
        return loss, metrics

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ids, attention = inputs["input_ids"], inputs["attention_mask"]
        outputs = model(input_ids=ids, attention_mask=attention)
        self.teacher_model.eval()
        with torch.no_grad():
            teacher = self.teacher_model(input_ids=ids, attention_mask=attention).logits
            ref = None if self.ref_model is None else self.ref_model(input_ids=ids, attention_mask=attention).logits
        labels = inputs["labels"][:, 1:]  # logits at i predict the token at i + 1, as GKDTrainer shifts
        mask = labels != -100
        columns = mask.any(0).nonzero().flatten()
        lo, hi = (int(columns[0]), int(columns[-1]) + 1) if columns.numel() else (0, 1)
        window = slice(lo, hi)  # only the columns that hold completion tokens reach the objective
        loss, metrics = self.distill_loss(outputs.logits[:, :-1][:, window], teacher[:, :-1][:, window],
                                          labels[:, window].clamp_min(0), mask[:, window],
                                          None if ref is None else ref[:, :-1][:, window])
        mode = "train" if self.model.training else "eval"
        for key, (total, count) in metrics.items():
            pair = torch.stack([torch.as_tensor(total, dtype=torch.float64), torch.as_tensor(count).double()])
            pair = self.accelerator.gather_for_metrics(pair.to(loss.device)[None]).sum(0)
            self._metrics[mode][key].append(float(pair[0] / pair[1].clamp_min(1)))
        return (loss, outputs) if return_outputs else loss


# ----- tiny-model helpers --------------------------------------------------------------------------------
def gkd_config(output_dir: str, **overrides) -> GKDConfig:
    """A ``GKDConfig`` with forklab's tiny-model defaults (CPU-friendly, no reports, no checkpoints).

    ``lmbda=1`` (always on-policy), ``temperature=1``, ``beta=1`` (reverse KL), ``max_new_tokens=6``;
    ``overrides`` win.
    """
    defaults = dict(per_device_train_batch_size=32, max_new_tokens=6, learning_rate=1e-3, lmbda=1.0, beta=1.0,
                    temperature=1.0, logging_steps=1, report_to=[], save_strategy="no", bf16=False,
                    max_length=64, disable_tqdm=True, gradient_checkpointing=False)
    return GKDConfig(output_dir=output_dir, **(defaults | overrides))


def distill_dataset(task, tokenizer, split: str = "train", size: int = 512, seed: int = 0, system: str | None = None):
    """A ``datasets.Dataset`` for ``GKDTrainer``: ``task``'s prompts with a reference answer each.

    Columns: ``prompt`` (the text the model reads), ``input_ids`` (prompt + answer + EOS) and
    ``completion_mask`` (1 on the answer), which TRL's ``DataCollatorForChatML`` reads as they are, so no
    chat template is needed. ``tokenizer``: a forklab ``CharTokenizer`` (the tiny models; the answer's ``;``
    is the EOS) or a Hugging Face tokenizer (its chat template wraps the prompt, with ``system`` if given,
    when it has one). The answers are the off-policy data (``lmbda < 1``); on-policy steps keep the prompt.
    """
    from datasets import Dataset

    char = hasattr(tokenizer, "alphabet") and callable(getattr(tokenizer, "encode", None))
    if not char and not callable(getattr(tokenizer, "apply_chat_template", None)):
        raise ValueError("`tokenizer` must be a forklab CharTokenizer or a Hugging Face tokenizer")
    rows = []
    for example in task.make_split(split, size, seed=seed):
        answer = task.reference_answers(example)[0]
        if char:
            text, prompt, answer_ids = example.prompt, tokenizer.encode(example.prompt), tokenizer.encode(answer)
        else:
            text = example.prompt
            if getattr(tokenizer, "chat_template", None):
                messages = ([{"role": "system", "content": system}] if system else []) + \
                    [{"role": "user", "content": example.prompt}]
                text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
            answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
            if not answer_ids or answer_ids[-1] != tokenizer.eos_token_id:  # the tiny models' `;` is their EOS
                answer_ids.append(tokenizer.eos_token_id)
        rows.append({"prompt": text, "input_ids": prompt + answer_ids,
                     "completion_mask": [0] * len(prompt) + [1] * len(answer_ids)})
    return Dataset.from_list(rows)


def trl_distill_run(runs: dict[str, dict], load_teacher, load_student, task, steps: int, prompts_per_step: int,
                    max_new_tokens: int, lr: float, seed: int, device, dtype, system: str | None = None,
                    progress: bool = True, config_overrides: dict | None = None) -> dict[str, list[dict]]:
    """The engine of ``forklab.lm.real_run.real_distill_run`` (which validates the arguments and calls this).

    Each entry of ``runs`` (label → :class:`ForklabDistillTrainer` keyword arguments) trains a fresh
    ``load_student()`` from ``load_teacher()`` for ``steps`` optimizer steps of ``prompts_per_step`` prompts,
    on-policy (``lmbda=1``), at sampling temperature 1, with AdamW settings matching ``DistillTrainer``
    (``docs/scale-out.md``). Returns ``{label: [per-step metrics]}`` in TRL's log format.
    """
    import tempfile

    histories: dict[str, list[dict]] = {}
    for label, trainer_kwargs in runs.items():
        (student, tokenizer), (teacher, _) = load_student(), load_teacher()
        char = hasattr(tokenizer, "alphabet")
        data = distill_dataset(task, tokenizer, size=max(64, prompts_per_step * steps), seed=seed, system=system)
        if not char and tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        settings = dict(per_device_train_batch_size=prompts_per_step, max_new_tokens=max_new_tokens,
                        learning_rate=lr, max_steps=steps, seed=seed, use_cpu=str(device) == "cpu",
                        bf16=dtype == torch.bfloat16, disable_tqdm=not progress, adam_beta2=0.99,
                        weight_decay=0.01, lr_scheduler_type="constant", max_length=2048)
        args = gkd_config(tempfile.mkdtemp(prefix=f"forklab-distill-{label}-"),
                          **(settings | dict(config_overrides or {})))
        trainer = ForklabDistillTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data,
                                        processing_class=tokenizer.to_hf() if char else tokenizer, **trainer_kwargs)
        trainer.train()
        histories[label] = [h for h in trainer.state.log_history if "loss" in h]
        del trainer, student, teacher
    return histories
