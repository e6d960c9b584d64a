"""Supervised fine-tuning of a tiny LM on (prompt, response) text pairs — how the shipped models start.

Used by ``scripts/pretrain_tiny.py``. Next-token cross-entropy on the *response* tokens only (the
prompt is context), right-padded batches (so positions are plain 0..L−1), AdamW with a cosine decay.

    for step in range(steps):
        batch = random pairs; ids = prompt + response (right-padded)
        loss = CE(logits[:, :-1], ids[:, 1:]) over response positions
        AdamW step
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from forklab.lm.tokenizer import CharTokenizer
from forklab.ops import masked_mean

__all__ = ["encode_pairs", "sft_loss", "train_sft"]


def encode_pairs(tokenizer: CharTokenizer, pairs: Sequence[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``ids [N, L]`` of prompt+response and ``target_mask [N, L]`` (True on response tokens)."""
    if not pairs:
        raise ValueError("`pairs` is empty")
    seqs = [(tokenizer.encode(p), tokenizer.encode(r)) for p, r in pairs]
    width = max(len(p) + len(r) for p, r in seqs)
    ids = torch.full((len(seqs), width), tokenizer.pad_id, dtype=torch.long)
    target = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, (p, r) in enumerate(seqs):
        ids[i, : len(p) + len(r)] = torch.tensor(p + r)
        target[i, len(p) : len(p) + len(r)] = True
    return ids, target


def sft_loss(model, ids: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the response positions."""
    attention = ids != 0
    attention[:, 0] = True
    logits = model(input_ids=ids, attention_mask=attention.long()).logits[:, :-1]
    targets = ids[:, 1:]
    mask = target_mask[:, 1:]
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return masked_mean(ce, mask.reshape(-1))


def train_sft(model, tokenizer: CharTokenizer, pairs: Sequence[tuple[str, str]], steps: int = 600,
              batch_size: int = 128, lr: float = 3e-3, weight_decay: float = 0.01, seed: int = 0,
              log_every: int = 100, cosine: bool = True, betas: tuple[float, float] = (0.9, 0.95)) -> list[float]:
    """Train ``model`` in place; returns the loss every ``log_every`` steps."""
    ids, target = encode_pairs(tokenizer, pairs)
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=betas)
    decay = (lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps))) if cosine else (lambda s: 1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, decay)
    model.train()
    losses = []
    for step in range(int(steps)):
        idx = torch.randint(0, ids.shape[0], (batch_size,), generator=gen)
        width = int((ids[idx] != tokenizer.pad_id).sum(1).max())
        loss = sft_loss(model, ids[idx, :width], target[idx, :width])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            losses.append(float(loss.detach()))
    model.eval()
    return losses
