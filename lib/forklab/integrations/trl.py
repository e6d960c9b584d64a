"""forklab recipes inside TRL: a ``GRPOTrainer`` whose loss is any :class:`forklab.recipes.Recipe`.

forklab's own :class:`~forklab.lm.trainer.RLTrainer` is a single-process loop built for the tiny
models and the notebooks. Past one machine, the engine that already scales is TRL (accelerate,
DeepSpeed/FSDP, vLLM generation); this module puts forklab's objectives inside it, so a recipe
studied in a notebook (BA, forking20, Clip-Cov/KL-Cov, STEER, HAPO, ...) is the loss of a real run.
Launch commands and matching settings: ``docs/scale-out.md``.

What :class:`ForklabGRPOTrainer` changes in TRL's ``GRPOTrainer`` and what it keeps::

    TRL: generate → reward functions → advantages → [split into micro-batches] → _compute_loss → step
    here:                                 (recipe's) ─┘  + group ids, rewards      └ recipe.loss(Batch)

- generation, reward functions, reference model, optimizer, scheduler, logging, distribution: TRL's;
- the loss: ``recipe.loss(Batch(logp, old_logp, adv, mask, group, rewards, ref_logp, entropy, tokens))``
  on each micro-batch, divided by the gradient-accumulation steps like TRL's ``grpo`` loss; the KL
  weight is ``recipe.kl_coef`` (copied into ``args.beta`` so that TRL scores the reference model);
- advantages: TRL's own (group z-score with std ε = 1e-4) when the recipe's estimator is ``grpo`` or
  ``dr_grpo`` (``scale_rewards`` is set to match), else the recipe's estimator on the gathered rewards;
- metrics: the recipe's, under TRL's names where TRL has one (``clip_ratio/low_mean``, ``entropy``, ``kl``).

Equal to TRL's own loss types (tests/test_trl_integration.py checks loss and gradient at step 0 on the
tiny model, with old log-probs taken before a weight perturbation so that clipping is active):

==========  ==========================================  ===============================================
TRL         forklab recipe                               condition for exact equality
==========  ==========================================  ===============================================
grpo        ``grpo`` (ppo_clip, seq-mean-token-mean)      same ε; TRL's std ε = 1e-4 (forklab 1e-6): the
                                                          advantages here are TRL's, so they match
bnpo        ppo_clip + ``token-mean``                     one micro-batch per generation batch
dr_grpo     ``dr_grpo`` (seq-mean-token-sum-norm)         ``norm_len = max_completion_length``
dapo        ``dapo``'s loss (clip-higher, token-mean)     one micro-batch per generation batch and process
cispo       ``cispo`` with TRL's ``min(r, ε_high)``       as dapo
sapo        ``sapo`` (τ+ = 1, τ− = 1.05)                  same τ
gspo        ``gspo`` (sequence ratio)                     ``importance_sampling_level="sequence"``
==========  ==========================================  ===============================================

Not supported here (``ValueError`` at construction): recipes that need the full logits (``lp_reg``'s
min-p proxy) or dynamic resampling (``dynamic_sampling``: TRL generates a fixed batch), and advantage
estimators that need per-token lengths across processes (``hapo``). Confidence: HIGH for the equalities
above (tested); the forklab-only recipes run inside TRL as they run in ``RLTrainer`` (a short run learns,
tested), with group-level pieces (Balanced Aggregation, GTPO) seeing only the groups of one micro-batch.
"""

from __future__ import annotations

import torch

from forklab.envs.tasks import reward_function
from forklab.recipes import Batch, Recipe, registered

try:
    from trl import GRPOConfig, GRPOTrainer
except ImportError as exc:  # pragma: no cover - trl is an optional dependency
    raise ImportError("forklab.integrations.trl needs TRL: `pip install trl` (the project pins it in "
                      "requirements.lock)") from exc

__all__ = ["ForklabGRPOTrainer", "hf_tokenizer", "task_dataset", "grpo_config", "trl_rl_run", "GRPOConfig"]

#: Recipe advantage estimators TRL computes itself, and the ``scale_rewards`` that matches each.
_TRL_ADVANTAGES = {"grpo": "group", "dr_grpo": "none"}


def hf_tokenizer(char_tokenizer):
    """A Hugging Face fast tokenizer with the same ids as a forklab ``CharTokenizer`` (PAD = 0, one id a character).

    TRL needs a ``processing_class``; the tiny models' own tokenizer is forklab's. EOS is the character
    that ends a response (``;``), so ``generate`` stops there, and TRL's decoded completions
    (``skip_special_tokens=True``) are exactly the answers: ``;`` is only ever a terminator.
    :func:`forklab.envs.tasks.reward_function` scores them (and uses ``completion_ids`` to score truncated
    completions 0).
    """
    if not callable(getattr(char_tokenizer, "to_hf", None)):
        raise ValueError("`char_tokenizer` must be a forklab CharTokenizer")
    return char_tokenizer.to_hf()


def task_dataset(task, char_tokenizer, split: str = "train", size: int = 512, seed: int = 0):
    """``(datasets.Dataset, reward_function)`` for a forklab task, in TRL's form.

    The dataset has a ``prompt`` column (plain text, no chat template) and an ``example`` index; the
    reward function is :func:`forklab.envs.tasks.reward_function` ``(task)``: it parses each prompt back,
    reads the decoded completion as the answer and scores it like ``task.reward`` on the same response
    (0 for a truncated completion, one whose ``completion_ids`` lack the EOS ``;``).
    """
    if not callable(getattr(char_tokenizer, "to_hf", None)):
        raise ValueError("`char_tokenizer` must be a forklab CharTokenizer")
    _, data, reward = _data_and_reward(task, task.make_split(split, size, seed=seed), char_tokenizer, system=None)
    return data, reward


class ForklabGRPOTrainer(GRPOTrainer):
    """TRL's ``GRPOTrainer`` with ``recipe.loss`` as the loss. See the module docstring.

    ``recipe``: a forklab :class:`Recipe`. Every other argument is ``GRPOTrainer``'s; ``args.beta`` is set
    to ``recipe.kl_coef`` and ``args.scale_rewards`` to match the recipe's advantage estimator when TRL
    computes it. ``args.top_entropy_quantile`` must stay 1 (the recipe's ``entropy_top_ratio`` does that).
    """

    def __init__(self, *args, recipe: Recipe, **kwargs):
        if not isinstance(recipe, Recipe):
            raise ValueError(f"`recipe` must be a forklab Recipe, got {type(recipe).__name__}")
        if "proxy_logp" in recipe.needs():
            raise ValueError(f"`recipe`: {recipe.surrogate} needs the full logits for its min-p proxy, which TRL's "
                             "fused log-prob head does not return; train it with forklab's RLTrainer")
        if hasattr(recipe, "rollout_advantages"):
            raise ValueError(f"`recipe`: {recipe.name!r} reweights token advantages from the rollout policy's last "
                             "hidden states and full logits (THR/NTHR), which TRL's trainer does not keep; train it "
                             "with forklab's RLTrainer (real_rl_run(..., engine=\"forklab\"))")
        if recipe.overlong_buffer is not None:
            raise ValueError("`recipe`: overlong_buffer shapes rewards inside RLTrainer; in TRL add the penalty as a "
                             "reward function (trl.rewards.get_soft_overlong_punishment) and set overlong_buffer=None")
        if recipe.dynamic_sampling:
            raise ValueError("`recipe`: dynamic sampling (DAPO) resamples the batch, which TRL's fixed generation "
                             "batch does not do; use recipe.replace(dynamic_sampling=False) or RLTrainer")
        if "lengths" in registered("advantage")[recipe.advantage].needs:
            raise ValueError(f"`recipe`: the {recipe.advantage!r} advantage needs every completion's length across "
                             "processes; use RLTrainer")
        config = kwargs.get("args")
        if config is None and len(args) >= 3:
            config = args[2]
        if config is None:
            raise ValueError("`args`: pass a trl GRPOConfig (ForklabGRPOTrainer reads and sets beta/scale_rewards)")
        if config.top_entropy_quantile != 1.0:
            raise ValueError("`args.top_entropy_quantile` must be 1.0: use the recipe's entropy_top_ratio")
        config.beta = float(recipe.kl_coef)
        if recipe.advantage in _TRL_ADVANTAGES:
            config.scale_rewards = _TRL_ADVANTAGES[recipe.advantage]
        if recipe.aggregation == "seq-mean-token-sum-norm" and recipe.norm_len is None:
            recipe = recipe.replace(norm_len=float(config.max_completion_length))  # Dr. GRPO's constant, as TRL
        self.recipe = recipe
        self._recipe_advantages = recipe.advantage not in _TRL_ADVANTAGES
        self._rewards_per_func = None
        super().__init__(*args, **kwargs)

    # ---------------------------------------------------------------- rollout: group ids, rewards, advantages
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._rewards_per_func = rewards_per_func  # gathered over processes: [N_global, n_funcs]
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        local = output["completion_ids"].shape[0]
        device = output["completion_ids"].device
        start = self.accelerator.process_index * local
        mode = "train" if self.model.training else "eval"
        generations = self.num_generations if mode == "train" else self.num_generations_eval
        weights = self.reward_weights.to(device)
        rewards = (self._rewards_per_func.to(device) * weights).nansum(1)  # [N_global]
        group = torch.arange(rewards.numel(), device=device) // generations
        if self._recipe_advantages:
            dummy = torch.zeros(rewards.numel(), 1, device=device)
            adv = self.recipe.advantages(Batch(logp=dummy, mask=dummy.bool(), group=group, rewards=rewards))
            output["advantages"] = adv[start:start + local].to(output["advantages"].dtype)
        output["group"] = group[start:start + local]
        output["rewards"] = rewards[start:start + local]
        return output

    # ---------------------------------------------------------------- loss
    def _compute_loss(self, model, inputs):
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        logp, entropy, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1), compute_entropy=True)
        mask = completion_mask.bool()
        if "tool_mask" in inputs:
            mask = mask & inputs["tool_mask"].bool()
        old = inputs.get("old_per_token_logps")
        batch = Batch(logp=logp, mask=mask, group=inputs["group"], rewards=inputs["rewards"],
                      old_logp=logp.detach() if old is None else old, ref_logp=inputs.get("ref_per_token_logps"),
                      entropy=entropy, tokens=completion_ids, adv=inputs["advantages"])
        loss, metrics = self.recipe.loss(batch)
        mode = "train" if self.model.training else "eval"
        if mode == "train":
            loss = loss / self.current_gradient_accumulation_steps
        for key, value in metrics.items():
            self._metrics[mode][key].append(float(value))
        return loss


def grpo_config(output_dir: str, **overrides) -> GRPOConfig:
    """A ``GRPOConfig`` with forklab's tiny-model defaults (CPU, no reports, no checkpoints); ``overrides`` win."""
    defaults = dict(per_device_train_batch_size=16, num_generations=8, max_completion_length=6, learning_rate=1e-4,
                    logging_steps=1, report_to=[], save_strategy="no", temperature=1.0, beta=0.0, bf16=False)
    return GRPOConfig(output_dir=output_dir, **(defaults | overrides))



# ---------------------------------------------------------------------------------------------- real runs
#: ``RLConfig`` fields that ``trl_rl_run`` maps onto ``GRPOConfig`` (the rest have no TRL counterpart here).
RLCONFIG_TO_TRL = {"inner_epochs": "num_iterations", "temperature": "temperature", "top_p": "top_p",
                   "grad_clip": "max_grad_norm", "weight_decay": "weight_decay", "minibatches": None}


def _data_and_reward(task, examples, tokenizer, system: str | None):
    """``(processing_class, Dataset, reward_function)`` for ``task``'s ``examples`` and a model's tokenizer."""
    from datasets import Dataset

    char = not hasattr(tokenizer, "apply_chat_template")  # a forklab CharTokenizer
    processing = hf_tokenizer(tokenizer) if char else tokenizer
    chat = not char and getattr(tokenizer, "chat_template", None) is not None

    def prompt_of(text: str):
        if not chat:
            return text
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]

    def text_reward(prompts, completions, example, **kwargs):  # a real LM: its decoded text, as RLTrainer scores
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        return [float(task.reward(examples[i], t)) for i, t in zip(example, texts, strict=True)]

    text_reward.__name__ = f"{task.name}_reward"
    reward = reward_function(task, eos_token_id=tokenizer.eos_id) if char else text_reward
    data = Dataset.from_list([{"prompt": prompt_of(e.prompt), "example": i} for i, e in enumerate(examples)])
    return processing, data, reward


def trl_rl_run(chosen: dict[str, Recipe], load, task, steps: int, prompts_per_step: int, group_size: int,
               max_new_tokens: int, lr: float, seed: int, device, dtype, run_dir=None, overrides=None,
               system: str | None = None, progress: bool = True) -> dict[str, list[dict]]:
    """The TRL engine of ``forklab.lm.real_run.real_rl_run`` (which validates the arguments and calls this).

    Each recipe trains a fresh ``load()`` model with :class:`ForklabGRPOTrainer` for ``steps`` rollouts, as
    ``RLTrainer`` counts steps: one step = ``prompts_per_step × group_size`` completions, then
    ``inner_epochs`` (TRL's ``num_iterations``) optimizer steps on them, each over ``minibatches``
    micro-batches (gradient accumulation). TRL logs a rollout's metrics on its first optimizer step. Prompts are
    the task's training split, as chat messages when the tokenizer has a chat template; the reward is
    ``task.reward`` on the decoded completion. Returns ``{recipe: [per-step metrics]}`` in TRL's names
    (``reward``, ``entropy``, ``completions/mean_length``, ``clip_ratio/*``, ...) plus ``step``.
    """
    import tempfile

    overrides = dict(overrides or {})
    unsupported = sorted(set(overrides) - set(RLCONFIG_TO_TRL))
    if unsupported:
        raise ValueError(f"`config_overrides`: {unsupported} have no TRL counterpart in engine='trl'; supported: "
                         f"{sorted(RLCONFIG_TO_TRL)} (or use engine='forklab')")
    rows = prompts_per_step * group_size
    minibatches = int(overrides.pop("minibatches", max(1, rows // 16)))
    if minibatches < 1 or rows % minibatches:
        raise ValueError(f"`config_overrides['minibatches']` must divide the {rows} completions of a step evenly")
    extra = {RLCONFIG_TO_TRL[k]: v for k, v in overrides.items()}
    examples = task.make_split("train", max(4 * prompts_per_step * steps, 64), seed=seed)
    histories: dict[str, list[dict]] = {}
    for name, recipe in chosen.items():
        model, tokenizer = load()
        processing, data, reward = _data_and_reward(task, examples, tokenizer, system)
        out = str(run_dir) if run_dir is not None else tempfile.mkdtemp(prefix=f"forklab-trl-{name}-")
        args = GRPOConfig(output_dir=f"{out}/{name}" if run_dir is not None else out,
                          per_device_train_batch_size=rows // minibatches, gradient_accumulation_steps=minibatches,
                          num_generations=group_size, max_completion_length=max_new_tokens, learning_rate=lr,
                          max_steps=steps * int(extra.get("num_iterations", 1)), seed=seed, logging_steps=1,
                          report_to=[], save_strategy="no",
                          use_cpu=str(device) == "cpu", bf16=dtype == torch.bfloat16,
                          disable_tqdm=not progress, **extra)
        trainer = ForklabGRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data,
                                     processing_class=processing, recipe=recipe)
        trainer.train()
        histories[name] = [h for h in trainer.state.log_history if "reward" in h]
        del trainer, model
    return histories
