"""Crash-safe checkpoint folders: write to a temporary folder, fsync, rename into place as one unit.

Used by :meth:`forklab.lm.trainer.RLTrainer.save_checkpoint` / ``load_checkpoint``. A checkpoint
folder holds ``trainer.safetensors`` (every tensor; no pickle) and ``trainer.json`` (format version,
the SHA-256 of the tensor file, and the caller's metadata: step, config, recipe).

Writing ``path`` (a kill may land anywhere)::

    write  .<name>.partial/{trainer.safetensors, trainer.json}; fsync both and the folder
    rename path -> .<name>.previous          (only if path exists; the last good checkpoint)
    rename .<name>.partial -> path; fsync the parent folder
    delete .<name>.previous

At every instant either ``path`` or ``.<name>.previous`` is a complete checkpoint, and
:func:`read` takes ``path`` when it exists and the ``.previous`` folder otherwise. A partial folder
is never read. Reading checks the format, the version and the SHA-256 before anything is loaded,
so a truncated or mixed folder raises ``ValueError`` instead of resuming from a mixed state.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load, save

FORMAT = "forklab-trainer-checkpoint"
VERSION = 1
TENSORS, META = "trainer.safetensors", "trainer.json"


def _sibling(path: Path, suffix: str) -> Path:
    return path.parent / f".{path.name}.{suffix}"


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    if os.name == "nt":  # Windows cannot open a folder for fsync; its renames are journalled
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rename(src: Path, dst: Path) -> None:
    os.replace(src, dst)


def write(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write a checkpoint folder at ``path`` atomically (see the module docstring); returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial, previous = _sibling(path, "partial"), _sibling(path, "previous")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    blob = save(tensors)
    record = {"format": FORMAT, "version": VERSION, "sha256": hashlib.sha256(blob).hexdigest(), **meta}
    _write_file(partial / TENSORS, blob)
    _write_file(partial / META, (json.dumps(record) + "\n").encode())
    _fsync_dir(partial)
    if path.exists():
        if previous.exists():  # a stale one from a kill after the last rename; `path` is complete
            shutil.rmtree(previous)
        _rename(path, previous)
    _rename(partial, path)
    _fsync_dir(path.parent)
    if previous.exists():
        shutil.rmtree(previous)
    return path


def read(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, meta)`` of a complete checkpoint at ``path`` (or its ``.previous``); else ``ValueError``."""
    path = Path(path)
    folder = path if path.exists() else _sibling(path, "previous")
    if not folder.exists():
        raise ValueError(f"`path` {path} is not a checkpoint folder (it does not exist)")
    for name in (TENSORS, META):
        if not (folder / name).is_file():
            raise ValueError(f"checkpoint {folder} is incomplete: it holds no {name}")
    try:
        meta = json.loads((folder / META).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"checkpoint {folder}: {META} is not valid JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"checkpoint {folder}: {META} is not a {FORMAT} record")
    if meta.get("version") != VERSION:
        raise ValueError(f"checkpoint {folder} has format version {meta.get('version')!r}; this forklab reads "
                         f"version {VERSION}")
    blob = (folder / TENSORS).read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta.get("sha256"):
        raise ValueError(f"checkpoint {folder}: {TENSORS} does not match the SHA-256 recorded in {META} "
                         "(truncated, or the two files come from different saves)")
    return load(blob), meta


def require_equal(what: str, saved, current) -> None:
    """``ValueError`` naming the keys of ``what`` (a dict) whose saved and current values differ."""
    if saved == current:
        return
    if isinstance(saved, dict) and isinstance(current, dict):
        absent = "<absent>"
        keys = sorted(k for k in saved.keys() | current.keys() if saved.get(k, absent) != current.get(k, absent))
        diffs = "; ".join(f"{k}: checkpoint {saved.get(k, '<absent>')!r} vs now {current.get(k, '<absent>')!r}"
                          for k in keys[:6])
        raise ValueError(f"the checkpoint was written with another {what}: {diffs}")
    raise ValueError(f"the checkpoint was written with another {what}: {saved!r} vs now {current!r}")


def split_trainer_state(path, tensors: dict[str, torch.Tensor], model, rng: list[str]) -> tuple[dict, dict]:
    """A trainer checkpoint's tensors as ``(model state, optimiser state by parameter name)``, checked complete.

    Every weight of ``model``, the same optimiser moments for every parameter (or none), the generator
    states named in ``rng`` and nothing else; otherwise ``ValueError`` says what differs.
    """
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    expected = set(model.state_dict())
    if set(model_state) != expected:
        missing, extra = sorted(expected - set(model_state)), sorted(set(model_state) - expected)
        raise ValueError(f"checkpoint {path} does not match the model: missing weights {missing[:5]} "
                         f"({len(missing)}), unexpected {extra[:5]} ({len(extra)})")
    params = dict(model.named_parameters())
    optim_state, seen = {}, set()
    for name, p in params.items():
        prefix = f"optim.{name}."
        state = {key[len(prefix):]: v for key, v in tensors.items()
                 if key.startswith(prefix) and "." not in key[len(prefix):]}
        seen |= {prefix + k for k in state}
        # moments go to the parameter's device; AdamW keeps its scalar `step` on the CPU
        state = {key: v if key == "step" else v.to(p.device) for key, v in state.items()}
        if state:
            optim_state[name] = state
    kinds = {tuple(sorted(s)) for s in optim_state.values()}
    if optim_state and (len(optim_state) != len(params) or len(kinds) != 1):
        raise ValueError(f"checkpoint {path} holds optimiser state for {len(optim_state)} of {len(params)} "
                         f"parameters (keys {sorted(kinds)}): incomplete")
    leftover = set(tensors) - {f"model.{k}" for k in model_state} - seen - set(rng)
    if leftover or not set(rng) <= set(tensors):
        raise ValueError(f"checkpoint {path}: unexpected tensors {sorted(leftover)[:5]} or missing "
                         f"generator states {sorted(set(rng) - set(tensors))}")
    return model_state, optim_state
