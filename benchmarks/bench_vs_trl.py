"""forklab's RLTrainer against TRL's GRPOTrainer: GRPO steps per second on the same tiny model and work.

Run: ``.venv/bin/python benchmarks/bench_vs_trl.py`` → ``benchmarks/results/vs_trl.md`` and a one-line summary on
stdout (about 1 minute on a lightly loaded 2-core machine; far longer under load, 2 threads worst).

Same work for both: the shipped ``student-addition`` model (float32), 16 prompts × 8 samples per step,
at most 6 new tokens, temperature 1, AdamW (betas 0.9/0.99, eps 1e-8, no weight decay) at a constant
lr 1e-4, gradient clipping at 1, no KL (``beta=0``), one update per rollout, the ``grpo`` loss, the
addition task's reward, no evaluation. RLTrainer logs no covariance (``log_covariance=False``: TRL has
no such metric). Each thread count runs in its own process with both trainers in it, steps interleaved
one by one: TRL's ``train()`` runs, and at each of its ``on_step_end`` callbacks RLTrainer takes one
step. A TRL step is the wall time from the end of the previous RLTrainer step to TRL's next
``on_step_end`` (everything TRL does between steps counts; its one-off setup does not); an RLTrainer
step is the time of its ``step()``. The first ``--warmup`` steps of each are dropped. Reported: median
steps/s, the interquartile range, the median of the per-pair ratios, the load average before and after,
and the CPU cores other processes kept busy meanwhile (``/proc/stat`` minus this process).
"""

from __future__ import annotations

import argparse
import json
import os
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
HEADER = ("| threads | RLTrainer steps/s | TRL steps/s | ratio | per-pair ratio | steps timed (RLTrainer / TRL) "
          "| load average | other processes' busy cores |\n|---|---|---|---|---|---|---|---|")


def worker(threads: int, steps: int, seed: int = 0) -> dict:
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from forklab import recipes
    from forklab.envs.tasks import get_task
    from forklab.integrations.trl import hf_tokenizer, task_dataset
    from forklab.lm.models import load_tiny
    from forklab.lm.trainer import RLConfig, RLTrainer

    torch.set_num_threads(threads)
    model, tok = load_tiny("student-addition")
    forklab = RLTrainer(model, tok, recipes.grpo(), RLConfig(prompts_per_step=PROMPTS, group_size=GROUP,
                                                              max_new_tokens=NEW_TOKENS, lr=LR, eval_every=0,
                                                              seed=seed, log_covariance=False))
    trl_model, char_tok = load_tiny("student-addition")
    data, reward = task_dataset(get_task("addition"), char_tok, size=4000, seed=seed)
    times: dict[str, list[float]] = {"forklab": [], "trl": []}
    mark: list[float] = []

    class Interleave(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if not mark:
                mark.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            end = time.perf_counter()
            times["trl"].append(end - mark[-1])
            forklab.step()
            mark.append(time.perf_counter())
            times["forklab"].append(mark[-1] - end)

    busy0, own0, t0, load0 = busy_seconds(), time.process_time(), time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(output_dir=out, per_device_train_batch_size=PROMPTS * GROUP, num_generations=GROUP,
                          max_completion_length=NEW_TOKENS, learning_rate=LR, lr_scheduler_type="constant",
                          adam_beta2=0.99, max_grad_norm=1.0, beta=0.0, loss_type="grpo", temperature=1.0,
                          max_steps=steps, logging_steps=steps, report_to=[], save_strategy="no", use_cpu=True,
                          seed=seed, disable_tqdm=True, bf16=False)
        GRPOTrainer(model=trl_model, reward_funcs=reward, args=args, train_dataset=data,
                    processing_class=hf_tokenizer(char_tok), callbacks=[Interleave()]).train()
    wall = time.perf_counter() - t0
    others = max(((busy_seconds() - busy0) - (time.process_time() - own0)) / wall, 0.0)
    return {"threads": threads, "times": times, "others_cores": others, "load_before": load0,
            "load_after": os.getloadavg(), "wall_s": wall}


def summary(times: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(times, n=4)
    return 1 / statistics.median(times), 1 / q[2], 1 / q[0]  # median, lower and upper quartile of steps/s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60, help="steps of each trainer per thread count")
    ap.add_argument("--warmup", type=int, default=5, help="first steps of each trainer not timed")
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "vs_trl.md"))
    args = ap.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.steps)))
        return
    import trl

    rows, brief = [], []
    for threads in args.threads:
        done = subprocess.run([sys.executable, __file__, "--worker", str(threads), "--steps", str(args.steps)],
                              capture_output=True, text=True, check=True)
        res = json.loads(done.stdout.strip().splitlines()[-1])
        fk_t, tr_t = res["times"]["forklab"][args.warmup:], res["times"]["trl"][args.warmup:]
        fk, tr = summary(fk_t), summary(tr_t)
        pair = statistics.median(t / f for f, t in zip(fk_t, tr_t, strict=True))
        load = f"{res['load_before'][0]:.2f} → {res['load_after'][0]:.2f}"
        rows.append(f"| {threads} | {fk[0]:.2f} ({fk[1]:.2f}–{fk[2]:.2f}) | {tr[0]:.2f} ({tr[1]:.2f}–{tr[2]:.2f}) | "
                    f"**{fk[0] / tr[0]:.2f}×** | {pair:.2f}× | {len(fk_t)} / {len(tr_t)} | {load} | "
                    f"{res['others_cores']:.2f} |")
        brief.append(f"{threads} thread{'s' if threads > 1 else ''}: {fk[0] / tr[0]:.2f}× "
                     f"({fk[0]:.2f} vs {tr[0]:.2f} steps/s, others {res['others_cores']:.2f} cores)")
        print(rows[-1], flush=True)
    text = f"""# RLTrainer vs TRL GRPOTrainer (`benchmarks/bench_vs_trl.py`)

Same work: `student-addition` (float32), {PROMPTS} prompts × {GROUP} samples, ≤ {NEW_TOKENS} new tokens, constant
lr {LR}, AdamW betas (0.9, 0.99), clip 1, no KL, one update per rollout, `grpo` loss, no evaluation,
no covariance logging. Both trainers run in one process per thread count, steps interleaved one by one
({args.steps} steps each, the first {args.warmup} not timed). Steps/s: median (interquartile range); the
ratio of medians, and the median over step pairs of TRL's step time / RLTrainer's.

Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores;
torch {torch.__version__}, trl {trl.__version__}, Python {platform.python_version()}.
Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Load: 1-minute load average before → after each
run, and the cores other processes kept busy during it (`/proc/stat`); numbers measured while other
processes kept more than a quarter of a core busy are provisional.

{HEADER}
""" + "\n".join(rows) + "\n"
    Path(args.out).write_text(text)
    print("RLTrainer vs TRL GRPOTrainer: " + "; ".join(brief))


if __name__ == "__main__":
    main()
