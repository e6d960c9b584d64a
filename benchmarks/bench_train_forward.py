"""The update's forward + backward in ``RLTrainer``: transformers' model call against forklab's lean forward.

Run: ``.venv/bin/python benchmarks/bench_train_forward.py`` → ``benchmarks/results/train_forward.md`` (about 30 s).

The batch is one ``RLTrainer`` rollout of the shipped ``student-addition`` model (float32, 16 prompts × 8
samples, ≤ 6 new tokens), re-drawn every few repeats; the loss is ``−Σ logp`` over the response tokens.
Three ways to get the response logits, each followed by ``backward()``:

- ``transformers``: ``model(input_ids, attention_mask, position_ids).logits`` sliced to the response columns;
- ``lean, every row``: ``forklab.lm._train_forward.response_logits(..., share_prompts=False)``;
- ``lean, shared prompts``: the same with each distinct prompt computed once (what ``RLTrainer`` uses).

The three run interleaved, one repeat of each in turn, in one process per thread count, after a warm-up.
Reported: median milliseconds (interquartile range), the speed-up over ``transformers`` (ratio of medians),
the cores other processes kept busy, and, as a check, the largest logit difference from ``transformers``
(absolute, and relative to the largest |logit|).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from _measure import busy_seconds
from torch import Tensor

WAYS = ("transformers", "lean, every row", "lean, shared prompts")


def worker(threads: int, repeats: int) -> dict:
    from forklab import recipes
    from forklab.lm._rollout import response_inputs
    from forklab.lm._train_forward import response_logits
    from forklab.lm.models import load_tiny
    from forklab.lm.trainer import RLConfig, RLTrainer

    torch.set_num_threads(threads)
    model, tok = load_tiny("student-addition")
    trainer = RLTrainer(model, tok, recipes.grpo(), RLConfig(eval_every=0, log_covariance=False, seed=0))
    model.train()

    def run(way: str, r: dict) -> Tensor:
        inputs = response_inputs(r["prompt_ids"], r["prompt_mask"], r["tokens"], r["mask"])
        lp, t = r["prompt_ids"].shape[1], r["tokens"].shape[1]
        if way == "transformers":
            logits = model(**inputs).logits[:, lp - 1 : lp - 1 + t]
        else:
            logits = response_logits(model, inputs["input_ids"], inputs["attention_mask"], inputs["position_ids"], lp,
                                     t, share_prompts=way == "lean, shared prompts")
        logp = torch.log_softmax(logits, -1).gather(-1, r["tokens"][..., None])[..., 0]
        model.zero_grad(set_to_none=True)
        (-(logp * r["mask"]).sum()).backward()
        return logits.detach()

    times: dict[str, list[float]] = {w: [] for w in WAYS}
    worst = dict.fromkeys(WAYS, 0.0)
    scale = 0.0
    busy0, own0, t0 = busy_seconds(), time.process_time(), time.perf_counter()
    r = trainer.rollout()
    for i in range(repeats + 3):
        if i % 5 == 0:
            r = trainer.rollout()
        want = None
        for way in WAYS:
            start = time.perf_counter()
            got = run(way, r)
            if i >= 3:  # warm-up
                times[way].append(time.perf_counter() - start)
            want = got if want is None else want
            worst[way] = max(worst[way], float((got - want).abs().max()))
            scale = max(scale, float(want.abs().max()))
    wall = time.perf_counter() - t0
    others = max(((busy_seconds() - busy0) - (time.process_time() - own0)) / wall, 0.0)
    return {"times": times, "worst": worst, "scale": scale, "others_cores": others}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_forward.md"))
    args = ap.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.repeats)))
        return
    import transformers

    rows = []
    for threads in args.threads:
        done = subprocess.run([sys.executable, __file__, "--worker", str(threads), "--repeats", str(args.repeats)],
                              capture_output=True, text=True, check=True)
        res = json.loads(done.stdout.strip().splitlines()[-1])
        base = statistics.median(res["times"]["transformers"])
        for way in WAYS:
            ts = res["times"][way]
            q = statistics.quantiles(ts, n=4)
            med = statistics.median(ts)
            rows.append(f"| {threads} | {way} | {med * 1e3:.2f} ({q[0] * 1e3:.2f}–{q[2] * 1e3:.2f}) | "
                        f"{base / med:.2f}× | {res['worst'][way]:.1e} | {res['worst'][way] / res['scale']:.1e} | "
                        f"{res['others_cores']:.2f} |")
            print(rows[-1], flush=True)
    text = f"""# The update's forward + backward (`benchmarks/bench_train_forward.py`)

One `RLTrainer` rollout of `student-addition` (float32, 16 prompts × 8 samples, ≤ 6 new tokens; a new rollout
every 5 repeats), loss −Σ logp over the response tokens, then `backward()`. The three ways run interleaved
({args.repeats} repeats each after 3 of warm-up). Time: median ms (interquartile range); speed-up: the
ratio of medians over `transformers`; max |Δ logit|: largest difference from `transformers`' logits, also
relative to the largest |logit| (float32 rounding: its machine epsilon is 1.2e-7; the lean forward sums in
another order and over fewer keys, so some ten units in the last place are expected; float64 agrees to 1e-12,
`tests/test_train_forward.py`).

Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__},
transformers {transformers.__version__}, Python {platform.python_version()}.
Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.

| threads | forward | ms | speed-up | max \\|Δ logit\\| | relative | other processes' busy cores |
|---|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n"
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
