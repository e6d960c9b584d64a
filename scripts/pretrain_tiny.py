"""Pretrain the shipped tiny LMs on imperfect demonstrations and write data/models/<name>/.

Usage (the exact commands that made the shipped models are in data/models/README.md):

    .venv/bin/python scripts/pretrain_tiny.py --name student-addition --size student --task addition \
        --noise 0.4 --demos 8000 --steps 3000 --constant-lr --seed 0

Demonstrations come from the task's train split; with probability ``--noise`` a demonstration is a
plausible wrong answer (forgotten carry, off-by-one digit, ...), so the model starts well below its
ceiling and RL has headroom. Evaluation uses the held-out test split. Everything the run did is
recorded in provenance.json next to the weights (command, seed, versions, metrics, time).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

import torch
import transformers

import forklab
from forklab.envs.tasks import get_task
from forklab.lm.models import build_tiny, count_parameters, save_model
from forklab.lm.sft import train_sft
from forklab.lm.tokenizer import CharTokenizer
from forklab.lm.trainer import evaluate

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--size", choices=["student", "teacher"], required=True)
    ap.add_argument("--task", default="addition")
    ap.add_argument("--task-kwargs", default="{}", help="JSON dict passed to get_task")
    ap.add_argument("--noise", type=float, default=0.3)
    ap.add_argument("--demos", type=int, default=4000)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--constant-lr", action="store_true", help="no cosine decay (keeps the model RL-friendly)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-new-tokens", type=int, default=6)
    ap.add_argument("--out", default=str(ROOT / "data" / "models"))
    args = ap.parse_args(argv)

    forklab.seed_everything(args.seed, threads=2)
    task_kwargs = json.loads(args.task_kwargs)
    task = get_task(args.task, **task_kwargs)
    tokenizer = CharTokenizer.for_tasks()
    rng = random.Random(args.seed)
    train = task.make_split("train", args.demos, seed=args.seed)
    pairs = [(e.prompt, task.demonstration(e, rng, noise=args.noise)) for e in train]
    demo_accuracy = sum(task.reward(e, r) for e, (_, r) in zip(train, pairs, strict=True)) / len(pairs)

    model = build_tiny(args.size, vocab_size=tokenizer.vocab_size, seed=args.seed)
    t0 = time.perf_counter()
    losses = train_sft(model, tokenizer, pairs, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                       seed=args.seed, cosine=not args.constant_lr,
                       betas=(0.9, 0.999) if args.constant_lr else (0.9, 0.95))
    train_seconds = time.perf_counter() - t0
    test = task.make_split("test", 256, seed=args.seed)
    metrics = evaluate(model, tokenizer, task, test, args.max_new_tokens, k=8,
                       generator=torch.Generator().manual_seed(args.seed))

    provenance = {
        "command": "python scripts/pretrain_tiny.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "seed": args.seed,
        "size": args.size,
        "parameters": count_parameters(model),
        "task": args.task,
        "task_kwargs": task_kwargs,
        "demonstrations": args.demos,
        "demonstration_noise": args.noise,
        "demonstration_accuracy": round(demo_accuracy, 4),
        "sft": {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                "schedule": "constant" if args.constant_lr else "cosine to 0.1", "loss_every_100": losses},
        "train_seconds": round(train_seconds, 1),
        "test_metrics_256_prompts": {k: round(v, 4) for k, v in metrics.items()},
        "versions": {"forklab": forklab.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__, "python": platform.python_version()},
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
    }
    path = save_model(model, tokenizer, Path(args.out) / args.name, provenance)
    print(json.dumps({"path": str(path), **provenance}, indent=2))
    return provenance


if __name__ == "__main__":
    main()
