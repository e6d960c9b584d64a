"""Entropy diagnostics against NumPy statistics, hand-counted forks, and a real (tiny) transformers model."""

import numpy as np
import pytest
import torch

from forklab.diagnostics import entropy as E
from forklab.ops import entropy_from_logits


def sample():
    g = torch.Generator().manual_seed(0)
    entropy = torch.rand(5, 8, generator=g, dtype=torch.float64) ** 3 * 2
    mask = torch.arange(8)[None, :] < torch.tensor([8, 3, 6, 1, 7])[:, None]
    return entropy, mask


def test_entropy_stats_match_numpy():
    entropy, mask = sample()
    v = entropy[mask].numpy()
    stats = E.entropy_stats(entropy, mask)
    assert stats["tokens"] == v.size
    assert stats["mean"] == pytest.approx(v.mean())
    for p in (50, 80, 90, 95, 99):
        assert stats[f"p{p}"] == pytest.approx(np.percentile(v, p))
    assert stats["share_above"] == pytest.approx((v > 0.672).mean())
    assert stats["share_below_low"] == pytest.approx((v < 0.07).mean())


def test_per_sequence_and_per_position():
    entropy, mask = sample()
    seq = E.per_sequence_entropy(entropy, mask)
    assert seq["length"].tolist() == [8, 3, 6, 1, 7]
    assert seq["mean"][1] == pytest.approx(entropy[1, :3].mean().item())
    assert seq["median"][0] == pytest.approx(entropy[0].median().item())
    pos = E.per_position_entropy(entropy, mask)
    assert pos["count"].tolist() == [5, 4, 4, 3, 3, 3, 2, 1]
    assert pos["mean"][7] == pytest.approx(entropy[0, 7].item())


def test_forking_tokens_counts_the_top_entropy_tokens():
    entropy = torch.tensor([[0.1, 2.0, 0.1, 1.5], [1.9, 0.05, 0.2, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, True], [True, True, True, False]])
    tokens = torch.tensor([[5, 7, 5, 9], [7, 5, 5, 3]])
    table = E.forking_tokens(entropy, mask, tokens, decode=lambda i: f"t{i}", top_ratio=3 / 7)
    # top 3/7 of 7 valid tokens by quantile: 2.0, 1.9, 1.5 -> token 7 twice, token 9 once
    assert table["text"].tolist() == ["t7", "t9"]
    assert table["count"].tolist() == [2, 1]
    assert table["mean_entropy"][0] == pytest.approx(1.95)


def test_window_entropy_forward_and_trailing():
    entropy = torch.tensor([[1.0, 2.0, 3.0, 4.0, 9.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, True, False]])
    fwd = E.window_entropy(entropy, mask, window=2)
    torch.testing.assert_close(fwd, torch.tensor([[1.5, 2.5, 3.5, 4.0, 0.0]], dtype=torch.float64))
    trail = E.window_entropy(entropy, mask, window=3, direction="trailing")
    torch.testing.assert_close(trail, torch.tensor([[1.0, 1.5, 2.0, 3.0, 0.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="`window`"):
        E.window_entropy(entropy, mask, window=0)


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=23, hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                         tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


def test_layer_entropies_last_row_is_the_models_own_entropy_and_uses_the_final_norm():
    model = tiny_llama()
    ids = torch.randint(0, 23, (2, 7), generator=torch.Generator().manual_seed(1))
    layers = E.layer_entropies(model, ids)
    assert layers.shape == (4, 2, 7)
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
        expected_last = entropy_from_logits(out.logits)
        expected_first = entropy_from_logits(model.lm_head(model.model.norm(out.hidden_states[0])))
    torch.testing.assert_close(layers[-1], expected_last)
    torch.testing.assert_close(layers[0], expected_first)


def test_bad_inputs():
    entropy, mask = sample()
    with pytest.raises(ValueError, match="`mask` is empty"):
        E.entropy_stats(entropy, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="`tokens`"):
        E.forking_tokens(entropy, mask, torch.zeros(2, 2, dtype=torch.long), str)

    class NoNorm(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None, output_hidden_states=True):
            return type("Out", (), {"hidden_states": (torch.zeros(1, 2, 3),)})()

    with pytest.raises(ValueError, match="final norm"):
        E.layer_entropies(NoNorm(), torch.zeros(1, 2, dtype=torch.long))
