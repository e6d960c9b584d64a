"""forklab's RLTrainer against TRL's GRPOTrainer: GRPO steps per second on the same tiny model and work.

Run: ``.venv/bin/python benchmarks/bench_vs_trl.py`` → ``benchmarks/results/vs_trl.md``.

Same work for both: the shipped ``student-addition`` model (float32), 16 prompts × 8 samples per step,
at most 6 new tokens, temperature 1, lr 1e-4, AdamW, no KL (``beta=0``), one update per rollout, the
``grpo`` loss. Each thread count runs in its own process; inside it the two trainers alternate in
blocks of ``--block`` steps (forklab, TRL, forklab, ...) so that load on a shared machine hits both
alike. A step's time is the wall time between consecutive ``step`` ends (RLTrainer) or ``on_step_end``
callbacks (TRL), so TRL's one-off setup is not counted; the first step of every block is dropped
(warm-up). Reported: median steps/s, the interquartile range, and the CPU cores other processes kept
busy while the benchmark ran (``/proc/stat``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _measure import busy_seconds

PROMPTS, GROUP, NEW_TOKENS, LR = 16, 8, 6, 1e-4


def forklab_block(steps: int, seed: int) -> list[float]:
    from forklab import recipes
    from forklab.lm.models import load_tiny
    from forklab.lm.trainer import RLConfig, RLTrainer

    model, tok = load_tiny("student-addition")
    trainer = RLTrainer(model, tok, recipes.grpo(), RLConfig(prompts_per_step=PROMPTS, group_size=GROUP,
                                                              max_new_tokens=NEW_TOKENS, lr=LR, eval_every=0,
                                                              seed=seed))
    ends = [time.perf_counter()]
    for _ in range(steps):
        trainer.step()
        ends.append(time.perf_counter())
    return [b - a for a, b in zip(ends[:-1], ends[1:], strict=True)][1:]


def trl_block(steps: int, seed: int) -> list[float]:
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from forklab.envs.tasks import get_task
    from forklab.integrations.trl import hf_tokenizer, task_dataset
    from forklab.lm.models import load_tiny

    model, char_tok = load_tiny("student-addition")
    data, reward = task_dataset(get_task("addition"), char_tok, size=4000, seed=seed)
    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if not ends:
                ends.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(output_dir=out, per_device_train_batch_size=PROMPTS * GROUP, num_generations=GROUP,
                          max_completion_length=NEW_TOKENS, learning_rate=LR, beta=0.0, loss_type="grpo",
                          temperature=1.0, max_steps=steps, logging_steps=steps, report_to=[], save_strategy="no",
                          use_cpu=True, seed=seed, disable_tqdm=True, bf16=False)
        GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data,
                    processing_class=hf_tokenizer(char_tok), callbacks=[Clock()]).train()
    return [b - a for a, b in zip(ends[:-1], ends[1:], strict=True)][1:]


def worker(threads: int, blocks: int, block: int) -> dict:
    torch.set_num_threads(threads)
    times: dict[str, list[float]] = {"forklab": [], "trl": []}
    busy0, own0, t0 = busy_seconds(), time.process_time(), time.perf_counter()
    for b in range(blocks):
        times["forklab"] += forklab_block(block, seed=b)
        times["trl"] += trl_block(block, seed=b)
    wall = time.perf_counter() - t0
    others = max(((busy_seconds() - busy0) - (time.process_time() - own0)) / wall, 0.0)
    return {"threads": threads, "times": times, "others_cores": others}


def summary(times: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(times, n=4)
    return 1 / statistics.median(times), 1 / q[2], 1 / q[0]  # median, lower and upper quartile of steps/s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--block", type=int, default=11, help="steps per block (the first is dropped)")
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "vs_trl.md"))
    args = ap.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.blocks, args.block)))
        return
    import trl

    rows = []
    for threads in args.threads:
        done = subprocess.run([sys.executable, __file__, "--worker", str(threads), "--blocks", str(args.blocks),
                               "--block", str(args.block)], capture_output=True, text=True, check=True)
        res = json.loads(done.stdout.strip().splitlines()[-1])
        fk, tr = summary(res["times"]["forklab"]), summary(res["times"]["trl"])
        rows.append(f"| {threads} | {fk[0]:.2f} ({fk[1]:.2f}–{fk[2]:.2f}) | {tr[0]:.2f} ({tr[1]:.2f}–{tr[2]:.2f}) | "
                    f"**{fk[0] / tr[0]:.2f}×** | {len(res['times']['forklab'])} / {len(res['times']['trl'])} | "
                    f"{res['others_cores']:.2f} |")
        print(rows[-1], flush=True)
    text = f"""# RLTrainer vs TRL GRPOTrainer (`benchmarks/bench_vs_trl.py`)

Same work: `student-addition` (float32), {PROMPTS} prompts × {GROUP} samples, ≤ {NEW_TOKENS} new tokens, lr {LR},
no KL, one update per rollout, `grpo` loss. Blocks of {args.block} steps alternate between the trainers
({args.blocks} blocks each; the first step of a block is dropped). Steps/s: median (interquartile range).

Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads available;
torch {torch.__version__}, trl {trl.__version__}, Python {platform.python_version()}.
Date: {time.strftime('%Y-%m-%d')}.

| threads | forklab steps/s | TRL steps/s | ratio | steps timed (forklab / TRL) | other processes' busy cores |
|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n"
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
