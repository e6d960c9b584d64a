"""Run logs: atomic rewrite, union of columns, resume and truncate, bad metrics rejected."""

import math
import os

import pytest

from forklab.runs import RunLog, load_run


def test_append_reload_union_of_columns(tmp_path):
    log = RunLog(tmp_path / "run.csv")
    log.append(0, {"reward": 0.25, "entropy": 1.5})
    log.append(1, {"reward": 0.5, "kl": 0.01})
    df = load_run(tmp_path / "run.csv")
    assert list(df.columns) == ["step", "entropy", "kl", "reward"]
    assert df["reward"].tolist() == [0.25, 0.5]
    assert math.isnan(df["kl"][0]) and df["kl"][1] == 0.01
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # no temp file left behind


def test_resume_truncate_and_refuse_overwrite(tmp_path):
    path = tmp_path / "run.csv"
    log = RunLog(path)
    for step in range(5):
        log.append(step, {"loss": float(step)})
    with pytest.raises(ValueError, match="exists"):
        RunLog(path)
    resumed = RunLog(path, resume=True)
    resumed.truncate(2)
    resumed.append(3, {"loss": 30.0})
    assert load_run(path)["loss"].tolist() == [0.0, 1.0, 2.0, 30.0]


def test_nan_metric_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="metric `loss` is nan"):
        RunLog(tmp_path / "r.csv").append(0, {"loss": float("nan")})
