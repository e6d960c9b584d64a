"""Regression tests for issue 15's items 3-18 (items 1-2: tests/test_checkpoints.py; the API-wide
property test: tests/test_public_api_properties.py). One test (or one parametrised group) per item."""

import inspect
import math
import pickle

import pytest
import torch

from forklab import aggregation, divergences, kl, ops, recipes, regularizers, surrogates
from forklab.diagnostics import dynamics, thr, tip
from forklab.diagnostics import entropy as entropy_diag
from forklab.envs import bandit
from forklab.lm import models
from forklab.runs import RunLog

B, T, V = 4, 6, 5


def batch(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 4:] = False
    mask[2, 2:] = False
    logp = -torch.rand(B, T, generator=g, dtype=dtype) * 3
    old = logp + 0.3 * torch.randn(B, T, generator=g, dtype=dtype)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5], dtype=dtype)
    entropy = torch.rand(B, T, generator=g, dtype=dtype) * math.log(V)
    return dict(logp=logp, old_logp=old, adv=adv, mask=mask, entropy=entropy)


# ---------------------------------------------------------------- item 3: KL with -inf in the padding
def test_item3_kl_with_minus_inf_padding_has_finite_gradients():
    b = batch()
    logp = b["logp"].clone()
    logp[~b["mask"]] = -math.inf
    logp.requires_grad_(True)
    clean = b["logp"].clone().requires_grad_(True)
    for x in (logp, clean):
        value = aggregation.aggregate(kl.kl_estimate(x, b["old_logp"], "k3", mask=b["mask"]), b["mask"])
        value.backward()
    assert torch.isfinite(logp.grad).all()
    torch.testing.assert_close(logp.grad, clean.grad, rtol=0, atol=0)
    assert (logp.grad[~b["mask"]] == 0).all()
    with pytest.raises(ValueError, match="`logp` contains inf"):
        kl.kl_estimate(logp.detach(), b["old_logp"])  # without a mask every value counts
    recipe = recipes.get("grpo", kl_coef=0.1)
    lp = logp.detach().clone().requires_grad_(True)
    loss, _ = recipe.loss(recipes.Batch(logp=lp, mask=b["mask"], group=torch.tensor([0, 0, 1, 1]),
                                        old_logp=b["old_logp"], ref_logp=b["old_logp"] - 0.1, adv=b["adv"]))
    loss.backward()
    assert torch.isfinite(lp.grad).all() and (lp.grad[~b["mask"]] == 0).all()


# ---------------------------------------------------------------- item 4: clip settings validated
CLIPPED = [
    (surrogates.ppo_clip, "eps_low"), (surrogates.ppo_clip, "eps_high"), (surrogates.gspo, "eps_low"),
    (surrogates.cispo, "eps_low"), (surrogates.gmpo, "eps_high"), (surrogates.dhpo, "eps_token"),
    (surrogates.dhpo, "eps_seq"), (surrogates.minpro, "eps_low"), (surrogates.hapo_clip, "eps_low"),
    (surrogates.hapo_clip, "eps_high"), (regularizers.clip_cov, "eps_low"), (regularizers.lp_reg, "eps_high"),
]


@pytest.mark.parametrize("fn,arg", CLIPPED, ids=[f"{f.__name__}-{a}" for f, a in CLIPPED])
@pytest.mark.parametrize("bad", [math.nan, -0.1, math.inf, 1e9])
def test_item4_clip_widths_are_validated(fn, arg, bad):
    b = batch()
    kwargs = dict(logp=b["logp"], old_logp=b["old_logp"], adv=b["adv"], mask=b["mask"])
    params = inspect.signature(fn).parameters
    if "entropy" in params:
        kwargs["entropy"] = b["entropy"]
    if "proxy_logp" in params:
        kwargs["proxy_logp"] = b["logp"] - 0.5
    if bad == 1e9 and arg in ("eps_high",):
        pytest.skip("a huge upper width only switches the upper clip off (finite result)")
    with pytest.raises(ValueError, match=f"`{arg}`"):
        fn(**kwargs, **{arg: bad})


# ---------------------------------------------------------------- item 5: STEER below log π_old = -104
def test_item5_steer_is_finite_for_tiny_old_probabilities():
    b = batch(dtype=torch.float32)
    old = b["old_logp"].clone()
    old[1, 1] = -120.0  # 1/π_old overflows fp32 (e^120 > 3.4e38)
    w = regularizers.steer_weights(b["adv"], b["logp"], old, b["entropy"], b["mask"])
    assert torch.isfinite(w).all()
    # the exp variant gives exactly λ_min to the token of largest |Ω|, which is the far-off-policy one
    assert w[1, 1].item() == pytest.approx(0.8) and (w[b["mask"]] >= 0.8 - 1e-6).all()
    omega = dynamics.steer_omega(b["adv"], b["logp"], old, b["entropy"], b["mask"])
    lp, h = float(b["logp"][1, 1]), float(b["entropy"][1, 1])
    expected = -1.0 * math.exp(lp + 120.0) * (1 - math.exp(lp)) * (lp + h)  # plain Python floats
    assert omega[1, 1].item() == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------- item 6: infinite logits
def _logits_with(kind):
    z = torch.randn(2, 3, V, dtype=torch.float64)
    if kind == "row":
        z[0, 1] = -math.inf
    else:
        z[1, 2, 0] = math.inf
    return z


@pytest.mark.parametrize("kind", ["row", "plus"])
def test_item6_infinite_logits_raise(kind):
    z, ok = _logits_with(kind), torch.randn(2, 3, V, dtype=torch.float64)
    mask = torch.ones(2, 3, dtype=torch.bool)
    calls = [lambda: ops.entropy_from_logits(z), lambda: ops.logprobs_from_logits(z, torch.zeros(2, 3).long()),
             lambda: tip.token_axes(z, ok, mask), lambda: tip.token_axes(ok, z, mask),
             lambda: dynamics.entropy_logit_gradient(z), lambda: dynamics.exact_entropy_change(z, ok),
             lambda: dynamics.pg_logit_step(z, ok, 0.1), lambda: dynamics.entropy_discriminator(z)]
    calls += [lambda f=f: f(z, ok) for f in (divergences.forward_kl, divergences.reverse_kl, divergences.jsd,
                                              divergences.total_variation)]
    for call in calls:
        with pytest.raises(ValueError, match="logits"):
            call()
    partial = ok.clone()
    partial[0, 0, :2] = -math.inf  # a filtered (top-k) distribution is fine
    assert torch.isfinite(ops.entropy_from_logits(partial)).all()
    off_mask = z.clone()
    mask[~torch.isfinite(z).all(-1)] = False  # the bad position off the mask is ignored by token_axes
    h, d = tip.token_axes(off_mask, ok, mask)
    assert torch.isfinite(h).all() and torch.isfinite(d).all()


# ---------------------------------------------------------------- item 7: Dr. GRPO and padding width
def test_item7_dr_grpo_loss_does_not_depend_on_padding_width():
    b = batch()
    recipe = recipes.get("dr_grpo", norm_len=16)
    group = torch.tensor([0, 0, 1, 1])

    def loss(width):
        pad = width - T
        f = lambda x, v=0.0: torch.cat([x, torch.full((B, pad), v, dtype=x.dtype)], 1)  # noqa: E731
        return recipe.loss(recipes.Batch(logp=f(b["logp"]), old_logp=f(b["old_logp"]), mask=f(b["mask"], False),
                                         group=group, adv=b["adv"]))[0]

    assert loss(T).item() == pytest.approx(loss(T + 20).item(), rel=1e-12)
    with pytest.raises(ValueError, match="`norm_len`"):
        recipes.get("dr_grpo").loss(recipes.Batch(logp=b["logp"], mask=b["mask"], group=group, adv=b["adv"]))
    model, tokenizer = models.load_tiny("student-addition")
    from forklab.lm.trainer import RLConfig, RLTrainer

    trainer = RLTrainer(model, tokenizer, recipes.get("dr_grpo"), RLConfig(max_new_tokens=6, eval_every=0))
    assert trainer.recipe.norm_len == 6.0  # the generation budget, TRL's max_completion_length


# ---------------------------------------------------------------- item 8: THR inputs
def test_item8_influence_scores_checks_its_inputs():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(B, T, 3, generator=g, dtype=torch.float64)
    logits = torch.randn(B, T, V, generator=g, dtype=torch.float64)
    tokens = torch.randint(0, V, (B, T), generator=g)
    mask, group, correct = batch()["mask"], torch.tensor([0, 0, 1, 1]), torch.tensor([True, False, True, False])
    clean = thr.influence_scores(hidden, logits, tokens, mask, group, correct)
    bad = logits.clone()
    bad[0, 1, 2] = math.nan
    with pytest.raises(ValueError, match="`logits` contains NaN"):
        thr.influence_scores(hidden, bad, tokens, mask, group, correct)
    wrong = tokens.clone()
    wrong[1, 1] = V
    with pytest.raises(ValueError, match="`tokens`"):
        thr.influence_scores(hidden, logits, wrong, mask, group, correct)
    padded_h, padded_z, padded_t = hidden.clone(), logits.clone(), tokens.clone()
    padded_h[~mask], padded_z[~mask], padded_t[~mask] = math.nan, math.inf, 10**6
    torch.testing.assert_close(thr.influence_scores(padded_h, padded_z, padded_t, mask, group, correct), clean,
                               rtol=0, atol=0)


# ---------------------------------------------------------------- item 9: one padding rule everywhere
def _padding_cases():
    b = batch()
    m, lp, old, adv, h = b["mask"], b["logp"], b["old_logp"], b["adv"], b["entropy"]
    return {
        "ops.masked_mean": (ops.masked_mean, dict(x=lp, mask=m)),
        "aggregation.aggregate": (aggregation.aggregate, dict(loss=lp, mask=m)),
        "surrogates.ppo_clip": (surrogates.ppo_clip, dict(logp=lp, old_logp=old, adv=adv, mask=m)),
        "surrogates.gspo": (surrogates.gspo, dict(logp=lp, old_logp=old, adv=adv, mask=m)),
        "surrogates.hapo_clip": (surrogates.hapo_clip, dict(logp=lp, old_logp=old, adv=adv, mask=m, entropy=h)),
        "regularizers.kl_cov": (regularizers.kl_cov, dict(logp=lp, old_logp=old, adv=adv, mask=m)),
        "regularizers.steer_weights": (regularizers.steer_weights,
                                       dict(adv=adv, logp=lp, old_logp=old, entropy=h, mask=m)),
        "regularizers.entropy_top_mask": (regularizers.entropy_top_mask, dict(entropy=h, mask=m)),
        "kl.kl_estimate": (kl.kl_estimate, dict(logp=lp, ref_logp=old, mask=m)),
        "diagnostics.entropy.window_entropy": (entropy_diag.window_entropy, dict(entropy=h, mask=m)),
        "diagnostics.tip.soft_or_score": (tip.soft_or_score, dict(entropy=h, divergence=lp.abs(), mask=m)),
    }


@pytest.mark.parametrize("name", sorted(_padding_cases()))
@pytest.mark.parametrize("garbage", [math.nan, math.inf, -math.inf])
def test_item9_padding_is_ignored_and_the_mask_is_checked(name, garbage):
    fn, kwargs = _padding_cases()[name]
    mask = kwargs["mask"]
    clean = fn(**kwargs)
    dirty = {k: (torch.where(mask, v, torch.full_like(v, garbage)) if k != "mask" and torch.is_tensor(v)
                 and v.shape == mask.shape else v) for k, v in kwargs.items()}
    torch.testing.assert_close(fn(**dirty), clean, rtol=0, atol=0)
    victim = next(k for k, v in kwargs.items() if k != "mask" and torch.is_tensor(v) and v.shape == mask.shape)
    on_mask = dict(kwargs, **{victim: kwargs[victim].clone()})
    on_mask[victim][0, 0] = garbage
    with pytest.raises(ValueError, match=f"`{victim}` contains (NaN|inf) inside `mask`"):
        fn(**on_mask)


def test_item9_recipe_loss_ignores_nan_padding():
    b = batch()
    group = torch.tensor([0, 0, 1, 1])
    clean = recipes.get("steer").loss(recipes.Batch(logp=b["logp"], old_logp=b["old_logp"], mask=b["mask"],
                                                    group=group, adv=b["adv"], entropy=b["entropy"]))[0]
    dirty = {k: torch.where(b["mask"], b[k], torch.full_like(b[k], math.nan)) for k in ("logp", "old_logp", "entropy")}
    value = recipes.get("steer").loss(recipes.Batch(mask=b["mask"], group=group, adv=b["adv"], **dirty))[0]
    assert value.item() == clean.item()


# ---------------------------------------------------------------- item 10: Recipe.loss validates the Batch
def test_item10_recipe_loss_validates_the_batch():
    b = batch()
    group = torch.tensor([0, 0, 1, 1])
    recipe = recipes.get("forking20")

    def run(**changes):
        fields = dict(logp=b["logp"], old_logp=b["old_logp"], mask=b["mask"], group=group, adv=b["adv"],
                      entropy=b["entropy"]) | changes
        return recipe.loss(recipes.Batch(**fields))

    with pytest.raises(ValueError, match="`entropy`"):
        run(entropy=b["entropy"] > 0.5)  # wrong dtype
    with pytest.raises(ValueError, match="`entropy`"):
        run(entropy=b["entropy"][:, :3])  # wrong shape
    with pytest.raises(ValueError, match="`entropy` contains NaN inside `mask`"):
        run(entropy=torch.where(b["mask"], math.nan, b["entropy"]))
    loss_list, _ = run(mask=b["mask"].tolist())  # a list mask works like the tensor
    assert loss_list.item() == run()[0].item()


# ---------------------------------------------------------------- item 11: lp_reg with a non-contiguous mask
def test_item11_lp_reg_accepts_a_non_contiguous_mask():
    b = batch()
    mask_t = b["mask"].T.contiguous().T
    assert not mask_t.is_contiguous()
    args = (b["logp"], b["old_logp"], torch.tensor([-1.0, -1.0, 0.5, -0.5], dtype=torch.float64))
    proxy = b["logp"] + 0.5
    expected = regularizers.lp_reg(*args, b["mask"], proxy, neg_ratio=0.3)
    torch.testing.assert_close(regularizers.lp_reg(*args, mask_t, proxy, neg_ratio=0.3), expected, rtol=0, atol=0)


# ---------------------------------------------------------------- item 12: ratio and size arguments
@pytest.mark.parametrize("bad", [1.5, math.inf, math.nan, -0.1])
def test_item12_ratios_and_sizes_are_validated(bad):
    b = batch()
    z = torch.randn(2, 3, V)
    with pytest.raises(ValueError, match="`kl_ratio`"):
        regularizers.kl_cov(b["logp"], b["old_logp"], b["adv"], b["mask"], kl_ratio=bad)
    with pytest.raises(ValueError, match="`clip_ratio`"):
        regularizers.clip_cov(b["logp"], b["old_logp"], b["adv"], b["mask"], clip_ratio=bad)
    with pytest.raises(ValueError, match="`chunk_size`"):
        ops.entropy_from_logits(z, chunk_size=bad)
    with pytest.raises(ValueError, match="`top_k`"):
        divergences.forward_kl(z, z, top_k=bad)
    with pytest.raises(ValueError, match="`window`"):
        entropy_diag.window_entropy(b["entropy"], b["mask"], window=bad)


# ---------------------------------------------------------------- item 13: ratio_metrics validates
def test_item13_ratio_metrics_validates():
    b = batch()
    ratio = b["logp"].exp()
    with pytest.raises(ValueError, match="`ratio` contains NaN inside `mask`"):
        surrogates.ratio_metrics(torch.where(b["mask"], math.nan, ratio), b["adv"], b["mask"])
    with pytest.raises(ValueError, match="`mask`"):
        surrogates.ratio_metrics(ratio, b["adv"], b["mask"][:, :2])
    with pytest.raises(ValueError, match="`eps_low`"):
        surrogates.ratio_metrics(ratio, b["adv"], b["mask"], eps_low=math.nan)
    with pytest.raises(ValueError, match="`mask` is empty"):
        surrogates.ratio_metrics(ratio, b["adv"], torch.zeros_like(b["mask"]))


# ---------------------------------------------------------------- item 14: clip_cov without the global RNG
def test_item14_clip_cov_recipe_is_deterministic_and_leaves_the_global_rng_alone():
    g = torch.Generator().manual_seed(1)
    logp = -torch.rand(8, 30, generator=g, dtype=torch.float64) * 4
    mask = torch.ones(8, 30, dtype=torch.bool)
    adv = torch.randn(8, generator=g, dtype=torch.float64) * 3
    recipe = recipes.get("clip_cov", surrogate_kwargs={"clip_ratio": 0.05, "cov_lb": -10.0, "cov_ub": 10.0,
                                                        "eps_low": 1.0, "eps_high": 1.0})
    b = recipes.Batch(logp=logp, old_logp=logp, mask=mask, group=torch.arange(8) // 2, adv=adv)
    state = torch.get_rng_state()
    first, second = recipe.loss(b)[0].item(), recipe.loss(b)[0].item()
    assert first == second
    assert torch.equal(torch.get_rng_state(), state)
    losses = {recipe.loss(b, generator=torch.Generator().manual_seed(s))[0].item() for s in range(5)}
    assert len(losses) > 1  # the generator does drive the choice of zeroed tokens


# ---------------------------------------------------------------- item 15: loading models
def test_item15_load_tiny_takes_names_not_paths():
    for name in ("../data/models/student-addition", str(models.data_dir() / "models" / "student-addition"),
                 "student-addition/../student-addition"):
        with pytest.raises(ValueError, match="`name`"):
            models.load_tiny(name)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_item15_load_real_never_unpickles(tmp_path):
    import transformers

    folder = tmp_path / "pickled"
    folder.mkdir()
    transformers.LlamaConfig(vocab_size=8, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                             num_attention_heads=1).save_pretrained(folder)
    marker = tmp_path / "unpickled"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises((ValueError, OSError)):
        models.load_real(str(folder))
    assert not marker.exists()


# ---------------------------------------------------------------- item 17: RunLog steps
def test_item17_runlog_rejects_bad_steps(tmp_path):
    log = RunLog(tmp_path / "log.csv")
    log.append(1, {"reward": 0.5})
    for step, metrics, match in [(2, {"step": 3.0}, "named `step`"), (1, {}, "must increase"),
                                 (0, {}, "must increase"), (2.5, {}, "integer"), (True, {}, "integer")]:
        with pytest.raises(ValueError, match=match):
            log.append(step, metrics)
    log.append(2.0, {"reward": 0.25})
    assert [r["step"] for r in log.rows] == [1, 2]


# ---------------------------------------------------------------- item 18: bandit and meta tensors
def test_item18_bandit_probabilities_and_meta_tensors():
    with pytest.raises(ValueError, match="`success_prob`"):
        bandit.pass_at_k(torch.tensor([0.5, 1.5]), 4)
    assert bandit.pass_at_k(torch.tensor([0.5]), 2).item() == 0.75
    with pytest.raises(ValueError, match="`probs`"):
        bandit.policy_gradient(torch.tensor([[0.5, 0.7]]), torch.tensor([[1.0, 0.0]]))
    b = batch()
    meta = b["logp"].to("meta")
    for call in (lambda: ops.masked_sum(meta, b["mask"]), lambda: surrogates.ppo_clip(meta, b["old_logp"],
                                                                                        b["adv"], b["mask"]),
                 lambda: kl.kl_estimate(meta, b["old_logp"]), lambda: entropy_diag.entropy_stats(meta, b["mask"])):
        with pytest.raises(ValueError, match="meta device"):
            call()


# ---------------------------------------------------------------- item 16: sampling past the position limit
def test_item16_sample_refuses_tokens_beyond_the_position_limit():
    from forklab.lm import sampling

    model, tokenizer = models.load_tiny("student-addition")
    limit = model.config.max_position_embeddings
    ids, mask = tokenizer.batch_encode(["12+13="], pad_side="left")
    prompt = int(mask.sum())
    for too_many in (limit - prompt + 1, 10_000):
        with pytest.raises(ValueError, match="`max_new_tokens`.*max_position_embeddings"):
            sampling.sample(model, ids, mask, too_many, generator=torch.Generator().manual_seed(0))
    out = sampling.sample(model, ids, mask, limit - prompt, greedy=True)  # exactly fills the positions
    assert out.tokens.shape[1] <= limit - prompt
