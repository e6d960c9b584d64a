"""Crash-safe, strict trainer checkpoints (issue items 1 and 2) and the SIGKILL test."""

import json
import multiprocessing
import os
import random
import signal
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from forklab import recipes
from forklab.lm import checkpoint_io, models
from forklab.lm.trainer import RLConfig, RLTrainer

sys.path.insert(0, str(Path(__file__).parent))
import kill_worker  # noqa: E402

CONFIG = dict(prompts_per_step=2, group_size=2, max_new_tokens=6, eval_every=0, train_size=32, eval_size=4,
              lr=1e-3, seed=3)


def trainer(recipe="grpo", run_path=None, **overrides):
    model, tokenizer = models.load_tiny("student-addition")
    return RLTrainer(model, tokenizer, recipes.get(recipe), RLConfig(**(CONFIG | overrides)), run_path=run_path)


def weights(tr):
    return {k: v.clone() for k, v in tr.model.state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_kill_between_the_renames_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt"
    tr = trainer()
    tr.step()
    tr.save_checkpoint(ckpt)
    at_step_1 = weights(tr)
    tr.step()
    renames = []

    def die_after_first_rename(src, dst):
        if renames:
            raise KeyboardInterrupt("killed")
        renames.append((src, dst))
        os.replace(src, dst)

    monkeypatch.setattr(checkpoint_io, "_rename", die_after_first_rename)
    with pytest.raises(KeyboardInterrupt):
        tr.save_checkpoint(ckpt)
    assert not ckpt.exists() and (tmp_path / ".ckpt.previous").exists()  # the state a kill leaves
    resumed = trainer()
    resumed.load_checkpoint(ckpt)  # falls back to the previous complete checkpoint
    assert resumed.step_count == 1
    assert_same_weights(weights(resumed), at_step_1)
    monkeypatch.undo()
    resumed.step()
    resumed.save_checkpoint(ckpt)  # the next save completes and cleans up
    assert ckpt.exists() and not (tmp_path / ".ckpt.previous").exists() and not (tmp_path / ".ckpt.partial").exists()


def test_load_refuses_truncated_mixed_incomplete_and_foreign_checkpoints(tmp_path):
    tr = trainer()
    tr.step()
    tr.save_checkpoint(tmp_path / "a")
    tr.step()
    tr.save_checkpoint(tmp_path / "b")
    fresh = trainer()
    before = weights(fresh)

    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "trainer.json").write_bytes((tmp_path / "a" / "trainer.json").read_bytes())
    (truncated / "trainer.safetensors").write_bytes((tmp_path / "a" / "trainer.safetensors").read_bytes()[:5000])
    with pytest.raises(ValueError, match="SHA-256"):
        fresh.load_checkpoint(truncated)

    mixed = tmp_path / "mixed"  # step-2 tensors with step-1 counters: what the old in-place save left
    mixed.mkdir()
    (mixed / "trainer.json").write_bytes((tmp_path / "a" / "trainer.json").read_bytes())
    (mixed / "trainer.safetensors").write_bytes((tmp_path / "b" / "trainer.safetensors").read_bytes())
    with pytest.raises(ValueError, match="different saves"):
        fresh.load_checkpoint(mixed)

    tensors, meta = checkpoint_io.read(tmp_path / "a")
    meta = {k: meta[k] for k in ("step", "config", "recipe")}
    dropped = [k for k in tensors if k.startswith("model.")][:36]
    checkpoint_io.write(tmp_path / "missing", {k: v for k, v in tensors.items() if k not in dropped}, meta)
    with pytest.raises(ValueError, match="missing weights"):
        fresh.load_checkpoint(tmp_path / "missing")
    optim = [k for k in tensors if k.startswith("optim.")][:1]
    checkpoint_io.write(tmp_path / "no_moment", {k: v for k, v in tensors.items() if k not in optim}, meta)
    with pytest.raises(ValueError, match="incomplete"):
        fresh.load_checkpoint(tmp_path / "no_moment")

    with pytest.raises(ValueError, match="recipe.*name.*grpo.*dapo"):
        trainer("dapo").load_checkpoint(tmp_path / "a")
    with pytest.raises(ValueError, match="config: lr"):
        trainer(lr=2e-3).load_checkpoint(tmp_path / "a")

    record = json.loads((tmp_path / "a" / "trainer.json").read_text())
    (tmp_path / "a" / "trainer.json").write_text(json.dumps(record | {"version": 99}))
    with pytest.raises(ValueError, match="format version 99"):
        fresh.load_checkpoint(tmp_path / "a")
    with pytest.raises(ValueError, match="does not exist"):
        fresh.load_checkpoint(tmp_path / "nowhere")
    assert_same_weights(weights(fresh), before)  # a refused checkpoint changes nothing
    assert fresh.step_count == 0


def _run(workdir: Path, steps: int, pause: float, ready=None) -> None:
    os._exit(kill_worker.main(workdir, steps, pause, on_ready=None if ready is None else ready.set))


def _comparable_log(path: Path) -> pd.DataFrame:
    log = pd.read_csv(path)
    return log[[c for c in log.columns if not c.startswith("time/")]]


@pytest.mark.skipif(sys.platform == "win32", reason="fork and SIGKILL")
def test_sigkill_at_random_points_then_resume_is_bit_identical(tmp_path):
    """Forked trainers (imports shared, so a restart costs no import time) are SIGKILLed at random delays
    after they are ready to train; ``save_checkpoint`` sleeps between its writes and renames so that many kills
    land inside it. Every resume must load (a complete checkpoint always exists) and the end result must equal
    an uninterrupted run's. Kills go on (at most 40) until ten have landed and two of them inside a save, so a
    slow or loaded machine, where more kills land inside a training step, still exercises the save."""
    # enough steps that the kills (each ≤ 1.2 s after the child is ready) come before the run can finish,
    # whatever the CPU speed: with 5 steps a fast machine completed the run between two kills
    steps, pause = 40, 0.05
    models.load_tiny("student-addition")  # warm transformers' lazy imports before forking
    ctx = multiprocessing.get_context("fork")
    reference = tmp_path / "reference"
    reference.mkdir()
    child = ctx.Process(target=_run, args=(reference, steps, 0.0))
    child.start()
    child.join(300)
    assert child.exitcode == 0

    killed = tmp_path / "killed"
    killed.mkdir()
    rng = random.Random(0)
    kills, inside_save = 0, 0
    while True:
        ready = ctx.Event()
        child = ctx.Process(target=_run, args=(killed, steps, pause, ready))
        child.start()
        if (kills < 10 or inside_save < 2) and kills < 40:
            ready.wait(300)
            child.join(rng.uniform(0.05, 1.2))
            if child.exitcode is None:
                os.kill(child.pid, signal.SIGKILL)
                child.join()
                kills += 1
                # a kill inside save_checkpoint leaves its partial or previous folder behind
                inside_save += (killed / ".ckpt.partial").exists() or (killed / ".ckpt.previous").exists()
                continue
        child.join(600)
        break
    assert child.exitcode == 0, f"resume refused or crashed (exit code {child.exitcode})"
    assert kills >= 5 and inside_save >= 2, (kills, inside_save)
    assert_same_weights(load_file(str(killed / "final.safetensors")), load_file(str(reference / "final.safetensors")))
    pd.testing.assert_frame_equal(_comparable_log(killed / "log.csv"), _comparable_log(reference / "log.csv"))
