"""SmolLM2-135M-Instruct on CPU: time to load from the GGUF file and to sample 8 responses of 128 tokens.

Run: ``make real-model && .venv/bin/python benchmarks/bench_real_model.py`` → ``benchmarks/results/real_model.md``.
Both sampling backends are timed on the same prompts (the fast Llama path and ``generate``).
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch
import transformers

from forklab.lm import sampling
from forklab.lm.models import load_real

PROMPTS = ["What is 17 + 25?", "Name a prime number larger than 50.", "Explain what a gradient is in one sentence.",
           "Write a haiku about the sea.", "What is the capital of France?", "Give me a synonym for 'quick'.",
           "How many legs does a spider have?", "Translate 'good morning' into Spanish."]


def main() -> None:
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    model, tok = load_real("smollm2-135m")
    load_s = time.perf_counter() - t0
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
             for p in PROMPTS]
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    rows = []
    for backend in ("fast", "generate"):
        t0 = time.perf_counter()
        s = sampling.sample(model, enc["input_ids"], enc["attention_mask"].bool(), 128, temperature=1.0,
                            backend=backend, pad_token_id=tok.pad_token_id or 0,
                            generator=torch.Generator().manual_seed(0))
        seconds = time.perf_counter() - t0
        n = int(s.mask.sum())
        rows.append((backend, seconds, n, n / seconds, float(s.entropy[s.mask].median())))
    lines = ["# SmolLM2-135M-Instruct on CPU", "",
             f"torch {torch.__version__}, transformers {transformers.__version__}, {platform.machine()}, 2 threads. "
             f"Load = dequantise the Q4_1 GGUF to fp32 ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M "
             f"parameters).", "", f"Load time: **{load_s:.1f} s**.", "",
             "| backend | 8 × 128 tokens (s) | tokens generated | tokens/s | median token entropy |",
             "|---|---|---|---|---|"]
    lines += [f"| {b} | {t:.1f} | {n} | {r:.0f} | {h:.2f} |" for b, t, n, r, h in rows]
    out = Path(__file__).parent / "results" / "real_model.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
