"""forklab.lm.sampling against the transformers model it reads: forward pass, generate, teacher forcing."""

import itertools
import math

import pytest
import torch

from forklab.lm import _prefix_tree, sampling
from forklab.ops import entropy_from_logits, logprobs_from_logits

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

VOCAB = 20
STUDENT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256)
TEACHER = dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=6, intermediate_size=768)


def make_model(seed: int = 0, init: float = 0.2, **overrides) -> LlamaForCausalLM:
    """A random tiny Llama; ``init`` (weight std) well above HF's 0.02 so next-token distributions are peaked."""
    kwargs = dict(vocab_size=VOCAB, max_position_embeddings=128, tie_word_embeddings=True, pad_token_id=0,
                  bos_token_id=None, eos_token_id=None, initializer_range=init, **STUDENT)
    kwargs.update(overrides)
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**kwargs)).eval()


def left_padded(lengths, seed: int = 0, width: int | None = None):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.as_tensor(lengths)
    width = width or int(lengths.max())
    mask = torch.arange(width)[None] >= (width - lengths)[:, None]
    ids = torch.randint(1, VOCAB, (len(lengths), width), generator=g)
    return ids.masked_fill(~mask, 0), mask


@pytest.fixture(scope="module")
def model():
    return make_model()


def teacher_forced(model, s: sampling.Samples):
    """Logits / last hidden states that scored each response token, from one plain HF forward pass."""
    out = model(input_ids=s.sequences, attention_mask=s.attention_mask.long(), position_ids=s.position_ids,
                output_hidden_states=True)
    lp, t = s.prompt_ids.shape[1], s.tokens.shape[1]
    return out.logits[:, lp - 1 : lp - 1 + t].float(), out.hidden_states[-1][:, lp - 1 : lp - 1 + t]


# ------------------------------------------------------------------ the fast runner is the model
@pytest.mark.parametrize(
    "overrides",
    [
        {},  # student, tied embeddings
        dict(num_key_value_heads=2, tie_word_embeddings=False, rope_parameters={"rope_type": "default",
                                                                                "rope_theta": 500.0}),  # GQA
        dict(TEACHER, num_key_value_heads=2, attention_bias=True, mlp_bias=True),  # teacher size, biases
    ],
    ids=["student", "gqa-untied-theta500", "teacher-gqa-bias"],
)
@torch.no_grad()
def test_runner_logits_and_hidden_equal_hf_forward(overrides):
    model = make_model(seed=1, **overrides)
    ids, mask = left_padded([3, 7, 1, 7, 5], seed=1)
    logits, hidden = sampling.TinyLlamaRunner(model).forward(ids, mask)
    ref = model(input_ids=ids, attention_mask=mask.long(), position_ids=sampling.position_ids_from_mask(mask),
                output_hidden_states=True)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits[mask], ref.logits[mask], atol=1e-5, rtol=0)
    torch.testing.assert_close(hidden[mask], ref.hidden_states[-1][mask], atol=1e-5, rtol=0)
    # a row's outputs do not depend on how much padding it got
    solo, _ = sampling.TinyLlamaRunner(model).forward(ids[2:3, -1:], mask[2:3, -1:])
    torch.testing.assert_close(solo[0, -1], logits[2, -1], atol=1e-5, rtol=0)


@torch.no_grad()
def test_runner_cached_decoding_equals_full_forward(model):
    ids, mask = left_padded([2, 6, 4], seed=2)
    runner = sampling.TinyLlamaRunner(model)
    runner.allocate(3, 6 + 3)
    z, _ = runner.prefill(ids, mask)
    steps = [z]
    extra = torch.tensor([[3, 4, 5], [6, 7, 8]])
    for col in extra:
        z, _ = runner.step(col)
        steps.append(z)
    full_ids = torch.cat([ids, extra.T], 1)
    full_mask = torch.cat([mask, torch.ones(3, 2, dtype=torch.bool)], 1)
    full, _ = sampling.TinyLlamaRunner(model).forward(full_ids, full_mask)
    torch.testing.assert_close(torch.stack(steps, 1), full[:, -3:], atol=1e-5, rtol=0)


# ------------------------------------------------------------------ greedy = generate
def test_greedy_fast_path_equals_hf_generate_token_for_token(model):
    ids, mask = left_padded([4, 8, 5, 6, 1, 8, 3, 7], seed=3)
    free = sampling.greedy(model, ids, mask, 10, backend="fast")
    stop = int(free.tokens[0, 2])  # a token that some responses emit mid-way
    fast = sampling.greedy(model, ids, mask, 10, stop_token_id=stop, pad_token_id=0, backend="fast")
    ref = model.generate(input_ids=ids, attention_mask=mask.long(), max_new_tokens=10, do_sample=False,
                         eos_token_id=stop, pad_token_id=0)[:, ids.shape[1]:]
    assert torch.equal(fast.tokens, ref)
    assert (~fast.mask).any() and fast.mask[:, 0].all()
    # mask: True up to and including the first stop token, PAD afterwards
    for row, m in zip(fast.tokens, fast.mask, strict=True):
        hits = (row == stop).nonzero().flatten()
        end = int(hits[0]) + 1 if len(hits) else row.numel()
        assert m[:end].all() and not m[end:].any()
        assert (row[end:] == 0).all()
    assert torch.equal(fast.lengths, fast.mask.sum(1))
    via_generate = sampling.greedy(model, ids, mask, 10, stop_token_id=stop, backend="generate")
    for name in ("tokens", "mask", "lengths", "temperatures", "sample_logp"):
        assert torch.equal(getattr(fast, name), getattr(via_generate, name)), name
    torch.testing.assert_close(fast.logp, via_generate.logp, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.entropy, via_generate.entropy, atol=1e-5, rtol=0)


@torch.no_grad()
def test_dropping_finished_rows_changes_nothing(model, monkeypatch):
    ids, mask = left_padded([4, 8, 5, 6, 1, 8, 3, 7] * 2, seed=12)
    stop = int(sampling.greedy(model, ids, mask, 3).tokens[0, 2])
    kw = dict(temperature=0.9, stop_token_id=stop, return_hidden=True)
    dropped = []
    keep_rows = sampling.TinyLlamaRunner.keep_rows

    def spy(self, rows):
        dropped.append(len(rows))
        keep_rows(self, rows)

    monkeypatch.setattr(sampling.TinyLlamaRunner, "keep_rows", spy)
    greedy = sampling.greedy(model, ids, mask, 12, **kw)
    sampled = sampling.sample(model, ids, mask, 12, generator=torch.Generator().manual_seed(0), **kw)
    assert len(dropped) >= 3
    # sampled: statistics still match a teacher-forced pass of what was sampled
    logits, hidden = teacher_forced(model, sampled)
    m = sampled.mask
    assert (~m).any()
    torch.testing.assert_close(sampled.logp[m], logprobs_from_logits(logits, sampled.tokens, 0.9)[m], atol=1e-5,
                               rtol=0)
    torch.testing.assert_close(sampled.hidden[m], hidden[m], atol=1e-5, rtol=0)
    # greedy: identical to decoding without dropping rows
    monkeypatch.setattr(_prefix_tree, "_COMPACT_FRACTION", 2.0)
    full = sampling.greedy(model, ids, mask, 12, **kw)
    assert torch.equal(greedy.tokens, full.tokens) and torch.equal(greedy.mask, full.mask)
    for name in ("logp", "entropy", "hidden"):
        torch.testing.assert_close(getattr(greedy, name), getattr(full, name), atol=1e-5, rtol=0)


# ------------------------------------------------------------------ repeated prompts: one prefill, a prefix tree
def test_unique_prompts_ignores_padding_ids_and_keeps_batch_order():
    ids = torch.tensor([[0, 5, 6], [7, 8, 9], [3, 5, 6], [0, 0, 6], [7, 8, 9]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 1], [0, 1, 1], [0, 0, 1], [1, 1, 1]], dtype=torch.bool)
    unique, inverse = sampling._unique_prompts(ids, mask)
    assert unique.tolist() == [0, 1, 3]  # rows 0 and 2 differ only under the padding
    assert inverse.tolist() == [0, 1, 0, 2, 1]


@torch.no_grad()
def test_repeated_prompts_are_computed_once_with_the_same_samples(model, monkeypatch):
    ids, mask = left_padded([4, 8, 1, 6], seed=14)
    ids, mask = ids.repeat_interleave(8, 0), mask.repeat_interleave(8, 0)  # G = 8 samples of 4 prompts
    computed = []  # rows of each prefill / step call
    prefill, step = sampling.TinyLlamaRunner.prefill, sampling.TinyLlamaRunner.step
    runner = sampling.TinyLlamaRunner
    monkeypatch.setattr(runner, "prefill", lambda r, i, m: computed.append(len(i)) or prefill(r, i, m))
    monkeypatch.setattr(runner, "step", lambda r, tok: computed.append(len(tok)) or step(r, tok))
    kw = dict(temperature=0.5, return_hidden=True)  # peaked: samples of a prompt share prefixes
    tree = sampling.sample(model, ids, mask, 10, generator=torch.Generator().manual_seed(0), **kw)
    tree_rows = computed.copy()
    computed.clear()
    monkeypatch.setattr(sampling.TinyLlamaRunner, "cache_is_small", lambda runner, max_len: False)
    plain = sampling.sample(model, ids, mask, 10, generator=torch.Generator().manual_seed(0), **kw)
    assert computed == [4] + [32] * 9  # prefill once per prompt, then every row at every step
    assert tree_rows[0] == 4 and tree_rows[1] < 32 and max(tree_rows) <= 32 and sum(tree_rows) < sum(computed)
    assert torch.equal(tree.tokens, plain.tokens)  # same random stream, same rows: the same samples
    for name in ("logp", "entropy", "hidden"):
        torch.testing.assert_close(getattr(tree, name), getattr(plain, name), atol=1e-5, rtol=0)


@pytest.mark.parametrize("greedy", [True, False], ids=["greedy", "sampled"])
@torch.no_grad()
def test_repeated_prompts_with_a_stop_token_match_generate_and_teacher_forcing(model, greedy):
    ids, mask = left_padded([4, 8, 5, 1, 6], seed=15)
    ids, mask = ids.repeat(4, 1), mask.repeat(4, 1)  # duplicates far apart in the batch
    stop = int(sampling.greedy(model, ids, mask, 3).tokens[1, 2])
    kw = dict(temperature=0.9, top_p=0.95, stop_token_id=stop, pad_token_id=0, return_hidden=True)
    s = sampling.sample(model, ids, mask, 12, greedy=greedy, generator=torch.Generator().manual_seed(1), **kw)
    m = s.mask
    assert (~m).any() and m[:, 0].all()
    if greedy:
        ref = model.generate(input_ids=ids, attention_mask=mask.long(), max_new_tokens=12, do_sample=False,
                             eos_token_id=stop, pad_token_id=0)[:, ids.shape[1]:]
        assert torch.equal(s.tokens, ref)
    else:
        assert len({tuple(row) for row in s.tokens[::5].tolist()}) > 1  # one prompt's samples diverge
    logits, hidden = teacher_forced(model, s)
    torch.testing.assert_close(s.logp[m], logprobs_from_logits(logits, s.tokens, 0.9)[m], atol=1e-5, rtol=0)
    torch.testing.assert_close(s.entropy[m], entropy_from_logits(logits, 0.9)[m], atol=1e-5, rtol=0)
    torch.testing.assert_close(s.hidden[m], hidden[m], atol=1e-5, rtol=0)


def test_stop_in_every_row_ends_decoding_early(model):
    ids, mask = left_padded([3, 3], seed=4)
    first = sampling.greedy(model, ids, mask, 1).tokens[:, 0]
    ids[1] = ids[0]
    s = sampling.greedy(model, ids, mask, 8, stop_token_id=int(first[0]))
    assert s.tokens.shape == (2, 1) and s.mask.all()


# ------------------------------------------------------------------ sampled statistics = teacher forcing
@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.8)])
@torch.no_grad()
def test_sampled_logp_entropy_hidden_equal_teacher_forced_pass(model, temperature, top_p):
    ids, mask = left_padded([2, 5, 8, 4, 6, 1], seed=5)
    g = torch.Generator().manual_seed(0)
    s = sampling.sample(model, ids, mask, 12, temperature=temperature, top_p=top_p, stop_token_id=7,
                        generator=g, return_hidden=True)
    logits, hidden = teacher_forced(model, s)
    m = s.mask
    torch.testing.assert_close(s.logp[m], logprobs_from_logits(logits, s.tokens, temperature)[m], atol=1e-5, rtol=0)
    torch.testing.assert_close(s.entropy[m], entropy_from_logits(logits, temperature)[m], atol=1e-5, rtol=0)
    torch.testing.assert_close(s.hidden[m], hidden[m], atol=1e-5, rtol=0)
    for name in ("logp", "entropy", "sample_logp", "temperatures"):
        assert (getattr(s, name)[~m] == 0).all(), name
    assert (s.hidden[~m] == 0).all()
    assert (s.temperatures[m] == temperature).all()
    if top_p == 1.0:
        torch.testing.assert_close(s.sample_logp, s.logp)
    else:  # log-prob under the renormalised nucleus, recomputed independently
        p = torch.softmax(logits.double() / temperature, -1)
        sorted_p, order = p.sort(-1, descending=True)
        kept_sorted = sorted_p.cumsum(-1) - sorted_p < top_p
        kept = torch.zeros_like(kept_sorted).scatter(-1, order, kept_sorted)
        nucleus = torch.where(kept, p, 0.0)
        expected = (nucleus / nucleus.sum(-1, keepdim=True)).gather(-1, s.tokens[..., None]).squeeze(-1).log()
        torch.testing.assert_close(s.sample_logp[m].double(), expected[m], atol=1e-5, rtol=0)
        assert (s.sample_logp[m] > s.logp[m] + 1e-4).any()


def test_samples_are_ordinary_tensors_usable_in_a_training_forward_pass(model):
    ids, mask = left_padded([3, 6], seed=13)
    s = sampling.sample(model, ids, mask, 5, generator=torch.Generator().manual_seed(0))
    assert not any(t.is_inference() or t.requires_grad for t in (s.tokens, s.mask, s.logp, s.entropy))
    out = model(input_ids=s.sequences, attention_mask=s.attention_mask.long(), position_ids=s.position_ids)
    logp = logprobs_from_logits(out.logits[:, ids.shape[1] - 1 : -1], s.tokens)
    (-(logp * s.mask).sum()).backward()
    assert model.lm_head.weight.grad is not None
    model.zero_grad(set_to_none=True)


def test_same_generator_seed_same_samples_and_different_seed_different(model):
    ids, mask = left_padded([3, 6, 2, 5] * 4, seed=6)

    def draw(seed):
        return sampling.sample(model, ids, mask, 10, generator=torch.Generator().manual_seed(seed)).tokens

    assert torch.equal(draw(11), draw(11))
    assert not torch.equal(draw(11), draw(12))


# ------------------------------------------------------------------ the sampling distribution
@torch.no_grad()
def first_token_counts(model, n: int, temperature: float, top_p: float = 1.0):
    ids, mask = left_padded([5], seed=7)
    s = sampling.sample(model, ids.expand(n, -1), mask.expand(n, -1), 1, temperature=temperature, top_p=top_p,
                        generator=torch.Generator().manual_seed(3))
    logits = model(input_ids=ids, attention_mask=mask.long()).logits[0, -1].double()
    return torch.bincount(s.tokens[:, 0], minlength=VOCAB).double(), logits


def test_first_token_frequencies_match_softmax_of_logits_over_temperature(model):
    n, temperature = 12_000, 1.5
    counts, logits = first_token_counts(model, n, temperature)
    p = torch.softmax(logits / temperature, -1)
    expected = n * p
    se = (n * p * (1 - p)).sqrt()
    assert ((counts - expected).abs() <= 4 * se + 1).all()
    keep = expected >= 5
    chi2 = float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    df = int(keep.sum()) - 1
    assert chi2 < df + 4 * math.sqrt(2 * df)


def test_inverse_cdf_draw_matches_probabilities_and_never_draws_a_zero():
    probs = torch.tensor([[0.0, 0.1, 0.0, 0.6, 0.3, 0.0], [0.5, 0.0, 0.25, 0.0, 0.0, 0.25]])
    n = 40_000
    tokens = sampling._draw(probs.repeat_interleave(n, 0), torch.Generator().manual_seed(0)).view(2, n)
    for row, p in zip(tokens, probs, strict=True):
        counts = torch.bincount(row, minlength=6).double()
        assert (counts[p == 0] == 0).all()
        expected = n * p.double()
        se = (expected * (1 - p.double())).sqrt()
        assert ((counts - expected).abs() <= 4 * se).all(), (counts, expected)


def test_inverse_cdf_draw_at_the_ends_of_the_uniform(monkeypatch):
    probs = torch.tensor([[0.0, 0.7, 0.3, 0.0]])
    below_one = 1.0 - 2.0**-24  # the largest float32 torch.rand can return
    for u, expected in ((0.0, 1), (below_one, 2)):
        monkeypatch.setattr(torch, "rand", lambda *a, u=u, **k: torch.full(a[0], u, dtype=k.get("dtype")))
        assert sampling._draw(probs, None).tolist() == [expected]
        assert sampling._draw(probs * 3.0, None).tolist() == [expected]  # unnormalised rows too


def test_top_p_restricts_support_to_the_nucleus(model):
    n, top_p = 8_000, 0.6
    counts, logits = first_token_counts(model, n, 1.0, top_p)
    p = torch.softmax(logits, -1)
    order = p.argsort(descending=True)
    before = p[order].cumsum(0) - p[order]
    nucleus = order[before < top_p]
    assert 1 < len(nucleus) < VOCAB
    outside = torch.ones(VOCAB, dtype=torch.bool)
    outside[nucleus] = False
    assert counts[outside].sum() == 0
    q = p[nucleus] / p[nucleus].sum()
    assert ((counts[nucleus] - n * q).abs() <= 4 * (n * q * (1 - q)).sqrt() + 1).all()


# ------------------------------------------------------------------ per-token temperature (HAPO)
def test_token_temperature_fn_sets_the_sampling_temperature_only(model):
    ids, mask = left_padded([4, 2, 7], seed=8)
    calls = []

    def hot(logits, entropy):
        calls.append((logits.shape, entropy.shape))
        return torch.full((logits.shape[0],), 2.0)

    s = sampling.sample(model, ids, mask, 6, temperature=0.9, token_temperature_fn=hot, return_hidden=True,
                        generator=torch.Generator().manual_seed(0))
    assert calls[0] == ((3, VOCAB), (3,))
    logits, _ = teacher_forced(model, s)
    m = s.mask
    assert (s.temperatures[m] == 2.0).all()
    torch.testing.assert_close(s.logp[m], logprobs_from_logits(logits, s.tokens, 0.9)[m], atol=1e-5, rtol=0)
    torch.testing.assert_close(s.sample_logp[m], logprobs_from_logits(logits, s.tokens, 2.0)[m], atol=1e-5, rtol=0)
    via_generate = sampling.sample(model, ids, mask, 6, temperature=0.9, token_temperature_fn=hot,
                                   backend="generate", generator=torch.Generator().manual_seed(0))
    assert (via_generate.temperatures[via_generate.mask] == 2.0).all()
    with pytest.raises(ValueError, match="token_temperature_fn"):
        sampling.sample(model, ids, mask, 2, token_temperature_fn=lambda z, h: -1.0)


def test_hapo_temperature_fn_heats_high_entropy_tokens_within_tau(model):
    ids, mask = left_padded([4, 2, 7, 5] * 4, seed=9)
    first = sampling.sample(model, ids, mask, 8, generator=torch.Generator().manual_seed(0))
    stats = sampling.entropy_stats(first.entropy, first.mask)
    fn = sampling.hapo_temperature_fn(1.0, stats, tau=0.05)
    s = sampling.sample(model, ids, mask, 8, token_temperature_fn=fn, generator=torch.Generator().manual_seed(1))
    t, h = s.temperatures[s.mask], s.entropy[s.mask]
    assert ((t >= 0.95 - 1e-6) & (t <= 1.05 + 1e-6)).all()
    assert t[h.argmax()] > 1.0 > t[h.argmin()]
    assert (torch.diff(t[h.argsort()]) >= -1e-6).all()  # temperature is non-decreasing in entropy


# ------------------------------------------------------------------ the generate backend
def test_generate_backend_returns_the_same_fields_with_finite_entropies(model):
    ids, mask = left_padded([3, 8, 5], seed=10)
    kw = dict(temperature=0.8, top_p=0.7, stop_token_id=7, return_hidden=True)
    fast = sampling.sample(model, ids, mask, 9, backend="fast", generator=torch.Generator().manual_seed(0), **kw)
    gen = sampling.sample(model, ids, mask, 9, backend="generate", generator=torch.Generator().manual_seed(0), **kw)
    again = sampling.sample(model, ids, mask, 9, backend="generate", generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(gen.tokens, again.tokens)
    for s in (fast, gen):
        b, t = s.tokens.shape
        assert b == 3 and 1 <= t <= 9 and s.tokens.dtype == torch.long and s.mask.dtype == torch.bool
        for name in ("mask", "logp", "entropy", "sample_logp", "temperatures"):
            assert getattr(s, name).shape == (b, t), name
        assert s.hidden.shape == (b, t, 64) and s.lengths.shape == (b,)
        assert torch.isfinite(s.entropy).all() and (s.entropy[s.mask] > 0).all()
        assert torch.isfinite(s.sample_logp).all()
    logits, hidden = teacher_forced(model, gen)
    m = gen.mask
    torch.testing.assert_close(gen.logp[m], logprobs_from_logits(logits, gen.tokens, 0.8)[m], atol=1e-5, rtol=0)
    torch.testing.assert_close(gen.hidden[m], hidden[m], atol=1e-5, rtol=0)


def test_generate_backend_ignores_the_checkpoints_generation_defaults():
    model = make_model(seed=2, eos_token_id=2)  # LlamaConfig's default eos; generate would stop there
    model.generation_config.top_k = 1  # and would sample greedily
    model.generation_config.repetition_penalty = 5.0
    ids, mask = left_padded([5, 3, 6, 4] * 8, seed=14)
    fast = sampling.greedy(model, ids, mask, 12, backend="fast")
    assert (fast.tokens[:, :-1] == 2).any()
    gen = sampling.greedy(model, ids, mask, 12, backend="generate")
    assert torch.equal(fast.tokens, gen.tokens) and gen.mask.all()
    s = sampling.sample(model, ids, mask, 12, backend="generate", generator=torch.Generator().manual_seed(0))
    assert not torch.equal(s.tokens, gen.tokens)
    assert model.generation_config.top_k == 1 and model.generation_config.eos_token_id == 2  # restored


def test_auto_backend_uses_generate_for_other_architectures():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=1, n_head=2,
                                      pad_token_id=0)).eval()
    ids, mask = left_padded([2, 4], seed=11)
    s = sampling.sample(gpt2, ids, mask, 5, generator=torch.Generator().manual_seed(0))
    assert s.tokens.shape == (2, 5) and torch.isfinite(s.entropy).all()
    with pytest.raises(ValueError, match="backend"):
        sampling.sample(gpt2, ids, mask, 5, backend="fast")


# ------------------------------------------------------------------ pass@k
def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in sub) for sub in subsets) / len(subsets)


def test_pass_at_k_matches_enumeration_and_is_vectorised():
    cases = [(n, c, k) for n in range(1, 7) for c in range(n + 1) for k in range(1, n + 1)]
    for k in range(1, 7):
        sub = [(n, c) for n, c, kk in cases if kk == k]
        n, c = torch.tensor(sub).T
        got = sampling.pass_at_k(n, c, k)
        expected = torch.tensor([brute_force_pass_at_k(int(a), int(b), k) for a, b in sub], dtype=torch.float64)
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
    assert float(sampling.pass_at_k(200, 3, 1)) == pytest.approx(3 / 200)
    assert float(sampling.pass_at_k(1000, 0, 10)) == 0.0
    with pytest.raises(ValueError, match="num_samples"):
        sampling.pass_at_k(torch.tensor([3]), torch.tensor([1]), 4)
    with pytest.raises(ValueError, match="num_correct"):
        sampling.pass_at_k(torch.tensor([3]), torch.tensor([4]), 1)
    with pytest.raises(ValueError, match="`k`"):
        sampling.pass_at_k(torch.tensor([3]), torch.tensor([1]), 0)


# ------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize(
    "change,name",
    [
        (dict(prompt_ids=torch.zeros(0, 4, dtype=torch.long), prompt_mask=torch.zeros(0, 4, dtype=torch.bool)),
         "prompt_ids"),
        (dict(prompt_mask=torch.ones(2, 3, dtype=torch.bool)), "prompt_mask"),
        (dict(prompt_ids=torch.ones(2, 4)), "prompt_ids"),
        (dict(prompt_ids=torch.full((2, 4), VOCAB)), "prompt_ids"),
        (dict(prompt_mask=torch.tensor([[True, True, False, False], [True] * 4])), "prompt_mask"),
        (dict(prompt_mask=torch.tensor([[False] * 4, [True] * 4])), "prompt_mask"),
        (dict(temperature=0.0), "temperature"),
        (dict(temperature=-1.0), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(stop_token_id=VOCAB), "stop_token_id"),
        (dict(pad_token_id=-1), "pad_token_id"),
        (dict(backend="vllm"), "backend"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_argument(model, change, name):
    kwargs = dict(prompt_ids=torch.ones(2, 4, dtype=torch.long), prompt_mask=torch.ones(2, 4, dtype=torch.bool),
                  max_new_tokens=3)
    kwargs.update(change)
    with pytest.raises(ValueError, match=f"`{name}`"):
        sampling.sample(model, **kwargs)
