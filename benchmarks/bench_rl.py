"""RLTrainer on the shipped student: accuracy gained in 60 s of GRPO, and entropy collapse over a longer run.

Run: ``.venv/bin/python benchmarks/bench_rl.py`` → ``benchmarks/results/rl.md`` (2 threads, wall clock).
Target (issue): sampled accuracy on the held-out test split up by ≥ 20 points within 60 s of training
from the shipped checkpoint, with the ``grpo`` preset.

Options: ``--model PATH`` starts from another checkpoint folder (written by ``scripts/pretrain_tiny.py``;
default: the shipped ``data/models/student-addition``), ``--seed`` the RL seed, ``--out`` the results
file. The machine may be shared: each row also records how many CPU cores *other* processes kept busy
during its training window (from ``/proc/stat``; "n/a" where unavailable), since a 60-s budget buys
fewer steps when they compete for the 2 cores.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
from _measure import busy_seconds

import forklab
from forklab import recipes
from forklab.lm.models import load_model, load_tiny
from forklab.lm.trainer import RLConfig, RLTrainer

DEFAULT_PLAN = [(5e-5, 60), (1e-4, 60), (2e-4, 60), (3e-4, 60, 32, 8), (5e-4, 60, 64, 8), (3e-4, 60, 16, 16),
                (1e-4, 240)]


def run(seconds: float, lr: float, prompts: int = 16, group: int = 8, seed: int = 0,
        model_path: str | None = None) -> dict:
    forklab.seed_everything(seed, threads=2)
    model, tok = load_model(model_path) if model_path else load_tiny("student-addition")
    config = RLConfig(lr=lr, prompts_per_step=prompts, group_size=group, eval_every=0, eval_size=256, seed=seed)
    trainer = RLTrainer(model, tok, recipes.get("grpo"), config)
    start = trainer.evaluate()
    busy0, own0, t0 = busy_seconds(), time.process_time(), time.perf_counter()
    trainer.train(seconds=seconds, progress=False)
    wall = time.perf_counter() - t0
    others = max(((busy_seconds() - busy0) - (time.process_time() - own0)) / wall, 0.0)  # NaN stays NaN
    end = trainer.evaluate()
    h = trainer.history
    return {"lr": lr, "seconds": wall, "steps": len(h), "start": start, "end": end, "others_cores": others,
            "train_entropy_first": sum(x["entropy"] for x in h[:10]) / 10,
            "train_entropy_last": sum(x["entropy"] for x in h[-10:]) / 10}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("plan", nargs="*", metavar="LR:SECONDS[:PROMPTS:SAMPLES]",
                    help="runs to make (default: rates and batch shapes for the 60-s target, one 240-s run)")
    ap.add_argument("--model", default=None, help="checkpoint folder (default: data/models/student-addition)")
    ap.add_argument("--seed", type=int, default=0, help="RL seed (sampling, prompt order)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "rl.md"))
    args = ap.parse_args(argv)
    # (lr, seconds, prompts per step, samples per prompt)
    plan = [tuple(float(v) for v in x.split(":")) for x in args.plan] or DEFAULT_PLAN
    model_name = args.model or "the shipped student"
    lines = [f"# RLTrainer: GRPO on {model_name} (2-digit addition)", "",
             f"`grpo` preset, AdamW, 2 threads, RL seed {args.seed}; accuracy on 256 held-out prompts "
             f"(sampled: 8 samples each at T = 1). torch {torch.__version__}, {platform.machine()}. "
             "*Others' CPU*: cores that other processes kept busy during the training window (of 2).", "",
             "| lr | prompts × samples | train time (s) | steps | sampled acc. start → end | Δ (points) "
             "| greedy acc. start → end "
             "| pass@8 start → end | entropy start → end | others' CPU (cores) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for entry in plan:
        lr, seconds = entry[0], entry[1]
        prompts, group = (int(entry[2]), int(entry[3])) if len(entry) == 4 else (16, 8)
        r = run(seconds, lr, prompts, group, seed=args.seed, model_path=args.model)
        s, e = r["start"], r["end"]
        gain = 100 * (e["eval/sampled_accuracy"] - s["eval/sampled_accuracy"])
        others = "n/a" if r["others_cores"] != r["others_cores"] else f"{r['others_cores']:.2f}"
        lines.append(
            f"| {lr:g} | {prompts} × {group} | {r['seconds']:.0f} | {r['steps']} | {s['eval/sampled_accuracy']:.3f} → "
            f"{e['eval/sampled_accuracy']:.3f} | {gain:+.1f} "
            f"| {s['eval/greedy_accuracy']:.3f} → {e['eval/greedy_accuracy']:.3f} | {s['eval/pass@8']:.3f} → "
            f"{e['eval/pass@8']:.3f} | {s['eval/entropy']:.3f} → {e['eval/entropy']:.3f} | {others} |")
        print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
