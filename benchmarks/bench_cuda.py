"""forklab's CUDA paths on the shipped tiny models: correctness checks and speed, on a GPU machine.

CI has no GPU, so the CUDA branches of the sampler and the trainers are exercised here, by hand, on a
lent GPU machine (never in CI). One process runs, on the device given by ``--device``:

1. sampler: greedy decoding equals ``transformers``' ``generate`` token for token; sampled log-probs
   and entropies equal a teacher-forced forward pass (``policy_forward``), for the prefix-tree path
   (prompts repeated G times) in float32, float64 and bfloat16;
2. ``RLTrainer``: a GRPO run of ``student-addition`` (accuracy before/after, steps per second), every
   recipe preset for a few steps (finite loss and gradient), and a checkpoint round trip;
3. ``DistillTrainer``: teacher-addition → student-addition, all tokens and one TIP selection rule;
4. the same GRPO run on the CPU of that machine (1 thread), for the speed ratio.

Usage: ``PYTHONPATH=lib python benchmarks/bench_cuda.py --device cuda --out results.json``
(``--quick`` for a short smoke run on a CPU). Results are written to ``benchmarks/results/cuda.md``
by hand from the JSON, with the machine they came from.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

import torch

from forklab import recipes
from forklab.envs import tasks as task_lib
from forklab.lm import sampling
from forklab.lm.distill_trainer import DistillConfig, DistillTrainer
from forklab.lm.models import load_tiny
from forklab.lm.trainer import RLConfig, RLTrainer, policy_forward

PRESETS = ("grpo", "dr_grpo", "dapo", "gspo", "sapo", "cispo", "ba", "forking20", "clip_cov", "kl_cov", "hapo",
           "steer", "lp_reg")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def check_sampler(device: torch.device, dtype: str, group: int = 8) -> dict:
    model, tok = load_tiny("student-addition", dtype=dtype)
    model.to(device)
    task = task_lib.get_task("addition")
    examples = task.make_split("test", 32, seed=0)
    ids, pmask = (x.to(device) for x in tok.batch_encode([e.prompt for e in examples], pad_side="left"))
    greedy = sampling.sample(model, ids, pmask, 6, greedy=True, stop_token_id=tok.eos_id, pad_token_id=tok.pad_id)
    with torch.no_grad():
        gen = model.generate(input_ids=ids, attention_mask=pmask.long(), max_new_tokens=6, do_sample=False,
                             eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)[:, ids.shape[1]:]
    t = min(gen.shape[1], greedy.tokens.shape[1])
    same = (gen[:, :t].masked_fill(~greedy.mask[:, :t], tok.pad_id) == greedy.tokens[:, :t]).all(1)
    rep_ids, rep_mask = ids.repeat_interleave(group, 0), pmask.repeat_interleave(group, 0)
    gen_cpu = torch.Generator().manual_seed(0)
    s = sampling.sample(model, rep_ids, rep_mask, 6, stop_token_id=tok.eos_id, pad_token_id=tok.pad_id,
                        generator=gen_cpu)
    with torch.no_grad():
        logits, logp, _ = policy_forward(model, rep_ids, rep_mask, s.tokens, s.mask)
    from forklab.ops import entropy_from_logits

    ent = entropy_from_logits(logits)
    m = s.mask
    return {"dtype": dtype, "greedy_rows_equal_generate": f"{int(same.sum())}/{same.numel()}",
            "sampled_logp_max_abs_diff": float((s.logp - logp.to(s.logp.dtype)).abs()[m].max()),
            "sampled_entropy_max_abs_diff": float((s.entropy - ent.to(s.entropy.dtype)).abs()[m].max()),
            "logp_dtype": str(s.logp.dtype).replace("torch.", ""), "rows": int(m.shape[0])}


def grpo_run(device: torch.device, steps: int, dtype: str = "float32") -> dict:
    model, tok = load_tiny("student-addition", dtype=dtype)
    model.to(device)
    trainer = RLTrainer(model, tok, recipes.grpo(), RLConfig(lr=1e-4, eval_every=0, seed=0, eval_size=128))
    before = trainer.evaluate()
    trainer.step()  # warm-up (CUDA context, kernels)
    _sync(device)
    start = time.perf_counter()
    trainer.train(steps=steps, progress=False)
    _sync(device)
    seconds = time.perf_counter() - start
    after = trainer.evaluate()
    return {"device": device.type, "dtype": dtype, "steps": steps, "steps_per_s": steps / seconds,
            "greedy_accuracy": [before["eval/greedy_accuracy"], after["eval/greedy_accuracy"]],
            "sampled_accuracy": [before["eval/sampled_accuracy"], after["eval/sampled_accuracy"]],
            "entropy": [before["eval/entropy"], after["eval/entropy"]]}


def every_preset(device: torch.device, steps: int) -> dict:
    out = {}
    for name in PRESETS:
        model, tok = load_tiny("student-addition")
        model.to(device)
        recipe = getattr(recipes, name)()
        ref = None
        if recipe.kl_coef:
            ref, _ = load_tiny("student-addition")
            ref.to(device)
        try:
            trainer = RLTrainer(model, tok, recipe, RLConfig(eval_every=0, seed=0), ref_model=ref)
            hist = trainer.train(steps=steps, progress=False)
            finite = all(torch.isfinite(torch.tensor(h.get("loss", 0.0))) for h in hist)
            finite_w = all(bool(torch.isfinite(p).all()) for p in model.parameters())
            out[name] = "ok" if finite and finite_w else "NON-FINITE"
        except Exception as exc:  # report every preset, do not stop at the first failure
            import traceback

            out[name] = f"{type(exc).__name__}: {exc} @ {traceback.format_exc().splitlines()[-3].strip()}"[:300]
    return out


def checkpoint_round_trip(device: torch.device) -> dict:
    def fresh():
        model, tok = load_tiny("student-addition")
        model.to(device)
        return RLTrainer(model, tok, recipes.grpo(), RLConfig(eval_every=0, seed=3))

    a = fresh()
    a.train(steps=3, progress=False)
    with tempfile.TemporaryDirectory() as d:
        a.save_checkpoint(d)
        a.train(steps=3, progress=False)
        b = fresh()
        b.load_checkpoint(d)
        b.train(steps=3, progress=False)
    with torch.no_grad():
        diff = max(float((p - q).abs().max()) for p, q in zip(a.model.parameters(), b.model.parameters(),
                                                               strict=True))
    return {"resumed_max_abs_weight_diff": diff,
            "note": "CUDA backward of embeddings uses atomics, so bitwise equality is not expected on a GPU"}


def distill(device: torch.device, steps: int) -> dict:
    out = {}
    for selection in (None, "soft_or"):
        student, tok = load_tiny("student-addition")
        teacher, _ = load_tiny("teacher-addition")
        student.to(device), teacher.to(device)
        trainer = DistillTrainer(student, teacher, tok, DistillConfig(eval_every=0, seed=0, selection=selection))
        hist = trainer.train(steps)
        out[str(selection)] = {"loss_first_last": [hist[0]["loss"], hist[-1]["loss"]],
                               "kept_share": hist[-1]["tokens/kept_share"],
                               "cuda_peak_mb": hist[-1].get("memory/cuda_peak_mb")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="cuda_results.json")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(1)
    steps = 5 if args.quick else 60
    res: dict = {"torch": torch.__version__, "python": platform.python_version(),
                 "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None}
    sections = [
        ("sampler", lambda: [check_sampler(device, d) for d in ("float32", "float64", "bfloat16")]),
        ("grpo_run", lambda: grpo_run(device, steps)),
        ("grpo_run_float64", lambda: grpo_run(device, steps // 2, "float64")),
        ("presets", lambda: every_preset(device, 2 if args.quick else 3)),
        ("checkpoint", lambda: checkpoint_round_trip(device)),
        ("distill", lambda: distill(device, 5 if args.quick else 30)),
        ("grpo_run_cpu_same_machine", lambda: grpo_run(torch.device("cpu"), 5 if args.quick else 20)),
    ]
    for name, fn in sections:
        t0 = time.perf_counter()
        try:
            res[name] = fn()
        except Exception as exc:
            import traceback

            traceback.print_exc()
            res[name] = f"FAILED {type(exc).__name__}: {exc}"[:500]
        print(f"{name}: {time.perf_counter() - t0:.1f} s: {json.dumps(res[name])[:600]}", flush=True)
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
