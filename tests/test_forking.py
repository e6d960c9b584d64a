"""forklab.diagnostics.forking against loops written from the formulas, NumPy quantiles, finite differences and
a real (tiny) transformers model; plus the bottom-80% recipe mask."""

import numpy as np
import pytest
import torch
from test_entropy_diagnostics import tiny_llama

from forklab import _recipe
from forklab.diagnostics import forking as F


def sample(seed=0):
    g = torch.Generator().manual_seed(seed)
    entropy = torch.rand(5, 9, generator=g, dtype=torch.float64) ** 3 * 2
    mask = torch.arange(9)[None, :] < torch.tensor([9, 3, 6, 1, 7])[:, None]
    return entropy, mask


def test_bottom_mask_is_below_the_numpy_quantile_and_partitions_the_valid_tokens():
    entropy, mask = sample()
    threshold = np.quantile(entropy[mask].numpy(), 0.8)   # numpy's default is linear interpolation
    expected = mask.numpy() & (entropy.numpy() < threshold)
    bottom = F.entropy_bottom_mask(entropy, mask, 0.2)
    assert np.array_equal(bottom.numpy(), expected)
    from forklab.regularizers import entropy_top_mask
    top = entropy_top_mask(entropy, mask, 0.2)
    assert not (top & bottom).any() and torch.equal(top | bottom, mask)
    assert int(bottom.sum()) == 20  # 26 valid tokens; the 0.8 quantile is the 21st smallest value exactly


def test_high_window_entropy_mask_matches_a_loop():
    entropy, mask = sample(1)
    w = 3
    means = np.zeros(entropy.shape)
    for b in range(entropy.shape[0]):
        n = int(mask[b].sum())
        for t in range(n):
            window = [float(entropy[b, s]) for s in range(t, min(t + w, n))]
            means[b, t] = sum(window) / len(window)
    threshold = np.quantile(means[mask.numpy()], 0.75)
    expected = mask.numpy() & (means >= threshold - 1e-12)
    got = F.high_window_entropy_mask(entropy, mask, window=w, top_ratio=0.25)
    assert np.array_equal(got.numpy(), expected)


def test_hapo_token_temperature_from_the_formula():
    entropy, mask = sample(2)
    entropy = entropy + 0.01
    log_h = np.log(entropy[mask].numpy())
    m = np.quantile(log_h, 0.8)
    sigma = np.sqrt(np.mean((log_h - m) ** 2))
    h = (log_h - m) / sigma
    h_hat = np.where(h > 0, h / h.max(), h / -h.min())
    expected = np.zeros(entropy.shape)
    expected[mask.numpy()] = 0.7 * (1 + 0.1 * h_hat)
    got = F.hapo_token_temperature(entropy, mask, temperature=0.7, tau=0.1)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert got[mask].max() == pytest.approx(0.77) and got[mask].min() == pytest.approx(0.63)


def test_entropy_band_penalty_value_and_gradient():
    entropy, mask = sample(3)
    gate = mask & (entropy > 0.1)
    low, high = 0.4, 1.0
    total, n = 0.0, 0
    for b in range(entropy.shape[0]):
        for t in range(entropy.shape[1]):
            if gate[b, t]:
                h = float(entropy[b, t])
                total += max(low - h, 0) + max(h - high, 0)
                n += 1
    leaf = entropy.clone().requires_grad_(True)
    penalty = F.entropy_band_penalty(leaf, gate, low, high)
    assert float(penalty.detach()) == pytest.approx(total / n, rel=1e-12)
    penalty.backward()
    expected = torch.where(gate & (entropy < low), -1.0 / n, 0.0) + torch.where(gate & (entropy > high), 1.0 / n, 0.0)
    torch.testing.assert_close(leaf.grad, expected.double())
    # finite difference on one token below the band
    b, t = torch.nonzero(gate & (entropy < low))[0].tolist()
    bumped = entropy.clone()
    bumped[b, t] += 1e-6
    fd = (F.entropy_band_penalty(bumped, gate, low, high) - F.entropy_band_penalty(entropy, gate, low, high)) / 1e-6
    assert float(fd) == pytest.approx(-1.0 / n, rel=1e-5)
    assert float(F.entropy_band_penalty(entropy, torch.zeros_like(gate), low, high)) == 0.0


def test_lens_entropy_at_chosen_positions():
    model = tiny_llama()
    ids = torch.randint(0, 23, (2, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    rows, cols = torch.tensor([0, 1, 1]), torch.tensor([6, 0, 3])
    lens = F.lens_entropy(out.hidden_states, model.model.norm, model.lm_head, rows, cols)
    assert lens.shape == (4, 3)

    def numpy_entropy(logits):  # log-sum-exp written out in float64
        z = logits.double().numpy()
        z = z - z.max(-1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
        return -(p * np.log(p)).sum(-1)

    np.testing.assert_allclose(lens[-1].numpy(), numpy_entropy(out.logits[rows, cols]), rtol=1e-5)
    with torch.no_grad():
        mid = model.lm_head(model.model.norm(out.hidden_states[1][rows, cols]))
    np.testing.assert_allclose(lens[1].numpy(), numpy_entropy(mid), rtol=1e-5)
    only = F.lens_entropy(out.hidden_states, model.model.norm, model.lm_head, rows, cols, layers=[1, 3])
    torch.testing.assert_close(only, lens[[1, 3]])


def test_bottom_recipe_keeps_the_complement():
    entropy, mask = sample(4)
    batch = _recipe.Batch(logp=torch.zeros_like(entropy), mask=mask, group=torch.arange(5),
                          rewards=torch.zeros(5), entropy=entropy)
    top, _ = _recipe.Recipe(entropy_top_ratio=0.2).token_mask(batch)
    bottom, _ = _recipe.Recipe(entropy_top_ratio=0.2, entropy_keep="bottom").token_mask(batch)
    assert torch.equal(bottom, F.entropy_bottom_mask(entropy, mask, 0.2))
    assert torch.equal(top | bottom, mask) and not (top & bottom).any()
    with pytest.raises(ValueError, match="entropy_keep"):
        _recipe.Recipe(entropy_keep="middle")


def test_bad_inputs():
    entropy, mask = sample()
    with pytest.raises(ValueError, match="low"):
        F.entropy_band_penalty(entropy, mask, 1.0, 0.5)
    with pytest.raises(ValueError, match="mask"):
        F.entropy_bottom_mask(entropy, mask[:, :3])
    with pytest.raises(ValueError, match="tau"):
        F.hapo_token_temperature(entropy, mask, tau=-1)
    with pytest.raises(ValueError, match="window"):
        F.high_window_entropy_mask(entropy, mask, window=0)
    hidden = (torch.zeros(1, 2, 4),)
    with pytest.raises(ValueError, match="rows"):
        F.lens_entropy(hidden, torch.nn.Identity(), torch.nn.Identity(), torch.tensor([1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="layers"):
        F.lens_entropy(hidden, torch.nn.Identity(), torch.nn.Identity(), torch.tensor([0]), torch.tensor([0]),
                       layers=[3])
