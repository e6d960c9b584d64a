"""Notebook 03 §6 experiments: a rare token's growth under fixed and dynamic clips, the stale-batch bandit."""

import pytest
import torch

from forklab.adaptive_clipping import dcpo_clip_bounds
from forklab.lessons import adaptive_clipping as lac
from forklab.lessons import ratios_clipping as rc


def test_rare_token_stops_where_its_clip_binds():
    table = lac.rare_token_growth(q=0.01, lr=0.01).set_index("objective")
    _, high = dcpo_clip_bounds(torch.tensor(0.01, dtype=torch.float64))
    # descent stops at the first step past the bound; one step moves the logit gap by 2·lr·r·(1 − p),
    # so the final ratio lies within a factor exp(2·lr·bound) of the bound
    for name, bound in (("PPO clip (0.2)", 1.2), ("clip-higher (0.2/0.28)", 1.28), ("DCPO (0.2/0.28)", float(high))):
        assert bound < table.loc[name, "final_ratio"] < bound * torch.exp(torch.tensor(2 * 0.01 * bound)).item(), name
    with pytest.raises(ValueError, match="`q`"):
        lac.rare_token_growth(q=1.0)


def test_stale_bandit_rows_and_validation():
    d = lac.stale_bandit("BAPO", steps=3, show_progress=False)
    assert list(d["step"]) == [0, 1, 2, 3] and d["entropy"].iloc[0] > 0
    assert ((d["c_high"].iloc[:-1] >= 1.2) & (d["c_high"].iloc[:-1] <= 2.0)).all()
    with pytest.raises(ValueError, match="`objective`"):
        lac.stale_bandit("PPO")


def test_new_objectives_in_the_weight_curves():
    curves = rc.weight_curves(ratios=[1.2, 2.0, 3.0]).set_index(["objective", "adv", "ratio"])["weight"]
    _, high = dcpo_clip_bounds(torch.tensor(0.05, dtype=torch.float64), 0.2, 0.28)
    assert curves[("DCPO", 1.0, 2.0)] == pytest.approx(2.0) and float(high) < 3.0
    assert curves[("DCPO", 1.0, 3.0)] == 0.0
    assert curves[("ETR (LOW)", 1.0, 1.2)] == pytest.approx(1.2) and curves[("ETR (LOW)", 1.0, 2.0)] == 0.0
    assert curves[("GMPO", 1.0, 1.2)] == pytest.approx(1.2)  # log-space 0.4: e^0.4 = 1.49 > 1.2
