"""Meta (consolidated.NN.pth + params.json) <-> TencentPretrain, single and model-parallel shards."""

from __future__ import annotations

import json
import os

import pytest
import torch

from scripts import convert_llama_to_tencentpretrain as meta_to_tp_script
from scripts import convert_tencentpretrain_to_llama as tp_to_meta_script
from tencentpretrain.checkpoint import load_state_dict, save_file
from tencentpretrain.config import load_model_config
from tencentpretrain.convert.llama_meta import meta_ffn_size, meta_params_from_model_config
from tencentpretrain.convert.meta import convert_meta_to_tencentpretrain, convert_tencentpretrain_to_meta
from tencentpretrain.errors import CheckpointError, ConfigError
from tests.convert.common import SPM_PATH, assert_same_state, save_tiny
from tests.helpers import tiny_llama_config


@pytest.mark.parametrize("shards", [1, 2])
@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
def test_tp_to_meta_to_tp_is_bit_exact(tmp_path, shards, kv_heads):
    model, path, config_path = save_tiny(str(tmp_path), local_kv_heads_num=kv_heads, rope_theta=1e6)
    meta_dir = str(tmp_path / "meta")
    assert tp_to_meta_script.main(["--input_model_path", path, "--config_path", config_path, "--output_model_path",
                                   meta_dir, "--model_parallel_size", str(shards), "--spm_model_path", SPM_PATH]) == 0
    assert sorted(f for f in os.listdir(meta_dir) if f.endswith(".pth")) == [f"consolidated.0{i}.pth"
                                                                              for i in range(shards)]
    out = str(tmp_path / "back.bin")
    assert meta_to_tp_script.main(["--input_model_path", meta_dir, "--output_model_path", out,
                                   "--layers_num", "2"]) == 0
    assert_same_state(model.state_dict(), load_state_dict(out))
    assert load_model_config(str(tmp_path / "back_config.json")) == model.config.replace(max_seq_length=128)


def test_model_parallel_shards_are_split_as_meta_does(tmp_path):
    """Column-parallel weights split rows, row-parallel ones columns, LLaMA-2 embeddings their width."""
    model, path, _ = save_tiny(str(tmp_path))
    convert_tencentpretrain_to_meta(path, str(tmp_path / "meta"), model.config, model_parallel_size=2)
    shard1 = torch.load(str(tmp_path / "meta" / "consolidated.01.pth"), weights_only=True)
    state = model.state_dict()
    attn, ffn = "encoder.transformer.0.self_attn", "encoder.transformer.0.feed_forward"
    expected = {
        "layers.0.attention.wq.weight": state[f"{attn}.linear_layers.0.weight"][32:],  # (64, 64): rows 32..63
        "layers.0.attention.wk.weight": state[f"{attn}.linear_layers.1.weight"][16:],  # 2 KV heads of 16: 1 each
        "layers.0.attention.wo.weight": state[f"{attn}.final_linear.weight"][:, 32:],
        "layers.0.feed_forward.w1.weight": state[f"{ffn}.linear_gate.weight"][88:],
        "layers.0.feed_forward.w2.weight": state[f"{ffn}.linear_2.weight"][:, 88:],
        "tok_embeddings.weight": state["embedding.word.embedding.weight"][:, 32:],
        "output.weight": state["target.lm.output_layer.weight"][350:],
        "layers.0.attention_norm.weight": state["encoder.transformer.0.layer_norm_1.weight"],
    }
    for key, tensor in expected.items():
        assert torch.equal(shard1[key], tensor), key


def test_llama3_style_vocab_split_embedding_merges(tmp_path):
    """A shard as wide as the model was split by vocabulary (LLaMA 3's VocabParallelEmbedding)."""
    model, path, _ = save_tiny(str(tmp_path))
    meta_dir = tmp_path / "meta"
    convert_tencentpretrain_to_meta(path, str(meta_dir), model.config, model_parallel_size=2)
    embedding = model.state_dict()["embedding.word.embedding.weight"]
    for i in range(2):
        shard = torch.load(str(meta_dir / f"consolidated.0{i}.pth"), weights_only=True)
        shard["tok_embeddings.weight"] = embedding[i * 350:(i + 1) * 350].clone()
        save_file(shard, str(meta_dir / f"consolidated.0{i}.pth"))  # rewritten with its checksum
    convert_meta_to_tencentpretrain(str(meta_dir), str(tmp_path / "back.bin"))
    assert_same_state(model.state_dict(), load_state_dict(str(tmp_path / "back.bin")))


def test_params_json_reproduces_sizes():
    assert meta_ffn_size(4096, 256, None) == 11008  # LLaMA-7B
    assert meta_ffn_size(8192, 4096, 1.3) == 28672  # LLaMA-2-70B
    for ffn in (176, 192, 100, 11008):
        config = tiny_llama_config(feedforward_size=ffn, hidden_size=64, emb_size=64)
        params = meta_params_from_model_config(config, 700)
        assert meta_ffn_size(64, params["multiple_of"], params.get("ffn_dim_multiplier")) == ffn
        assert (params["n_kv_heads"], params["vocab_size"], params["n_layers"]) == (2, 700, 2)


def test_replicated_norms_must_agree_and_layers_num_is_checked(tmp_path):
    model, path, _ = save_tiny(str(tmp_path))
    meta_dir = tmp_path / "meta"
    convert_tencentpretrain_to_meta(path, str(meta_dir), model.config, model_parallel_size=2)
    assert meta_to_tp_script.main(["--input_model_path", str(meta_dir), "--output_model_path",
                                   str(tmp_path / "x.bin")]) == 0
    with pytest.raises(ConfigError, match="layers_num"):
        meta_to_tp_script.main(["--input_model_path", str(meta_dir), "--output_model_path",
                                str(tmp_path / "y.bin"), "--layers_num", "32"])
    shard = torch.load(str(meta_dir / "consolidated.01.pth"), weights_only=True)
    shard["norm.weight"] = shard["norm.weight"] + 1
    save_file(shard, str(meta_dir / "consolidated.01.pth"))  # rewritten with its checksum
    with pytest.raises(CheckpointError, match="norm.weight should be the same in every Meta shard"):
        convert_meta_to_tencentpretrain(str(meta_dir), str(tmp_path / "z.bin"))
    params = json.load(open(meta_dir / "params.json"))
    assert params["dim"] == 64 and "rope_theta" not in params


def test_an_older_split_does_not_survive_a_new_export(tmp_path, capsys):
    """Exporting 1-way into the directory of a 2-way export must not leave consolidated.01.pth behind (Meta's
    loader would take two shards)."""
    model, path, config_path = save_tiny(str(tmp_path))
    meta_dir = str(tmp_path / "meta")
    convert_tencentpretrain_to_meta(path, meta_dir, model.config, model_parallel_size=2)
    argv = ["--input_model_path", path, "--config_path", config_path, "--output_model_path", meta_dir]
    with pytest.raises(ConfigError, match="pass --overwrite"):
        tp_to_meta_script.main(argv)
    assert tp_to_meta_script.main([*argv, "--overwrite"]) == 0
    assert sorted(os.listdir(meta_dir)) == ["consolidated.00.pth", "consolidated.00.pth.sha256", "params.json"]
    convert_meta_to_tencentpretrain(meta_dir, str(tmp_path / "blocks"), max_shard_bytes=50_000)
    assert_same_state(model.state_dict(), load_state_dict(str(tmp_path / "blocks")))
