"""Factorised vs pairwise Token Hidden Reward influence scores: time and peak memory at a few sizes.

Run: ``.venv/bin/python benchmarks/bench_thr.py`` → ``benchmarks/results/thr.md``.
Factorised: M⁺ = Σ g hᵀ once per group, then s_t = g_tᵀ M⁺ h_t — O(N·|V*|·d).
Pairwise:   s_t = Σ_{(i,k)∈P} ⟨g_t, g_ik⟩⟨h_t, h_ik⟩ — O(N·N⁺·(|V*| + d)) time and an N × N⁺ kernel.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch
from _measure import measure

SIZES = [  # (responses in the group, tokens per response, vocabulary, hidden size)
    (16, 32, 20, 64),  # tiny LM: character vocabulary, small hidden size
    (64, 128, 20, 64),  # tiny LM, big group
    (8, 256, 20000, 256),
    (16, 256, 49152, 576),  # SmolLM2-135M sizes (vocabulary 49152, hidden 576)
]


def setup(b: int, t: int, v: int, d: int) -> str:
    return f"""
from forklab.diagnostics.thr import influence_scores, pairwise_influence_scores
g = torch.Generator().manual_seed(0)
hidden = torch.randn({b}, {t}, {d}, generator=g)
logits = torch.randn({b}, {t}, {v}, generator=g)
tokens = torch.randint(0, {v}, ({b}, {t}), generator=g)
mask = torch.ones({b}, {t}, dtype=torch.bool)
group = torch.zeros({b}, dtype=torch.long)
correct = torch.arange({b}) % 2 == 0
"""


def main() -> None:
    lines = [
        "# THR influence scores: factorised vs pairwise",
        "",
        f"One group, half the responses correct, vocabulary restricted to the group's tokens (NTHR's V*), "
        f"float64 inside, 1 thread, median of 3 runs; peak = extra max-RSS of a fresh process (inputs allocated "
        f"before measuring). torch {torch.__version__}, {platform.processor() or platform.machine()}.",
        "",
        "| responses × tokens | vocab | d | factorised (s) | pairwise (s) | speed-up | factorised peak (MiB) "
        "| pairwise peak (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for b, t, v, d in SIZES:
        s = setup(b, t, v, d)
        fast = measure(s, "out = influence_scores(hidden, logits, tokens, mask, group, correct)")
        slow = measure(s, "out = pairwise_influence_scores(hidden, logits, tokens, mask, group, correct)")
        lines.append(f"| {b} × {t} | {v} | {d} | {fast['seconds']:.3f} | {slow['seconds']:.3f} | "
                     f"{slow['seconds'] / fast['seconds']:.1f}× | {fast['peak_mb']:.0f} | {slow['peak_mb']:.0f} |")
        print(lines[-1], flush=True)
    out = Path(__file__).parent / "results" / "thr.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
