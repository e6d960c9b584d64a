"""The notebook-03 exercise checker: the reference passes, typical wrong answers fail with a useful message."""

import torch

from forklab import surrogates as S
from forklab.exercises import nb03


def correct(logp, old_logp, adv, mask, eps_low, eps_high):
    return S.ppo_clip(logp, old_logp, adv, mask, eps_low, eps_high)  # an independent implementation


def test_the_library_and_the_reference_pass():
    fb = nb03.check_clip_higher(correct)
    assert fb and "5 cases" in str(fb)
    assert nb03.check_clip_higher(nb03._solution_clip_higher)


def test_not_attempted_is_reported_politely():
    def stub(*args):
        raise NotImplementedError

    fb = nb03.check_clip_higher(stub)
    assert not fb and "not attempted yet" in str(fb)


def _wrong(kind):
    def fn(logp, old, adv, mask, eps_low, eps_high):
        a = adv[:, None] if adv.dim() == 1 else adv
        r = torch.exp(logp - old)
        high = eps_low if kind == "symmetric" else eps_high
        if kind == "cispo":  # clips the weight and keeps the gradient
            loss = -r.clamp(1 - eps_low, 1 + eps_high).detach() * a * logp
        elif kind == "detached":
            loss = -torch.minimum(r.detach() * a, r.detach().clamp(1 - eps_low, 1 + high) * a)
        else:
            pick = torch.maximum if kind == "max" else torch.minimum
            loss = -pick(r * a, r.clamp(1 - eps_low, 1 + high) * a)
        return loss if kind == "no-mask" else torch.where(mask, loss, 0.0)
    return fn


def test_typical_mistakes_fail_with_the_case_and_a_hint():
    fb = nb03.check_clip_higher(_wrong("symmetric"))
    assert not fb and "case 1" in str(fb) and "expected" in str(fb) and "hint" in str(fb)
    fb = nb03.check_clip_higher(_wrong("max"))
    assert not fb and "min (not max)" in str(fb)
    fb = nb03.check_clip_higher(_wrong("no-mask"))
    assert not fb and "case 3" in str(fb) and "off the mask" in str(fb)
    fb = nb03.check_clip_higher(_wrong("detached"))
    assert not fb and "gradients differ" in str(fb)
    fb = nb03.check_clip_higher(_wrong("cispo"))
    assert not fb
    fb = nb03.check_clip_higher(lambda *a: torch.zeros(3))
    assert not fb and "shape" in str(fb)


def test_show_solution_prints_only_on_request(capsys):
    nb03.show_solution("clip_higher")
    assert "torch.minimum" in capsys.readouterr().out
