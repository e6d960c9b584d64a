"""What DistillTrainer computes on the whole batch before it selects tokens (private).

Everything here runs without gradient: teacher logits (from the teacher's prompt or, for OPSD, from the
privileged prompt), the student's logits at sampling time, the sampled tokens' log-probs under student,
teacher and reference, rewards, GRPO advantages, pass rates, and the weights of the registered token and
sequence weighting rules. The trainer then gathers them at the kept tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor

from forklab import advantages
from forklab.distill import _registry as reg
from forklab.distill.opsd import privileged_prompt
from forklab.distill.weighting import pass_rates
from forklab.lm._rollout import model_device, response_inputs


def response_logits(model, inputs: dict, prompt_len: int, response_len: int) -> Tensor:
    """``model``'s logits at the positions that predict the response tokens, ``[B, T, V]``."""
    return model(**inputs).logits[:, prompt_len - 1 : prompt_len - 1 + response_len]


def privileged_teacher_logits(teacher, tokenizer, task, examples, group_size: int, samples, template: str) -> Tensor:
    """The self-teacher's logits on the sampled responses, reading the privileged prompts instead (OPSD)."""
    prompts = [privileged_prompt(task, e, template) for e in examples]
    ids, pmask = tokenizer.batch_encode(prompts, pad_side="left")
    device = model_device(teacher)
    ids = ids.to(device).repeat_interleave(group_size, 0)
    pmask = pmask.to(device).repeat_interleave(group_size, 0)
    inputs = response_inputs(ids, pmask, samples.tokens, samples.mask)
    return response_logits(teacher, inputs, ids.shape[1], samples.tokens.shape[1])


def token_logp(logits: Tensor, tokens: Tensor) -> Tensor:
    """log softmax(logits) at ``tokens``: ``[..., V], [...] -> [...]``."""
    return torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)


def batch_inputs(student_logits: Tensor | None, teacher_logits: Tensor, tokens: Tensor, mask: Tensor,
                 rewards: Tensor, group: Tensor, ref_logits: Tensor | None, with_adv: bool) -> dict[str, Tensor]:
    """The named whole-batch inputs a registered rule may ask for (see :mod:`forklab.distill._registry`)."""
    out = {"teacher_logits": teacher_logits, "mask": mask, "rewards": rewards, "group": group,
           "correct": rewards >= 0.5, "pass_rate": pass_rates(rewards, group),
           "teacher_logp": token_logp(teacher_logits, tokens)}
    if student_logits is not None:
        out["student_logits"] = student_logits
        out["old_logp"] = token_logp(student_logits, tokens)
    if ref_logits is not None:
        out["ref_logp"] = token_logp(ref_logits, tokens)
    if with_adv:
        out["adv"] = advantages.grpo(rewards, group)
    return out


def rule_weights(rule: reg.DistillRule | None, available: dict, settings: dict, mask: Tensor) -> Tensor | None:
    """A token or sequence weighting rule's weights as float ``[B, T]`` (None without a rule)."""
    if rule is None:
        return None
    w = reg.call(rule, available, settings)
    if w.dtype == torch.bool:
        w = w.double()
    if w.dim() == 1:
        w = w[:, None].expand(mask.shape)
    return torch.where(mask, w.double(), torch.zeros((), dtype=torch.float64))
