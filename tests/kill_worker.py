"""Subprocess trainer for tests/test_checkpoints.py's kill test (not a test module itself).

Usage: ``python tests/kill_worker.py WORKDIR STEPS [PAUSE_S]``, or ``main(...)`` in a forked child.
Resumes from ``WORKDIR/ckpt`` when present, trains to STEPS with a checkpoint after every step, then writes
``WORKDIR/final.safetensors``.
``PAUSE_S`` sleeps between every file write and rename inside ``save_checkpoint`` so that a random
SIGKILL lands inside it often. Exit code 3 with ``REFUSED: ...`` when the checkpoint is refused.
"""

import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from forklab import recipes
from forklab.lm import checkpoint_io, models
from forklab.lm.trainer import RLConfig, RLTrainer


def build(workdir: Path, resume: bool) -> RLTrainer:
    torch.manual_seed(0)
    model, tokenizer = models.load_tiny("student-addition")
    config = RLConfig(prompts_per_step=2, group_size=2, max_new_tokens=6, eval_every=0, train_size=32,
                      eval_size=4, lr=1e-3, seed=3)
    return RLTrainer(model, tokenizer, recipes.get("grpo"), config, run_path=workdir / "log.csv", resume=resume)


def main(workdir: Path, steps: int, pause: float = 0.0, on_ready=None) -> int:
    if pause:
        write_file, rename = checkpoint_io._write_file, checkpoint_io._rename

        def slow_write(path, data):
            time.sleep(pause)
            write_file(path, data)

        def slow_rename(src, dst):
            time.sleep(pause)
            rename(src, dst)
            time.sleep(pause)

        checkpoint_io._write_file, checkpoint_io._rename = slow_write, slow_rename
    ckpt = workdir / "ckpt"
    resume = ckpt.exists() or (ckpt.parent / f".{ckpt.name}.previous").exists()
    trainer = build(workdir, resume=(workdir / "log.csv").exists())
    if resume:
        try:
            trainer.load_checkpoint(ckpt)
        except ValueError as err:
            print(f"REFUSED: {err}", flush=True)
            return 3
    elif trainer.log is not None:
        trainer.log.truncate(0)  # killed before the first checkpoint: the logged steps are redone
    print(f"READY {trainer.step_count}", flush=True)
    if on_ready is not None:  # the parent times its kill from here, not from the fork (a loaded machine builds slowly)
        on_ready()
    while trainer.step_count < steps:
        trainer.step()
        trainer.save_checkpoint(ckpt)
    final = {k: v.clone().contiguous() for k, v in trainer.model.state_dict().items()}
    save_file(final, str(workdir / "final.safetensors"))
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 0.0))
