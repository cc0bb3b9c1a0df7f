"""Blocks, dtype conversion and LoRA merging (same keys, new layout)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from scripts import convert_fp32_to_fp16 as fp16_script
from scripts import convert_model_into_blocks as blocks_script
from scripts import merge_lora as merge_lora_script
from tencentpretrain.checkpoint import load_state_dict, save_file
from tencentpretrain.config import save_model_config
from tencentpretrain.convert.loading import load_model
from tencentpretrain.convert.rewrite import merge_lora_checkpoint
from tencentpretrain.errors import CheckpointError, ConfigError
from tencentpretrain.transforms.lora import LoraConfig, apply_lora, lora_state_dict
from tests.convert.common import assert_same_state, save_tiny


def test_blocks_as_the_original(tmp_path):
    model, path, _ = save_tiny(str(tmp_path))
    out = str(tmp_path / "blocks")
    assert blocks_script.main(["--input_model_path", path, "--output_model_path", out, "--block_size", "0.0001"]) == 0
    index = json.load(open(os.path.join(out, "tencentpretrain_model.bin.index.json")))
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 3 and all(f.startswith("tencentpretrain_model-") and f.endswith(".bin") for f in files)
    assert sorted(os.listdir(out)) == sorted([*files, "tencentpretrain_model.bin.index.json"])
    expected = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}  # bf16, as the original
    assert index["metadata"]["total_size"] == sum(v.numel() * 2 for v in expected.values())
    for name in files:
        shard = torch.load(os.path.join(out, name), weights_only=True)
        assert sum(v.numel() * 2 for v in shard.values()) <= 100_000 or len(shard) == 1
    assert_same_state(expected, load_state_dict(out))


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_fp32_to_half(tmp_path, dtype):
    model, path, config_path = save_tiny(str(tmp_path))
    out = str(tmp_path / f"model_{dtype}.bin")
    assert fp16_script.main(["--load_model_path", path, "--output_model_path", out, "--dtype", dtype,
                             "--config_path", config_path]) == 0
    torch_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    assert_same_state({k: v.to(torch_dtype) for k, v in model.state_dict().items()}, load_state_dict(out))


@pytest.mark.parametrize("targets", [("linear_layers.0", "linear_layers.2"),
                                     ("linear_layers.1", "final_linear", "linear_gate")])
def test_merged_lora_logits_equal_unmerged(tmp_path, targets):
    model, path, config_path = save_tiny(str(tmp_path))  # GQA: K and V narrower than Q
    apply_lora(model, LoraConfig(r=4, alpha=32.0, target_modules=targets))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.05)  # B is zero at init; make the adapter do something
    lora_path = str(tmp_path / "lora.bin")
    save_file(lora_state_dict(model), lora_path)
    merged = str(tmp_path / "merged.bin")
    assert merge_lora_script.main(["--input_model_path", path, "--lora_model_path", lora_path, "--lora_alpha", "32",
                                   "--output_model_path", merged, "--config_path", config_path]) == 0
    ids = torch.randint(0, 700, (2, 12))
    unmerged = load_model(config_path, path, lora_path=lora_path, lora_config=LoraConfig(alpha=32.0))
    base = load_model(config_path, path)
    with torch.no_grad():
        expected = unmerged.logits(ids)
        assert (expected - base.logits(ids)).abs().max() > 1e-2  # the adapter matters
        torch.testing.assert_close(load_model(config_path, merged).logits(ids), expected, atol=1e-5, rtol=1e-5)


def test_lora_alpha_from_config_and_bad_files(tmp_path):
    model, path, config_path = save_tiny(str(tmp_path))
    apply_lora(model, LoraConfig(r=2))
    lora = {k: torch.randn_like(v) for k, v in lora_state_dict(model).items()}
    save_model_config(model.config, config_path, extra={"lora_params": {"lora_r": 2, "lora_alpha": 4}})
    save_file(lora, str(tmp_path / "lora.bin"))
    assert merge_lora_script.main(["--input_model_path", path, "--lora_model_path", str(tmp_path / "lora.bin"),
                                   "--output_model_path", str(tmp_path / "m.bin"), "--config_path", config_path]) == 0
    key = "encoder.transformer.1.self_attn.linear_layers.2"
    expected = model.state_dict()[f"{key}.weight"] + lora[f"{key}.lora_B"] @ lora[f"{key}.lora_A"] * (4 / 2)
    torch.testing.assert_close(load_state_dict(str(tmp_path / "m.bin"))[f"{key}.weight"], expected)
    lora["encoder.transformer.9.self_attn.linear_layers.0.lora_A"] = torch.zeros(2, 64)
    lora["encoder.transformer.9.self_attn.linear_layers.0.lora_B"] = torch.zeros(64, 2)
    save_file(lora, str(tmp_path / "bad.bin"))
    with pytest.raises(CheckpointError, match=r"1 adapters match no weight.*transformer\.9"):
        merge_lora_checkpoint(path, str(tmp_path / "bad.bin"), str(tmp_path / "m2.bin"), alpha=16)
    with pytest.raises(CheckpointError, match="not a LoRA file"):
        merge_lora_checkpoint(path, path, str(tmp_path / "m3.bin"), alpha=16)


def test_blocks_replace_an_older_blocks_directory_whole(tmp_path, capsys):
    """Smaller blocks into the directory of bigger ones: no block of the older layout may remain."""
    model, path, _ = save_tiny(str(tmp_path))
    out = str(tmp_path / "blocks")
    assert blocks_script.main(["--input_model_path", path, "--output_model_path", out, "--dtype", "keep"]) == 0
    open(os.path.join(out, "tencentpretrain_model-99.bin"), "wb").close()  # a leftover of an older run
    argv = ["--input_model_path", path, "--output_model_path", out, "--block_size", "0.0001", "--dtype", "keep"]
    with pytest.raises(ConfigError, match="pass --overwrite"):
        blocks_script.main(argv)
    assert blocks_script.main([*argv, "--overwrite"]) == 0
    index = json.load(open(os.path.join(out, "tencentpretrain_model.bin.index.json")))
    assert sorted(os.listdir(out)) == sorted([*set(index["weight_map"].values()), "tencentpretrain_model.bin.index.json"])
    assert_same_state(model.state_dict(), load_state_dict(out))
