"""LoRA transform (GQA included) and one-call model loading."""

import json
import os

import pytest
import torch

from tencentpretrain.checkpoint import save_checkpoint, save_file
from tencentpretrain.config import save_model_config
from tencentpretrain.convert.families.llama import hf_config_from_model_config, llama_hf_weight_map
from tencentpretrain.convert.loading import load_model
from tencentpretrain.errors import CheckpointError
from tencentpretrain.models.model import build_model
from tencentpretrain.transforms.lora import LoraConfig, apply_lora, lora_state_dict, merge_lora_
from tests.helpers import tiny_llama_config

V = 90


def _trained_lora_model():
    model = build_model(tiny_llama_config(), V).eval()
    names = apply_lora(model, LoraConfig(r=4, alpha=8))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return model, names


def test_lora_on_gqa_keys_shapes_and_trainable_set():
    model, names = _trained_lora_model()
    assert names == [f"encoder.transformer.{i}.self_attn.linear_layers.{j}" for i in range(2) for j in (0, 2)]
    state = lora_state_dict(model)
    assert len(state) == 8
    assert state["encoder.transformer.0.self_attn.linear_layers.2.lora_B"].shape == (32, 4)  # 2 KV heads x 16
    assert state["encoder.transformer.0.self_attn.linear_layers.0.lora_A"].shape == (4, 64)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(state)


def test_merged_lora_equals_unmerged():
    model, _ = _trained_lora_model()
    ids = torch.randint(0, V, (2, 7))
    before = model.logits(ids)
    merge_lora_(model)
    assert not any("lora_" in k for k in model.state_dict())
    torch.testing.assert_close(model.logits(ids), before, atol=1e-5, rtol=1e-5)


def test_load_model_with_lora_file_reproduces_logits(tmp_path):
    model, _ = _trained_lora_model()
    base = {k: v for k, v in model.state_dict().items() if "lora_" not in k}
    save_file(base, str(tmp_path / "base.bin"))
    save_file(lora_state_dict(model), str(tmp_path / "lora.bin"))
    config_path = str(tmp_path / "config.json")
    save_model_config(tiny_llama_config(), config_path)
    loaded = load_model(config_path, str(tmp_path / "base.bin"), vocab_size=V, lora_path=str(tmp_path / "lora.bin"),
                        lora_config=LoraConfig(alpha=8))
    ids = torch.randint(0, V, (1, 6))
    torch.testing.assert_close(loaded.logits(ids), model.logits(ids))
    with pytest.raises(CheckpointError, match="not a LoRA file"):
        load_model(config_path, str(tmp_path / "base.bin"), vocab_size=V, lora_path=str(tmp_path / "base.bin"))


def test_load_model_from_hf_directory(tmp_path):
    config = tiny_llama_config(vocab_size=V)
    model = build_model(config).eval()
    hf_state = llama_hf_weight_map(config).to_external(model.state_dict())
    save_file(hf_state, str(tmp_path / "model.safetensors"))
    with open(tmp_path / "config.json", "w") as f:
        json.dump(hf_config_from_model_config(config, V), f)
    loaded = load_model(None, str(tmp_path))
    ids = torch.randint(0, V, (1, 6))
    torch.testing.assert_close(loaded.logits(ids), model.logits(ids))


def test_load_model_from_tencentpretrain_bin(tmp_path):
    model = build_model(tiny_llama_config(), V).eval()
    save_checkpoint(model, str(tmp_path / "m.bin"))
    loaded = load_model(tiny_llama_config(), str(tmp_path / "m.bin"), vocab_size=V)
    assert not loaded.training and os.path.exists(tmp_path / "m.bin")
    ids = torch.randint(0, V, (1, 6))
    torch.testing.assert_close(loaded.logits(ids), model.logits(ids))
