"""RLTrainer on the shipped student: accuracy gained in 60 s of GRPO, and entropy collapse over a longer run.

Run: ``.venv/bin/python benchmarks/bench_rl.py`` → ``benchmarks/results/rl.md`` (2 threads, wall clock).
Target (issue): sampled accuracy on the held-out test split up by ≥ 20 points within 60 s of training
from the shipped checkpoint, with the ``grpo`` preset.
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import torch

import forklab
from forklab import recipes
from forklab.lm.models import load_tiny
from forklab.lm.trainer import RLConfig, RLTrainer


def run(seconds: float, lr: float, prompts: int = 16, group: int = 8, seed: int = 0) -> dict:
    forklab.seed_everything(seed, threads=2)
    model, tok = load_tiny("student-addition")
    config = RLConfig(lr=lr, prompts_per_step=prompts, group_size=group, eval_every=0, eval_size=256, seed=seed)
    trainer = RLTrainer(model, tok, recipes.get("grpo"), config)
    start = trainer.evaluate()
    t0 = time.perf_counter()
    trainer.train(seconds=seconds, progress=False)
    wall = time.perf_counter() - t0
    end = trainer.evaluate()
    h = trainer.history
    return {"lr": lr, "seconds": wall, "steps": len(h), "start": start, "end": end,
            "train_entropy_first": sum(x["entropy"] for x in h[:10]) / 10,
            "train_entropy_last": sum(x["entropy"] for x in h[-10:]) / 10}


def main() -> None:
    # (lr, seconds, prompts per step, samples per prompt): rates and batch shapes for the 60-s target,
    # and one longer run for the entropy collapse. Command-line entries: lr:seconds[:prompts:samples]
    plan = [tuple(float(v) for v in x.split(":")) for x in sys.argv[1:]] or \
        [(5e-5, 60), (1e-4, 60), (2e-4, 60), (3e-4, 60, 32, 8), (5e-4, 60, 64, 8), (3e-4, 60, 16, 16), (1e-4, 240)]
    lines = ["# RLTrainer: GRPO on the shipped student (2-digit addition)", "",
             f"`grpo` preset, AdamW, 2 threads; accuracy on 256 held-out prompts "
             f"(sampled: 8 samples each at T = 1). torch {torch.__version__}, {platform.machine()}.", "",
             "| lr | prompts × samples | train time (s) | steps | sampled acc. start → end | Δ (points) "
             "| greedy acc. start → end "
             "| pass@8 start → end | entropy start → end |", "|---|---|---|---|---|---|---|---|---|"]
    for entry in plan:
        lr, seconds = entry[0], entry[1]
        prompts, group = (int(entry[2]), int(entry[3])) if len(entry) == 4 else (16, 8)
        r = run(seconds, lr, prompts, group)
        s, e = r["start"], r["end"]
        gain = 100 * (e["eval/sampled_accuracy"] - s["eval/sampled_accuracy"])
        lines.append(
            f"| {lr:g} | {prompts} × {group} | {r['seconds']:.0f} | {r['steps']} | {s['eval/sampled_accuracy']:.3f} → "
            f"{e['eval/sampled_accuracy']:.3f} | {gain:+.1f} "
            f"| {s['eval/greedy_accuracy']:.3f} → {e['eval/greedy_accuracy']:.3f} | {s['eval/pass@8']:.3f} → "
            f"{e['eval/pass@8']:.3f} | {s['eval/entropy']:.3f} → {e['eval/entropy']:.3f} |")
        print(lines[-1], flush=True)
    out = Path(__file__).parent / "results" / "rl.md"
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
