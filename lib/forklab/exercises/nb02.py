"""Checkers and hidden solutions for ``notebooks/02_loss_aggregation.ipynb``.

Exercise 4 asks for Balanced Aggregation's per-token weights of one group:
``check_ba_weights(my_ba_weights)`` compares the student's ``fn(lengths, adv) -> [G, T]`` with a
reference written here response by response (independent of :mod:`forklab.aggregation`) on a ragged
group, equal lengths, a group with zero advantages and a random group, and says which case failed,
expected vs got, and a hint. ``show_solution(n)`` prints the answer to exercise n (1–4).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from forklab.exercises import Feedback

__all__ = ["check_ba_weights", "reference_ba_weights", "show_solution", "SOLUTIONS"]


def reference_ba_weights(lengths: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """BA weights of one group: (n⁺/G)/Σ_{S⁺}|o_j| on S⁺, (n⁻/G)/Σ_{S⁻}|o_j| on S⁻, 0 elsewhere; ``[G, max len]``."""
    lengths = [int(n) for n in lengths]
    adv = [float(a) for a in adv]
    size, width = len(lengths), max(lengths)
    weights = torch.zeros(size, width, dtype=torch.float64)
    for sign in (1, -1):
        side = [i for i in range(size) if adv[i] * sign > 0]
        if not side:
            continue
        tokens = sum(lengths[i] for i in side)
        for i in side:
            weights[i, : lengths[i]] = (len(side) / size) / tokens
    return weights


def _cases() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(2)
    rand_len = torch.randint(1, 9, (6,), generator=gen)
    return [
        ("§0's ragged group: lengths 2,4,6,8 correct, 1,3,5,7 wrong", torch.tensor([2, 4, 6, 8, 1, 3, 5, 7]),
         torch.tensor([0.94] * 4 + [-0.94] * 4, dtype=torch.float64)),
        ("equal lengths (5 each), 3 correct of 4", torch.tensor([5, 5, 5, 5]),
         torch.tensor([0.5, 0.5, 0.5, -1.5], dtype=torch.float64)),
        ("rewards (1, 0.5, 0.5, 0): two zero advantages", torch.tensor([3, 2, 4, 6]),
         torch.tensor([1.22, 0.0, 0.0, -1.22], dtype=torch.float64)),
        ("a random group of 6", rand_len, torch.tensor([1.0, -0.5, -0.5, 2.0, -1.0, -1.0], dtype=torch.float64)),
    ]


def _hint(got: torch.Tensor, lengths: torch.Tensor, adv: torch.Tensor) -> str:
    mask = torch.arange(int(lengths.max()))[None, :] < lengths[:, None]
    m = mask.double()
    nonzero = [i for i in range(len(adv)) if adv[i] != 0]
    guesses = {
        "this is token-mean (one weight 1/Σ|o_j| for every token): BA weighs each side k/G first": m / m.sum(),
        "this is seq-mean (1/(G|o_i|)): BA shares a side's weight equally among that side's tokens":
            m / (m.sum(1, keepdim=True) * len(adv)),
        "the side factors n⁺/G and n⁻/G are missing: divide each side's share by its token count only after "
        "weighting it by its share of the group": reference_ba_weights(lengths, adv) * len(adv) / torch.tensor(
            [max(1, sum(1 for j in range(len(adv)) if adv[j] * adv[i] > 0)) for i in range(len(adv))],
            dtype=torch.float64)[:, None],
        "G counts every response, zero advantages included (k/G, not k/(n⁺ + n⁻))":
            reference_ba_weights(lengths, adv) * len(adv) / max(1, len(nonzero)),
    }
    reference = reference_ba_weights(lengths, adv)
    for message, guess in guesses.items():
        if torch.allclose(guess, reference):
            continue  # this mistake makes no difference in this case
        if got.shape == guess.shape and torch.allclose(got.double(), guess, atol=1e-10, rtol=1e-6):
            return message
    if (got.double()[torch.as_tensor(adv) == 0] != 0).any():
        return "a response with zero advantage carries no gradient: give its tokens weight 0"
    if (got.double()[~mask] != 0).any():
        return "padding (positions past a response's length) must get weight 0"
    return "on the positive side each token gets (n⁺/G) / Σ_{j∈S⁺}|o_j|; on the negative side (n⁻/G) / Σ_{j∈S⁻}|o_j|"


def check_ba_weights(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Feedback:
    """Check a student's ``fn(lengths [G] long, adv [G] float64) -> weights [G, max(lengths)]``."""
    lines = []
    for name, lengths, adv in _cases():
        try:
            got = fn(lengths.clone(), adv.clone())
        except NotImplementedError:
            return Feedback("exercise 4 (BA weights)", False,
                            ["not attempted yet: replace `raise NotImplementedError`."])
        except Exception as err:  # noqa: BLE001 - the student sees the error, not a traceback
            return Feedback("exercise 4 (BA weights)", False, [f"case '{name}' raised {type(err).__name__}: {err}"])
        got = torch.as_tensor(got)
        expected = reference_ba_weights(lengths, adv)
        if got.shape != expected.shape:
            return Feedback("exercise 4 (BA weights)", False, [
                f"case '{name}': expected shape {list(expected.shape)}, got {list(got.shape)}",
                "hint: one row per response, one column per position up to the longest response"])
        if not torch.allclose(got.double(), expected, atol=1e-10, rtol=1e-6):
            row, col = divmod(int((got.double() - expected).abs().flatten().argmax()), expected.shape[1])
            return Feedback("exercise 4 (BA weights)", False, [
                f"case '{name}': response {row} (length {int(lengths[row])}, A = {float(adv[row]):+.2f}), "
                f"position {col}: expected {expected[row, col].item():.5f}, got {got.double()[row, col].item():.5f}",
                "hint: " + _hint(got, lengths, adv)])
        lines.append(f"case '{name}': ok")
    return Feedback("exercise 4 (BA weights)", True, lines)


SOLUTIONS = {
    1: "Per group the push of a side is Σ|o_i||A_i| over its responses, and k|A⁺| = (G−k)|A⁻|, so token-mean "
       "gives the correct side L⁺/(L⁺ + L⁻) = 10/(10 + 40) = 0.2 of the push (L± = mean length of a side). "
       "Seq-mean and BA: exactly 0.5, whatever the lengths.",
    2: "Dr. GRPO divides by B·L_max where L_max is the padded width T by default: padding to 128 instead of 64 "
       "halves every gradient, so the step size depends on how the batch was padded. The fix is the one the "
       "paper and TRL use: a fixed norm_len (the generation budget, TRL's max_completion_length), the same "
       "constant for every batch, which removes the dependence on padding (forklab: Recipe(norm_len=...) or "
       "aggregation.token_weights(..., norm_len=...)). Token-mean divides by the number of real tokens and "
       "ignores padding, but its constant changes with the batch's total length instead.",
    3: "With rewards (1, 0.5, 0.5, 0): n⁺ = n⁻ = 1 and G = 4 (the zero-advantage responses count in G). Each side "
       "gets 1/4 of the weight, spread over its tokens; the two middle responses get 0.",
    4: "def my_ba_weights(lengths, adv):\n"
       "    G, T = len(lengths), int(lengths.max())\n"
       "    mask = torch.arange(T)[None, :] < lengths[:, None]\n"
       "    w = torch.zeros(G, T, dtype=torch.float64)\n"
       "    for side in (adv > 0, adv < 0):\n"
       "        if side.any():\n"
       "            w[side] = (side.sum().item() / G) / lengths[side].sum().item()\n"
       "    return w * mask",
}


def show_solution(exercise: int) -> None:
    """Print the answer to exercise ``exercise`` (1–4) of notebook 02."""
    if exercise not in SOLUTIONS:
        raise ValueError(f"`exercise` must be one of {sorted(SOLUTIONS)}, got {exercise!r}")
    print(f"Solution to exercise {exercise}:\n{SOLUTIONS[exercise]}")
