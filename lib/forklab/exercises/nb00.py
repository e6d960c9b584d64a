"""Checkers and hidden solutions for ``notebooks/00_tour.ipynb``.

Exercise 4 asks for the k3 estimator of KL(π‖π_ref) from two sampled-token log-probs:
``check_k3(my_k3)`` runs it on a few cases against a reference written here (and, for unbiasedness,
against the exact KL of a small categorical) and says which case failed, expected vs got, and a hint.
``show_solution(n)`` prints the answer to exercise n (1–4); nothing here runs when the notebook runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from forklab.exercises import Feedback

__all__ = ["check_k3", "reference_k3", "show_solution", "SOLUTIONS"]


def reference_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 = e^{−x} − 1 + x with x = log π(y) − log π_ref(y) (Schulman 2020), elementwise."""
    x = logp - ref_logp
    return torch.exp(-x) - 1 + x


def _cases() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=gen, dtype=torch.float64)
    ref_logits = logits + 0.3 * torch.randn(2, 5, 7, generator=gen, dtype=torch.float64)
    tokens = torch.randint(0, 7, (2, 5), generator=gen)
    logp = torch.log_softmax(logits, -1).gather(-1, tokens[..., None])[..., 0]
    ref_logp = torch.log_softmax(ref_logits, -1).gather(-1, tokens[..., None])[..., 0]
    return [
        ("policy equals the reference (x = 0 everywhere)", torch.full((3,), -1.2, dtype=torch.float64),
         torch.full((3,), -1.2, dtype=torch.float64)),
        ("one token, log π = log 0.5, log π_ref = log 0.25", torch.tensor([math.log(0.5)], dtype=torch.float64),
         torch.tensor([math.log(0.25)], dtype=torch.float64)),
        ("one token, log π = log 0.25, log π_ref = log 0.5", torch.tensor([math.log(0.25)], dtype=torch.float64),
         torch.tensor([math.log(0.5)], dtype=torch.float64)),
        ("a [2, 5] batch of sampled-token log-probs", logp, ref_logp),
    ]


def _hint(got: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor) -> str:
    x = logp - ref_logp
    guesses = {
        "k1 = x (log π − log π_ref): unbiased too, but k3 adds e^{−x} − 1, which has mean 0 under π and "
        "makes every value ≥ 0": x,
        "the ratio the wrong way round: use e^{−x} = π_ref/π, not e^{x} = π/π_ref": torch.exp(x) - 1 - x,
        "the −1 is missing: e^{−x} − 1 + x is 0 when π = π_ref": torch.exp(-x) + x,
        "k2 = x²/2: its gradient is KL's, but its value is biased": 0.5 * x * x,
    }
    for message, guess in guesses.items():
        if got.shape == guess.shape and torch.allclose(got.double(), guess, atol=1e-9, rtol=1e-6):
            return message
    return "k3 = e^{−x} − 1 + x with x = log π(y) − log π_ref(y); every operation elementwise"


def check_k3(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Feedback:
    """Check a student's ``fn(logp, ref_logp) -> per-token k3`` (same shape as its inputs)."""
    lines = []
    for name, logp, ref_logp in _cases():
        try:
            got = fn(logp.clone(), ref_logp.clone())
        except NotImplementedError:
            return Feedback("exercise 4 (k3)", False, ["not attempted yet: replace `raise NotImplementedError`."])
        except Exception as err:  # noqa: BLE001 - the student sees the error, not a traceback
            return Feedback("exercise 4 (k3)", False, [f"case '{name}' raised {type(err).__name__}: {err}"])
        got = torch.as_tensor(got)
        expected = reference_k3(logp, ref_logp)
        if got.shape != expected.shape:
            return Feedback("exercise 4 (k3)", False, [f"case '{name}': expected shape {list(expected.shape)}, "
                                                      f"got {list(got.shape)}", "hint: one value per token, no sum"])
        if not torch.allclose(got.double(), expected, atol=1e-9, rtol=1e-6):
            worst = int((got.double() - expected).abs().flatten().argmax())
            return Feedback("exercise 4 (k3)", False, [
                f"case '{name}': expected {expected.flatten()[worst].item():.6f}, got "
                f"{got.double().flatten()[worst].item():.6f} (element {worst})",
                "hint: " + _hint(got, logp, ref_logp)])
        lines.append(f"case '{name}': ok")
    # unbiasedness, exactly: E_{y~π}[k3(y)] = KL(π‖π_ref) on a 6-way categorical
    pi = torch.tensor([0.4, 0.25, 0.15, 0.1, 0.06, 0.04], dtype=torch.float64)
    ref = torch.tensor([0.1, 0.2, 0.3, 0.2, 0.1, 0.1], dtype=torch.float64)
    mean = float((pi * torch.as_tensor(fn(pi.log(), ref.log())).double()).sum())
    kl = float((pi * (pi.log() - ref.log())).sum())
    lines.append(f"E_π[k3] = {mean:.6f} equals KL(π‖π_ref) = {kl:.6f} on a 6-way categorical: unbiased")
    return Feedback("exercise 4 (k3)", abs(mean - kl) < 1e-6, lines)


SOLUTIONS = {
    1: "The even spread over 3 correct arms has entropy ln 3 ≈ 1.10 nats. GRPO goes below it: after 60 steps "
       "(lr 0.5, G = 8, 64 seeds) the mean entropy is about 0.58 while the reward is above 0.9. Each seed "
       "collapses towards fewer correct arms, because GRPO reinforces whichever correct arm it happened to "
       "sample (entropy collapse, notebook 04).",
    2: "The arms in the group. An unsampled arm k gets gradient −(1/G) Σ_i A_i (0 − π_k) = π_k · mean(A) = 0, "
       "since GRPO's advantages sum to zero in a group: every unsampled arm moves by the same amount, zero, "
       "and only the softmax normalisation changes their probabilities.",
    3: "No: the first minibatch of each rollout is scored by the policy that sampled it, so every ratio is "
       "exactly 1 and no clip can act; clipping starts on the later minibatches and epochs.",
    4: "def my_k3(logp, ref_logp):\n    x = logp - ref_logp            # log π(y) − log π_ref(y)\n"
       "    return torch.exp(-x) - 1 + x    # ≥ 0, mean KL(π‖π_ref) under π\n"
       "(forklab.kl.kl_estimate(logp, ref_logp, 'k3') computes the same with expm1 for accuracy near x = 0.)",
}


def show_solution(exercise: int) -> None:
    """Print the answer to exercise ``exercise`` (1–4) of notebook 00."""
    if exercise not in SOLUTIONS:
        raise ValueError(f"`exercise` must be one of {sorted(SOLUTIONS)}, got {exercise!r}")
    print(f"Solution to exercise {exercise}:\n{SOLUTIONS[exercise]}")
