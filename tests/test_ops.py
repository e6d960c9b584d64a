"""forklab.ops against independent NumPy/float64 computations and autograd identities."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from forklab import ops


def np_entropy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z = z - z.max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(p), 0.0)
    return -plogp.sum(-1)


# ---------------------------------------------------------------- masked reductions
def test_masked_mean_sum_var_match_numpy_on_selected_entries():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 7, generator=g, dtype=torch.float64)
    mask = torch.rand(4, 7, generator=g) > 0.4
    sel = x.numpy()[mask.numpy()]
    assert ops.masked_sum(x, mask).item() == pytest.approx(sel.sum())
    assert ops.masked_mean(x, mask).item() == pytest.approx(sel.mean())
    assert ops.masked_var(x, mask).item() == pytest.approx(sel.var(ddof=1))
    assert ops.masked_var(x, mask, unbiased=False).item() == pytest.approx(sel.var(ddof=0))
    rows = ops.masked_mean(x, mask, dim=1)
    for i in range(4):
        expected = x[i][mask[i]].mean().item() if mask[i].any() else 0.0
        assert rows[i].item() == pytest.approx(expected)


def test_nan_and_inf_outside_mask_do_not_leak_but_nan_inside_is_an_error():
    x = torch.tensor([[1.0, float("nan"), 3.0], [float("inf"), 2.0, 4.0]])
    mask = torch.tensor([[True, False, True], [False, True, True]])
    assert ops.masked_mean(x, mask).item() == pytest.approx(2.5)
    assert ops.masked_sum(x, mask, dim=1).tolist() == [4.0, 6.0]
    with pytest.raises(ValueError, match="`x` contains NaN inside `mask`"):
        ops.masked_mean(x, torch.ones_like(mask))


def test_masked_reductions_reject_bad_inputs():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="`mask` must have the same shape"):
        ops.masked_mean(x, torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="`mask` is empty"):
        ops.masked_mean(x, torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="`mask` must be a bool"):
        ops.masked_mean(x, torch.ones(2, 3))
    with pytest.raises(ValueError, match="`x` must be a floating"):
        ops.masked_mean(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="variance needs more"):
        ops.masked_var(x, torch.tensor([[True, False, False], [False, False, False]]))
    # 0/1 integer masks are accepted and mean the same as bool masks
    assert ops.masked_sum(x, torch.ones(2, 3, dtype=torch.long)).item() == pytest.approx(x.sum().item())


# ---------------------------------------------------------------- log-probs
def test_logprobs_match_numpy_log_softmax_with_temperature():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 5, 11, generator=g, dtype=torch.float64) * 3
    tokens = torch.randint(0, 11, (3, 5), generator=g)
    for temperature in (1.0, 0.7, 1.6):
        z = logits.numpy() / temperature
        lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
        expected = np.take_along_axis(z, tokens.numpy()[..., None], -1)[..., 0] - lse
        got = ops.logprobs_from_logits(logits, tokens, temperature)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_logprobs_half_precision_is_computed_in_fp32():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 6, 50, generator=g) * 4
    tokens = torch.randint(0, 50, (4, 6), generator=g)
    ref = ops.logprobs_from_logits(logits.bfloat16().double(), tokens)
    got = ops.logprobs_from_logits(logits.bfloat16(), tokens)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=1e-6, atol=1e-6)


def test_logprobs_reject_bad_inputs():
    logits = torch.randn(2, 3, 5)
    with pytest.raises(ValueError, match="`tokens` must have shape"):
        ops.logprobs_from_logits(logits, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="`tokens` must lie in"):
        ops.logprobs_from_logits(logits, torch.full((2, 3), 5))
    with pytest.raises(ValueError, match="`tokens` must be an integer"):
        ops.logprobs_from_logits(logits, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="`temperature`"):
        ops.logprobs_from_logits(logits, torch.zeros(2, 3, dtype=torch.long), temperature=0.0)
    with pytest.raises(ValueError, match="`logits` contains NaN"):
        ops.logprobs_from_logits(logits.index_fill(2, torch.tensor([0]), float("nan")),
                                 torch.zeros(2, 3, dtype=torch.long))


# ---------------------------------------------------------------- entropy
@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 9),
    vocab=st.integers(1, 40),
    chunk=st.one_of(st.none(), st.integers(1, 12)),
    temperature=st.floats(0.3, 3.0),
    scale=st.floats(0.0, 20.0),
    seed=st.integers(0, 10_000),
)
def test_entropy_equals_minus_sum_plogp_for_any_chunk_and_temperature(rows, vocab, chunk, temperature, scale, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, 2, vocab, generator=g, dtype=torch.float64) * scale
    got = ops.entropy_from_logits(logits, temperature=temperature, chunk_size=chunk)
    np.testing.assert_allclose(got.numpy(), np_entropy(logits.numpy(), temperature), rtol=1e-9, atol=1e-9)


def test_entropy_uniform_is_log_v_and_near_one_hot_is_zero():
    for v in (1, 2, 13, 50257):
        h = ops.entropy_from_logits(torch.zeros(3, v), chunk_size=2)
        torch.testing.assert_close(h, torch.full((3,), math.log(v)), rtol=1e-6, atol=1e-6)
    peaked = torch.tensor([[100.0, 0.0, 0.0, 0.0]])
    assert ops.entropy_from_logits(peaked).item() < 1e-30


def test_entropy_of_filtered_logits_is_entropy_of_the_kept_tokens():
    logits = torch.tensor([[2.0, -torch.inf, 0.5, -torch.inf, 1.0]], dtype=torch.float64)
    kept = torch.tensor([[2.0, 0.5, 1.0]], dtype=torch.float64)
    h = ops.entropy_from_logits(logits)
    assert torch.isfinite(h).all()
    torch.testing.assert_close(h, ops.entropy_from_logits(kept))
    logits.requires_grad_(True)
    ops.entropy_from_logits(logits).sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_entropy_gradient_is_minus_p_times_logp_plus_h():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(5, 9, generator=g, dtype=torch.float64, requires_grad=True)
    h = ops.entropy_from_logits(z, chunk_size=2)
    h.sum().backward()
    p = torch.softmax(z.detach(), -1)
    expected = -p * (p.log() + h.detach()[:, None])
    torch.testing.assert_close(z.grad, expected)


def test_entropy_dtypes_and_bad_inputs():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 30, generator=g)
    assert ops.entropy_from_logits(logits.half()).dtype == torch.float32
    assert ops.entropy_from_logits(logits.double()).dtype == torch.float64
    torch.testing.assert_close(
        ops.entropy_from_logits(logits.bfloat16()), ops.entropy_from_logits(logits.bfloat16().float())
    )
    with pytest.raises(ValueError, match="`chunk_size`"):
        ops.entropy_from_logits(logits, chunk_size=0)
    with pytest.raises(ValueError, match="`logits` must be a floating"):
        ops.entropy_from_logits(torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="`logits` contains NaN"):
        ops.entropy_from_logits(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="`temperature`"):
        ops.entropy_from_logits(logits, temperature=-1.0)
