"""Every shipped tiny model is a standard Hugging Face folder: Auto* classes load it, with the same ids."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from forklab.envs.tasks import get_task
from forklab.lm.models import load_tiny
from forklab.paths import data_dir

SHIPPED = sorted(p.name for p in (data_dir() / "models").iterdir() if (p / "model.safetensors").exists())


@pytest.mark.parametrize("name", SHIPPED)
def test_auto_classes_load_a_shipped_folder_with_forklabs_ids_and_outputs(name):
    folder = data_dir() / "models" / name
    model, tok = load_tiny(name)
    hf_tok = AutoTokenizer.from_pretrained(folder)
    hf_model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True).eval()
    assert hf_tok.pad_token_id == tok.pad_id == 0 and hf_tok.eos_token_id == tok.eos_id is not None
    assert hf_model.config.eos_token_id == tok.eos_id and hf_model.config.pad_token_id == tok.pad_id
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["eos_token_id"] == tok.eos_id and generation["pad_token_id"] == tok.pad_id
    task = get_task("graph_path" if "graph" in name else "addition")
    texts = [e.prompt + task.reference_answers(e)[0] for e in task.make_split("test", 16, seed=0)]
    for text in texts:
        assert hf_tok(text, add_special_tokens=False).input_ids == tok.encode(text)
        assert hf_tok.decode(tok.encode(text)) == text
    ids, mask = tok.batch_encode(texts, pad_side="left")
    batch = hf_tok(texts, padding=True, return_tensors="pt", add_special_tokens=False)
    assert torch.equal(batch.input_ids, ids) and torch.equal(batch.attention_mask.bool(), mask)
    with torch.no_grad():
        torch.testing.assert_close(hf_model(input_ids=ids[:, :8]).logits, model(input_ids=ids[:, :8]).logits,
                                   rtol=0, atol=0)
