"""Make every shipped tiny-model folder a standard Hugging Face model folder, without touching its weights.

Run: ``.venv/bin/python scripts/export_hf_files.py`` (idempotent). For each ``data/models/<name>/``:

- the forklab tokenizer moves to ``forklab_tokenizer.json`` (``tokenizer.json`` becomes the Hugging Face
  file, with ``tokenizer_config.json``), so ``AutoTokenizer.from_pretrained(folder)`` works, same ids;
- ``config.json`` and ``generation_config.json`` get ``eos_token_id`` (the id of ``;``) and
  ``pad_token_id`` (0), which they lacked (``eos_token_id: null``);
- ``provenance.json`` records this export (command, versions, the SHA-256 of ``model.safetensors``,
  which is asserted unchanged).

New folders written by ``scripts/pretrain_tiny.py`` (``forklab.lm.models.save_model``) already have this layout.
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

import tokenizers
import transformers

from forklab.lm.models import FORKLAB_TOKENIZER
from forklab.lm.tokenizer import CharTokenizer
from forklab.paths import data_dir


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export(folder: Path) -> str:
    own = folder / FORKLAB_TOKENIZER
    tok = CharTokenizer.load(own if own.exists() else folder / "tokenizer.json")
    weights = sha256(folder / "model.safetensors")
    tok.save(own)
    tok.save_hf(folder)
    for name in ("config.json", "generation_config.json"):
        path = folder / name
        cfg = json.loads(path.read_text())
        cfg["eos_token_id"], cfg["pad_token_id"] = tok.eos_id, tok.pad_id
        path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    prov_path = folder / "provenance.json"
    prov = json.loads(prov_path.read_text())
    prov["hf_export"] = {"command": "python scripts/export_hf_files.py", "weights_sha256": weights,
                         "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                         "python": platform.python_version()}
    prov_path.write_text(json.dumps(prov, indent=2, sort_keys=True) + "\n")
    assert sha256(folder / "model.safetensors") == weights
    return f"{folder.name}: eos={tok.eos_id} pad={tok.pad_id} weights {weights[:12]} unchanged"


def main() -> None:
    for folder in sorted(p for p in (data_dir() / "models").iterdir() if (p / "model.safetensors").exists()):
        print(export(folder))


if __name__ == "__main__":
    main()
