"""RLTrainer: GRPO-family training of a causal LM on a verifiable task, with the diagnostics notebooks use.

Introduced in ``notebooks/01_policy_gradients_and_advantages.ipynb`` (tiny-LM section) and used by
every tiny-LM experiment. One step, in the shape of the pseudocode::

    prompts  = P prompts from the task's train split (seeded)
    samples  = sample(policy, each prompt × G)                     # tokens, mask, logp_old, entropy
    rewards  = task.reward(prompt, response)                       # 0/1 (or graded)
    [DAPO]     rewards += overlong_penalty(len(response))          # recipe.overlong_buffer
    [DAPO]     while fewer than P groups have mixed rewards and extra rollouts < budget:
                   sample P more prompts × G; keep their mixed groups  # recipe.dynamic_sampling
               train on the first P mixed groups (all degenerate groups dropped)
    adv      = recipe.advantages(rewards, group)                   # once per rollout
    for epoch in range(μ):                                         # inner epochs: ratios leave 1
        for minibatch of whole groups:
            logp, entropy = forward(policy, prompt + response)     # positions from the attention mask
            loss, m = recipe.loss(Batch(logp, old_logp, adv, ...))
            AdamW step (grad clip; lr · schedule(step))                # adam_beta1/2, lr_scheduler_type, ...
    log reward, accuracy, entropy, clip fractions, KL, lengths, and optional covariance / THR / forks

The forward pass of the update is ``forklab.lm._train_forward`` for a Llama (the model's own operations
without what the response logits do not need; each distinct prompt computed once: ≈2× faster than the model's
call, ``benchmarks/results/train_forward.md``). Prompts and rewards come from the task, or TRL-style from
``reward_funcs`` and ``train_dataset`` (``forklab.lm._reward_sources``); AdamW and the lr schedule take
transformers/TRL's field names (``adam_beta1``, ``adam_beta2``, ``adam_epsilon``, ``weight_decay``,
``lr_scheduler_type``, ``warmup_steps``, ``max_steps``; ``forklab.lm._optim``).

Checkpoints are safetensors only: model weights, AdamW moments and the sampling generator's state
as tensors, plus a JSON file of counters — no pickle anywhere, so resuming reproduces the same run.

Tokenizers and tasks: the tiny LMs use ``CharTokenizer`` and a task named by ``config.task``; a real
LM uses ``HFTokenizer`` (its Hugging Face tokenizer, chat template applied) and a ready task object
passed as ``RLTrainer(..., task=get_task("gsm8k", path=...))``. Devices: rollouts are built on the
model's device (prompts are moved there; rewards, groups and advantages live there too), so the same
code runs on CPU and CUDA; the random generators stay on the CPU (``sampling.sample`` derives a
device generator from them when the model is elsewhere), so a run is reproducible from its seed.
See ``forklab.lm.real_run`` for the one-call real-model run of the notebooks' ``REAL_RUN`` cells.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from forklab.diagnostics.entropy import PAPER_P80
from forklab.envs import tasks as task_lib
from forklab.lm import checkpoint_io, dynamic_sampling
from forklab.lm._optim import check_schedule, lr_factor, make_optimizer
from forklab.lm._policy_scores import evaluate, policy_forward
from forklab.lm._reward_sources import RewardFunctions, dataset_rows
from forklab.lm._rollout import (
    decode_responses,
    model_device,
    response_inputs,
    sample_groups,
)
from forklab.lm._train_forward import lean_supported
from forklab.lm.models import resolve_dtype
from forklab.lm.tokenizer import CharTokenizer, HFTokenizer
from forklab.ops import entropy_from_logits
from forklab.recipes import Batch, Recipe, overlong_penalty
from forklab.regularizers import minp_proxy_logprobs, token_covariance
from forklab.runs import RunLog

__all__ = ["RLConfig", "RLTrainer", "response_inputs", "policy_forward", "decode_responses", "evaluate",
           "model_device"]

Tokenizer = CharTokenizer | HFTokenizer


@dataclass
class RLConfig:
    """Hyperparameters of :class:`RLTrainer` (defaults: the tiny-LM setting of data/models/README.md).

    ``task`` is a task name for ``forklab.envs.tasks.get_task(task, **task_kwargs)``; a ready task
    object (e.g. GSM8K from a local file) goes to ``RLTrainer(..., task=...)`` instead.
    """

    task: str = "addition"
    task_kwargs: dict = field(default_factory=dict)
    prompts_per_step: int = 16
    group_size: int = 8
    max_new_tokens: int = 6
    temperature: float = 1.0
    top_p: float = 1.0
    lr: float = 2e-4
    weight_decay: float = 0.0
    #: AdamW and the learning-rate schedule, named as in transformers/TRL (``forklab.lm._optim``): betas
    #: (0.9, 0.99) and a constant lr are forklab's defaults; ``lr_scheduler_type`` "constant",
    #: "constant_with_warmup", "linear" or "cosine"; ``warmup_steps`` in steps, or a ratio of ``max_steps``
    #: if < 1; ``max_steps`` (trainer steps) is the horizon of "linear"/"cosine" (required for them).
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    adam_epsilon: float = 1e-8
    lr_scheduler_type: str = "constant"
    warmup_steps: float = 0
    max_steps: int = 0
    grad_clip: float = 1.0
    inner_epochs: int = 1
    minibatches: int = 1
    graded_reward: bool = False
    train_size: int = 4000
    eval_size: int = 128
    eval_every: int = 10
    pass_k: int = 8
    seed: int = 0
    log_covariance: bool = True
    log_thr: bool = False
    #: ``None`` keeps the model's dtype; ``"float64"`` (or ``"float32"``) converts the policy and the
    #: reference model in place when the trainer is built. The notebooks train in float64 so that CPU
    #: kernel rounding (AVX2 vs AVX-512 vs ARM) cannot flip a sampled token; benchmarks stay in float32.
    dtype: str | None = None
    #: DAPO's dynamic sampling (recipes with ``dynamic_sampling``): at most this many extra rollouts of
    #: ``prompts_per_step`` prompts per step to fill the batch with groups whose rewards differ (verl:
    #: ``max_num_gen_batches``); if the budget runs out, the step trains on the mixed groups it found.
    dynamic_sampling_max_extra: int = 4


class RLTrainer:
    """Train ``model`` with ``recipe`` on ``config.task``. See the module docstring for one step.

    ``ref_model``: a frozen reference for the recipe's KL term (needed when ``recipe.kl_coef > 0``).
    ``run_path``: CSV run log (``forklab.runs``; ``resume=True`` continues an existing one).
    ``hooks``: callables ``f(trainer, rollout) -> dict`` whose metrics are logged too (e.g. THR
    statistics in notebook 07).
    ``tokenizer``: a ``CharTokenizer`` or an ``HFTokenizer`` (a real LM's, see ``forklab.lm.tokenizer``).
    ``task``: a ready ``forklab.envs.tasks.Task`` to train on instead of ``config.task``/``task_kwargs``.
    ``reward_funcs``, ``train_dataset``, ``reward_weights``: TRL's (see ``forklab.lm._reward_sources``):
    functions ``f(prompts, completions, completion_ids, **columns) -> list[float]`` replace the task's
    reward (``accuracy`` then counts rewards > 0), and prompts come from ``train_dataset`` (a list or a
    ``datasets.Dataset`` with a ``prompt`` column; it needs ``reward_funcs``) instead of the task's train
    split. Evaluation (``eval_every``) scores the task, so with a dataset it runs only if ``task`` is given.
    The model may sit on any device; rollout tensors are put on it.
    """

    def __init__(self, model, tokenizer: Tokenizer, recipe: Recipe, config: RLConfig | None = None,
                 ref_model=None, run_path: str | os.PathLike | None = None,
                 hooks: list[Callable] | None = None, resume: bool = False, task: task_lib.Task | None = None,
                 reward_funcs=None, train_dataset=None, reward_weights=None):
        self.model, self.tokenizer, self.recipe = model, tokenizer, recipe
        self.config = config or RLConfig()
        c = self.config
        if c.group_size < 2 or c.prompts_per_step < 1 or c.inner_epochs < 1 or c.minibatches < 1:
            raise ValueError("`config`: group_size >= 2, prompts_per_step, inner_epochs, minibatches >= 1")
        if c.dynamic_sampling_max_extra < 0:
            raise ValueError(f"`config.dynamic_sampling_max_extra` must be >= 0, got {c.dynamic_sampling_max_extra}")
        if c.minibatches > c.prompts_per_step:
            raise ValueError("`config.minibatches` cannot exceed prompts_per_step (minibatches hold whole groups)")
        check_schedule(c)
        if train_dataset is not None and reward_funcs is None:
            raise ValueError("`train_dataset` needs `reward_funcs` (a dataset's prompts have no task reward)")
        if reward_funcs is None and reward_weights is not None:
            raise ValueError("`reward_weights` needs `reward_funcs`")
        if reward_funcs is not None and c.graded_reward:
            raise ValueError("`config.graded_reward` applies to the task's reward; pass a graded reward function")
        if train_dataset is not None and c.eval_every and task is None:
            raise ValueError("`config.eval_every` must be 0 with `train_dataset` unless `task` is given (evaluation "
                             "scores a forklab task)")
        self.reward_funcs = None if reward_funcs is None else RewardFunctions(reward_funcs, reward_weights)
        if recipe.aggregation == "seq-mean-token-sum-norm" and recipe.norm_len is None:
            # Dr. GRPO's constant: the generation budget (TRL: max_completion_length), not the batch's padded width
            recipe = recipe.replace(norm_len=float(c.max_new_tokens))
            self.recipe = recipe
        if recipe.kl_coef and ref_model is None:
            raise ValueError("`ref_model` is required: the recipe has a KL term (kl_coef > 0)")
        self.ref_model = ref_model
        if c.dtype is not None:
            dtype = resolve_dtype(c.dtype, "config.dtype")
            model.to(dtype)
            if ref_model is not None:
                ref_model.to(dtype)
        if task is not None and not isinstance(task, task_lib.Task):
            raise ValueError(f"`task` must be a forklab.envs.tasks.Task (or None), got {type(task).__name__}")
        self.task = task if task is not None else task_lib.get_task(c.task, **c.task_kwargs)
        self.train_examples = (dataset_rows(train_dataset) if train_dataset is not None
                               else self.task.make_split("train", c.train_size, seed=c.seed))
        self.eval_examples = self.task.make_split("test", c.eval_size, seed=c.seed)
        self._parameters = list(model.parameters())  # walked once, not at every gradient clip
        self.optimizer = make_optimizer(self._parameters, c)
        self.generator = torch.Generator().manual_seed(c.seed)
        self.eval_generator = torch.Generator().manual_seed(c.seed + 1)
        self.loss_generator = torch.Generator().manual_seed(c.seed + 2)  # clip_cov's random picks
        self.step_count = 0
        self.log = RunLog(run_path, resume=resume) if run_path is not None else None
        self.hooks = list(hooks or [])
        self.history: list[dict] = []

    # ------------------------------------------------------------------ rollout
    @torch.no_grad()
    def rollout(self) -> dict:
        """Sample P prompts × G responses and score them (no gradient)."""
        c = self.config
        examples, s = sample_groups(self.model, self.tokenizer, self.train_examples, c.prompts_per_step,
                                    c.group_size, self.generator, c.max_new_tokens, temperature=c.temperature,
                                    top_p=c.top_p, return_hidden=c.log_thr)
        device = model_device(self.model)
        texts = decode_responses(self.tokenizer, s.tokens, s.mask)
        if self.reward_funcs is not None:
            rewards = self.reward_funcs(examples, c.group_size, self.tokenizer, s.tokens, s.mask)
            rewards = rewards.to(dtype=s.logp.dtype, device=device)
            correct = rewards > 0
        else:
            reward_fn = self.task.graded_reward if c.graded_reward else self.task.reward
            rewards = torch.tensor([reward_fn(examples[i // c.group_size], t) for i, t in enumerate(texts)],
                                   dtype=s.logp.dtype, device=device)
            correct = rewards > 0 if not c.graded_reward else torch.tensor(
                [self.task.reward(examples[i // c.group_size], t) for i, t in enumerate(texts)], device=device) > 0
        group = torch.arange(c.prompts_per_step, device=device).repeat_interleave(c.group_size)
        score = rewards  # the task's reward before any shaping: what dynamic sampling filters on
        if self.recipe.overlong_buffer is not None:
            buffer = max(1, round(self.recipe.overlong_buffer * c.max_new_tokens))
            rewards = rewards + overlong_penalty(s.mask.sum(1).to(rewards.dtype), c.max_new_tokens, buffer,
                                                 self.recipe.overlong_factor)
        return dict(prompt_ids=s.prompt_ids, prompt_mask=s.prompt_mask, tokens=s.tokens, mask=s.mask, old_logp=s.logp,
                    entropy=s.entropy, hidden=s.hidden, rewards=rewards, score=score, correct=correct, group=group,
                    texts=texts)

    @torch.no_grad()
    def mixed_group_rollout(self) -> tuple[dict, dict, dict[str, float]]:
        """DAPO's dynamic sampling: rollouts until ``prompts_per_step`` groups have mixed task rewards.

        Draws one rollout, then up to ``config.dynamic_sampling_max_extra`` more while fewer than P
        groups are mixed (task rewards, before overlong shaping, not all equal: DAPO's
        0 < |{correct}| < G for 0/1 rewards). Returns the first P mixed groups (fewer if the budget
        ran out), relabelled 0..n−1, the first rollout (unfiltered) and metrics over every group drawn.
        """
        c = self.config
        return dynamic_sampling.fill_mixed_groups(self.rollout, c.prompts_per_step, c.group_size,
                                                  c.dynamic_sampling_max_extra, self.tokenizer.pad_id)

    # ------------------------------------------------------------------ one step
    def step(self) -> dict[str, float]:
        """One rollout and the recipe's updates on it; returns (and logs) the step's metrics.

        With ``recipe.dynamic_sampling`` the rollout is :meth:`mixed_group_rollout`: the logged reward,
        accuracy, length and ``entropy/share_above_0.672`` are those of the first rollout (an unfiltered
        sample of the policy), the update uses the mixed groups only.

        Except ``entropy``: the recipe's mean over the trained tokens (averaged over minibatches) replaces
        the rollout's; the same number with one minibatch and no dynamic sampling (notebook 05's lesson
        reads the rollout's own from ``trainer.rollout()``).
        """
        c = self.config
        t0 = time.perf_counter()
        if self.recipe.dynamic_sampling:
            r, seen, sampling_stats = self.mixed_group_rollout()
        else:
            r = seen = self.rollout()
            sampling_stats = {}
        t_sample = time.perf_counter() - t0
        g = seen["score"].reshape(-1, c.group_size)
        degenerate = g.amax(1) == g.amin(1)
        metrics = {"reward": float(seen["rewards"].mean()), "accuracy": float(seen["correct"].double().mean()),
                   "entropy": float(seen["entropy"][seen["mask"]].mean()),
                   "completion_length": float(seen["mask"].sum(1).double().mean()),
                   "frac_degenerate_groups": float(degenerate.double().mean()),
                   "entropy/share_above_0.672": float((seen["entropy"][seen["mask"]] > PAPER_P80).double().mean())}
        metrics |= sampling_stats
        device = r["group"].device
        # the dynamic batch holds only mixed groups; other recipes train on every group (no gradient
        # flows from a degenerate group's zero advantages anyway)
        keep_groups = torch.arange(len(r["group"]) // c.group_size, device=device)
        if not len(keep_groups):  # dynamic sampling found no mixed group within its budget: no update this step
            r = seen
        adv = self.recipe.advantages(Batch(logp=r["old_logp"], mask=r["mask"], group=r["group"],
                                           rewards=r["rewards"]))
        if c.log_covariance:
            metrics["covariance"] = float(token_covariance(r["old_logp"], adv, r["mask"])[r["mask"]].mean())
        if hasattr(self.recipe, "rollout_advantages"):  # THR/NTHR (forklab.thr_reweighting): token advantages
            with torch.no_grad():
                logits, _, hidden = policy_forward(self.model, r["prompt_ids"], r["prompt_mask"], r["tokens"],
                                                   r["mask"], c.temperature, hidden=True)
            adv = self.recipe.rollout_advantages(adv, hidden, logits, r["tokens"], r["mask"], r["group"], r["correct"])
        for hook in self.hooks:
            metrics |= hook(self, r)
        ref_logp = None
        if self.ref_model is not None:
            with torch.no_grad():
                _, ref_logp, _ = policy_forward(self.ref_model, r["prompt_ids"], r["prompt_mask"], r["tokens"],
                                                r["mask"], c.temperature)
                ref_logp = ref_logp.to(device)
        step_metrics: list[dict] = []
        if c.lr_scheduler_type != "constant":
            for group in self.optimizer.param_groups:
                group["lr"] = c.lr * lr_factor(c, self.step_count)
            metrics["lr"] = c.lr * lr_factor(c, self.step_count)
        # the lean forward computes the same in either mode: skip two walks over the modules per step
        toggle = not lean_supported(self.model)
        if toggle:
            self.model.train()
        if len(keep_groups):
            for _ in range(c.inner_epochs):
                order = keep_groups[torch.randperm(len(keep_groups), generator=self.generator).to(device)]
                for chunk in order.chunk(min(c.minibatches, len(order))):
                    rows = (r["group"][:, None] == chunk[None, :]).any(1)
                    step_metrics.append(self._update(r, adv, rows, ref_logp))
        if toggle:
            self.model.eval()
        for key in {k for m in step_metrics for k in m}:
            metrics[key] = float(sum(m[key] for m in step_metrics if key in m) / len(step_metrics))
        metrics["time/sample_s"] = t_sample
        metrics["time/step_s"] = time.perf_counter() - t0
        self.step_count += 1
        if c.eval_every and self.step_count % c.eval_every == 0:
            metrics |= self.evaluate()
        self.history.append({"step": self.step_count, **metrics})
        if self.log is not None:
            self.log.append(self.step_count, metrics)
        return metrics

    def _update(self, r: dict, adv: Tensor, rows: Tensor, ref_logp: Tensor | None) -> dict[str, float]:
        c = self.config
        logits, logp, _ = policy_forward(self.model, r["prompt_ids"][rows], r["prompt_mask"][rows], r["tokens"][rows],
                                         r["mask"][rows], c.temperature)
        mask = r["mask"][rows]
        needs = self.recipe.needs()
        # the recipe reads the current policy's entropy (with its gradient, for a bonus): recompute it
        entropy = entropy_from_logits(logits) if "entropy" in needs else r["entropy"][rows]
        batch = Batch(logp=logp, mask=mask, group=r["group"][rows], rewards=r["rewards"][rows],
                      old_logp=r["old_logp"][rows], ref_logp=None if ref_logp is None else ref_logp[rows],
                      entropy=entropy, tokens=r["tokens"][rows], adv=adv[rows])
        if "proxy_logp" in needs:
            batch.proxy_logp = minp_proxy_logprobs(logits.detach(), r["tokens"][rows])
        loss, metrics = self.recipe.loss(batch, generator=self.loss_generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self._parameters, c.grad_clip))
        self.optimizer.step()
        metrics["loss"] = float(loss.detach())
        return metrics

    # ------------------------------------------------------------------ loops
    def evaluate(self) -> dict[str, float]:
        """:func:`evaluate` on the trainer's held-out examples (``config.eval_size`` of the test split)."""
        c = self.config
        return evaluate(self.model, self.tokenizer, self.task, self.eval_examples, c.max_new_tokens, c.pass_k,
                        c.temperature, self.eval_generator)

    def train(self, steps: int | None = None, seconds: float | None = None, progress: bool = True) -> list[dict]:
        """Run until ``steps`` more steps or ``seconds`` of wall time (whichever comes first)."""
        if steps is None and seconds is None:
            raise ValueError("give `steps` or `seconds`")
        from tqdm.auto import tqdm

        disable = not progress or bool(os.environ.get("CI")) or bool(os.environ.get("TQDM_DISABLE"))
        start = time.perf_counter()
        bar = tqdm(total=steps, disable=disable, desc=f"{self.recipe.name} on {self.task.name}")
        done = 0
        while (steps is None or done < steps) and (seconds is None or time.perf_counter() - start < seconds):
            m = self.step()
            done += 1
            bar.update(1)
            bar.set_postfix(reward=f"{m['reward']:.2f}", entropy=f"{m['entropy']:.2f}")
        bar.close()
        return self.history

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path: str | os.PathLike) -> Path:
        """Model, AdamW state and generator states as safetensors + counters as JSON (no pickle).

        Crash-safe: both files are written into a temporary sibling folder and fsynced, then the
        folder is renamed into place; the previous checkpoint is moved aside first and deleted only
        once the new one is in place, so a kill at any instant leaves one complete checkpoint
        (``path``, or ``.<name>.previous`` beside it, which :meth:`load_checkpoint` falls back to).
        """
        path = Path(path)
        tensors = {f"model.{k}": v.detach().cpu().clone().contiguous() for k, v in self.model.state_dict().items()}
        names = {id(p): n for n, p in self.model.named_parameters()}
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                for key, value in self.optimizer.state.get(p, {}).items():
                    tensors[f"optim.{names[id(p)]}.{key}"] = torch.as_tensor(value).cpu().clone().contiguous()
        tensors["rng.generator"] = self.generator.get_state()
        tensors["rng.eval_generator"] = self.eval_generator.get_state()
        tensors["rng.loss_generator"] = self.loss_generator.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        meta = {"step": self.step_count, "config": self._config_record(), "recipe": self._recipe_record()}
        return checkpoint_io.write(path, tensors, meta)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore a :meth:`save_checkpoint` folder; the run then continues exactly where it stopped.

        Strict: the folder must be complete (its tensors' SHA-256 matches the one recorded when it
        was written), in this format version, written with this config and recipe, and hold every
        weight, optimiser moment and generator state; otherwise ``ValueError`` says what differs and
        the trainer is left unchanged.
        """
        tensors, meta = checkpoint_io.read(path)
        checkpoint_io.require_equal("config", meta.get("config"), self._config_record())
        checkpoint_io.require_equal("recipe", meta.get("recipe"), self._recipe_record())
        rng = ["rng.generator", "rng.eval_generator", "rng.loss_generator", "rng.torch"]
        model_state, optim_state = checkpoint_io.split_trainer_state(path, tensors, self.model, rng)
        params = dict(self.model.named_parameters())
        step = meta.get("step")
        if not isinstance(step, int) or step < 0:
            raise ValueError(f"checkpoint {path}: `step` must be a non-negative integer, got {step!r}")
        self.model.load_state_dict(model_state, strict=True)
        self.optimizer.state.clear()
        for name, state in optim_state.items():
            self.optimizer.state[params[name]] = state
        self.generator.set_state(tensors["rng.generator"])
        self.eval_generator.set_state(tensors["rng.eval_generator"])
        self.loss_generator.set_state(tensors["rng.loss_generator"])
        torch.set_rng_state(tensors["rng.torch"])
        self.step_count = step
        if self.log is not None:
            self.log.truncate(self.step_count)

    def _config_record(self) -> dict:
        return json.loads(json.dumps(asdict(self.config)))

    def _recipe_record(self) -> dict:
        return json.loads(json.dumps(asdict(self.recipe), default=repr))
