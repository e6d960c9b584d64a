"""Property test over the whole public API: hostile inputs give finite results or a ValueError naming the argument.

Every public function (``__all__`` of the modules in ``MODULES`` and of every ``forklab.diagnostics``
module) is called with generated arguments: good and bad shapes, dtypes, empty and all-masked rows,
NaN and ±inf inside and outside the mask, extreme logits, meta-device tensors and bad hyper-parameters.
The contract (docs/reliability.md): the call either returns finite values (tensors of a shape derived
from the inputs) or raises ``ValueError`` whose message names one of its arguments in backticks; never
another exception type, never NaN, never a modified input. Off-mask values are ignored (padding may
hold NaN/inf); NaN/inf on the mask is an error.

Arguments are generated from their *names* (``ROLES``). A public function with a parameter that no
role, scalar table or default covers makes ``test_every_public_parameter_can_be_generated`` fail and
name it: extend the tables below when you add one.
"""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
import re
from dataclasses import fields, is_dataclass

import hypothesis.strategies as st
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings

import forklab.diagnostics
from forklab import recipes

MODULES = ["ops", "advantages", "surrogates", "aggregation", "kl", "divergences", "regularizers", "recipes",
           "fdivergences", "alignment", "adaptive_clipping", "distill.objectives", "distill.reward_aware",
           "distill.weighting", "distill.selection", "distill.tsd_kd"] + [
    f"diagnostics.{m.name}" for m in pkgutil.iter_modules(forklab.diagnostics.__path__)]

#: Functions the generic generator cannot call, with the test that covers them instead.
NOT_GENERATED = {
    "layer_entropies": "needs a model; tests/test_entropy_diagnostics.py",
    "lens_entropy": "needs a model's hidden states, norm and head; tests/test_forking.py",
    "get_estimator": "takes a name or a callable, returns a callable; tests/test_advantages.py",
    "get": "a preset by name; every preset's Recipe.loss is fuzzed in test_every_preset_loss_holds_the_contract",
    "select_tokens": "dispatches by `rule` to the select_* functions fuzzed here",
    "objective": "a registry decorator (takes a name, returns a decorator); tests/test_registry.py",
    "advantage_estimator": "a registry decorator; tests/test_registry.py",
    "aggregation_mode": "a registry decorator; tests/test_registry.py",
    "names": "lists a registry kind by name; tests/test_registry.py",
    "registered": "lists a registry kind by name; tests/test_registry.py",
}

#: Results that may hold +inf by documented design.
DOCUMENTED_INF = {
    "nthr_threshold": "τ = +inf marks groups with no correct response",
    "token_hidden_reward": "its THRResult.tau, as nthr_threshold",
}
#: Results that may hold NaN by documented design (pandas' missing value in a table).
DOCUMENTED_NAN = {
    "per_sequence_entropy": "mean/median of a response with no valid token",
    "displacement_summary": "its statistics when no group holds both a correct and a wrong response",
}

B, T, V, D = 4, 5, 7, 3

# name -> (kind, shape): kinds: float / mask / group / long-ids / bool-rows; shapes in terms of B, T, V, D
ROLES = {
    "logp": ("logp", "BT"), "old_logp": ("logp", "BT"), "ref_logp": ("logp", "BT"), "proxy_logp": ("logp", "BT"),
    "x": ("float", "BT"), "loss": ("float", "BT"), "entropy": ("entropy", "BT"), "influence": ("float", "BT"),
    "adv": ("float", "B|BT"), "mask": ("mask", "BT"), "group": ("group", "B"), "rewards": ("reward", "B"),
    "correct": ("bool", "B"), "pass_rate": ("prob", "B"), "tau": ("float", "B"), "lengths": ("length", "B"),
    "seq_entropy": ("entropy", "B"), "logits": ("logits", "BTV"), "student_logits": ("logits", "BTV"),
    "teacher_logits": ("logits", "BTV"), "delta_logits": ("float", "BTV"), "tokens": ("tokens", "BT"),
    "hidden": ("float", "BTD"), "coef": ("float", "BT"), "weights": ("float", "K"), "H": ("entropy", "B"),
    "R": ("float", "B"),
    "probs": ("dist", "V"), "ref_probs": ("dist", "V"), "target": ("dist", "V"), "p": ("dist", "V"),
    "q": ("dist", "V"), "target_logp": ("logp", "BT"), "t": ("ratio", "B"),
    "old_prob": ("prob", "BT"), "group_std": ("float", "B"), "new_logp": ("logp", "BT"), "delta": ("float", "B"),
    "gate": ("mask", "BT"),
    "student_logp": ("logp", "BT"), "teacher_logp": ("logp", "BT"), "ref_logits": ("logits", "BTV"),
    "overlap": ("prob", "BT"), "entropy_scale": ("entropy", "BT"), "rank_scale": ("entropy", "BT"),
}
#: (module, name) -> role where a name means something else in one module.
ROLE_OVERRIDES = {
    ("diagnostics.dynamics", "adv"): ("float", "BTV"),
    ("diagnostics.tip", "divergence"): ("entropy", "BT"),
    ("surrogates", "ratio"): ("ratio", "BT"),
    ("adaptive_clipping", "ratio"): ("ratio", "BT"),
    ("advantages", "rewards"): ("reward", "B|BK"),
    ("alignment", "rewards"): ("float", "V"),
    ("distill.weighting", "correct"): ("bool", "B|BT"), ("distill.reward_aware", "correct"): ("bool", "B|BT"),
}
#: Required scalar hyper-parameters: good values first, then bad ones.
SCALARS = {
    "lr": [0.1, 1.0, 0.0, -1.0, math.nan, math.inf], "p": [0.5, 0.0, 1.0, -0.1, 1.5, math.nan],
    "ratio": [0.2, 1.0, 0.0, -0.5, 1.5, math.nan], "max_len": [8, 0, -1], "buffer": [2, 0, 100],
    "rule": ["entropy_top", "bogus"], "beta": [0.5, 2.0, 0.0, -1.0, math.nan, math.inf],
    "n": [1, 4, 0, -1, 2.5], "kl_target": [0.1, 0.0, -1.0, math.nan], "tau": [0.5, 0.0, -1.0, math.inf],
    "f": ["reverse_kl", "forward_kl", "bogus"],
    "step": [0, 5, 50, -1, 2.5], "total_steps": [10, 1, 0, -3],
    "low": [0.5, 0.0, -1.0, math.nan], "high": [1.0, 2.0, math.nan, math.inf],
}
#: No shrinking: a failing example is printed as drawn, and a failure costs no extra minutes.
PHASES = [Phase.explicit, Phase.generate]
BAD_FLOATS = [math.nan, math.inf, -math.inf, -1.0, 0.0, 1e9, -1e9]
BAD_INTS = [0, -1, 10**9, 2.5, math.nan]


def public_functions():
    out = []
    for m in MODULES:
        module = importlib.import_module(f"forklab.{m}")
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj) and name not in NOT_GENERATED:
                out.append((m, name, obj))
    return out


FUNCTIONS = public_functions()


def role(module: str, name: str, annotation=inspect.Parameter.empty):
    """The tensor role of a parameter, or None for a scalar (annotated without ``Tensor``)."""
    if annotation is not inspect.Parameter.empty and "Tensor" not in str(annotation):
        return None
    return ROLE_OVERRIDES.get((module, name), ROLES.get(name))


def test_every_public_parameter_can_be_generated():
    missing = []
    for module, name, fn in FUNCTIONS:
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or role(module, p.name, p.annotation) \
                    or p.name in SCALARS:
                continue
            if p.default is inspect.Parameter.empty or p.name in ("result", "decode"):
                if p.name not in ("result", "decode"):
                    missing.append(f"{module}.{name}({p.name})")
    assert not missing, f"extend ROLES/SCALARS in {__file__} for: {missing}"
    assert len(FUNCTIONS) > 60


# ----------------------------------------------------------------------------- generators
def _shape(spec: str, dims: dict) -> list[int]:
    return [dims[c] for c in spec]


@st.composite
def tensors(draw, kind: str, spec: str, dims: dict, mask: torch.Tensor | None):
    spec = draw(st.sampled_from(spec.split("|")))
    shape = _shape(spec, dims)
    if draw(st.integers(0, 19)) == 0:  # a bad shape
        shape = draw(st.sampled_from([shape[:-1], shape + [2], [max(s + 1, 1) for s in shape], []]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.float32]))
    if kind == "mask":
        style = draw(st.sampled_from(["random", "random", "all", "row-empty", "none"]))
        m = torch.rand(shape, generator=g) < 0.7
        if style == "all":
            m = torch.ones(shape, dtype=torch.bool)
        elif style == "none":
            m = torch.zeros(shape, dtype=torch.bool)
        elif style == "row-empty" and m.dim() == 2 and m.shape[0]:
            m[0] = False
        if m.dim() == 2 and m.shape[1] and style == "random":
            m[:, 0] = True  # left-aligned responses, mostly non-empty
        if draw(st.integers(0, 9)) == 0:
            m = m.T.contiguous().T if m.dim() == 2 else m  # non-contiguous
            m = m.t() if m.dim() == 2 and m.shape[0] == m.shape[1] else m
        if draw(st.integers(0, 14)) == 0:
            m = m.float()  # a wrong dtype
        return m
    if kind == "group":
        ids = torch.arange(shape[0] if shape else 1) // 2 if shape else torch.tensor(0)
        return ids if draw(st.integers(0, 9)) else ids.float()
    if kind == "bool":
        return torch.rand(shape, generator=g) < 0.5
    if kind == "tokens":
        ids = torch.randint(0, dims["V"], shape, generator=g)
        if draw(st.integers(0, 9)) == 0 and ids.numel():
            ids.view(-1)[0] = draw(st.sampled_from([-1, dims["V"], 10**6]))
        return ids
    base = {
        "logp": lambda: -torch.rand(shape, generator=g, dtype=torch.float64) * 8,
        "entropy": lambda: torch.rand(shape, generator=g, dtype=torch.float64) * math.log(dims["V"]),
        "reward": lambda: (torch.rand(shape, generator=g, dtype=torch.float64) < 0.5).double(),
        "prob": lambda: torch.rand(shape, generator=g, dtype=torch.float64),
        "length": lambda: torch.randint(1, 9, shape, generator=g).double(),
        "ratio": lambda: torch.rand(shape, generator=g, dtype=torch.float64) * 2,
        "dist": lambda: torch.softmax(torch.randn(shape, generator=g, dtype=torch.float64) * 2, -1)
        if shape else torch.tensor(1.0, dtype=torch.float64),
        "logits": lambda: torch.randn(shape, generator=g, dtype=torch.float64) * 3,
        "float": lambda: torch.randn(shape, generator=g, dtype=torch.float64),
    }[kind]()
    if kind == "logits" and draw(st.integers(0, 4)) == 0 and base.numel():
        extreme = draw(st.sampled_from(["big", "neg-inf", "row-neg-inf", "pos-inf"]))
        flat = base.view(-1, base.shape[-1]) if base.dim() else base.view(1, 1)
        if extreme == "big":
            flat[0] = torch.tensor([1e30, -1e30] * flat.shape[1], dtype=base.dtype)[: flat.shape[1]]
        elif extreme == "neg-inf":
            flat[:, 0] = -math.inf
        elif extreme == "row-neg-inf":
            flat[-1] = -math.inf
        else:
            flat[0, -1] = math.inf
    if base.numel() and draw(st.integers(0, 4)) == 0:
        value = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        base.view(-1)[draw(st.integers(0, base.numel() - 1))] = value
    x = base.to(dtype)
    if draw(st.integers(0, 29)) == 0:
        x = x.long() if kind != "logits" else x.to(torch.bool)  # a wrong dtype
    return x


@st.composite
def arguments(draw, module: str, fn):
    dims = {"B": B, "T": T, "V": V, "D": D, "K": 2}
    if draw(st.integers(0, 14)) == 0:
        dims[draw(st.sampled_from(["B", "T"]))] = 0  # empty batch or zero-length responses
    kwargs = {}
    params = inspect.signature(fn).parameters.values()
    mask = None
    for p in params:
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        r = role(module, p.name, p.annotation)
        optional_tensor = p.default is None and r is not None
        if r is not None and not (optional_tensor and draw(st.booleans())):
            kwargs[p.name] = draw(tensors(*r, dims, mask))
            if p.name == "mask":
                mask = kwargs[p.name]
        elif p.name == "result":
            from forklab.diagnostics import thr

            kwargs[p.name] = thr.THRResult(thr=torch.randn(B, T).double(), influence=torch.randn(B, T).double(),
                                           tau=torch.rand(B).double())
        elif p.name == "decode":
            kwargs[p.name] = str
        elif p.name == "generator":
            kwargs[p.name] = torch.Generator().manual_seed(0)
        elif p.name in SCALARS:
            kwargs[p.name] = draw(st.sampled_from(SCALARS[p.name]))
        elif p.default is not inspect.Parameter.empty and draw(st.integers(0, 3)) == 0:
            d = p.default
            if isinstance(d, bool) or d is None and "bool" in str(p.annotation):
                kwargs[p.name] = draw(st.booleans())
            elif isinstance(d, int) or "int" in str(p.annotation):
                kwargs[p.name] = draw(st.sampled_from(BAD_INTS))
            elif isinstance(d, float) or "float" in str(p.annotation):
                kwargs[p.name] = draw(st.sampled_from(BAD_FLOATS))
            elif isinstance(d, str):
                kwargs[p.name] = "bogus"
    if kwargs and draw(st.integers(0, 29)) == 0:  # a meta-device tensor
        name = draw(st.sampled_from(sorted(k for k, v in kwargs.items() if isinstance(v, torch.Tensor)) or [None]))
        if name is not None:
            kwargs[name] = kwargs[name].to("meta")
    return kwargs


# ----------------------------------------------------------------------------- the contract
def _snapshot(kwargs):
    return {k: v.clone() for k, v in kwargs.items() if isinstance(v, torch.Tensor) and v.device.type != "meta"}


def _assert_unchanged(before, kwargs, where):
    for k, v in before.items():
        assert v.dtype == kwargs[k].dtype and v.shape == kwargs[k].shape, f"{where} changed `{k}`"
        assert torch.equal(torch.nan_to_num(v.double(), nan=7.25), torch.nan_to_num(kwargs[k].double(), nan=7.25)) \
            and torch.equal(v.isnan(), kwargs[k].isnan()), f"{where} modified its input `{k}`"


def _walk(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (float, int)) and not isinstance(value, bool):
        yield torch.tensor(float(value))
    elif isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _walk(v)
    elif is_dataclass(value):
        for f in fields(value):
            yield from _walk(getattr(value, f.name))
    elif isinstance(value, pd.DataFrame):
        yield from _walk(value.select_dtypes("number").to_numpy().tolist())


def _assert_finite(result, where, allow_inf=False, allow_nan=False):
    for t in _walk(result):
        if t.is_floating_point():
            assert allow_nan or not t.isnan().any(), f"{where} returned NaN"
            t = t.nan_to_num(nan=0.0, posinf=math.inf, neginf=-math.inf)
            assert allow_inf or t.isfinite().all(), f"{where} returned inf"


def _assert_shape(result, kwargs, where):
    shapes = {tuple(v.shape) for v in kwargs.values() if isinstance(v, torch.Tensor)}
    allowed = {s[:i] for s in shapes for i in range(len(s) + 1)} | {(len(s) and s[-1],) for s in shapes}
    for t in _walk(result):
        assert t.dim() <= 1 or tuple(t.shape) in allowed, f"{where} returned shape {list(t.shape)}"


def check_call(fn, kwargs, where, names, allow_inf=False, allow_nan=False):
    before = _snapshot(kwargs)
    try:
        result = fn(**kwargs)
    except ValueError as err:
        message = str(err)
        assert any(f"`{n}" in message or f"'{n}'" in message for n in names), \
            f"{where}: ValueError names no argument: {message!r}"
        result = None
    except Exception as err:  # noqa: BLE001 - the contract is about the exception type
        raise AssertionError(f"{where} raised {type(err).__name__}: {err}") from err
    _assert_unchanged(before, kwargs, where)
    if result is not None:
        _assert_finite(result, where, allow_inf, allow_nan)
        _assert_shape(result, kwargs, where)
    return result


@pytest.mark.parametrize("module,name,fn", FUNCTIONS, ids=[f"{m}.{n}" for m, n, _ in FUNCTIONS])
def test_public_function_holds_the_contract(module, name, fn):
    names = list(inspect.signature(fn).parameters)

    @settings(max_examples=12, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=PHASES)
    @given(arguments(module, fn))
    def run(kwargs):
        shown = {k: (list(v.shape), str(v.dtype)) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        check_call(fn, kwargs, f"{module}.{name}({shown})", names, allow_inf=name in DOCUMENTED_INF,
                   allow_nan=name in DOCUMENTED_NAN)

    run()


BATCH_FIELDS = [f.name for f in fields(recipes.Batch)]


@pytest.mark.parametrize("preset", sorted(recipes.PRESETS))
def test_every_preset_loss_holds_the_contract(preset):
    recipe = recipes.get(preset)
    if recipe.aggregation == "seq-mean-token-sum-norm" and recipe.norm_len is None:
        recipe = recipe.replace(norm_len=float(T))  # what RLTrainer does (config.max_new_tokens)
    if recipe.kl_coef == 0:
        recipe = recipe.replace(kl_coef=0.05, entropy_coef=0.01)
    names = BATCH_FIELDS + ["batch", "mask"]

    @settings(max_examples=10, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=PHASES)
    @given(st.data())
    def run(data):
        dims = {"B": B, "T": T, "V": V, "D": D, "K": 2}
        batch = {"mask": data.draw(tensors("mask", "BT", dims, None))}
        for name in BATCH_FIELDS:
            if name == "mask" or name == "adv" or (name not in ("logp", "group", "rewards") and
                                                   data.draw(st.integers(0, 9)) == 0):
                continue
            batch[name] = data.draw(tensors(*ROLES[name], dims, batch["mask"]))
        if "logp" in batch and batch["logp"].is_floating_point():
            batch["logp"] = batch["logp"].clone().requires_grad_(True)
        if data.draw(st.integers(0, 14)) == 0:
            batch["mask"] = batch["mask"].tolist()
        b = recipes.Batch(**batch)

        def loss(**_):
            value, metrics = recipe.loss(b)
            value.backward()
            assert b.logp.grad is None or not b.logp.grad.isnan().any(), f"{preset}: NaN gradient"
            return value, metrics

        check_call(loss, {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}, f"recipe {preset}",
                   names)

    run()


def test_the_error_message_check_is_strict():
    with pytest.raises(AssertionError, match="names no argument"):
        check_call(lambda x: (_ for _ in ()).throw(ValueError("bad")), {"x": torch.zeros(1)}, "f", ["x"])
    with pytest.raises(AssertionError, match="raised RuntimeError"):
        check_call(lambda x: x.view(-1, 5), {"x": torch.zeros(3)}, "f", ["x"])
    with pytest.raises(AssertionError, match="returned NaN"):
        check_call(lambda x: x / x, {"x": torch.zeros(3)}, "f", ["x"])
    with pytest.raises(AssertionError, match="modified its input"):
        check_call(lambda x: x.add_(1), {"x": torch.zeros(3)}, "f", ["x"])
    assert re.escape("`x`")
